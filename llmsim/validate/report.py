"""Write a validation report: ``report.md``, ``report.json``, PNG plots, per-request CSV.

The whole directory is built in a temporary sibling and moved into place at the end, so an
interrupted run never leaves a half-written report that looks complete
(:func:`llmsim.data.atomic.publish_dir`: only a previous llmsim output is ever replaced).

Everything but ``host.json`` is a function of the inputs: two identical validations write
byte-identical ``report.md``, ``report.json``, CSVs and plots. Host measurements (how long
the replay took on this machine) go to ``host.json`` only::

    {"schema": "llmsim.validation-host/1", "simulation_wall_time_s": float|null}

``report.json`` schema (``"schema": "llmsim.validation/2"``; version 1 also held
``simulation.wall_time_s``)::

    {
      "schema": "llmsim.validation/2",
      "experiment": str, "measured_source": str, "measured_format": "vllm_dir"|"bench_json",
      "num_requests": int,
      "metrics": {                       # the 15 headline metrics, then itl_* when measured
        "<metric>_<stat>": {             # metric: ttft|tpot|e2e|itl; stat: mean|p50|p90|p95|p99
          "unit": "ms", "measured": float, "simulated": float, "error_pct": float,
          "llmservingsim": {"measured": float, "simulated": float, "error_pct": float} | null,
          "no_worse_than_llmservingsim": bool | null
        }, ...
      },
      "mean_abs_error_pct": float,       # mean |error_pct| over the 15 ttft/tpot/e2e metrics
      "llmservingsim_mean_abs_error_pct": float | null,
      "all_no_worse_than_llmservingsim": bool | null,
      "paired": {"ttft"|"tpot"|"e2e": {"num_pairs", "median_abs_error_ms", "p90_abs_error_ms",
                 "median_abs_error_pct", "p90_abs_error_pct", "mean_signed_error_ms"}},
      "timeseries": {"<series>": {"measured": float|null (mean), "simulated": float (mean),
                     "error_pct": float|null (error of the mean), "nmae_pct": float|null,
                     "pearson_r": float|null, "recorded": bool, "num_ticks": int}},
      "totals": {"<key>": {"measured": float|null, "simulated": float|null,
                 "error_pct": float|null}},       # makespan_s, *_throughput_*, num_preemptions, ...
      "measurement": {"clock_offset_s", "frontend_delay_median_s", "frontend_delay_p99_s",
                      "timeline_shift_s", "kv_usage_recorded", "engine": {...}},
      "simulation": {"num_steps": int|null},
      "notes": [str], "files": [str],
      "energy": {                        # only when the replay reports energy
        "available": bool, "reason": str, "covers": [str],
        "simulated": {"energy_j", "avg_power_w", "peak_power_w", "j_per_input_token",
                      "j_per_output_token", "j_per_output_token_decode",
                      "tokens_per_j": float | "unavailable"},
        "measured": null, "note": str    # vLLM records no power (docs/power.md)
      },
      "uncertainty": {                   # only with --bands / --sensitivity
        "samples": int, "seed": int, "band_percentiles": [5.0, 95.0],
        "noise_model": {"sigma_log": float, "source": str, "num_pairs": int},
        "bands": {"<metric>_<stat>": {"measured", "simulated", "low", "high": float (ms),
                  "measured_inside": bool}},
        "band_coverage": float|null,     # fraction of the 15 metrics inside their band
        "sensitivity": {"<parameter>": {"low": str, "high": str, "description": str,
                        "applicable": bool, "note": str,
                        "low_pct"|"high_pct": {"<metric>_<stat>": float}}}  # % of nominal
      }
    }

NaN values are written as ``null``. Error definitions are in :mod:`llmsim.validate.compare`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmsim.data.atomic import publish_dir, temp_dir_next_to
from llmsim.errors import ConfigError
from llmsim.validate.compare import Comparison, MetricRow

__all__ = ["HOST_SCHEMA", "SCHEMA", "ReportFiles", "energy_dict", "format_table", "format_uncertainty", "host_dict",
           "report_dict", "uncertainty_dict", "write_report"]

logger = logging.getLogger(__name__)

SCHEMA = "llmsim.validation/2"
HOST_SCHEMA = "llmsim.validation-host/1"
MAE_TARGET_PCT = 1.0
_SERIES_LABEL = {
    "prompt_throughput": "prompt throughput (tok/s)",
    "gen_throughput": "generation throughput (tok/s)",
    "running": "running requests",
    "waiting": "waiting requests",
    "kv_cache_pct": "KV-cache usage (%)",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportFiles:
    """Where the report landed.

    Attributes:
        out_dir: the report directory.
        markdown: ``report.md``.
        json: ``report.json``.
        plots: PNG files, in report order.
        host_json: ``host.json``, the host timings kept out of the deterministic files.
    """

    out_dir: Path
    markdown: Path
    json: Path
    plots: tuple[Path, ...]
    host_json: Path


def _num(x: Any) -> Any:
    """JSON-safe number: NaN/inf -> None, numpy scalars -> Python."""
    if x is None:
        return None
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    x = float(x)
    return x if math.isfinite(x) else None


def _metric_entry(row: MetricRow) -> dict[str, Any]:
    ref = None
    if row.reference_error_pct is not None:
        ref = {
            "measured": _num(row.reference_measured_ms),
            "simulated": _num(row.reference_simulated_ms),
            "error_pct": _num(row.reference_error_pct),
        }
    return {
        "unit": "ms",
        "measured": _num(row.measured_ms),
        "simulated": _num(row.simulated_ms),
        "error_pct": _num(row.error_pct),
        "llmservingsim": ref,
        "no_worse_than_llmservingsim": row.no_worse_than_reference,
    }


def uncertainty_dict(u: Any) -> dict[str, Any]:
    """The ``uncertainty`` entry of ``report.json`` (schema in the module docstring)."""
    return {
        "samples": u.samples,
        "seed": u.seed,
        "noise_model": {"sigma_log": _num(u.noise.sigma_log), "source": u.noise.source,
                        "num_pairs": u.noise.num_pairs},
        "band_percentiles": [5.0, 95.0],
        "bands": {b.key: {"measured": _num(b.measured_ms), "simulated": _num(b.simulated_ms),
                          "low": _num(b.low_ms), "high": _num(b.high_ms), "measured_inside": b.inside}
                  for b in u.bands},
        "band_coverage": _num(u.coverage),
        "sensitivity": {r.parameter: {"low": r.low_label, "high": r.high_label, "description": r.description,
                                      "applicable": r.applicable, "note": r.note,
                                      "low_pct": {k: _num(v) for k, v in r.low_pct.items()},
                                      "high_pct": {k: _num(v) for k, v in r.high_pct.items()}}
                        for r in u.sensitivity},
    }


def report_dict(comp: Comparison, files: list[str] | None = None, uncertainty: Any = None) -> dict[str, Any]:
    """The ``report.json`` content (schema in the module docstring)."""
    m = comp.measured
    delay = m.requests["frontend_delay_s"].to_numpy(dtype=np.float64)
    delay = delay[np.isfinite(delay)]
    return {
        "schema": SCHEMA,
        "experiment": comp.name,
        "measured_source": str(m.source),
        "measured_format": str(m.format),
        "num_requests": m.num_requests,
        "metrics": {row.key: _metric_entry(row) for row in (*comp.latency, *comp.itl)},
        "mean_abs_error_pct": _num(comp.mean_abs_error_pct),
        "llmservingsim_mean_abs_error_pct": _num(comp.reference_mean_abs_error_pct),
        "all_no_worse_than_llmservingsim": comp.all_no_worse_than_reference,
        "paired": {
            p.metric: {
                "num_pairs": p.num_pairs,
                "median_abs_error_ms": _num(p.median_abs_error_ms),
                "p90_abs_error_ms": _num(p.p90_abs_error_ms),
                "median_abs_error_pct": _num(p.median_abs_error_pct),
                "p90_abs_error_pct": _num(p.p90_abs_error_pct),
                "mean_signed_error_ms": _num(p.mean_signed_error_ms),
            }
            for p in comp.paired
        },
        "timeseries": {
            s.name: {
                "measured": _num(s.measured_mean) if s.measured else None,
                "simulated": _num(s.simulated_mean),
                "error_pct": _num(s.error_pct),
                "nmae_pct": _num(s.nmae_pct),
                "pearson_r": _num(s.pearson_r),
                "recorded": s.measured,
                "num_ticks": s.num_ticks,
            }
            for s in comp.series
        },
        "totals": {
            t.key: {"measured": _num(t.measured), "simulated": _num(t.simulated), "error_pct": _num(t.error_pct)}
            for t in comp.totals
        },
        "measurement": {
            "clock_offset_s": _num(m.clock_offset_s),
            "frontend_delay_median_s": _num(np.median(delay)) if delay.size else None,
            "frontend_delay_p99_s": _num(np.percentile(delay, 99)) if delay.size else None,
            "timeline_shift_s": _num(comp.timeline_shift_s),
            "kv_usage_recorded": m.kv_usage_measured,
            "engine": m.engine,
        },
        "simulation": {"num_steps": _num(comp.sim_num_steps)},
        "notes": list(comp.notes),
        "files": files or [],
        **({"uncertainty": uncertainty_dict(uncertainty)} if uncertainty is not None else {}),
        **({"energy": energy_dict(comp.sim_energy)} if comp.sim_energy is not None else {}),
    }


ENERGY_FIGURES = ("energy_j", "avg_power_w", "peak_power_w", "j_per_input_token",
                  "j_per_output_token", "j_per_output_token_decode", "tokens_per_j")
"""The replay energy figures the report shows (definitions: docs/power.md)."""

NO_MEASURED_POWER = ("The measured run has no power: vLLM records none "
                     "(docs/power.md; vLLM 0.19 makes no NVML power or energy call)")


def energy_dict(energy: dict[str, Any]) -> dict[str, Any]:
    """The ``energy`` entry of ``report.json`` from a replay's ``summary["energy"]``."""
    def fig(x: Any) -> Any:
        return x if isinstance(x, str) else _num(x)

    return {"available": bool(energy.get("available")), "reason": energy.get("reason", ""),
            "covers": list(energy.get("covers", [])),
            "simulated": {k: fig(energy.get(k, "unavailable")) for k in ENERGY_FIGURES},
            "measured": None, "note": NO_MEASURED_POWER}


