"""Step-cost evaluations per second of the profile cost model on a realistic batch mix.

Mix (3,000 distinct batches, seeded): 60% decode-only batches of 1-128 decodes with KV
lengths 20-4,000; 30% one prefill chunk (1-1,500 new tokens, a third with 0-3,000 cached)
plus 0-128 decodes; 10% two to four prefill chunks plus 0-64 decodes. RTXPRO6000
Llama-3.1-8B TP1 profile. Targets: >= 20,000/s uncached, >= 500,000/s memoized.
"""

from __future__ import annotations

import random

import pytest

from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.costmodel.profile_model import ProfileCostModel
from llmsim.data import dataset_path
from llmsim.errors import DataNotFoundError

BUNDLE = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"
NUM_BATCHES = 3000


def make_batches(n: int, seed: int = 0) -> list[StepBatch]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        dec = tuple(rng.randint(20, 4000) for _ in range(rng.randint(1, 128)))
        if r < 0.6:
            out.append(StepBatch(decode_context_lens=dec))
        elif r < 0.9:
            cached = rng.choice([0, 0, rng.randint(0, 3000)])
            chunk = PrefillChunk(num_new_tokens=rng.randint(1, 1500), num_cached_tokens=cached)
            out.append(StepBatch(prefills=(chunk,),
                                 decode_context_lens=dec[: rng.randint(0, len(dec))]))
        else:
            chunks = tuple(PrefillChunk(num_new_tokens=rng.randint(1, 500),
                                        num_cached_tokens=rng.randint(0, 2000))
                           for _ in range(rng.randint(2, 4)))
            out.append(StepBatch(prefills=chunks, decode_context_lens=dec[: rng.randint(0, 64)]))
    return out


def _copies(batches: list[StepBatch]) -> list[StepBatch]:
    """Equal batches built from fresh tuples, as a serving loop would hand them over."""
    return [StepBatch(prefills=tuple(list(b.prefills)),
                      decode_context_lens=tuple(list(b.decode_context_lens)),
                      parallel=b.parallel)
            for b in batches]


@pytest.fixture(scope="module")
def model() -> ProfileCostModel:
    try:
        bundle = dataset_path(BUNDLE)
    except DataNotFoundError as exc:
        pytest.skip(str(exc))
    return ProfileCostModel.from_path(bundle)


def test_step_cost_uncached(benchmark, model):
    batches = make_batches(NUM_BATCHES)
    assert len(set(batches)) == len(batches)

    def run():
        step_cost = model.step_cost
        for b in batches:
            step_cost(b)

    benchmark.pedantic(run, setup=model.clear_cache, rounds=5, iterations=1)
    rate = len(batches) / benchmark.stats.stats.mean
    print(f"\nprofile cost model, uncached: {rate:,.0f} step-cost evaluations/s "
          f"({len(batches)} distinct batches; mean {benchmark.stats.stats.mean * 1e3:.1f} ms)")
    assert rate > 0


def test_step_cost_memoized(benchmark, model):
    batches = make_batches(NUM_BATCHES)
    model.clear_cache()
    for b in batches:
        model.step_cost(b)
    fresh = _copies(batches)

    def run():
        step_cost = model.step_cost
        for b in fresh:
            step_cost(b)

    benchmark.pedantic(run, rounds=20, iterations=1)
    rate = len(fresh) / benchmark.stats.stats.mean
    print(f"\nprofile cost model, memoized: {rate:,.0f} step-cost evaluations/s "
          f"(equal batches rebuilt from fresh tuples)")
    assert rate > 0
