"""Factories for validation tests (imported as ``validate_factories``): hand-made measured runs
and ReplayResult-shaped results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmsim.validate.measured import MeasuredFormat, MeasuredRun

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "validate"


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeReplay:
    """The fields of ``llmsim.replay.ReplayResult`` that validation reads."""

    requests: pd.DataFrame
    itls_s: list[np.ndarray]
    timeseries: pd.DataFrame | None = None
    summary: dict = field(default_factory=dict)
    steps: pd.DataFrame | None = None
    num_steps: int = 0
    wall_time_s: float = 0.0


def make_requests(
    ttft_s, e2e_s, output_tokens, *, arrival_s=None, input_tokens=None, ids=None, success=None
) -> pd.DataFrame:
    """A request frame with ReplayResult / MeasuredRun columns from TTFT, E2E and lengths."""
    ttft = np.asarray(ttft_s, dtype=float)
    e2e = np.asarray(e2e_s, dtype=float)
    out = np.asarray(output_tokens, dtype=np.int64)
    n = len(ttft)
    arrival = np.arange(n, dtype=float) if arrival_s is None else np.asarray(arrival_s, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(out > 1, (e2e - ttft) / (out - 1), np.nan)
    return pd.DataFrame(
        {
            "request_id": [str(i) for i in range(n)] if ids is None else list(ids),
            "input_tokens": np.full(n, 100) if input_tokens is None else np.asarray(input_tokens),
            "output_tokens": out,
            "arrival_s": arrival,
            "first_scheduled_s": arrival,
            "first_token_s": arrival + ttft,
            "finish_s": arrival + e2e,
            "ttft_s": ttft,
            "tpot_s": tpot,
            "e2e_s": e2e,
            "frontend_delay_s": np.zeros(n),
            "success": np.ones(n, dtype=bool) if success is None else np.asarray(success),
            "num_preemptions": np.zeros(n, dtype=np.int64),
            "prefix_hit_tokens": np.zeros(n, dtype=np.int64),
        }
    )


def make_timeseries(**cols) -> pd.DataFrame:
    """A 1 s timeseries frame; unspecified series are zero."""
    n = len(next(iter(cols.values())))
    frame = {"t": np.arange(1, n + 1, dtype=float)}
    for name in ("prompt_throughput", "gen_throughput", "running", "waiting", "kv_cache_pct"):
        frame[name] = np.asarray(cols.get(name, np.zeros(n)), dtype=float)
    return pd.DataFrame(frame)


def make_measured(requests: pd.DataFrame, *, timeseries=None, itls=None, reference=None) -> MeasuredRun:
    return MeasuredRun(
        source=Path("/nowhere/measured"),
        format=MeasuredFormat.VLLM_DIR if itls is None else MeasuredFormat.BENCH_JSON,
        requests=requests,
        itls_s=itls,
        timeseries=timeseries,
        kv_usage_measured=timeseries is not None and bool((timeseries["kv_cache_pct"] > 0).any()),
        reference=reference,
    )