def host_dict(comp: Comparison) -> dict[str, Any]:
    """The ``host.json`` content: measurements of this host, which differ between runs."""
    return {"schema": HOST_SCHEMA, "simulation_wall_time_s": _num(comp.sim_wall_time_s)}


# --------------------------------------------------------------------------- text


def _f(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _pct(x: float | None) -> str:
    return _f(x, "{:+.2f}%")


_LABEL = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "E2E", "itl": "ITL"}
_STAT = {"mean": "mean", "p50": "p50", "p90": "p90", "p95": "p95", "p99": "p99"}


def format_table(comp: Comparison) -> str:
    """The terminal summary: latency metrics both sides plus LLMServingSim 2.0 when known."""
    has_ref = comp.reference_mean_abs_error_pct is not None
    head = f"{'metric':<10}{'measured ms':>13}{'llmsim ms':>12}{'error':>10}"
    if has_ref:
        head += f"{'LLMServingSim':>15}{'its error':>11}"
    lines = [f"validation: {comp.name or '-'} vs {comp.measured.source}", head, "-" * len(head)]
    for row in (*comp.latency, *comp.itl):
        line = (
            f"{_LABEL[row.metric] + ' ' + _STAT[row.stat]:<10}{_f(row.measured_ms):>13}"
            f"{_f(row.simulated_ms):>12}{_pct(row.error_pct):>10}"
        )
        if has_ref:
            line += f"{_f(row.reference_simulated_ms):>15}{_pct(row.reference_error_pct):>11}"
        lines.append(line)
    lines.append("-" * len(head))
    summary = f"mean |error| over 15 metrics: {comp.mean_abs_error_pct:.2f}% (target <= {MAE_TARGET_PCT:.1f}%)"
    if has_ref:
        summary += f"; LLMServingSim 2.0: {comp.reference_mean_abs_error_pct:.2f}%"
        better = comp.all_no_worse_than_reference
        summary += f"; every metric no worse than LLMServingSim: {'yes' if better else 'no'}"
    lines.append(summary)
    for p in comp.paired:
        if p.metric in ("ttft", "e2e"):
            lines.append(
                f"paired {_LABEL[p.metric]}: median |error| {_f(p.median_abs_error_ms)} ms "
                f"({_f(p.median_abs_error_pct, '{:.2f}')}%), p90 {_f(p.p90_abs_error_ms)} ms "
                f"({_f(p.p90_abs_error_pct, '{:.2f}')}%)"
            )
    for t in comp.totals[:2]:
        lines.append(f"{t.key}: measured {_f(t.measured, '{:.2f}')}, "
                     f"simulated {_f(t.simulated, '{:.2f}')} ({_pct(t.error_pct)})")
    if comp.sim_wall_time_s is not None:
        lines.append(f"simulation wall time: {comp.sim_wall_time_s:.2f} s ({comp.sim_num_steps} steps)")
    e = comp.sim_energy
    if e is not None:
        def fig(key: str, fmt: str) -> str:
            x = e.get(key, "unavailable")
            return x if isinstance(x, str) else _f(x, fmt)

        lines.append(
            f"energy (simulated; not measured by vLLM): {fig('energy_j', '{:.1f}')} J over "
            f"{', '.join(e.get('covers', []))}, avg {fig('avg_power_w', '{:.1f}')} W, "
            f"{fig('j_per_output_token', '{:.4f}')} J/output token"
            if e.get("available") else f"energy unavailable: {e.get('reason', '')}")
    return "\n".join(lines)


