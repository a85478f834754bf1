"""Scheduler scenarios against a constant-cost fake (10 ms per step, no CPU overhead).

Each scenario asserts the full ``(time_ms, event)`` log: ``step X+n*`` means request X got
``n`` tokens in the step ending at that time and ``*`` that the step sampled a token for it.
"""

from __future__ import annotations

import pytest
from serving_helpers import MS, make_instance, make_request, make_requests, simulate

from llmsim.errors import InvariantError


def test_partial_prefill_under_budget():
    inst = make_instance(budget=16)
    rec, _ = simulate([make_request("A", prompt=40, output=3)], inst)
    assert rec.log == [
        (10, "step A+16"), (20, "step A+16"), (30, "step A+8*"),
        (40, "step A+1*"), (50, "step A+1*"), (50, "finish A"),
    ]
    assert rec.first_token_ns[0] == 30 * MS
    assert rec.token_ns[0] == [30 * MS, 40 * MS, 50 * MS]


def test_decode_and_prefill_mix_in_one_step():
    inst = make_instance(budget=16)
    reqs = [make_request("A", prompt=8, output=4),
            make_request("B", arrival_ms=5, prompt=20, output=2)]
    rec, _ = simulate(reqs, inst)
    assert rec.log == [
        (10, "step A+8*"), (20, "step A+1* B+15"), (30, "step A+1* B+5*"),
        (40, "step A+1* B+1*"), (40, "finish A"), (40, "finish B"),
    ]


def test_preempt_tail_no_admission_then_recover_from_cache():
    # 6 usable blocks of 4 tokens. A (8 prompt) and B (12 prompt) fill 5; when both need a
    # new block, A (admitted first) gets the last one and B, the tail, is preempted. C,
    # waiting since 5 ms, is NOT admitted in that step although blocks were just freed.
    inst = make_instance(num_blocks=7, block_size=4, budget=64)
    reqs = [make_request("A", prompt=8, output=3), make_request("B", prompt=12, output=3),
            make_request("C", arrival_ms=5, prompt=4, output=1)]
    rec, _ = simulate(reqs, inst)
    assert rec.log == [
        (10, "step A+8* B+12*"),
        (20, "preempt B"), (20, "step A+1*"),
        (30, "step A+1*"), (30, "finish A"),      # B at the queue head needs 4 blocks, 3 free
        (40, "step B+1* C+4*"), (40, "finish C"),  # B recomputes 1 token: 12 from cache
        (50, "step B+1*"), (50, "finish B"),
    ]
    kv = inst.scheduler.kv
    assert kv.hit_tokens == 12  # B's prompt blocks survived on the free list
    assert rec.num_preemptions == [0, 1, 0]
    assert inst.scheduler.num_preemptions == 1
    # B's tokens: first at 10, then after recovery at 40 and 50
    assert rec.token_ns[1] == [10 * MS, 40 * MS, 50 * MS]


def test_preemption_victim_is_most_recently_admitted():
    # three decoding requests; the pool runs out when the first needs a block:
    # the tail (C) is preempted, not B.
    inst = make_instance(num_blocks=7, block_size=4, budget=64)
    reqs = [make_request("A", prompt=8, output=2), make_request("B", prompt=8, output=2),
            make_request("C", prompt=7, output=3)]
    rec, _ = simulate(reqs, inst)
    assert rec.log[:3] == [(10, "step A+8* B+8* C+7*"), (20, "preempt C"),
                           (20, "step A+1* B+1*")]


def test_max_num_seqs_caps_admission():
    inst = make_instance(max_num_seqs=2)
    rec, _ = simulate(make_requests(3, prompt=4, output=2), inst)
    assert rec.log == [
        (10, "step r0+4* r1+4*"), (20, "step r0+1* r1+1*"), (20, "finish r0"), (20, "finish r1"),
        (30, "step r2+4*"), (40, "step r2+1*"), (40, "finish r2"),
    ]


def test_prefix_hit_skips_cached_blocks_and_is_capped():
    ids = tuple(range(100, 110))
    a = make_request("A", prompt=10, output=2, ids=ids)
    b = make_request("B", arrival_ms=25, prompt=10, output=2, ids=ids[:8] + (7, 7))
    c = make_request("C", arrival_ms=50, prompt=8, output=1, ids=ids[:8])
    rec, _ = simulate([a, b, c], make_instance(block_size=4))
    assert rec.log == [
        (10, "step A+10*"), (20, "step A+1*"), (20, "finish A"),
        (35, "step B+2*"), (45, "step B+1*"), (45, "finish B"),
        # C's whole prompt (2 blocks) is cached, but one token must be computed: 1 block hit
        (60, "step C+4*"), (60, "finish C"),
    ]
    assert rec.prefix_hit_tokens == [0, 8, 4]


