"""The event loop for instances with KV offload: idle instances poll for finished loads.

An instance whose only work is sequences waiting for an asynchronous lower-tier load
(:class:`~llmsim.instance.tiered.TieredInstance`) starts no step, so no step end would wake
it. :class:`TieredSimulation` registers a ``kv load poll`` event kind: after a start attempt
that leaves the instance idle, it schedules a poll at the instance's :meth:`wake_ns`, which
asks for a step start then (vLLM's engine keeps running connector-only steps while a request
waits for KV, and they report the finished load). Without offloading the base
:class:`~llmsim.sim.loop.Simulation` runs, unchanged.
"""

from __future__ import annotations

from typing import Any

from llmsim.instance.tiered import TieredInstance
from llmsim.sim.loop import Simulation

KV_LOAD_POLL_PRIORITY = 25
"""Order of a load poll at equal time: after hand-offs (20), before step starts (30)."""


class TieredSimulation(Simulation):
    """:class:`Simulation` with load polls for idle tiered instances (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._poll_kind = self.register_event("kv load poll", KV_LOAD_POLL_PRIORITY,
                                              self._on_poll)
        self._poll_at: dict[int, int] = {}

    def _start(self, inst_id: int, now_ns: int) -> None:
        super()._start(inst_id, now_ns)
        inst = self.instances[inst_id]
        if inst.busy or not isinstance(inst, TieredInstance):
            return
        wake = inst.wake_ns()
        if wake is not None and wake > now_ns and self._poll_at.get(inst_id) != wake:
            self._poll_at[inst_id] = wake
            self.schedule(wake, self._poll_kind, inst_id)

    def _on_poll(self, inst_id: int, now_ns: int) -> None:
        if self._poll_at.get(inst_id) == now_ns:
            del self._poll_at[inst_id]
        self.request_start(inst_id, now_ns)