#: Metrics drawn in the tornado chart (the JSON has all 15).
TORNADO_METRICS = ("ttft_mean", "ttft_p50", "tpot_mean", "e2e_mean")


def _uncertainty_markdown(u: Any) -> list[str]:
    out = ["", "## Error bars", ""]
    if u.bands:
        inside = sum(b.inside for b in u.bands)
        out += [
            (f"90% bands (5th-95th percentile) over {u.samples} Monte Carlo replays (seeds {u.seed}.."
            f"{u.seed + u.samples - 1}), each with every profile point perturbed by its measurement spread. "
            f"Noise model: {u.noise.source}."),
            "",
            (f"**Band coverage: {inside}/{len(u.bands)} measured values inside their band.** A value outside "
            "says the gap is larger than the profile's measurement noise can explain (modelling error)."),
            "",
            "| metric | measured | llmsim | 90% band | measured inside |",
            "|---|---:|---:|---|:---:|",
        ]
        for b in u.bands:
            metric, stat = b.key.split("_")
            out.append(f"| {_LABEL[metric]} {stat} | {_f(b.measured_ms)} | {_f(b.simulated_ms)} | "
                       f"[{_f(b.low_ms)}, {_f(b.high_ms)}] | {'yes' if b.inside else '**no**'} |")
    if u.sensitivity:
        out += ["", "### Sensitivity (one at a time; change in % of the nominal simulated value)", ""]
        head = "| parameter | settings | " + " | ".join(
            f"{_LABEL[k.split('_')[0]]} {k.split('_')[1]}" for k in TORNADO_METRICS)
        out += [head + " | largest change |", "|---|---|" + "---:|" * len(TORNADO_METRICS) + "---|"]
        for r in u.sensitivity:
            if not r.applicable:
                out.append(f"| {r.parameter} | {r.low_label} / {r.high_label} | "
                           + " | ".join("-" for _ in TORNADO_METRICS)
                           + f" | not applicable: {r.note} |")
                continue
            cells = " | ".join(f"{r.low_pct[k]:+.2f} / {r.high_pct[k]:+.2f}" for k in TORNADO_METRICS)
            worst = max(r.low_pct, key=r.span_pct)
            out.append(f"| {r.parameter} ({r.description}) | {r.low_label} / {r.high_label} | {cells} | "
                       f"{worst} {r.span_pct(worst):.2f}%{'; ' + r.note if r.note else ''} |")
    return out


