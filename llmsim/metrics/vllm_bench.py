"""A replay written as a ``vllm bench serve --save-result --save-detailed`` result JSON.

Any tool that reads vLLM's benchmark results (``llmsim validate --measured``, vLLM's own
plotting, dashboards) then reads a simulated run the same way. Fields, as vLLM
(``vllm/benchmarks/serve.py``, ``benchmark()`` and ``calculate_metrics()``) names and
computes them:

* per request, in workload order (``--save-detailed``): ``input_lens``, ``output_lens``
  (tokens), ``ttfts`` (s), ``itls`` (list of s: the gaps after the first token),
  ``generated_texts`` (empty strings: a simulator generates no text), ``errors`` (``""``, or
  why the request failed), plus ``start_times`` (s from the run start: each request's
  arrival; llmsim's reader uses it for the run's timeline);
* run: ``duration`` (s, first arrival to last finish), ``completed``, ``failed``,
  ``total_input_tokens`` / ``total_output_tokens`` (completed requests),
  ``request_throughput`` (req/s), ``output_throughput`` and ``total_token_throughput``
  (tok/s), ``request_goodput`` (null: no ``--goodput`` SLOs), ``max_concurrency``,
  ``request_rate``, ``burstiness``, ``num_prompts``, ``model_id``, ``backend``;
* for each of ``ttft``, ``tpot``, ``itl``, ``e2el``: ``mean_<m>_ms``, ``median_<m>_ms``,
  ``std_<m>_ms`` (population std, as ``numpy.std``) and ``p<q>_<m>_ms`` for each requested
  percentile (``numpy.percentile``, linear; ``p99``, ``p99.9`` spelled as vLLM does). TPOT
  per request = (E2E - TTFT) / (output_len - 1), over requests with more than one output
  token; ITL over every gap of every request; E2E latency = TTFT + sum of ITLs.

A request the simulation did not finish is written as vLLM writes a failed one: TTFT 0,
no ITLs, output length 0 and a non-empty error. vLLM's ``date`` field (wall-clock time of
the run) is left out so the file is deterministic. ``request_rate`` is the workload's when
it was generated from a spec (``request_rate`` in the trace metadata; ``"inf"`` as vLLM
writes an unlimited rate), else the trace's mean offered rate, (n - 1) / (last - first
arrival).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Percentiles written by default (vLLM's ``--metric-percentiles`` default is 99).
DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0)
_UNFINISHED = "not finished in the simulated run"


def _pct_name(q: float) -> str:
    return str(int(q)) if float(q).is_integer() else str(q)


def _stats_ms(name: str, values_s: np.ndarray, percentiles: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values_s, dtype=float) * 1e3
    if v.size == 0:
        v = np.zeros(1)  # vLLM: ``np.mean(x or 0)`` - an empty metric reads as 0
    out = {f"mean_{name}_ms": float(np.mean(v)), f"median_{name}_ms": float(np.median(v)),
           f"std_{name}_ms": float(np.std(v))}
    for q in percentiles:
        out[f"p{_pct_name(q)}_{name}_ms"] = float(np.percentile(v, q))
    return out


def _offered_rate(arrival_s: np.ndarray) -> float | str:
    if arrival_s.size < 2 or arrival_s.max() <= arrival_s.min():
        return "inf"
    return float((arrival_s.size - 1) / (arrival_s.max() - arrival_s.min()))


def vllm_bench_result(requests: pd.DataFrame, itls_s: Sequence[np.ndarray], *, model_id: str | None,
                      metadata: Mapping[str, str] | None = None,
                      percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> dict[str, Any]:
    """The bench-result object of a replay (see the module docstring for every field).

    Args:
        requests: ``ReplayResult.requests`` (trace order; ``arrival_s``, ``ttft_s``,
            ``e2e_s``, ``input_tokens``, ``output_tokens``; NaN E2E = not finished).
        itls_s: ``ReplayResult.itls_s``, one array of gaps (s) per request.
        model_id: the served model's name (``model_id``).
        metadata: the trace's metadata (``request_rate``, ``burstiness``,
            ``max_concurrency`` when a workload spec generated it).
        percentiles: percentiles to write, each in [0, 100].

    Raises:
        ValueError: ``itls_s`` and ``requests`` differ in length, or a percentile is out of
            [0, 100] (programming errors: the CLI passes checked values).
    """
    n = len(requests)
    if len(itls_s) != n:
        raise ValueError(f"{len(itls_s)} ITL arrays for {n} requests")
    if any(not 0 <= q <= 100 for q in percentiles):
        raise ValueError(f"percentiles must be in [0, 100], got {list(percentiles)}")
    meta = dict(metadata or {})
    arrival = requests["arrival_s"].to_numpy(dtype=float)
    e2e = requests["e2e_s"].to_numpy(dtype=float)
    done = np.isfinite(e2e)
    ttft = np.where(done, requests["ttft_s"].to_numpy(dtype=float), 0.0)
    in_lens = requests["input_tokens"].to_numpy(dtype=np.int64)
    out_lens = np.where(done, requests["output_tokens"].to_numpy(dtype=np.int64), 0)
    itls = [list(map(float, g)) if ok else [] for g, ok in zip(itls_s, done, strict=True)]
    lat = ttft + np.array([sum(g) for g in itls])
    finish = arrival + np.where(done, lat, 0.0)
    duration = float(finish[done].max() - arrival.min()) if done.any() else 0.0
    completed = int(done.sum())
    multi = done & (out_lens > 1)
    tpot = (lat[multi] - ttft[multi]) / (out_lens[multi] - 1)
    all_itls = np.array([x for g in itls for x in g], dtype=float)
    tot_in, tot_out = int(in_lens[done].sum()), int(out_lens.sum())
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    rate: float | str = _offered_rate(arrival)
    if meta.get("request_rate"):
        r = float(meta["request_rate"])
        rate = "inf" if math.isinf(r) else r
    conc = meta.get("max_concurrency")
    out: dict[str, Any] = {
        "backend": "llmsim",
        "model_id": model_id,
        "tokenizer_id": model_id,
        "num_prompts": n,
        "request_rate": rate,
        "burstiness": float(meta.get("burstiness") or 1.0),
        "max_concurrency": int(conc) if conc else None,
        "duration": duration,
        "completed": completed,
        "failed": n - completed,
        "total_input_tokens": tot_in,
        "total_output_tokens": tot_out,
        "request_throughput": per_s(completed),
        "request_goodput": None,
        "output_throughput": per_s(tot_out),
        "total_token_throughput": per_s(tot_in + tot_out),
    }
    for name, values in (("ttft", ttft[done]), ("tpot", tpot), ("itl", all_itls), ("e2el", lat[done])):
        out.update(_stats_ms(name, values, percentiles))
    out.update({
        "input_lens": in_lens.tolist(),
        "output_lens": out_lens.tolist(),
        "ttfts": ttft.tolist(),
        "itls": itls,
        "start_times": (arrival - arrival.min()).tolist() if n else [],
        "generated_texts": [""] * n,
        "errors": ["" if ok else _UNFINISHED for ok in done],
    })
    return out


def write_vllm_bench(result: Any, path: str | Path, *, model_id: str | None,
                     metadata: Mapping[str, str] | None = None,
                     percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> Path:
    """Write a replay as a vLLM bench result JSON, atomically (temp file + rename).

    Args:
        result: a :class:`~llmsim.replay.ReplayResult`.
        path: the ``.json`` file.
        model_id: the served model's name.
        metadata: the trace's metadata (see :func:`vllm_bench_result`).
        percentiles: percentiles to write.

    The replay's ``summary["energy"]`` is added as ``llmsim_energy`` (vLLM writes no energy).

    Returns:
        The path written.

    Raises:
        ConfigError: the file cannot be written (from :func:`llmsim.data.atomic.atomic_write_text`).
    """
    from llmsim.data.atomic import atomic_write_text

    obj = vllm_bench_result(result.requests, result.itls_s, model_id=model_id, metadata=metadata,
                            percentiles=percentiles)
    energy = (getattr(result, "summary", None) or {}).get("energy")
    if energy is not None:  # vLLM's result has no energy (docs/power.md): llmsim's own key
        obj["llmsim_energy"] = energy
    return atomic_write_text(path, json.dumps(obj, indent=1) + "\n")
