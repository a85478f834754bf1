"""Energy report of a replay: totals, per-request energy, 1 s power per GPU.

Definitions (docs/power.md):

* ``energy_j``: all accounted GPUs over ``[0, horizon_s]`` (the last step's end), J.
* ``avg_power_w = energy_j / horizon_s`` (all GPUs together); ``peak_power_w``: the largest
  1 s average of the summed GPU power.
* ``j_per_output_token = energy_j / output tokens`` (all energy charged to output tokens: the
  ML.ENERGY ``energy_per_token_joules`` convention); ``j_per_input_token = prefill energy /
  input tokens`` and ``j_per_output_token_decode = (energy_j - prefill energy) / output
  tokens`` split the energy by each step's token mix (prefill energy: a step's energy times
  its prefill tokens over its tokens; idle energy goes with the decode share).
* ``tokens_per_j = (input + output tokens) / energy_j``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from llmsim.power.model import (
    MEASURED_COLUMN,
    PowerTrace,
    StepShape,
    attribute_to_requests,
    power_trace,
)
from llmsim.power.spec import GpuPowerSpec, find_power_spec

if TYPE_CHECKING:
    from llmsim.experiment import Experiment
    from llmsim.replay import ReplayResult


@dataclass(frozen=True, slots=True, kw_only=True)
class EnergyReport:
    """Energy figures of one replay.

    Attributes:
        available: False when no power source exists; every figure is then ``None``.
        reason: why energy is unavailable ("" when available).
        source: ``"power_state"``, ``"profile"`` or ``"mixed"`` (where step energies came
            from), "" when unavailable.
        hardware: GPU name the spec was looked up by.
        spec: the power spec used (``None`` when none was found).
        energy_j: total energy, J.
        horizon_s: accounted span, s.
        avg_power_w: average power of all GPUs together, W.
        peak_power_w: largest 1 s average of all GPUs together, W.
        j_per_output_token: energy / output tokens, J.
        j_per_input_token: prefill share of energy / input tokens, J.
        j_per_output_token_decode: non-prefill share / output tokens, J.
        tokens_per_j: (input + output tokens) / energy, 1/J.
        num_gpus: GPUs accounted.
        requests: ``request_id``, ``energy_j`` per request (sums to ``energy_j``).
        power: ``t`` (s, end of tick), ``gpu``, ``power_w``: 1 s average per GPU.
        trace: the underlying per-step and per-segment record.
    """

    available: bool
    reason: str = ""
    source: str = ""
    hardware: str = ""
    spec: GpuPowerSpec | None = None
    energy_j: float | None = None
    horizon_s: float | None = None
    avg_power_w: float | None = None
    peak_power_w: float | None = None
    j_per_output_token: float | None = None
    j_per_input_token: float | None = None
    j_per_output_token_decode: float | None = None
    tokens_per_j: float | None = None
    num_gpus: int = 0
    requests: pd.DataFrame = field(default_factory=pd.DataFrame)
    power: pd.DataFrame = field(default_factory=pd.DataFrame)
    trace: PowerTrace | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-able totals (no frames); unavailable figures as the string "unavailable"."""
        def v(x: float | None) -> Any:
            return "unavailable" if x is None else x
        spec = None
        if self.spec is not None:
            spec = {f: {"value": getattr(self.spec, f).value,
                        "source": getattr(self.spec, f).source}
                    for f in ("power_limit_w", "idle_w", "peak_bf16_flops_per_s",
                              "memory_bandwidth_bytes_per_s")}
        return {"available": self.available, "reason": self.reason, "source": self.source,
                "hardware": self.hardware, "num_gpus": self.num_gpus,
                "energy_j": v(self.energy_j), "horizon_s": v(self.horizon_s),
                "avg_power_w": v(self.avg_power_w), "peak_power_w": v(self.peak_power_w),
                "j_per_output_token": v(self.j_per_output_token),
                "j_per_input_token": v(self.j_per_input_token),
                "j_per_output_token_decode": v(self.j_per_output_token_decode),
                "tokens_per_j": v(self.tokens_per_j), "spec": spec}


def profile_has_energy(profile: Any) -> bool:
    """True when any operator table of a profile message carries measured ``energy_j``."""
    stack = [profile]
    while stack:
        msg = stack.pop()
        for fd, value in msg.ListFields():
            if fd.name == "energy_j" and len(value):
                return True
            if fd.message_type is not None:
                if fd.is_repeated:
                    vals = value.values() if hasattr(value, "values") else value
                    stack.extend(x for x in vals if hasattr(x, "ListFields"))
                else:
                    stack.append(value)
    return False