def test_generated_tokens_are_cached_too():
    # A's output ids are known: a later request whose prompt is A's prompt + output hits them.
    ids = tuple(range(8))
    a = make_request("A", prompt=8, output=5, ids=ids, output_token_ids=(50, 51, 52, 53, 54))
    b = make_request("B", arrival_ms=100, prompt=13, output=1, ids=ids + (50, 51, 52, 53, 54))
    rec, _ = simulate([a, b], make_instance(block_size=4))
    # A computed 8 prompt + 4 generated tokens' KV = 12 tokens = 3 full blocks
    assert rec.prefix_hit_tokens[1] == 12


def test_reserve_full_isl_blocks_admission_until_whole_prompt_fits():
    # 5 usable blocks of 4 tokens, budget 8. B's 12-token prompt needs 3 blocks.
    reqs = [make_request("A", prompt=8, output=4), make_request("B", prompt=12, output=1)]
    loose, _ = simulate(reqs, make_instance(num_blocks=6, budget=8, reserve_full_isl=False))
    # admitted on its first chunk, B is preempted as soon as its second chunk needs a block
    assert loose.log[:4] == [(10, "step A+8*"), (20, "step A+1* B+7"), (30, "preempt B"),
                             (30, "step A+1*")]
    strict, _ = simulate(reqs, make_instance(num_blocks=6, budget=8, reserve_full_isl=True))
    assert strict.log == [
        (10, "step A+8*"), (20, "step A+1*"), (30, "step A+1*"), (40, "step A+1*"),
        (40, "finish A"), (50, "step B+8"), (60, "step B+4*"), (60, "finish B"),
    ]
    assert strict.num_preemptions == [0, 0]


def test_async_scheduling_sees_arrivals_one_step_later():
    reqs = [make_request("A", prompt=8, output=3),
            make_request("B", arrival_ms=5, prompt=8, output=1)]
    sync_rec, _ = simulate(reqs, make_instance(async_scheduling=False))
    async_rec, _ = simulate(reqs, make_instance(async_scheduling=True))
    assert sync_rec.log == [(10, "step A+8*"), (20, "step A+1* B+8*"), (20, "finish B"),
                            (30, "step A+1*"), (30, "finish A")]
    # step 2 was scheduled when step 1 started (0 ms), before B arrived
    assert async_rec.log == [(10, "step A+8*"), (20, "step A+1*"), (30, "step A+1* B+8*"),
                             (30, "finish A"), (30, "finish B")]


def test_cpu_overhead_adds_without_async_and_hides_with_it():
    reqs = [make_request("A", prompt=8, output=3)]
    s, _ = simulate(reqs, make_instance(cpu_step_ns=2 * MS))
    a, _ = simulate(reqs, make_instance(cpu_step_ns=2 * MS, async_scheduling=True))
    assert s.token_ns[0] == [12 * MS, 24 * MS, 36 * MS]
    assert a.token_ns[0] == [12 * MS, 22 * MS, 32 * MS]  # only the first step waits for the CPU


def test_invariant_violation_names_request_and_step():
    inst = make_instance()
    _rec, _ = simulate([make_request("A", prompt=8, output=2)], inst)
    sch = inst.scheduler
    seq_req = make_request("Z", prompt=8, output=4)
    seq = inst.enqueue(seq_req, 0, 0)
    plan = sch.schedule(0)
    assert plan is not None
    seq.blocks.append(seq.blocks[0])  # corrupt: one block too many, referenced twice
    with pytest.raises(InvariantError, match=r"step 7.*request Z"):
        sch.check_invariants(full=True, step=7)


def _chunked_off(**kw):
    from dataclasses import replace

    inst = make_instance(**kw)
    sched = inst.scheduler
    sched.config = replace(sched.config, enable_chunked_prefill=False)
    return inst


def test_without_chunked_prefill_a_prompt_is_admitted_whole_or_waits():
    # budget 16: A (8) is admitted, B (12) does not fit the 8 left and waits (vLLM stops
    # admission there, so C (4) behind it waits too); with chunked prefill B would get 8
    inst = _chunked_off(budget=16)
    reqs = [make_request("A", prompt=8, output=2), make_request("B", prompt=12, output=2),
            make_request("C", prompt=4, output=1)]
    rec, _ = simulate(reqs, inst)
    assert rec.log == [
        (10, "step A+8*"), (20, "step A+1* B+12*"), (20, "finish A"),
        (30, "step B+1* C+4*"), (30, "finish B"), (30, "finish C"),
    ]
    on = make_instance(budget=16)
    rec_on, _ = simulate([make_request("A", prompt=8, output=2),
                          make_request("B", prompt=12, output=2),
                          make_request("C", prompt=4, output=1)], on)
    assert rec_on.log[0] == (10, "step A+8* B+8")


def test_without_chunked_prefill_a_prompt_above_the_budget_is_refused():
    from llmsim.errors import ConfigError

    inst = _chunked_off(budget=16)
    with pytest.raises(ConfigError, match="enable_chunked_prefill false"):
        simulate([make_request("A", prompt=40, output=2)], inst)
