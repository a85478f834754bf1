"""Decode fast-forward through the bridge: ``BridgeCostModel.decode_run`` prices a decode
stretch in one request, each step exactly as ``step_cost`` prices it (real data)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from bridge_testlib import REPO, h100_coster

from adapters.common.coster import ServerInfo
from adapters.common.server import serve
from adapters.profile import ProfileCoster
from llmsim.bridge import BridgeCostModel
from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.costmodel.profile_model import ProfileCostModel
from llmsim.model.config import load_model_config
from llmsim.v1 import cost_model_pb2 as pb

PROFILE = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"
MODEL = "llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json"


def _random_decodes(rng: random.Random) -> tuple[int, ...]:
    return tuple(rng.randint(2, 9000) for _ in range(rng.choice([1, 2, 3, rng.randint(1, 200)])))


def _check_runs(coster, model, rng, *, reference=None, with_energy=False) -> None:
    running = serve(coster)
    try:
        with BridgeCostModel(running.target, model=model) as run_side, \
                BridgeCostModel(running.target, model=model) as step_side:
            for _ in range(60):
                lens = _random_decodes(rng)
                k = rng.choice([1, 2, rng.randint(3, 300)])
                batch = StepBatch(decode_context_lens=lens)
                run = run_side.decode_run(batch, k)
                assert run is not None
                assert run.duration_ns.dtype == np.int64 and run.duration_ns.shape == (k,)
                if reference is not None:
                    want_run = reference.decode_run(batch, k)
                    assert np.array_equal(run.duration_ns, want_run.duration_ns), (lens, k)
                for j in sorted(rng.sample(range(k), min(k, 5))):
                    step_j = StepBatch(decode_context_lens=tuple(x + j for x in lens))
                    want = step_side.step_cost(step_j)
                    got = run.cost_at(j)
                    assert int(run.duration_ns[j]) == got.duration_ns == want.duration_ns
                    assert list(got.breakdown_ns.items()) == list(want.breakdown_ns.items())
                    assert got.energy_j == want.energy_j
                    assert (got.energy_j is not None) == with_energy
            steps_before = run_side.stats.steps
            run.count(3)
            assert run_side.stats.steps == steps_before + 3
            # a step with a prefill chunk is not a decode stretch
            chunk = PrefillChunk(num_new_tokens=64, num_cached_tokens=0)
            assert run_side.decode_run(StepBatch(prefills=(chunk,), decode_context_lens=(9,)),
                                       4) is None
            assert run_side.decode_run(StepBatch(decode_context_lens=(9,)), 0) is None
    finally:
        running.stop(0)


def test_decode_run_equals_step_cost_per_step_profile_server(data_path):
    profile, model_path = data_path(PROFILE), data_path(MODEL)
    model = load_model_config(model_path)
    _check_runs(ProfileCoster.from_path(profile, model=model), model, random.Random(3),
                reference=ProfileCostModel.from_path(profile, model=model))


class _EnergyCoster:
    """The roofline coster with an energy on every answer (a test double: 300 W times the
    latency, and no energy for one operator name, so both composition branches run)."""

    def __init__(self, without_energy: str = "") -> None:
        self.inner = h100_coster()
        self.without_energy = without_energy

    def info(self) -> ServerInfo:
        return dataclasses.replace(self.inner.info(), provides_energy=True)

    def cost_batch(self, queries: Sequence[pb.OpQuery]) -> list[pb.OpAnswer]:
        answers = self.inner.cost_batch(queries)
        for query, answer in zip(queries, answers, strict=True):
            if answer.HasField("cost") and query.op_name != self.without_energy:
                answer.cost.energy_j = answer.cost.latency_ns * 1e-9 * 300.0
        return answers


@pytest.mark.parametrize("without_energy", ["", "lm_head", "attention", "qkv_proj"])
def test_decode_run_composes_energy_as_step_cost(data_path, without_energy):
    """With energies in the answers, each run step adds them as step_cost does."""
    model = load_model_config(data_path(MODEL))
    _check_runs(_EnergyCoster(without_energy), model, random.Random(5),
                with_energy=not without_energy)


@pytest.mark.realdata
def test_replay_over_the_bridge_fast_forwards_and_equals_exact_steps(data_path):
    """The 300-request replay over the profile server fast-forwards decode stretches (fewer
    step_cost lookups) and equals both the step-by-step bridge replay and the in-process one."""
    from llmsim import replay
    from llmsim.experiment import load_experiment

    data_path(PROFILE)
    exp = load_experiment(REPO / "examples" / "rtxpro6000-llama-3.1-8b.yaml")
    model = load_model_config(exp.model_path)
    ref = replay.run(exp)
    running = serve(ProfileCoster.from_path(exp.profile_path, model=model))
    try:
        with BridgeCostModel(running.target, model=model) as bridge:
            fast = replay.run(exp, cost_model=bridge)
            fast_lookups = bridge.stats.lookups
        with BridgeCostModel(running.target, model=model) as bridge:
            exact = replay.run(exp, cost_model=bridge, exact_steps=True)
            exact_lookups = bridge.stats.lookups
    finally:
        running.stop(0)
    ff = fast.summary["fast_forward"]
    assert ff["runs"] > 0 and ff["steps_fast_forwarded"] > 0
    assert ff == ref.summary["fast_forward"]
    assert exact.summary["fast_forward"]["runs"] == 0
    assert fast_lookups < exact_lookups
    for got in (fast, exact):
        pd.testing.assert_frame_equal(got.requests, ref.requests, check_exact=True)
        pd.testing.assert_frame_equal(got.timeseries, ref.timeseries, check_exact=True)
        assert all(np.array_equal(a, b) for a, b in zip(got.itls_s, ref.itls_s, strict=True))
        assert got.num_steps == ref.num_steps


def test_parse_spec_split_guesses():
    from llmsim.bridge.client import parse_spec
    from llmsim.errors import ConfigError

    assert parse_spec("grpc://127.0.0.1:5")[1].split_guesses is True
    assert parse_spec("grpc://127.0.0.1:5?split_guesses=0")[1].split_guesses is False
    with pytest.raises(ConfigError, match="split_guesses"):
        parse_spec("grpc://127.0.0.1:5?split_guesses=maybe")


@pytest.mark.realdata
def test_one_answer_per_request_changes_no_result(data_path, monkeypatch):
    """split_guesses=False (guesses answered with the needed queries, one message) asks the
    same requests, receives fewer answer messages and gives the same replay."""
    from llmsim import replay
    from llmsim.bridge import BridgeOptions, transport
    from llmsim.experiment import load_experiment

    data_path(PROFILE)
    exp = load_experiment(REPO / "examples" / "rtxpro6000-llama-3.1-8b.yaml")
    model = load_model_config(exp.model_path)
    received = [0]
    recv = transport.CostStream.recv

    def counting_recv(self):
        received[0] += 1
        return recv(self)

    monkeypatch.setattr(transport.CostStream, "recv", counting_recv)
    running = serve(ProfileCoster.from_path(exp.profile_path, model=model))
    got = {}
    try:
        for split in (True, False):
            received[0] = 0
            with BridgeCostModel(running.target, model=model,
                                 options=BridgeOptions(split_guesses=split)) as bridge:
                result = replay.run(exp, cost_model=bridge)
                got[split] = (result, bridge.stats, received[0])
    finally:
        running.stop(0)
    (a, sa, na), (b, sb, nb) = got[True], got[False]
    pd.testing.assert_frame_equal(a.requests, b.requests, check_exact=True)
    assert sa.streamed and sb.streamed
    assert (sa.rpcs, sa.queries_sent, sa.speculative_sent) == (sb.rpcs, sb.queries_sent,
                                                                sb.speculative_sent)
    assert nb == sb.rpcs < na   # one answer per request instead of two for most
