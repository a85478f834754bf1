"""The discrete-event loop: the one place that owns the clock and dispatches events.

Clock: integer nanoseconds. Components (router, instances, recorder, hand-off policy)
return values; only this module pushes events. Supports any number of instances, of
different hardware (each has its own step-time model), and hand-offs of sequences between
instances.

Requests with ``parent_id`` (session turns, agentic sub-requests) are released when their
parent finishes, at ``max(arrival_ns, parent finish + think_time_ns)``.
"""

from __future__ import annotations

import gc
import heapq
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmsim.errors import ConfigError, InvariantError
from llmsim.instance.instance import Instance, StepRecord
from llmsim.metrics.recorder import Recorder
from llmsim.router.base import Router
from llmsim.sim.events import EventKind, Handoff
from llmsim.trace.record import Request

logger = logging.getLogger(__name__)

HandoffPolicy = Callable[[StepRecord], Sequence[Handoff]]
"""Called after every step; returns the sequences to move to other instances."""

_END, _ARRIVAL, _HANDOFF, _START = (EventKind.STEP_END, EventKind.ARRIVAL, EventKind.HANDOFF,
                                    EventKind.STEP_START)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimStats:
    """Counters of a finished simulation.

    Attributes:
        end_ns: time of the last event.
        num_events: events dispatched.
        num_steps: engine steps over all instances.
    """

    end_ns: int
    num_events: int
    num_steps: int


class Simulation:
    """One replay: requests -> router -> instances -> recorder.

    Args:
        requests: the trace, sorted by arrival.
        instances: the serving instances (``instance_id`` = index).
        router: picks an instance per released request.
        recorder: collects metrics.
        handoff_policy: optional; moves sequences between instances after steps.
        on_finished: optional progress callback, called with the number of requests that
            finished in a step.
    """

    def __init__(self, requests: Sequence[Request], instances: Sequence[Instance],
                 router: Router, recorder: Recorder, *,
                 handoff_policy: HandoffPolicy | None = None,
                 on_finished: Callable[[int], None] | None = None) -> None:
        for i, inst in enumerate(instances):
            if inst.instance_id != i:
                raise ConfigError(f"instance {i} has instance_id {inst.instance_id}")
        self.requests = requests
        self.instances = instances
        self.router = router
        self.recorder = recorder
        self.handoff_policy = handoff_policy
        self.on_finished = on_finished
        self._heap: list[tuple[int, int, int, object]] = []
        self._seq = 0
        self._start_pending = [False] * len(instances)
        self._children: dict[int, list[int]] = {}
        self._index_of = {r.request_id: i for i, r in enumerate(requests)}

    def _push(self, time_ns: int, kind: EventKind, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_ns, kind, self._seq, payload))

    def _request_start(self, inst_id: int, now_ns: int) -> None:
        if not self._start_pending[inst_id] and not self.instances[inst_id].busy:
            self._start_pending[inst_id] = True
            self._push(now_ns, _START, inst_id)

    def _initial_events(self) -> None:
        heap = self._heap
        for i, r in enumerate(self.requests):
            if r.parent_id is not None:
                parent = self._index_of.get(r.parent_id)
                if parent is None or parent >= i:
                    raise ConfigError(f"request {r.request_id!r}: parent {r.parent_id!r} is "
                                      "not an earlier request of the trace", line=i + 1,
                                      field="parent_id")
                self._children.setdefault(parent, []).append(i)
                continue
            self._seq += 1
            heap.append((r.arrival_ns, _ARRIVAL, self._seq, i))
        heapq.heapify(heap)

    def run(self) -> SimStats:
        """Run until no event is left.

        The cyclic garbage collector is paused while the loop runs (and restored after):
        the loop allocates millions of short-lived tuples and lists but makes no reference
        cycles, and the collector's periodic full scans of the live objects (plans in
        flight, the cost model's memo, the recorder's lists) cost ~15% of a long replay.

        Raises:
            InvariantError: requests remain unfinished when the queue empties (deadlock),
                or an instance broke an invariant.
        """
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if gc_was_enabled:
                gc.enable()

    def _run(self) -> SimStats:
        self._initial_events()
        heap, recorder, instances = self._heap, self.recorder, self.instances
        pending = self._start_pending
        pop = heapq.heappop
        now_ns = 0
        n_events = 0
        while heap:
            now_ns, kind, _s, payload = pop(heap)
            n_events += 1
            if now_ns > recorder.next_tick_ns:
                recorder.advance(now_ns)
            if kind is _END:
                self._on_step_end(instances[payload], now_ns)
                # the instance is idle now (nothing in _on_step_end starts a step)
                if not pending[payload]:
                    if heap and heap[0][0] <= now_ns:
                        pending[payload] = True
                        self._push(now_ns, _START, payload)
                    else:
                        # nothing else happens at `now_ns`: the START event would be next
                        n_events += 1
                        self._start(payload, now_ns)
            elif kind is _ARRIVAL:
                self._on_arrival(payload, now_ns)
            elif kind is _START:
                pending[payload] = False
                self._start(payload, now_ns)
            else:
                self._on_handoff(payload, now_ns)
        recorder.finish(now_ns)
        if recorder.num_finished != len(self.requests):
            stuck = [i for i in instances if i.scheduler.has_unfinished()]
            raise InvariantError(
                f"simulation ended with {len(self.requests) - recorder.num_finished} "
                f"unfinished requests (instances with work: {[i.instance_id for i in stuck]})")
        return SimStats(end_ns=now_ns, num_events=n_events,
                        num_steps=sum(i.num_steps for i in instances))

    def _start(self, inst_id: int, now_ns: int) -> None:
        end_ns = self.instances[inst_id].try_start(now_ns)
        if end_ns is not None:
            self._push(end_ns, _END, inst_id)

    def _on_arrival(self, index: int, now_ns: int) -> None:
        request = self.requests[index]
        inst_id = self.router.route(request, self.instances)
        self.instances[inst_id].enqueue(request, index, now_ns)
        self.recorder.on_release(index, inst_id, now_ns)
        self._request_start(inst_id, now_ns)

    def _on_step_end(self, inst: Instance, now_ns: int) -> None:
        """Deliver the step's outputs; the caller then starts the instance's next step."""
        rec = inst.finish_step(now_ns)
        self.recorder.on_step(rec)
        finished = rec.output.finished
        if finished:
            children = self._children
            for seq in finished:
                for child in children.get(seq.index, ()):
                    r = self.requests[child]
                    self._push(max(r.arrival_ns, now_ns + r.think_time_ns), _ARRIVAL, child)
            if self.on_finished is not None:
                self.on_finished(len(finished))
        if self.handoff_policy is not None:
            for h in self.handoff_policy(rec):
                self.instances[h.src].release(h.seq)
                self._push(now_ns + h.delay_ns, _HANDOFF, h)

    def _on_handoff(self, h: Handoff, now_ns: int) -> None:
        self.instances[h.dst].adopt(h.seq, now_ns)
        # the request keeps its first release time (its TTFT counts from the original arrival)
        self.recorder.on_release(h.seq.index, h.dst, self.recorder.release_ns[h.seq.index])
        self._request_start(h.dst, now_ns)
