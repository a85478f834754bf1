"""Validation suites: many (experiment, measured run) pairs, one table.

A suite file (YAML)::

    name: measured-runs                 # optional; default the file's stem
    bands: 12                           # Monte Carlo replays per run (0: no bands)
    sensitivity: true                   # one-at-a-time sensitivity replays
    seed: 0
    runs:
      - experiment: ../rtx4090-llama-3.1-8b.yaml   # relative to the suite file
        measured: llmservingsim/measured/RTX4090/Llama-3.1-8B   # optional: the experiment's
        name: RTX4090 Llama-3.1-8B                  # optional label

:func:`run_suite` validates each pair (:func:`llmsim.validate.pipeline.validate_experiment`,
so a mismatched pair fails the suite with its :class:`~llmsim.errors.MeasuredRunError`) and
:func:`write_suite` writes, atomically, ``suite.md``, ``suite.json`` and ``suite.html`` (one
self-contained page: the table plus every run's plots as base64 PNGs) plus each run's full
report under ``runs/<label>/``.

Per run the table gives: mean |error| over the 15 TTFT/TPOT/E2E metrics, the worst metric
and its error, band coverage (measured values inside their 90% band), the most sensitive
parameter, and LLMServingSim 2.0's published mean |error| on the same run when its summary
is in the data.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmsim.data.atomic import check_output_target, publish_dir, temp_dir_next_to
from llmsim.errors import ConfigError
from llmsim.validate.pipeline import ValidationRun, validate_experiment
from llmsim.validate.report import _num, write_report

__all__ = ["SUITE_SCHEMA", "Suite", "SuiteEntry", "SuiteFiles", "load_suite", "run_suite", "suite_dict", "write_suite"]

logger = logging.getLogger(__name__)

SUITE_SCHEMA = "llmsim.validation-suite/1"
_MAX_RUNS = 256
_MAX_BANDS = 1000
_KEYS = {"name", "bands", "sensitivity", "seed", "runs", "description"}
_RUN_KEYS = {"experiment", "measured", "name"}


@dataclass(frozen=True, slots=True, kw_only=True)
class SuiteEntry:
    """One pair of a suite.

    Attributes:
        label: the run's name in the table.
        experiment: experiment YAML (absolute).
        measured: measured run (path or data-dir relative), or None for the experiment's own.
    """

    label: str
    experiment: Path
    measured: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Suite:
    """A loaded suite file.

    Attributes:
        name: suite name.
        source: the YAML file.
        entries: the pairs, in file order.
        bands: Monte Carlo replays per run.
        sensitivity: run the sensitivity replays.
        seed: Monte Carlo seed.
    """

    name: str
    source: Path
    entries: tuple[SuiteEntry, ...]
    bands: int = 12
    sensitivity: bool = True
    seed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SuiteFiles:
    """Where a suite landed (``out_dir`` and its ``suite.md`` / ``suite.json`` / ``suite.html``)."""

    out_dir: Path
    markdown: Path
    json: Path
    html: Path


def _err(path: Path, field: str, msg: str) -> ConfigError:
    return ConfigError(msg, path=path, field=field)


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file (format in the module docstring).

    Raises:
        ConfigError: unreadable YAML, an unknown key, a wrong type, no runs, or an experiment
            file that does not exist (names the file and the dotted field).
    """
    from llmsim.yamlfile import read_yaml

    path = Path(path)
    raw, _ = read_yaml(path, what="validation suite")
    if not isinstance(raw, dict):
        raise _err(path, "", "a suite file is a mapping with a 'runs' list")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise _err(path, unknown[0], f"unknown key (known: {', '.join(sorted(_KEYS))})")
    runs = raw.get("runs")
    if not isinstance(runs, list) or not runs or len(runs) > _MAX_RUNS:
        raise _err(path, "runs", f"expected a list of 1 to {_MAX_RUNS} runs")
    bands = raw.get("bands", 12)
    if isinstance(bands, bool) or not isinstance(bands, int) or not 0 <= bands <= _MAX_BANDS:
        raise _err(path, "bands", f"expected an integer in [0, {_MAX_BANDS}], got {bands!r}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _err(path, "seed", f"expected a non-negative integer, got {seed!r}")
    sens = raw.get("sensitivity", True)
    if not isinstance(sens, bool):
        raise _err(path, "sensitivity", f"expected true or false, got {sens!r}")
    entries = []
    labels: set[str] = set()
    for i, item in enumerate(runs):
        where = f"runs[{i}]"
        if not isinstance(item, dict):
            raise _err(path, where, "expected a mapping with 'experiment'")
        bad = sorted(set(item) - _RUN_KEYS)
        if bad:
            raise _err(path, f"{where}.{bad[0]}", f"unknown key (known: {', '.join(sorted(_RUN_KEYS))})")
        exp = item.get("experiment")
        if not isinstance(exp, str) or not exp:
            raise _err(path, f"{where}.experiment", "expected a path to an experiment YAML")
        exp_path = (path.parent / exp).resolve()
        if not exp_path.is_file():
            raise _err(path, f"{where}.experiment", f"no such file: {exp_path}")
        measured = item.get("measured")
        if measured is not None and (not isinstance(measured, str) or not measured):
            raise _err(path, f"{where}.measured", "expected a measured-run path")
        if measured is not None and not Path(measured).is_absolute() and (path.parent / measured).exists():
            measured = str((path.parent / measured).resolve())
        label = item.get("name") or exp_path.stem
        if not isinstance(label, str):
            raise _err(path, f"{where}.name", "expected a string")
        if label in labels:
            raise _err(path, f"{where}.name", f"label {label!r} used twice")
        labels.add(label)
        entries.append(SuiteEntry(label=label, experiment=exp_path, measured=measured))
    name = raw.get("name") or path.stem
    if not isinstance(name, str):
        raise _err(path, "name", "expected a string")
    return Suite(name=name, source=path, entries=tuple(entries), bands=bands, sensitivity=sens, seed=seed)


def run_suite(suite: Suite, *, bands: int | None = None, sensitivity: bool | None = None
              ) -> list[tuple[SuiteEntry, ValidationRun]]:
    """Validate every pair (no reports written); ``bands`` / ``sensitivity`` override the file's.

    Raises:
        MeasuredRunError, ConfigError, DataNotFoundError: the first pair that fails.
    """
    out = []
    for entry in suite.entries:
        logger.info("suite %s: validating %s", suite.name, entry.label)
        done = validate_experiment(entry.experiment, entry.measured, write=False,
                                   bands=suite.bands if bands is None else bands,
                                   sensitivity=suite.sensitivity if sensitivity is None else sensitivity,
                                   seed=suite.seed)
        out.append((entry, done))
    return out


def _row(entry: SuiteEntry, done: ValidationRun) -> dict[str, Any]:
    c = done.comparison
    worst = max(c.latency, key=lambda r: abs(r.error_pct))
    u = done.uncertainty
    top = None
    if u is not None and u.sensitivity:
        live = [r for r in u.sensitivity if r.applicable]
        if live:
            best = max(live, key=lambda r: max(r.span_pct(k) for k in r.low_pct))
            key = max(best.low_pct, key=best.span_pct)
            top = {"parameter": best.parameter, "metric": key, "change_pct": _num(best.span_pct(key))}
    return {
        "run": entry.label,
        "experiment": str(entry.experiment),
        "measured": str(c.measured.source),
        "num_requests": c.measured.num_requests,
        "mean_abs_error_pct": _num(c.mean_abs_error_pct),
        "worst_metric": worst.key,
        "worst_error_pct": _num(worst.error_pct),
        "band_coverage": _num(u.coverage) if u is not None else None,
        "bands_inside": sum(b.inside for b in u.bands) if u is not None and u.bands else None,
        "bands_total": len(u.bands) if u is not None and u.bands else None,
        "most_sensitive": top,
        "llmservingsim_mean_abs_error_pct": _num(c.reference_mean_abs_error_pct),
    }


def suite_dict(suite: Suite, results: list[tuple[SuiteEntry, ValidationRun]]) -> dict[str, Any]:
    """``suite.json``: ``{"schema", "suite", "source", "bands", "sensitivity", "seed", "runs": [row...]}``.

    Each row: ``run``, ``experiment``, ``measured``, ``num_requests``, ``mean_abs_error_pct``,
    ``worst_metric``, ``worst_error_pct``, ``band_coverage`` (fraction or null),
    ``bands_inside``/``bands_total``, ``most_sensitive`` ({parameter, metric, change_pct} or
    null), ``llmservingsim_mean_abs_error_pct`` (null when not published).
    """
    return {
        "schema": SUITE_SCHEMA,
        "suite": suite.name,
        "source": str(suite.source),
        "bands": suite.bands,
        "sensitivity": suite.sensitivity,
        "seed": suite.seed,
        "runs": [_row(e, d) for e, d in results],
    }


def _cell(x: Any, fmt: str) -> str:
    return "-" if x is None else fmt.format(x)


def _table_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["run", "requests", "mean abs error", "worst metric", "band coverage", "most sensitive to",
            "LLMServingSim 2.0 mean abs error"]
    rows = []
    for r in data["runs"]:
        cov = "-" if r["bands_total"] is None else f"{r['bands_inside']}/{r['bands_total']}"
        top = r["most_sensitive"]
        top_s = "-" if top is None else f"{top['parameter']} ({top['metric']} {top['change_pct']:.2f}%)"
        rows.append([r["run"], str(r["num_requests"]), _cell(r["mean_abs_error_pct"], "{:.2f}%"),
                     f"{r['worst_metric']} {r['worst_error_pct']:+.2f}%", cov, top_s,
                     _cell(r["llmservingsim_mean_abs_error_pct"], "{:.2f}%")])
    return head, rows


def _markdown(data: dict[str, Any]) -> str:
    head, rows = _table_rows(data)
    out = [f"# Validation suite: {data['suite']}", "",
           (f"{len(rows)} runs; bands: {data['bands']} Monte Carlo replays per run (90% band, profile noise), "
           f"sensitivity: {'yes' if data['sensitivity'] else 'no'}. Per-run reports under `runs/`."), "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out.append("")
    return "\n".join(out)


def _html(data: dict[str, Any], out: Path, labels: dict[str, str]) -> str:
    head, rows = _table_rows(data)
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>llmsim validation suite {e(data['suite'])}</title>",
             ("<style>body{font-family:sans-serif;margin:2em;max-width:1300px}"
             "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:4px 0}</style>"),
             "</head><body>", f"<h1>Validation suite: {e(data['suite'])}</h1>",
             (f"<p>bands: {data['bands']} Monte Carlo replays per run (90% band, profile noise); "
             f"sensitivity: {'yes' if data['sensitivity'] else 'no'}.</p>"), "<table><tr>"]
    parts += [f"<th>{e(h)}</th>" for h in head]
    parts.append("</tr>")
    for r in rows:
        parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
    parts.append("</table>")
    for r in data["runs"]:
        run_dir = out / "runs" / labels[r["run"]]
        parts.append(f"<h2>{e(r['run'])}</h2><p>measured: <code>{e(r['measured'])}</code></p>")
        for png in sorted(run_dir.glob("*.png")):
            b64 = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{e(png.stem)}' src='data:image/png;base64,{b64}'>"
                         f"<figcaption>{e(png.stem)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _dir_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "run"


def write_suite(suite: Suite, results: list[tuple[SuiteEntry, ValidationRun]], out_dir: str | Path) -> SuiteFiles:
    """Write ``suite.md``, ``suite.json``, ``suite.html`` and ``runs/<label>/`` atomically.

    Raises:
        ConfigError: ``out_dir`` is a file, a directory llmsim did not write, or unwritable.
    """
    out_dir = Path(out_dir)
    check_output_target(out_dir)
    tmp = temp_dir_next_to(out_dir)
    try:
        labels: dict[str, str] = {}
        for entry, done in results:
            name = _dir_label(entry.label)
            while name in labels.values():
                name += "_"
            labels[entry.label] = name
            (tmp / "runs").mkdir(exist_ok=True)
            write_report(done.comparison, tmp / "runs" / name, uncertainty=done.uncertainty)
        data = suite_dict(suite, results)
        (tmp / "suite.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        (tmp / "suite.md").write_text(_markdown(data))
        (tmp / "suite.html").write_text(_html(data, tmp, labels))
        publish_dir(tmp, out_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConfigError(f"cannot write the suite report: {exc}", path=out_dir, field="output_dir") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SuiteFiles(out_dir=out_dir, markdown=out_dir / "suite.md", json=out_dir / "suite.json",
                      html=out_dir / "suite.html")
