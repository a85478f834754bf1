"""energy_report on a real replay (needs LLMSIM_DATA_DIR) and the replay --energy flag."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("LLMSIM_DATA_DIR"),
                                reason="needs LLMSIM_DATA_DIR")


def test_energy_report_rtxpro6000_and_unavailable(tmp_path: Path) -> None:
    from llmsim.experiment import load_experiment
    from llmsim.power import energy_report, write_energy
    from llmsim.replay import run

    exp = load_experiment("examples/rtxpro6000-llama-3.1-8b.yaml")
    res = run(exp)
    rep = energy_report(res, exp)
    assert rep.available and rep.source == "power_state"
    assert rep.energy_j is not None and rep.energy_j > 0
    assert float(rep.requests["energy_j"].sum()) == pytest.approx(rep.energy_j, rel=1e-9)
    assert rep.spec is not None and rep.avg_power_w is not None
    assert rep.spec.idle_w.value <= rep.avg_power_w <= rep.spec.power_limit_w.value  # type: ignore[operator]
    assert rep.j_per_output_token and rep.j_per_output_token > 0
    j, c = write_energy(rep, tmp_path)
    assert json.loads(j.read_text())["energy_j"] == pytest.approx(rep.energy_j)
    assert c.read_text().startswith("t,gpu,power_w")
    # a GPU without a power file: unavailable, with the reason, never a number
    hw = exp.hardware.__class__(name="RTX4090", gpu_memory_bytes=exp.hardware.gpu_memory_bytes)
    exp2 = exp.__class__(**{**{f: getattr(exp, f) for f in ("name", "engine", "overheads")},
                            "model": exp.model_path, "profile": exp.profile_path,
                            "trace": exp.trace, "hardware": hw})
    rep2 = energy_report(res, exp2)
    assert not rep2.available and "RTX4090" in rep2.reason
    assert rep2.to_json()["energy_j"] == "unavailable"
