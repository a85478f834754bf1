"""Prefill/decode disaggregation scenarios with (time, event) logs and exact times.

Constant 10 ms steps, no CPU overhead, synchronous scheduling; a link of 1 GB/s and 1 ms per
transfer; 1,000 KV bytes per token; block size 4. Every expected time is computed here
from those figures.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving_helpers import MS, LogRecorder, make_instance, make_request

from llmsim.errors import ConfigError
from llmsim.hardware.links import find_link_spec
from llmsim.pd import KVConnectorKind, KVLink, PdFlow, PdRole, kv_transfer_bytes
from llmsim.router import RoundRobin
from llmsim.scheduler.state import SeqStatus
from llmsim.sim import Simulation

STEP = 10 * MS
LAT = 1 * MS
BW = 1e9
PER_TOKEN = 1000
BS = 4


def _xfer_ns(nbytes: int, messages: int = 1) -> int:
    return messages * LAT + int(nbytes * 1e9 / BW)


def _run(requests, roles, *, connector=KVConnectorKind.NIXL, decode_blocks=64, layers=4):
    insts = [make_instance(instance_id=i, block_size=BS,
                           num_blocks=decode_blocks if r is PdRole.DECODE else 64)
             for i, r in enumerate(roles)]
    flow = PdFlow(insts, roles, connector=connector,
                  link=KVLink(bandwidth_bytes_per_s=BW, latency_ns=LAT, source="test"),
                  kv_bytes_per_token=lambda s, d: PER_TOKEN, num_layers=layers,
                  prefill_router=RoundRobin(), decode_router=RoundRobin(),
                  num_requests=len(requests), keep_log=True)
    rec = LogRecorder(requests, keep_steps=True)
    sim = Simulation(requests, insts, flow.arrival_router, rec)
    flow.install(sim)
    return flow, rec, sim, insts


def test_nixl_path_prefill_sample_reserve_pull_recompute_decode():
    req = make_request("A", prompt=8, output=3)
    flow, rec, sim, (p, d) = _run([req], [PdRole.PREFILL, PdRole.DECODE])
    sim.run()
    nbytes = 2 * BS * PER_TOKEN  # 8 prompt tokens = 2 whole blocks, pulled
    pull_end = STEP + _xfer_ns(nbytes)  # the pull starts when D reserves, at P's end
    first = pull_end + STEP  # D recomputes the last prompt token, sampling token 1
    assert sorted(flow.log, key=lambda e: e[0]) == [
        (0, "prefill scheduled A"),
        (STEP, "prefill sampled A"),
        (STEP, "decode arrival A at 1"),
        (STEP, "reserve A (2 blocks)"),
        (STEP, f"pull start A {nbytes} B"),
        (pull_end, "pull done A"),
        (first, "decode first token A"),
        (first + 2 * STEP, "finish A"),
    ]
    # P ran the prompt; D ran 1 token over 7 cached, then two decodes
    assert [x[1] for x in rec.log if x[1].startswith("step")] == [
        "step A+8*", "step A+1*", "step A+1*", "step A+1*"]
    assert rec.first_token_ns == [first] and rec.finish_ns == [first + 2 * STEP]
    assert rec.instance_of == [1] and len(rec.token_ns[0]) == 3  # P's token is discarded
    cols = flow.columns(rec.first_token_ns)
    assert cols["ttft_prefill_instance_s"][0] == pytest.approx(STEP / 1e9)
    assert cols["ttft_decode_instance_s"][0] == pytest.approx((first - STEP) / 1e9)
    assert cols["kv_transfer_bytes"][0] == nbytes
    assert p.scheduler.kv.pool.num_used == 0 and d.scheduler.kv.pool.num_used == 0
    assert not p.scheduler.kv_held and not d.scheduler.remote_kv_waiting


def test_back_pressure_full_decode_pool_keeps_request_waiting_and_prefill_blocks():
    # D holds 2 usable blocks: one 8-token prompt. B waits until A finishes there.
    reqs = [make_request("A", prompt=8, output=1), make_request("B", prompt=8, output=1)]
    flow, rec, sim, (p, d) = _run(reqs, [PdRole.PREFILL, PdRole.DECODE], decode_blocks=3)
    seen = []

    def probe(_payload, now_ns):
        seen.append((now_ns, p.scheduler.kv.pool.num_used, sorted(p.scheduler.kv_held),
                     [s.request_id for s in d.scheduler.waiting],
                     [s.status for s in d.scheduler.remote_kv_waiting.values()]))

    kind = sim.register_event("probe", 40, probe)
    x = _xfer_ns(2 * BS * PER_TOKEN)
    a_done = STEP + x + STEP  # A: pulled, then its one step (its only token) ends
    for t in (STEP + x // 2, STEP + x + 1, a_done + x // 2):
        sim.schedule(t, kind, None)
    sim.run()
    b_pull = next(t for t in flow.transfers if t.index == 1)
    assert (b_pull.ready_ns, b_pull.start_ns, b_pull.end_ns) == (a_done, a_done, a_done + x)
    assert seen == [
        # A pulling (reserved, outside running), B blocked at the head of D's queue,
        # P holding both prompts' blocks
        (STEP + x // 2, 4, [0, 1], ["B"], [SeqStatus.WAITING_FOR_REMOTE_KVS]),
        # A's pull done: P freed A's blocks, keeps B's
        (STEP + x + 1, 2, [1], ["B"], []),
        # A finished on D: B reserved, pulling; P still holds B's blocks
        (a_done + x // 2, 2, [1], [], [SeqStatus.WAITING_FOR_REMOTE_KVS]),
    ]
    assert rec.first_token_ns == [a_done, a_done + x + STEP]
    cols = flow.columns(rec.first_token_ns)
    assert cols["ttft_decode_instance_s"][1] == pytest.approx((a_done + x + STEP - STEP) / 1e9)
    assert p.scheduler.kv.pool.num_used == 0


def test_link_contention_serializes_pulls_into_one_decode_port():
    reqs = [make_request("A", prompt=8, output=2), make_request("B", prompt=8, output=2)]
    flow, rec, sim, _ = _run(reqs, [PdRole.PREFILL, PdRole.PREFILL, PdRole.DECODE])
    sim.run()
    x = _xfer_ns(2 * BS * PER_TOKEN)
    a, b = sorted(flow.transfers, key=lambda t: t.index)
    assert (a.src, a.dst, a.start_ns, a.end_ns) == (0, 2, STEP, STEP + x)
    # both were reserved at 10 ms; B's pull waits for D's ingress port
    assert (b.src, b.ready_ns, b.start_ns, b.end_ns) == (1, STEP, STEP + x, STEP + 2 * x)
    assert flow.ports.num_queued == 1 and flow.ports.busy_ns == 2 * x
    # A's first token after its own step; B promoted while D runs A, joins the next step
    assert rec.first_token_ns == [STEP + x + STEP, STEP + x + 2 * STEP]


def test_p2p_nccl_push_during_prefill_extends_the_step_and_decode_admits_at_once():
    layers = 4
    req = make_request("A", prompt=8, output=3)
    flow, rec, sim, (p, d) = _run([req], [PdRole.PREFILL, PdRole.DECODE],
                                  connector=KVConnectorKind.P2P_NCCL, layers=layers)
    sim.run()
    nbytes = 8 * PER_TOKEN  # the 8 computed tokens, pushed (no block rounding)
    send = _xfer_ns(nbytes // layers)  # one send per request and layer
    # the last layer's KV is ready at the forward's end, its send follows
    push_end = max(layers * send, STEP // layers + layers * send, STEP + send)
    assert push_end == STEP + send
    first = push_end + STEP
    assert sorted(flow.log, key=lambda e: e[0]) == [
        (0, "prefill scheduled A"),
        (push_end, "pushed 8 tokens of A"),
        (push_end, "prefill sampled A"),
        (push_end, "decode arrival A at 1"),
        (first, "decode first token A"),
        (first + 2 * STEP, "finish A"),
    ]
    assert rec.first_token_ns == [first] and not flow.transfers
    assert flow.columns(rec.first_token_ns)["kv_transfer_bytes"][0] == nbytes
    assert p.scheduler.kv.pool.num_used == 0 and d.scheduler.kv.pool.num_used == 0


def test_transfer_bytes_and_link_figures_from_the_link_files():
    assert kv_transfer_bytes(17, 100, block_size=16) == 32 * 100
    assert kv_transfer_bytes(17, 100) == 1700
    spec = find_link_spec("RTXPRO6000")
    link = KVLink.from_spec(spec)
    assert link.bandwidth_bytes_per_s == 53e9 and link.latency_ns == 10_000
    assert "rtx6kpro" in link.source
    # 1 GiB at 53 GB/s + 10 us
    assert link.duration_ns(2**30) == 10_000 + -(-(2**30) * 10**9 // 53_000_000_000)
    with pytest.raises(ConfigError, match="not supported yet: a KV transfer over link"):
        KVLink.from_spec(find_link_spec("RTX4090"))


def test_local_prefix_hits_on_the_decode_instance_are_not_pulled():
    shared = tuple(range(500, 508))  # two 4-token blocks in common
    a = make_request("A", prompt=12, output=2, ids=shared + (1, 2, 3, 4))
    b = make_request("B", arrival_ms=200, prompt=12, output=2, ids=shared + (5, 6, 7, 8))
    flow, rec, sim, (_p, d) = _run([a, b], [PdRole.PREFILL, PdRole.DECODE])
    sim.run()
    ta, tb = sorted(flow.transfers, key=lambda t: t.index)
    assert (ta.num_tokens, ta.nbytes) == (12, 12 * PER_TOKEN)
    # B hits A's first two blocks on D (cached once A's pull completed): one block pulled
    assert (tb.num_tokens, tb.nbytes) == (4, BS * PER_TOKEN)
    assert tb.end_ns - tb.start_ns == _xfer_ns(BS * PER_TOKEN)
    assert d.scheduler.kv.hit_tokens == 8


def test_reserved_blocks_are_not_cached_before_the_kv_arrives():
    # B arrives at D while A's pull is in flight: A's blocks must not serve B as hits
    shared = tuple(range(700, 708))
    a = make_request("A", prompt=12, output=2, ids=shared + (1, 2, 3, 4))
    b = make_request("B", prompt=12, output=2, ids=shared + (5, 6, 7, 8))
    flow, _rec, sim, _ = _run([a, b], [PdRole.PREFILL, PdRole.DECODE])
    sim.run()
    assert sorted(t.num_tokens for t in flow.transfers) == [12, 12]


def test_decider_sends_short_prompts_straight_to_a_decode_instance():
    reqs = [make_request("A", prompt=8, output=2), make_request("B", prompt=20, output=2)]
    insts = [make_instance(instance_id=i, block_size=BS) for i in range(2)]
    flow = PdFlow(insts, [PdRole.PREFILL, PdRole.DECODE], connector=KVConnectorKind.NIXL,
                  link=KVLink(bandwidth_bytes_per_s=BW, latency_ns=LAT, source="test"),
                  kv_bytes_per_token=lambda s, d: PER_TOKEN, num_layers=4,
                  prefill_router=RoundRobin(), decode_router=RoundRobin(), num_requests=2,
                  decide=lambda r: r.input_tokens >= 16)  # llm-d's decider: >= 16 new tokens
    rec = LogRecorder(reqs, keep_steps=True)
    sim = Simulation(reqs, insts, flow.arrival_router, rec)
    flow.install(sim)
    sim.run()
    cols = flow.columns(rec.first_token_ns)
    assert list(cols["prefill_instance_id"]) == [-1, 0] and rec.instance_of == [1, 1]
    assert [t.index for t in flow.transfers] == [1]
    # A is prefilled on the decode instance itself: first token after one 10 ms step
    assert rec.first_token_ns[0] == STEP


def test_pull_is_issued_when_the_reserving_step_is_launched():
    # D runs A's decodes with 1 ms of CPU work per step; B's blocks are reserved by the
    # schedule() at the end of one of A's steps and its READ starts with the next forward
    insts = [make_instance(instance_id=0, block_size=BS),
             make_instance(instance_id=1, block_size=BS, cpu_step_ns=MS)]
    reqs = [make_request("A", prompt=8, output=6), make_request("B", arrival_ms=25, prompt=8,
                                                                output=2)]
    flow = PdFlow(insts, [PdRole.PREFILL, PdRole.DECODE], connector=KVConnectorKind.NIXL,
                  link=KVLink(bandwidth_bytes_per_s=BW, latency_ns=LAT, source="test"),
                  kv_bytes_per_token=lambda s, d: PER_TOKEN, num_layers=4,
                  prefill_router=RoundRobin(), decode_router=RoundRobin(), num_requests=2,
                  keep_log=True)
    rec = LogRecorder(reqs, keep_steps=True)
    sim = Simulation(reqs, insts, flow.arrival_router, rec)
    flow.install(sim)
    sim.run()
    x = _xfer_ns(2 * BS * PER_TOKEN)
    # A: P 0-10, pull 10 -> 10 + x (D idle: no forward needed), D steps of 1 + 10 ms
    a_first = STEP + x + MS + STEP
    # B: P 25-35, reaches D at 35 while A decodes; D's steps end at a_first + k * 11 ms
    b_sched = next(a_first + k * (MS + STEP) for k in range(10)
                   if a_first + k * (MS + STEP) >= 35 * MS)
    tb = next(t for t in flow.transfers if t.index == 1)
    assert ("reserve B (2 blocks)" in [e for _t, e in flow.log]
            and (b_sched, "reserve B (2 blocks)") in flow.log)
    assert (tb.ready_ns, tb.start_ns, tb.end_ns) == (b_sched + MS, b_sched + MS,
                                                     b_sched + MS + x)
    assert rec.first_token_ns[0] == a_first


def test_preempted_request_waits_behind_consumers_whose_kv_arrived():
    # D holds 3 usable blocks: A (1 block) and B (2) reserved at 10 ms, B's KV arrives at
    # 12.012 ms while A's first-token step runs. At 21.004 ms A's decode needs a second
    # block: A preempts itself and nothing is scheduled. vLLM's engine calls schedule()
    # again at once; A is back in `waiting` while B, in `skipped_waiting`, is served first
    # (B holds its blocks: ahead of it, A, which cannot get 2 blocks back, stalled D for
    # good: a deadlock, shrunk from the randomized test below). The empty pass that
    # preempted A has no step record: the preemption shows in the scheduler's count.
    reqs = [make_request("A", prompt=4, output=2), make_request("B", prompt=8, output=1)]
    flow, rec, sim, (_p, d) = _run(reqs, [PdRole.PREFILL, PdRole.DECODE], decode_blocks=4)
    sim.run()
    pull_a = STEP + _xfer_ns(BS * PER_TOKEN)
    pull_b = pull_a + _xfer_ns(2 * BS * PER_TOKEN)
    assert (pull_b, "pull done B") in flow.log and pull_b < pull_a + STEP
    a_first = pull_a + STEP
    assert [x for x in rec.log if x[0] >= a_first / MS + STEP / MS] == [
        ((a_first + STEP) / MS, "step B+1*"), ((a_first + STEP) / MS, "finish B"),
        ((a_first + 2 * STEP) / MS, "step A+1*"), ((a_first + 2 * STEP) / MS, "finish A")]
    assert rec.first_token_ns == [a_first, a_first + STEP]
    assert rec.finish_ns == [a_first + 2 * STEP, a_first + STEP]
    assert d.scheduler.kv.pool.num_used == 0 and d.scheduler.num_preemptions == 1


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_pd_runs_finish_and_conserve_blocks(data):
    """Random prompts, outputs, arrivals, pool sizes and P/D counts, both connectors, full
    invariant checks every step: every request finishes, every instance ends with no block
    in use, nothing held or pulling."""
    n_p = data.draw(st.integers(1, 2))
    n_d = data.draw(st.integers(1, 2))
    connector = data.draw(st.sampled_from(list(KVConnectorKind)))
    n = data.draw(st.integers(1, 8))
    reqs = [make_request(f"r{i}", arrival_ms=data.draw(st.integers(0, 40)) + 0.0,
                         prompt=data.draw(st.integers(1, 24)),
                         output=data.draw(st.integers(1, 6))) for i in range(n)]
    reqs.sort(key=lambda r: r.arrival_ns)
    roles = [PdRole.PREFILL] * n_p + [PdRole.DECODE] * n_d
    insts = [make_instance(instance_id=i, block_size=BS, budget=data.draw(st.sampled_from([8, 64])),
                           num_blocks=data.draw(st.integers(9, 24)), max_num_seqs=4,
                           async_scheduling=data.draw(st.booleans()))
             for i in range(len(roles))]
    from llmsim.pd import LinkSharing

    sharing = (data.draw(st.sampled_from(list(LinkSharing)))
               if connector is KVConnectorKind.NIXL else LinkSharing.SERIALIZE)
    flow = PdFlow(insts, roles, connector=connector,
                  link=KVLink(bandwidth_bytes_per_s=BW, latency_ns=LAT, source="test"),
                  kv_bytes_per_token=lambda s, d: PER_TOKEN, num_layers=4,
                  prefill_router=RoundRobin(), decode_router=RoundRobin(), num_requests=n,
                  link_sharing=sharing)
    rec = LogRecorder(reqs, keep_steps=True)
    sim = Simulation(reqs, insts, flow.arrival_router, rec)
    flow.install(sim)
    sim.run()
    assert rec.num_finished == n and all(t >= 0 for t in rec.first_token_ns)
    assert [len(t) for t in rec.token_ns] == [r.output_tokens for r in reqs]
    for inst in insts:
        s = inst.scheduler
        assert s.kv.pool.num_used == 0 and not s.kv_held and not s.remote_kv_waiting


def test_fair_share_splits_a_decode_port_between_concurrent_pulls():
    from llmsim.pd import LinkSharing

    reqs = [make_request("A", prompt=8, output=2), make_request("B", prompt=8, output=2),
            make_request("C", arrival_ms=0.004, prompt=4, output=2)]
    insts = [make_instance(instance_id=i, block_size=BS) for i in range(4)]
    flow = PdFlow(insts, [PdRole.PREFILL, PdRole.PREFILL, PdRole.PREFILL, PdRole.DECODE],
                  connector=KVConnectorKind.NIXL,
                  link=KVLink(bandwidth_bytes_per_s=BW, latency_ns=LAT, source="test"),
                  kv_bytes_per_token=lambda s, d: PER_TOKEN, num_layers=4,
                  prefill_router=RoundRobin(), decode_router=RoundRobin(), num_requests=3,
                  link_sharing=LinkSharing.FAIR_SHARE)
    rec = LogRecorder(reqs, keep_steps=True)
    sim = Simulation(reqs, insts, flow.arrival_router, rec)
    flow.install(sim)
    sim.run()
    ends = {t.index: t.end_ns for t in flow.transfers}
    # A, B (8,000 B each) reach D at 10 ms; C (4,000 B) at 10.004 ms. 1 GB/s = 1 B/ns:
    # 10.000-10.004 ms: A, B at 1/2 B/ns (2,000 B each sent); then A, B, C at 1/3 B/ns:
    # C's 4,000 B take 12,000 ns -> 10.016 ms (A, B have 2,000 B left); then A, B at 1/2:
    # 4,000 ns more -> 10.020 ms. Each pull ends 1 ms (latency) after its bytes.
    assert ends == {0: STEP + 20_000 + LAT, 1: STEP + 20_000 + LAT, 2: STEP + 16_000 + LAT}
    assert flow.shared is not None and flow.shared.num_queued == 2
    assert rec.num_finished == 3
