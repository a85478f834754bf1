"""Loop extension seams: registered event kinds, step hooks, frozen hand-off descriptors."""

from __future__ import annotations

import dataclasses

import pytest
from serving_helpers import MS, LogRecorder, make_instance, make_request, make_requests

from llmsim.errors import ConfigError, InvariantError
from llmsim.router import RoundRobin
from llmsim.sim import EventKind, HandoffDescriptor, Simulation


def _sim(requests, insts):
    rec = LogRecorder(requests, keep_steps=True)
    return rec, Simulation(requests, insts, RoundRobin(), rec)


def test_registered_kind_is_dispatched_in_time_and_priority_order():
    inst = make_instance()
    reqs = make_requests(1, prompt=4, output=2)
    rec, sim = _sim(reqs, [inst])
    seen: list[tuple[float, str]] = []
    early = sim.register_event("early", 5, lambda p, t: seen.append((t / MS, f"early {p}")))
    late = sim.register_event("late", 25, lambda p, t: seen.append((t / MS, f"late {p}")))

    def hook(r, now_ns):
        seen.append((now_ns / MS, f"step {r.step}"))
        if r.step == 0:  # at the step's end: both kinds at that time, and one later
            sim.schedule(now_ns, late, "a")
            sim.schedule(now_ns, early, "b")
            sim.schedule(now_ns + 3 * MS, early, "c")

    sim.add_step_hook(hook)
    sim.run()
    # step 0 ends at 10 ms; the early kind (5) sorts before the late one (25) at 10 ms
    assert seen == [(10, "step 0"), (10, "early b"), (10, "late a"), (13, "early c"),
                    (20, "step 1")]
    assert rec.finish_ns == [20 * MS]


def test_register_refuses_a_taken_priority_and_schedule_refuses_the_past():
    inst = make_instance()
    _rec, sim = _sim(make_requests(1), [inst])
    with pytest.raises(ConfigError, match="taken by 'arrival'"):
        sim.register_event("x", int(EventKind.ARRIVAL), lambda p, t: None)
    k = sim.register_event("x", 7, lambda p, t: None)
    with pytest.raises(ConfigError, match="taken by 'x'"):
        sim.register_event("y", 7, lambda p, t: None)
    with pytest.raises(InvariantError, match="not registered"):
        sim.schedule(0, 8, None)
    sim._now_ns = 5
    with pytest.raises(InvariantError, match="before the clock"):
        sim.schedule(4, k, None)


def test_release_returns_a_frozen_descriptor_and_adopt_rebuilds_state():
    src = make_instance(instance_id=0)
    src.kv_bytes_per_token = 1000
    dst = make_instance(instance_id=1)
    seq = src.enqueue(make_request("A", prompt=8, output=3), 0, 0)
    plan = src.scheduler.schedule(0)
    assert plan is not None
    src.scheduler.update(plan)
    desc = src.release(seq, release_ns=0)
    assert isinstance(desc, HandoffDescriptor)
    assert (desc.index, desc.request_id, desc.num_computed_tokens, desc.num_output_tokens,
            desc.kv_bytes_per_rank, desc.src_tp) == (0, "A", 8, 1, 8000, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        desc.num_output_tokens = 2  # type: ignore[misc]
    assert src.scheduler.kv.pool.num_used == 0 and not src.scheduler.has_unfinished()
    new = dst.adopt(desc, 5 * MS)
    assert new is not seq and new.num_output == 1 and new.num_computed == 0
    assert new.arrival_ns == 5 * MS and list(dst.scheduler.waiting) == [new]
