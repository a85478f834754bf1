"""Decode stretches priced at once: GridND.many and ProfileCostModel.decode_run_ns equal the
scalar paths bit for bit (values, extrapolation counters), and the memo key's reduction to
(count, sum, max, min) of the decode lengths changes no price."""

from __future__ import annotations

import random

import numpy as np
import pytest

from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.costmodel.profile_model import ProfileCostModel

BUNDLES = [
    ("llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16", 1),  # skew fit on
    ("llmservingsim/profiles/RTX4090/meta-llama/Llama-3.1-8B/bf16", 1),     # skew fit off
    ("llmservingsim/profiles/RTXPRO6000/Qwen/Qwen3-32B/bf16", 2),           # TP collectives
]


def _model(data_path, bundle: str, tp: int) -> ProfileCostModel:
    return ProfileCostModel.from_path(data_path(bundle),
                                    parallel=ParallelConfig(tensor_parallel_size=tp))


@pytest.mark.parametrize("bundle,tp", BUNDLES[:2])
def test_grid_many_equals_scalar_lookups(data_path, bundle, tp):
    cm = _model(data_path, bundle, tp)
    tpc = cm.tp_tables(ParallelConfig(tensor_parallel_size=tp))
    rng = random.Random(7)
    for grid in (tpc.att_dec, tpc.att_pre, tpc.att_mix):
        # on-grid points, between them, below and above every axis, ints and floats
        qs = [tuple(rng.choice([rng.randint(0, 70_000), rng.random() * 40_000,
                                float(rng.randint(1, 600)), rng.randint(0, 300)])
                    for _ in range(grid.ndim)) for _ in range(3000)]
        values, ex = grid.many(np.array(qs, dtype=np.float64))
        for q, v, e in zip(qs, values.tolist(), ex.tolist(), strict=True):
            assert grid(*q) == (v, e), q
        if grid.ndim == 2:  # one first coordinate, many second ones
            for x0 in (0, 1, 3, 7.5, 128, 200, 256, 100_000):
                xs = np.array([q[1] for q in qs[:400]], dtype=np.float64)
                values, ex = grid.many_at(x0, xs)
                for x, v, e in zip(xs.tolist(), values.tolist(), ex.tolist(), strict=True):
                    assert grid(x0, x) == (v, e), (x0, x)


@pytest.mark.parametrize("bundle,tp", BUNDLES)
def test_decode_run_equals_step_by_step(data_path, bundle, tp):
    par = ParallelConfig(tensor_parallel_size=tp)
    run_cm, step_cm = _model(data_path, bundle, tp), _model(data_path, bundle, tp)
    rng = random.Random(tp)
    for _ in range(60):
        n = rng.randint(1, 300)
        top = rng.choice([16, 300, 4000, 30_000, 70_000])
        lens = (tuple(rng.randint(1, top) for _ in range(n)) if rng.random() < 0.8
                else (rng.randint(1, top),) * n)
        k = rng.randint(1, 150)
        got = run_cm.decode_run_ns(StepBatch(decode_context_lens=lens, parallel=par), k)
        assert got is not None and got.dtype == np.int64
        want = [step_cm.step_cost(StepBatch(decode_context_lens=tuple(x + j for x in lens),
                                            parallel=par)).duration_ns for j in range(k)]
        assert got.tolist() == want
    assert run_cm.extrapolations == step_cm.extrapolations
    assert run_cm.extrapolations["attention"] > 0  # the draws above leave the grid
    assert run_cm.collective_sources == step_cm.collective_sources


def test_decode_run_refuses_prefills(data_path):
    cm = _model(data_path, *BUNDLES[0])
    batch = StepBatch(prefills=(PrefillChunk(num_new_tokens=64),), decode_context_lens=(10,))
    assert cm.decode_run_ns(batch, 4) is None
    assert cm.decode_run_ns(StepBatch(), 4) is None


def test_memo_key_by_count_sum_max_min(data_path):
    """Two batches whose decodes share count, sum, max and min price the same, whether the
    memo answers or a fresh model computes it."""
    memo, fresh = _model(data_path, *BUNDLES[0]), _model(data_path, *BUNDLES[0])
    a = StepBatch(decode_context_lens=(100, 200, 300, 400))
    b = StepBatch(decode_context_lens=(100, 250, 250, 400))
    assert memo.step_cost(a) == fresh.step_cost(a)
    assert memo.step_cost(b) == fresh.step_cost(b)  # memo hit on a's key
    fresh.clear_cache()
    c = StepBatch(decode_context_lens=(100, 201, 299, 400))
    assert memo.step_cost(c).duration_ns == _model(data_path, *BUNDLES[0]).step_cost(c).duration_ns
