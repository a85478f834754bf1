"""The discrete-event loop: the one place that owns the clock and dispatches events.

Clock: integer nanoseconds. Components (router, instances, recorder, hand-off policy)
return values; only this module pushes events. Supports any number of instances, of
different hardware (each has its own step-time model), and hand-offs of requests between
instances (a frozen :class:`~llmsim.instance.handoff.HandoffDescriptor` travels, never a
live sequence).

Extensions (e.g. prefill/decode disaggregation, :mod:`llmsim.pd`) add event kinds without
editing the loop: :meth:`Simulation.register_event` gives a kind a priority and a handler,
:meth:`Simulation.schedule` pushes one, :meth:`Simulation.add_step_hook` sees every finished
step, :meth:`Simulation.request_start` wakes an instance. The three hot kinds (step end,
arrival, step start) are dispatched inline; every other kind, hand-offs included, through
one dict lookup in the loop's last branch, so registering kinds costs the hot path nothing.

Requests with ``parent_id`` (session turns, agentic sub-requests) are released when their
parent finishes, at ``max(arrival_ns, parent finish + think_time_ns)``.

The trace's own arrivals are not pushed on the heap: they are already sorted, so the loop
reads them from the trace in order and merges them with the heap by the same ``(time,
kind, sequence)`` key (they take sequence numbers ``1..n`` before any other event, exactly
as if pushed first). The heap then holds only the events in flight (a few per instance plus
released session turns), so 10^7 requests arriving together cost O(1) per event instead of
O(log 10^7) cache-missing heap moves.

The simulated clock is bounded by :data:`MAX_SIMULATED_NS`.
"""

from __future__ import annotations

import gc
import heapq
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmsim.errors import ConfigError, InvariantError, TraceFormatError
from llmsim.instance.instance import Instance, StepRecord
from llmsim.metrics.recorder import Gauges, Recorder
from llmsim.router.base import RoundRobin, Router
from llmsim.sim.events import EventKind, Handoff, HandoffOrder
from llmsim.trace.record import Request

logger = logging.getLogger(__name__)

HandoffPolicy = Callable[[StepRecord], Sequence[HandoffOrder]]
"""Called after every step; returns the sequences to move to other instances."""

EventHandler = Callable[[Any, int], object]
"""Handler of a registered event kind: ``handler(payload, now_ns)``."""

StepHook = Callable[[StepRecord, int], object]
"""Called with every finished step's record and the time, after the recorder saw it."""

_END, _ARRIVAL, _HANDOFF, _START = (EventKind.STEP_END, EventKind.ARRIVAL, EventKind.HANDOFF,
                                    EventKind.STEP_START)

_ROUTE_AHEAD_MAX = 256
"""Most trace arrivals routed ahead of the loop (:meth:`Simulation._next_arrival_ns`)."""