def report_from_trace(trace: PowerTrace, requests: pd.DataFrame, itls_s: Any, *,
                      spec: GpuPowerSpec, hardware: str) -> EnergyReport:
    """Totals, per-request shares and the 1 s series of an already computed trace."""
    total = trace.total_j
    horizon = trace.horizon_s
    out_tok = float(requests["output_tokens"].sum()) if len(requests) else 0.0
    in_tok = float(requests["input_tokens"].sum()) if len(requests) else 0.0
    pre_j = float(trace.steps["prefill_energy_j"].sum())
    power = trace.power_series(1.0)
    peak = float(power.groupby("t")["power_w"].sum().max()) if len(power) else 0.0
    per_req = attribute_to_requests(trace, requests, itls_s)
    srcs = set(trace.steps["source"]) if len(trace.steps) else {"power_state"}
    source = srcs.pop() if len(srcs) == 1 else "mixed"

    def ratio(a: float, b: float) -> float | None:
        return a / b if b > 0 else None

    return EnergyReport(
        available=True, source=source, hardware=hardware, spec=spec, energy_j=total,
        horizon_s=horizon, avg_power_w=ratio(total, horizon), peak_power_w=peak,
        j_per_output_token=ratio(total, out_tok), j_per_input_token=ratio(pre_j, in_tok),
        j_per_output_token_decode=ratio(total - pre_j, out_tok),
        tokens_per_j=ratio(in_tok + out_tok, total), num_gpus=trace.num_gpus,
        requests=pd.DataFrame({"request_id": requests["request_id"].to_numpy()
                               if len(requests) else [], "energy_j": per_req}),
        power=power, trace=trace)


def energy_report(result: ReplayResult, experiment: Experiment, *,
                  spec: GpuPowerSpec | None = None) -> EnergyReport:
    """Energy of a replay, or an "unavailable" report saying why.

    Args:
        result: a replay with its step log (``result.steps`` not ``None``).
        experiment: the experiment replayed (model, hardware, parallelism).
        spec: power spec to use (default: the shipped file matching
            ``experiment.hardware.name``).

    Returns:
        the report; ``available`` is False when there is no step log, the experiment has
        heterogeneous instance groups (not modelled yet), or no sourced power spec.
    """
    from llmsim.model.config import load_model_config

    hw = experiment.hardware.name
    if result.steps is None:
        return EnergyReport(available=False, hardware=hw, reason="the replay kept no step log")
    if experiment.instance_groups:
        return EnergyReport(available=False, hardware=hw,
                            reason="instance groups are not covered by the power model yet")
    if spec is None:
        spec = find_power_spec(hw)
    if spec is None:
        return EnergyReport(available=False, hardware=hw,
                            reason=f"no hardware power file for '{hw}' (llmsim/power/data)")
    has_measured = MEASURED_COLUMN in result.steps.columns and bool(
        np.isfinite(result.steps[MEASURED_COLUMN].to_numpy(dtype=float)).all())
    if spec.missing() and not has_measured:
        return EnergyReport(available=False, hardware=hw, spec=spec, reason=(
            f"{Path(spec.path).name or spec.name}: no sourced {', '.join(spec.missing())}; "
            "the profile has no measured energy either"))
    model = load_model_config(experiment.model_path)
    eng = experiment.engine
    gpus = eng.tensor_parallel_size * eng.pipeline_parallel_size
    par = eng.parallel_config()
    kv_tokens = float(result.summary.get("kv_cache", {}).get("num_kv_tokens", 0))
    shape = StepShape(gpus_per_instance=gpus, flops_per_token=2.0 * model.num_params() / gpus,
                      weight_bytes=model.weight_bytes(par) // eng.pipeline_parallel_size,
                      kv_bytes_per_token=model.kv_bytes_per_token(par)
                      / eng.pipeline_parallel_size,
                      kv_capacity_tokens=kv_tokens)
    ids = result.steps["instance_id"]
    n_inst = max(experiment.num_instances, int(ids.max()) + 1 if len(ids) else 0)
    if spec.missing():  # measured energy covers the steps; idle still needs a value
        return EnergyReport(available=False, hardware=hw, spec=spec, reason=(
            f"no sourced {', '.join(spec.missing())} for the gaps between measured steps"))
    trace = power_trace(result.steps, spec, shape, num_instances=n_inst)
    return report_from_trace(trace, result.requests, result.itls_s, spec=spec, hardware=hw)


def write_energy(report: EnergyReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``energy.json`` and ``power.csv`` (1 s power per GPU) atomically.

    Returns:
        the two paths written.
    """
    import json

    from llmsim.data.atomic import atomic_write_text

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    j = atomic_write_text(d / "energy.json", json.dumps(report.to_json(), indent=2,
                                                        sort_keys=True) + "\n")
    csv = report.power.to_csv(index=False) if len(report.power) else "t,gpu,power_w\n"
    c = atomic_write_text(d / "power.csv", csv)
    return j, c


def write_replay_energy(result: ReplayResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write a replay's ``summary["energy"]`` as ``energy.json`` and its power series as
    ``power.csv`` into ``out_dir`` (atomic writes; ``llmsim replay --energy``).

    Returns:
        the two paths written.
    """
    import json

    from llmsim.data.atomic import atomic_write_text
    from llmsim.power.accumulator import POWER_COLUMNS

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    j = atomic_write_text(d / "energy.json", json.dumps(result.summary.get("energy", {}),
                                                        indent=2, sort_keys=True) + "\n")
    power = result.power if result.power is not None else pd.DataFrame(columns=POWER_COLUMNS)
    c = atomic_write_text(d / "power.csv", power.to_csv(index=False))
    return j, c
