"""The profile server answers exactly as the in-process profile cost model (real data)."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from bridge_testlib import REPO

from adapters.common.coster import OpFailure
from adapters.common.server import serve
from adapters.profile import ProfileCoster
from adapters.profile.coster import decode_lens_with
from llmsim.bridge import BridgeCostModel
from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.costmodel.profile_model import ProfileCostModel
from llmsim.model.config import load_model_config

PROFILE = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"
MODEL = "llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json"


def test_decode_lens_with_keeps_the_four_statistics():
    rng = random.Random(0)
    for _ in range(500):
        lens = [rng.randint(1, 5000) for _ in range(rng.randint(1, 40))]
        got = decode_lens_with(len(lens), sum(lens), max(lens), min(lens))
        assert (len(got), sum(got), max(got), min(got)) == (len(lens), sum(lens), max(lens),
                                                           min(lens))
    with pytest.raises(OpFailure):
        decode_lens_with(3, 10, 2, 1)   # 3 values in [1, 2] cannot sum to 10


def _paths(data_path):
    return data_path(PROFILE), data_path(MODEL)


def test_random_steps_equal_in_process_op_by_op(data_path):
    profile, model_path = _paths(data_path)
    model = load_model_config(model_path)
    running = serve(ProfileCoster.from_path(profile, model=model))
    rng = random.Random(7)
    try:
        for tp in (1, 2):
            ref = ProfileCostModel.from_path(profile, model=model, parallel=ParallelConfig(tensor_parallel_size=tp))
            with BridgeCostModel(running.target, model=model, tp=tp) as bridge:
                for _ in range(400):
                    prefills = tuple(
                        PrefillChunk(num_new_tokens=rng.randint(1, 2048),
                                     num_cached_tokens=rng.choice([0, rng.randint(0, 9000)]),
                                     emits_token=rng.random() < 0.7)
                        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])))
                    decodes = tuple(rng.randint(1, 9000)
                                    for _ in range(rng.choice([0, 1, 2, rng.randint(0, 300)])))
                    batch = StepBatch(prefills=prefills, decode_context_lens=decodes,
                                      parallel=ParallelConfig(tensor_parallel_size=tp))
                    want, got = ref.step_cost(batch), bridge.step_cost(batch)
                    assert got.duration_ns == want.duration_ns, batch
                    assert dict(got.breakdown_ns) == dict(want.breakdown_ns), batch
    finally:
        running.stop(0)


@pytest.mark.realdata
def test_replay_300_requests_equal_per_request(data_path):
    """The 300-request RTXPRO6000 replay over the profile server equals the in-process one."""
    from llmsim import replay
    from llmsim.experiment import load_experiment

    data_path(PROFILE)
    exp = load_experiment(REPO / "examples" / "rtxpro6000-llama-3.1-8b.yaml")
    model = load_model_config(exp.model_path)
    ref = replay.run(exp)
    running = serve(ProfileCoster.from_path(exp.profile_path, model=model))
    try:
        with BridgeCostModel(running.target, model=model) as bridge:
            got = replay.run(exp, cost_model=bridge)
            stats = bridge.stats
    finally:
        running.stop(0)
    assert len(got.requests) == 300
    pd.testing.assert_frame_equal(got.requests, ref.requests, check_exact=True)
    assert all(np.array_equal(a, b) for a, b in zip(got.itls_s, ref.itls_s, strict=True))
    assert got.num_steps == ref.num_steps
    assert stats.rpcs <= stats.steps
    assert stats.rpcs < ref.num_steps / 2   # memo + lookahead: most steps need no RPC