def _energy_markdown(energy: dict[str, Any]) -> list[str]:
    out = ["", "## Energy (simulated; docs/power.md)", ""]
    if not energy.get("available"):
        return out + [f"Energy unavailable: {energy.get('reason', '')}. {NO_MEASURED_POWER}."]
    covers = ", ".join(energy.get("covers", []))
    missing = energy.get("not_covered", {})
    out += [f"Covers: {covers}" + (f"; not covered (no source): {', '.join(missing)}"
                                   if missing else "") + f". {NO_MEASURED_POWER}.", "",
            "| figure | llmsim |", "|---|---:|"]
    units = {"energy_j": "J", "avg_power_w": "W", "peak_power_w": "W (1 s average)",
             "j_per_input_token": "J/input token (prefill share)",
             "j_per_output_token": "J/output token (all energy)",
             "j_per_output_token_decode": "J/output token (decode share)",
             "tokens_per_j": "tokens/J (input + output)"}
    for k in ENERGY_FIGURES:
        v = energy.get(k, "unavailable")
        out.append(f"| {k} ({units[k]}) | {v if isinstance(v, str) else f'{v:.4g}'} |")
    return out


def format_uncertainty(u: Any) -> str:
    """Terminal lines for the bands and sensitivities."""
    lines = []
    if u.bands:
        lines.append(f"90% bands over {u.samples} replays (noise sigma {u.noise.sigma_log:.2%}): "
                     f"{sum(b.inside for b in u.bands)}/{len(u.bands)} measured values inside")
        outside = [b.key for b in u.bands if not b.inside]
        if outside:
            lines.append("  measured outside the band: " + ", ".join(outside))
    for r in u.sensitivity:
        if r.applicable:
            worst = max(r.low_pct, key=r.span_pct)
            lines.append(f"sensitivity {r.parameter} {r.low_label}/{r.high_label}: largest change {worst} "
                         f"{r.low_pct[worst]:+.2f}% / {r.high_pct[worst]:+.2f}%")
        else:
            lines.append(f"sensitivity {r.parameter}: not applicable ({r.note})")
    return "\n".join(lines)