MAX_SIMULATED_NS = 10 * 365 * 86_400 * 1_000_000_000
"""Ceiling on the simulated clock, ns (10 years of 365 days, ~3.2e17 ns).

Far past any trace (the public ones span an hour to a few months), and 29x below the int64
range (~292 years) in which the recorder's tables hold times, so no output overflows. An
arrival beyond it is refused up front (``TraceFormatError`` naming the request); an event
beyond it in the run (a session turn's think time, or steps priced near
``MAX_STEP_COST_NS`` for years) stops the run with an error naming what got there.
"""


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
        requests: the trace, sorted by arrival (an unsorted one is replayed in stable
            arrival order, as a heap of all arrivals would).
        instances: the serving instances (``instance_id`` = index).
        router: picks an instance per released request.
        recorder: collects metrics.
        handoff_policy: optional; moves sequences between instances after steps (a step
            hook, :meth:`add_step_hook`).
        on_finished: optional progress callback, called with the number of requests that
            finished in a step.
    """

    def __init__(self, requests: Sequence[Request], instances: Sequence[Instance],
                 router: Router, recorder: Recorder, *,
                 handoff_policy: HandoffPolicy | None = None,
                 on_finished: Callable[[int], object] | None = None) -> None:
        for i, inst in enumerate(instances):
            if inst.instance_id != i:
                raise ConfigError(f"instance {i} has instance_id {inst.instance_id}")
        self.requests = requests
        self.instances = instances
        self.router = router
        self.recorder = recorder
        self.handoff_policy = handoff_policy
        self.on_finished = on_finished
        self._heap: list[tuple[int, int, int, Any]] = []
        self._seq = 0
        self._handlers: dict[int, EventHandler] = {EventKind.HANDOFF: self._on_handoff}
        self._kind_names: dict[int, str] = {int(k): k.name.lower() for k in EventKind}
        self._step_hooks: list[StepHook] = []
        if handoff_policy is not None:
            self.add_step_hook(self._apply_handoff_policy)
        self._start_pending = [False] * len(instances)
        self._now_ns = 0  # the clock as extensions see it (set before they are called)
        self._root_ns: int | None = None  # the next trace arrival (set by _run)
        # routing ahead (_next_arrival_ns): only for a router that reads no instance state
        inner = getattr(router, "inner", router)
        self._route_ahead = type(inner) is RoundRobin
        self._ahead: list[deque[int]] = [deque() for _ in instances]  # arrival times
        self._ahead_target: dict[int, int] = {}  # trace index -> instance routed ahead
        self._ahead_pos = 0  # roots routed so far (ahead or not)
        self._ahead_done = 0  # roots processed
        self._children: dict[int, list[int]] = {}
        self._min_think_ns = 0  # shortest think time of a session turn (_ff_until)
        self._roots: list[int] = []  # trace indices of the requests without a parent

    def _push(self, time_ns: int, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_ns, kind, self._seq, payload))

    # ------------------------------------------------------------ extensions
    def register_event(self, name: str, priority: int, handler: EventHandler) -> int:
        """Add an event kind handled by ``handler(payload, now_ns)``.

        Args:
            name: label (error messages).
            priority: order at equal time (lower first), an int no other kind uses; the
                core kinds are ``STEP_END = 0 < ARRIVAL = 10 < HANDOFF = 20 < STEP_START =
                30`` (:class:`~llmsim.sim.events.EventKind`).
            handler: called when an event of this kind is due.

        Returns:
            The kind to pass to :meth:`schedule`.

        Raises:
            ConfigError: ``priority`` is not a non-negative int, or taken.
        """
        if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
            raise ConfigError(f"event kind {name!r}: priority must be an int >= 0, got "
                              f"{priority!r}")
        if priority in self._kind_names:
            raise ConfigError(f"event kind {name!r}: priority {priority} is taken by "
                              f"{self._kind_names[priority]!r}")
        self._kind_names[priority] = name
        self._handlers[priority] = handler
        return priority

    def schedule(self, time_ns: int, kind: int, payload: Any) -> None:
        """Push an event of a registered kind (or of a core kind) at ``time_ns``.

        Raises:
            InvariantError: an unknown kind, or a time before the clock's.
        """
        if kind not in self._kind_names:
            raise InvariantError(f"event kind {kind} is not registered")
        if time_ns < self._now_ns:
            raise InvariantError(f"{self._kind_names[kind]} event at {time_ns} ns is before "
                                 f"the clock ({self._now_ns} ns)")
        self._push(time_ns, kind, payload)

    def add_step_hook(self, hook: StepHook) -> None:
        """Call ``hook(record, now_ns)`` after every finished step (in registration
        order, after the recorder and the session-turn releases)."""
        self._step_hooks.append(hook)

    def request_start(self, inst_id: int, now_ns: int) -> None:
        """Make instance ``inst_id`` try to start a step at ``now_ns`` (after every
        event of that time); a no-op while it is busy or already asked."""
        self._request_start(inst_id, now_ns)

    def _request_start(self, inst_id: int, now_ns: int) -> None:
        if not self._start_pending[inst_id] and not self.instances[inst_id].busy:
            self._start_pending[inst_id] = True
            self._push(now_ns, _START, inst_id)

    def _initial_events(self) -> None:
        """Collect the trace's own arrivals (in order) and the session children.

        Raises:
            ConfigError: a ``parent_id`` that is not an earlier request.
            TraceFormatError: an arrival outside ``[0, MAX_SIMULATED_NS]``.
        """
        index_of: dict[str, int] = {}
        roots = self._roots
        prev = 0
        unsorted = False
        for i, r in enumerate(self.requests):
            index_of[r.request_id] = i
            if r.parent_id is not None:
                parent = index_of.get(r.parent_id)
                if parent is None or parent >= i:
                    raise ConfigError(f"request {r.request_id!r}: parent {r.parent_id!r} is "
                                      "not an earlier request of the trace", line=i + 1,
                                      field="parent_id")
                self._children.setdefault(parent, []).append(i)
                continue
            t = r.arrival_ns
            if not 0 <= t <= MAX_SIMULATED_NS:
                raise TraceFormatError(
                    f"request {r.request_id!r} arrives at {t} ns, outside [0, "
                    f"{MAX_SIMULATED_NS}] ns (MAX_SIMULATED_NS)", line=i + 1, field="arrival_ns")
            if t < prev:
                unsorted = True
            prev = t
            roots.append(i)
        if unsorted:  # the heap used to sort them; keep that order: (arrival, trace order)
            requests = self.requests
            roots.sort(key=lambda i: requests[i].arrival_ns)
        # the arrivals take sequence numbers 1..len(roots), as if pushed first
        self._seq = len(roots)

    def run(self) -> SimStats:
        """Run until no event is left.

        The cyclic garbage collector is paused while the loop runs (and restored after):
        the loop allocates millions of short-lived tuples and lists but makes no reference
        cycles, and the collector's periodic full scans of the live objects (plans in
        flight, the cost model's memo, the recorder's lists) cost ~15% of a long replay.

        Raises:
            InvariantError: requests remain unfinished when the queue empties (deadlock),
                or an instance broke an invariant.
            TraceFormatError: an arrival or session turn beyond :data:`MAX_SIMULATED_NS`
                (names the request).
            ConfigError: a bad ``parent_id``, or steps that run the clock past
                :data:`MAX_SIMULATED_NS`.
            CostModelUnavailable: the cost model failed or priced a step outside ``[0,
                MAX_STEP_COST_NS]`` (names the instance and step).
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
        if self._children:  # session turns interleave with the trace's arrivals
            self._route_ahead = False
            requests_ = self.requests
            self._min_think_ns = min(max(0, requests_[c].think_time_ns)
                                     for kids in self._children.values() for c in kids)
        heap, recorder, instances = self._heap, self.recorder, self.instances
        requests, roots = self.requests, self._roots
        n_roots = len(roots)
        next_root = 0  # position in roots of the next trace arrival
        root_ns = requests[roots[0]].arrival_ns if n_roots else None
        self._root_ns = root_ns  # for the fast-forward horizon (_ff_until)
        pending = self._start_pending
        handlers = self._handlers
        pop = heapq.heappop
        now_ns = 0
        n_events = 0
        # an instance id, a request index, a Handoff or a registered kind's payload, as
        # ``kind`` says: a kind-tagged union mypy cannot narrow, and a cast per event would
        # cost in this loop
        payload: Any
        kind: int
        while True:
            # the next trace arrival goes first unless the heap's top sorts before it: an
            # earlier time, or the same time and a smaller kind (STEP_END); at equal time and
            # kind its sequence number is the smaller one (module doc)
            if root_ns is not None and (not heap or root_ns < heap[0][0] or (
                    root_ns == heap[0][0] and heap[0][1] >= _ARRIVAL)):
                now_ns, kind, payload = root_ns, _ARRIVAL, roots[next_root]
                next_root += 1
                root_ns = requests[roots[next_root]].arrival_ns if next_root < n_roots else None
                self._root_ns = root_ns
            elif heap:
                now_ns, kind, _s, payload = pop(heap)
            else:
                break
            n_events += 1
            if now_ns > recorder.next_tick_ns:
                if now_ns > MAX_SIMULATED_NS:
                    self._past_horizon(now_ns, kind, payload)
                recorder.advance(now_ns, self._gauges())
            if kind is _END:
                self._on_step_end(instances[payload], now_ns)
                # the instance is idle now (nothing in _on_step_end starts a step)
                if not pending[payload]:
                    if (heap and heap[0][0] <= now_ns) or root_ns == now_ns:
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
            else:  # hand-offs and registered kinds (register_event)
                self._now_ns = now_ns
                handlers[kind](payload, now_ns)
        recorder.finish(now_ns, self._gauges())
        if recorder.num_finished != len(self.requests):
            stuck = [i for i in instances if i.scheduler.has_unfinished()]
            raise InvariantError(
                f"simulation ended with {len(self.requests) - recorder.num_finished} "
                f"unfinished requests (instances with work: {[i.instance_id for i in stuck]})")
        return SimStats(end_ns=now_ns, num_events=n_events,
                        num_steps=sum(i.num_steps for i in instances))

    def _gauges(self) -> Gauges:
        """The time-series gauges now: running and waiting summed, KV usage averaged."""
        insts = self.instances
        return Gauges(running=sum(len(i.scheduler.running) for i in insts),
                      waiting=sum(i.num_waiting for i in insts),
                      kv_usage=sum(i.scheduler.kv.usage() for i in insts) / len(insts))

    def _past_horizon(self, now_ns: int, kind: int, payload: object) -> None:
        """Refuse an event beyond :data:`MAX_SIMULATED_NS`, naming what got there.

        Raises:
            TraceFormatError: a session turn released past it (its ``think_time_ns``).
            ConfigError: a step ending or starting past it (step costs or CPU overheads).
        """
        limit = f"beyond the simulated horizon of {MAX_SIMULATED_NS} ns (MAX_SIMULATED_NS)"
        if kind is _ARRIVAL and isinstance(payload, int):
            raise TraceFormatError(f"request {self.requests[payload].request_id!r} is "
                                   f"released at {now_ns} ns, {limit}", line=payload + 1,
                                   field="think_time_ns")
        what = (f"instance {payload}" if kind in (_END, _START) else
                f"a {self._kind_names.get(kind, str(kind))} event")
        raise ConfigError(f"{what} reached {now_ns} ns of simulated time, {limit}: step "
                          "costs or CPU overheads are too large for this trace",
                          field="overheads")

    def _start(self, inst_id: int, now_ns: int) -> None:
        inst = self.instances[inst_id]
        if inst.fast_forward and not self._step_hooks and self.recorder.accepts_decode_runs:
            end_ns = inst.try_start_run(now_ns, self._ff_until(inst_id), self.recorder)
        else:
            end_ns = inst.try_start(now_ns)
        if end_ns is not None:
            self._push(end_ns, _END, inst_id)

    def _ff_until(self, inst_id: int) -> int:
        """Latest time at which fast-forwarded instance ``inst_id`` may have a skipped event
        (:mod:`llmsim.instance.fastforward`), ns: before the next arrival (routed to it,
        when the router reads no instance state, :meth:`_next_arrival_ns`) and any event
        of another kind than step end/start (they may look at the instance or change what
        it schedules), and not past the open time-series tick (its gauges are read at the
        first event after it).

        With session turns, a turn is released when its parent finishes, at the end of a
        step of another instance (nothing finishes inside a stretch), and arrives
        ``think_time_ns`` or more after it: so the stretch also ends before the earliest
        step end or start of the other instances plus the shortest think time of the
        trace (a lower bound on any turn released later, wherever it is routed)."""
        until = MAX_SIMULATED_NS
        root = self._next_arrival_ns(inst_id)
        if root is not None and root - 1 < until:
            until = root - 1
        tick = self.recorder.next_tick_ns
        if tick < until:
            until = tick
        turns = bool(self._children)
        think = self._min_think_ns - 1
        for t, kind, _s, p in self._heap:
            if kind != _END and kind != _START:
                if t - 1 < until:
                    until = t - 1
            elif turns and p != inst_id and t + think < until:
                until = t + think
        return until

    def _next_arrival_ns(self, inst_id: int) -> int | None:
        """The next trace arrival that can reach instance ``inst_id``, ns (None: none).

        With a router that reads no instance state (round robin) and no session turns
        (whose releases would interleave with the trace's arrivals), the next arrivals are
        routed ahead of time, in arrival order, exactly as they will be (the decision is
        kept and used when the arrival is processed), so an instance is bounded only by
        its own arrivals; otherwise by the next arrival of all.
        """
        if not self._route_ahead:
            return self._root_ns
        queue = self._ahead[inst_id]
        roots, requests = self._roots, self.requests
        while not queue and self._ahead_pos < len(roots):
            if self._ahead_pos - self._ahead_done >= _ROUTE_AHEAD_MAX:
                # none of the next arrivals goes there: bounded by the first unrouted one
                return requests[roots[self._ahead_pos]].arrival_ns
            index = roots[self._ahead_pos]
            self._ahead_pos += 1
            request = requests[index]
            target = self.router.route(request, self.instances)
            self._ahead_target[index] = target
            self._ahead[target].append(request.arrival_ns)
        return queue[0] if queue else None

    def _on_arrival(self, index: int, now_ns: int) -> None:
        request = self.requests[index]
        if not self._route_ahead:
            inst_id = self.router.route(request, self.instances)
        elif self._ahead_pos > self._ahead_done:  # routed ahead (in order: it is this one)
            inst_id = self._ahead_target.pop(index)
            self._ahead[inst_id].popleft()
            self._ahead_done += 1
        else:
            inst_id = self.router.route(request, self.instances)
            self._ahead_done += 1
            self._ahead_pos = self._ahead_done
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
        hooks = self._step_hooks
        if hooks:
            self._now_ns = now_ns
            for hook in hooks:
                hook(rec, now_ns)

    def _apply_handoff_policy(self, rec: StepRecord, now_ns: int) -> None:
        """The hand-off policy as a step hook: release each ordered sequence on its
        source (a frozen descriptor comes back) and schedule its arrival at the
        destination."""
        if self.handoff_policy is None:
            return
        release_ns = self.recorder.release_ns
        for order in self.handoff_policy(rec):
            desc = self.instances[order.src].release(order.seq,
                                                     release_ns=release_ns[order.seq.index])
            self._push(now_ns + order.delay_ns, _HANDOFF,
                       Handoff(desc=desc, src=order.src, dst=order.dst,
                               delay_ns=order.delay_ns))

    def _on_handoff(self, h: Handoff, now_ns: int) -> None:
        self.instances[h.dst].adopt(h.desc, now_ns)
        # the request keeps its first release time (its TTFT counts from the original arrival)
        self.recorder.on_release(h.desc.index, h.dst, h.desc.release_ns)
        self._request_start(h.dst, now_ns)
