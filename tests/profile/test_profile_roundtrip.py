"""Real-data imports: every CSV value of every LLMServingSim bundle survives import -> .pb ->
export exactly; Vidur collectives import with every row converted exactly."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from llmsim.cli.main import main
from llmsim.profile import load_profile, read_profile, write_profile
from llmsim.profile.importers.llmservingsim import export_bundle, import_bundle
from llmsim.profile.importers.vidur import import_vidur

BUNDLES = [
    "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16",
    "llmservingsim/profiles/RTX4090/meta-llama/Llama-3.1-8B/bf16",
    "llmservingsim/profiles/RTXPRO6000/Qwen/Qwen3-32B/bf16",
    "llmservingsim/profiles/RTXPRO6000/Qwen/Qwen3-30B-A3B-Instruct-2507/bf16",
]
VIDUR = ["a100_dgx", "a100_pairwise_nvlink", "h100_dgx", "h100_pairwise_nvlink"]


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return [row for row in csv.reader(fh) if row]


def _same_cell(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return Decimal(a) == Decimal(b)
    except ArithmeticError:
        return False


@pytest.mark.realdata
@pytest.mark.parametrize("rel", BUNDLES)
def test_bundle_round_trip_every_row(rel, data_path, tmp_path):
    bundle = data_path(rel)
    pb_path = write_profile(import_bundle(bundle), tmp_path / "p.pb")
    profile = read_profile(pb_path)
    out = export_bundle(profile, tmp_path / "bundle")
    assert (out / "meta.yaml").read_text() == (bundle / "meta.yaml").read_text()
    sources = sorted(p.relative_to(bundle) for p in bundle.rglob("*.csv"))
    assert sources == sorted(p.relative_to(out) for p in out.rglob("*.csv"))
    compared = 0
    for rel_csv in sources:
        want, got = _rows(bundle / rel_csv), _rows(out / rel_csv)
        assert len(want) == len(got), rel_csv
        assert want[0] == got[0], rel_csv
        for line, (w, g) in enumerate(zip(want[1:], got[1:], strict=True), start=2):
            assert len(w) == len(g)
            for col, a, b in zip(want[0], w, g, strict=True):
                assert _same_cell(a, b), f"{rel_csv}:{line}: {col}: {a!r} != {b!r}"
                compared += 1
    assert compared > 100_000


@pytest.mark.realdata
def test_load_profile_bundle_equals_pb(data_path, tmp_path):
    bundle = data_path(BUNDLES[0])
    from_dir = load_profile(bundle)
    pb_path = write_profile(from_dir, tmp_path / "p.pb")
    assert load_profile(pb_path) == from_dir
    assert load_profile(bundle) == from_dir  # cached path gives an equal fresh copy
    assert load_profile(bundle) is not load_profile(bundle)
    assert from_dir.model.num_hidden_layers == 32
    assert [t.tp_degree for t in from_dir.tp] == [1, 2]


@pytest.mark.realdata
@pytest.mark.parametrize("hw", VIDUR)
def test_vidur_collectives_every_row(hw, data_path):
    d = data_path(f"vidur/network/{hw}")
    profile = import_vidur(d)
    by_op = {t.op: t for t in profile.collectives}
    for name in ("all_reduce", "send_recv"):
        rows = _rows(d / f"{name}.csv")
        header, body = rows[0], rows[1:]
        table = by_op[name]
        axes = {a.name: a.values for a in table.axes}
        assert len(table.mean_ns) == len(body)
        for i, row in enumerate(body):
            cell = dict(zip(header, row, strict=True))
            assert axes["bytes"][i] == int(cell["size"])
            assert axes["ranks"][i] == int(cell["num_workers"])
            assert axes["devices_per_node"][i] == int(cell["devices_per_node"])
            for stat in ("median", "mean", "min", "max", "std"):
                want = float(Decimal(cell[f"time_stats.{name}.{stat}"]).scaleb(6))
                assert getattr(table, f"{stat}_ns")[i] == want


@pytest.mark.realdata
def test_cli_import_and_show(data_path, tmp_path, capsys):
    bundle = data_path(BUNDLES[3])
    out = tmp_path / "qwen.pb"
    assert main(["profile", "import", "llmservingsim", str(bundle), "-o", str(out)]) == 0
    assert main(["profile", "show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Qwen/Qwen3-30B-A3B-Instruct-2507" in text
    assert "moe" in text and "active_experts 8..128" in text
    assert "TP degrees       1, 2" in text
    vid = tmp_path / "h100.pb"
    assert main(["profile", "import", "vidur", str(data_path("vidur/network/h100_dgx")),
                 "-o", str(vid)]) == 0
    assert main(["profile", "show", str(vid)]) == 0
    assert "all_reduce" in capsys.readouterr().out