def _markdown(comp: Comparison, plots: list[str], uncertainty: Any = None) -> str:
    m = comp.measured
    has_ref = comp.reference_mean_abs_error_pct is not None
    out = [f"# Validation report: {comp.name or 'experiment'}", ""]
    out.append(f"- Measured run: `{m.source}` ({m.format}, {m.num_requests} requests)")
    if comp.sim_num_steps is not None:
        out.append(f"- Simulation: {comp.sim_num_steps} engine steps (host time in `host.json`)")
    verdict = "met" if comp.mean_abs_error_pct <= MAE_TARGET_PCT else "NOT met"
    out.append(
        f"- **Mean |error| over the 15 TTFT/TPOT/E2E metrics: {comp.mean_abs_error_pct:.2f}%** "
        f"(target <= {MAE_TARGET_PCT:.1f}%: {verdict})"
    )
    if has_ref:
        out.append("- LLMServingSim 2.0 on the same run (its published summary): "
                   f"{comp.reference_mean_abs_error_pct:.2f}%")
        ok = comp.all_no_worse_than_reference
        worse = [r.key for r in comp.latency if r.no_worse_than_reference is False]
        out.append(
            "- Every metric no worse than LLMServingSim 2.0: "
            + ("yes" if ok else f"no (worse on {', '.join(worse)})")
        )
    out += ["", "## Latency (ms; error = (simulated - measured) / measured)", ""]
    head = "| metric | measured | llmsim | error |"
    rule = "|---|---:|---:|---:|"
    if has_ref:
        head += " LLMServingSim | its error | no worse |"
        rule += "---:|---:|:---:|"
    out += [head, rule]
    for row in (*comp.latency, *comp.itl):
        line = (f"| {_LABEL[row.metric]} {row.stat} | {_f(row.measured_ms)} | {_f(row.simulated_ms)} | "
                f"{_pct(row.error_pct)} |")
        if has_ref:
            flag = {True: "yes", False: "**no**", None: "-"}[row.no_worse_than_reference]
            line += f" {_f(row.reference_simulated_ms)} | {_pct(row.reference_error_pct)} | {flag} |"
        out.append(line)
    if not comp.itl:
        out += ["", "ITL: not measured in this run format (per-token times absent)."]
    out += ["", "## Per-request errors (pairing: see the notes below)", ""]
    out += ["| metric | pairs | median abs error ms | p90 abs error ms | median abs error % | p90 abs error % "
            "| mean signed error ms |"]
    out += ["|---|---:|---:|---:|---:|---:|---:|"]
    for p in comp.paired:
        out.append(
            f"| {_LABEL[p.metric]} | {p.num_pairs} | {_f(p.median_abs_error_ms)} | {_f(p.p90_abs_error_ms)} | "
            f"{_f(p.median_abs_error_pct, '{:.2f}')} | {_f(p.p90_abs_error_pct, '{:.2f}')} | "
            f"{_f(p.mean_signed_error_ms, '{:+.1f}')} |"
        )
    if comp.series:
        out += ["", "## Time series (1 s grid)", ""]
        out += [
            ("NMAE = sum|sim - measured| / sum|measured|; r = Pearson correlation; the mean columns "
            "average each series over the grid (for the throughputs they agree by construction when "
            "both sides process the same tokens: NMAE and r measure the timing)."),
            "",
            "| series | measured mean | simulated mean | error of mean | NMAE | r |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for s in comp.series:
            if not s.measured:
                out.append(f"| {_SERIES_LABEL[s.name]} | not recorded | {_f(s.simulated_mean)} | - | - | - |")
                continue
            out.append(
                f"| {_SERIES_LABEL[s.name]} | {_f(s.measured_mean)} | {_f(s.simulated_mean)} | {_pct(s.error_pct)} | "
                f"{_f(s.nmae_pct, '{:.1f}%')} | {_f(s.pearson_r, '{:.3f}')} |"
            )
    out += ["", "## Run totals", "", "| total | measured | simulated | error |", "|---|---:|---:|---:|"]
    for t in comp.totals:
        meas = "not measured" if t.measured is None else _f(t.measured, "{:.2f}")
        out.append(f"| {t.key} | {meas} | {_f(t.simulated, '{:.2f}')} | {_pct(t.error_pct)} |")
    if comp.sim_energy is not None:
        out += _energy_markdown(comp.sim_energy)
    out += ["", "## How the measured values were read", ""]
    if m.clock_offset_s is not None:
        d = m.requests["frontend_delay_s"].to_numpy(dtype=np.float64)
        out.append(
            "- `requests.jsonl` mixes clocks: `arrival_time` is epoch, `*_ts` monotonic. Offset "
            f"monotonic - epoch = min(queued_ts - arrival_time) = {m.clock_offset_s:.6f} s. Frontend "
            f"delay (frontend arrival -> engine queue): median {np.median(d) * 1e3:.1f} ms, "
            f"p99 {np.percentile(d, 99) * 1e3:.1f} ms."
        )
        out.append(
            "- Latencies are measured from `queued_ts` (engine arrival), the reference point of "
            "LLMServingSim 2.0's published vLLM numbers, so both simulators are judged on the same values."
        )
    if comp.timeline_shift_s is not None:
        out.append(f"- Measured timeline shifted by {comp.timeline_shift_s * 1e3:+.1f} ms onto the simulation "
                   "clock (median arrival gap).")
    if m.timeseries is not None and not m.kv_usage_measured:
        out.append("- KV-cache usage was not recorded by this run (all zero while requests ran): not compared.")
    if m.engine:
        out.append("- Engine settings recorded by the run: " + ", ".join(
            f"`{k}={v}`" for k, v in m.engine.items() if k != "cudagraph_capture_sizes"))
    for note in comp.notes:
        out.append(f"- {note}")
    if uncertainty is not None:
        out += _uncertainty_markdown(uncertainty)
    if plots:
        out += ["", "## Plots", ""]
        out += [f"![{Path(p).stem}]({p})" for p in plots]
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- plots


def _cdf(ax: Any, values_s: npt.ArrayLike, label: str, style: str) -> None:
    v = np.sort(np.asarray(values_s, dtype=np.float64))
    v = v[np.isfinite(v)] * 1e3
    if v.size:
        ax.plot(v, np.arange(1, v.size + 1) / v.size, style, label=label)


def _uncertainty_plots(u: Any, save: Any, plt: Any) -> None:
    if u.bands:
        fig, ax = plt.subplots(figsize=(10, 3.8))
        y = np.arange(len(u.bands))
        rel = [(b.low_ms / b.measured_ms - 1) * 100 for b in u.bands]
        rel_hi = [(b.high_ms / b.measured_ms - 1) * 100 for b in u.bands]
        sim = [(b.simulated_ms / b.measured_ms - 1) * 100 for b in u.bands]
        ax.hlines(y, rel, rel_hi, color="C1", lw=6, alpha=0.5, label="llmsim 90% band")
        ax.plot(sim, y, "C1o", label="llmsim")
        ax.axvline(0, color="k", lw=1.2, label="measured")
        ax.set_yticks(y, [b.key for b in u.bands])
        ax.set(xlabel="% of the measured value", title="Predicted metrics with 90% bands (profile noise)")
        ax.invert_yaxis()
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        save(fig, "bands.png")
    rows = [r for r in u.sensitivity if r.applicable]
    if rows:
        fig, axes = plt.subplots(1, len(TORNADO_METRICS), figsize=(4.0 * len(TORNADO_METRICS), 0.6 * len(rows) + 1.6),
                                 squeeze=False)
        for ax, key in zip(axes[0], TORNADO_METRICS, strict=True):
            order = sorted(rows, key=lambda r: r.span_pct(key))
            y = np.arange(len(order))
            ax.barh(y, [r.low_pct[key] for r in order], color="C0", label="low setting")
            ax.barh(y, [r.high_pct[key] for r in order], color="C3", alpha=0.7, label="high setting")
            ax.set_yticks(y, [f"{r.parameter} ({r.low_label}/{r.high_label})" for r in order], fontsize=8)
            ax.axvline(0, color="k", lw=1)
            ax.set(title=f"{key}", xlabel="% change vs nominal")
            ax.grid(alpha=0.3, axis="x")
        axes[0][0].legend(fontsize=7, loc="lower left")
        save(fig, "tornado.png")


def _plots(comp: Comparison, out: Path, uncertainty: Any = None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)

    metrics = [("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "E2E latency")]
    if comp.itl:
        metrics.append(("itl", "ITL"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
    for ax, (key, title) in zip(axes, metrics, strict=True):
        if key == "itl":
            _cdf(ax, comp.measured_itls_s, "measured", "k-")
            _cdf(ax, comp.simulated_itls_s, "llmsim", "C1--")
        else:
            _cdf(ax, comp.pairs[f"{key}_measured_s"], "measured", "k-")
            _cdf(ax, comp.pairs[f"{key}_simulated_s"], "llmsim", "C1--")
        ax.set(title=f"{title} CDF", xlabel="ms", ylabel="fraction of requests")
        ax.grid(alpha=0.3)
        ax.legend()
    save(fig, "latency_cdf.png")

    fig, axes = plt.subplots(1, 3, figsize=(12.6, 3.8))
    for ax, (key, title) in zip(axes, metrics[:3], strict=True):
        m = comp.pairs[f"{key}_measured_s"].to_numpy(dtype=np.float64) * 1e3
        s = comp.pairs[f"{key}_simulated_s"].to_numpy(dtype=np.float64) * 1e3
        ax.scatter(m, s, s=6, alpha=0.6)
        both = np.concatenate([m, s])
        both = both[np.isfinite(both)]
        if both.size:
            ax.plot([both.min(), both.max()], [both.min(), both.max()], "k:", lw=1)
        ax.set(title=f"{title} per request", xlabel="measured ms", ylabel="llmsim ms")
        ax.grid(alpha=0.3)
    save(fig, "latency_scatter.png")

    if uncertainty is not None:
        _uncertainty_plots(uncertainty, save, plt)
    _power_plot(comp, save, plt)
    grid = comp.grid
    if grid is None:
        return files
    t = grid["t"].to_numpy()
    panels = [
        ("throughput.png", ["prompt_throughput", "gen_throughput"]),
        ("running_waiting.png", ["running", "waiting"]),
    ]
    kv = next((s for s in comp.series if s.name == "kv_cache_pct"), None)
    panels.append(("kv_usage.png", ["kv_cache_pct"]))
    for name, series in panels:
        fig, axes = plt.subplots(len(series), 1, figsize=(10, 2.8 * len(series)), squeeze=False)
        for ax, col in zip(axes[:, 0], series, strict=True):
            if col != "kv_cache_pct" or (kv is not None and kv.measured):
                ax.plot(t, grid[f"{col}_measured"], "k-", lw=1.2, label="measured")
            ax.plot(t, grid[f"{col}_simulated"], "C1-", lw=1.0, alpha=0.85, label="llmsim")
            title = _SERIES_LABEL[col]
            if col == "kv_cache_pct" and not (kv is not None and kv.measured):
                title += " (not recorded by the measured run)"
            ax.set(title=title, xlabel="time (s)")
            ax.grid(alpha=0.3)
            ax.legend(loc="upper right")
        save(fig, name)
    return files


def _power_plot(comp: Comparison, save: Any, plt: Any) -> None:
    """``power.png``: simulated power per node (and cluster) over time, under the generation
    throughput of both runs; only when the replay reports a power series."""
    p = comp.sim_power
    if p is None or not len(p):
        return
    fig, axes = plt.subplots(2, 1, figsize=(10, 5.6), sharex=True)
    grid = comp.grid
    if grid is not None:
        axes[0].plot(grid["t"], grid["gen_throughput_measured"], "k-", lw=1.2, label="measured")
        axes[0].plot(grid["t"], grid["gen_throughput_simulated"], "C1-", lw=1.0, label="llmsim")
        axes[0].legend(loc="upper right")
    axes[0].set(title=_SERIES_LABEL["gen_throughput"])
    axes[0].grid(alpha=0.3)
    nodes = p[p["scope"] == "node"]
    for i, (name, rows) in enumerate(nodes.groupby("name", sort=True)):
        axes[1].step(rows["t"], rows["power_w"], where="pre", color=f"C{i + 2}", lw=1.0,
                     label=f"node {name}")
    axes[1].set_ylim(bottom=0)
    cl = p[p["scope"] == "cluster"]
    if nodes["name"].nunique() > 1:
        axes[1].step(cl["t"], cl["power_w"], where="pre", color="k", lw=1.0, label="cluster")
    axes[1].set(title="power, llmsim (1 s average; not measured by vLLM)", xlabel="time (s)",
                ylabel="W")
    axes[1].grid(alpha=0.3)
    axes[1].legend(loc="upper right")
    save(fig, "power.png")


# --------------------------------------------------------------------------- writing


def write_report(comparison: Comparison, out_dir: str | Path, *, uncertainty: Any = None) -> ReportFiles:
    """Write report.md, report.json, plots and ``requests.csv`` into ``out_dir`` atomically.

    The directory is assembled under a temporary name next to ``out_dir`` and renamed into
    place; an existing ``out_dir`` (a previous llmsim output only) is replaced only once the
    new report is complete. ``host.json`` receives the host timings. With ``uncertainty``
    (:class:`llmsim.validate.uncertainty.Uncertainty`) the report adds the bands, the
    sensitivity table, ``bands.png`` and ``tornado.png``.

    Returns:
        The written paths.

    Raises:
        ConfigError: ``out_dir`` cannot be written, or is a file, device or directory llmsim
            did not write (field ``output_dir``; an OSError cause is chained).
    """
    out_dir = Path(out_dir)
    try:
        return _write_report(comparison, out_dir, uncertainty)
    except OSError as exc:
        raise ConfigError(f"cannot write the report: {exc}", path=out_dir, field="output_dir") from exc


def _write_report(comparison: Comparison, out_dir: Path, uncertainty: Any = None) -> ReportFiles:
    tmp = temp_dir_next_to(out_dir)
    try:
        plots = _plots(comparison, tmp, uncertainty)
        comparison.pairs.to_csv(tmp / "requests.csv", index=False, float_format="%.6f")
        if comparison.grid is not None:
            comparison.grid.to_csv(tmp / "timeseries.csv", index=False, float_format="%.3f")
        files = ["report.md", "report.json", "requests.csv", *plots, "host.json"]
        if comparison.grid is not None:
            files.insert(3, "timeseries.csv")
        (tmp / "report.md").write_text(_markdown(comparison, plots, uncertainty))
        report = report_dict(comparison, files, uncertainty)
        (tmp / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        (tmp / "host.json").write_text(json.dumps(host_dict(comparison), indent=2, allow_nan=False) + "\n")
        publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("validation report written to %s", out_dir)
    return ReportFiles(
        out_dir=out_dir,
        markdown=out_dir / "report.md",
        json=out_dir / "report.json",
        plots=tuple(out_dir / p for p in plots),
        host_json=out_dir / "host.json",
    )
