"""The replay summary: latency percentiles, throughput, preemptions, prefix-cache hits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

PERCENTILES = (50, 90, 95, 99)


def distribution(values: np.ndarray) -> dict[str, float | None]:
    """``mean``, ``p50``, ``p90``, ``p95``, ``p99`` (numpy's linear percentiles), NaN dropped."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    out: dict[str, float | None] = {"mean": float(v.mean())}
    for p, q in zip(PERCENTILES, np.percentile(v, PERCENTILES), strict=True):
        out[f"p{p}"] = float(q)
    return out


def summarize(requests: pd.DataFrame, itls_s: list[np.ndarray], *, num_steps: int,
              num_preemptions: int, prefix_query_tokens: int, prefix_hit_tokens: int,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON-able summary of a replay.

    Throughputs are over the span from the first arrival to the last finish.
    """
    done = requests["finish_s"].notna()
    start = float(requests["arrival_s"].min()) if len(requests) else 0.0
    end = float(requests.loc[done, "finish_s"].max()) if done.any() else start
    span = max(end - start, 1e-12)
    out_tok = int(requests.loc[done, "output_tokens"].sum())
    in_tok = int(requests.loc[done, "input_tokens"].sum())
    all_itl = np.concatenate(itls_s) if itls_s else np.empty(0)
    summary: dict[str, Any] = {
        "num_requests": len(requests),
        "num_finished": int(done.sum()),
        "duration_s": end - start,
        "num_steps": int(num_steps),
        "ttft_s": distribution(requests["ttft_s"].to_numpy()),
        "tpot_s": distribution(requests["tpot_s"].to_numpy()),
        "e2e_s": distribution(requests["e2e_s"].to_numpy()),
        "itl_s": distribution(all_itl),
        "throughput": {
            "requests_per_s": float(done.sum()) / span,
            "output_tokens_per_s": out_tok / span,
            "prompt_tokens_per_s": in_tok / span,
            "total_tokens_per_s": (in_tok + out_tok) / span,
        },
        "num_preemptions": int(num_preemptions),
        "num_preempted_requests": int((requests["num_preemptions"] > 0).sum()),
        "prefix_cache": {
            "query_tokens": int(prefix_query_tokens),
            "hit_tokens": int(prefix_hit_tokens),
            "hit_rate": (prefix_hit_tokens / prefix_query_tokens) if prefix_query_tokens else 0.0,
        },
    }
    if extra:
        summary.update(extra)
    return summary
