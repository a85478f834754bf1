"""Helpers of the sweep tests: a small sweep over the embedded RTX PRO 6000 example."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "examples" / "rtxpro6000-llama-3.1-8b.yaml"
NONDETERMINISTIC = ["wall_s", "cpu_s"]


def write_sweep(tmp_path: Path, body: str, *, n_requests: int = 30, name: str = "s.yaml") -> Path:
    """A sweep over the embedded example, its trace cut to ``n_requests``."""
    path = tmp_path / name
    path.write_text(f"experiment: {BASE}\n"
                    "set:\n"
                    "  engine.cudagraph_capture_sizes: null\n"
                    f"  trace.transforms: [{{truncate: {{max_requests: {n_requests}}}}}]\n"
                    + body)
    return path


GRID = ("grid:\n"
        "  engine.max_num_seqs: [8, 64]\n"
        "  instances: [1, 2]\n"
        "slo: {ttft_s: 0.5, tpot_s: 0.03, attainment: 0.9, ttft_percentile: 99}\n")


def deterministic(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=NONDETERMINISTIC).reset_index(drop=True)
