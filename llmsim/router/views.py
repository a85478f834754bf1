"""Read-only views of instances for routers.

:class:`InstanceSnapshot` is a frozen copy of the figures a router may read
(:class:`llmsim.router.base.InstanceView`); :class:`SnapshotViews` is the sequence routers
are given by :class:`ReadOnlyRouter`: item ``i`` is a fresh snapshot of instance ``i`` taken
when it is read, so a router cannot change an instance, and a router that reads nothing
(round robin) costs nothing extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

from llmsim.router.base import InstanceView, Router
from llmsim.trace.record import Request

__all__ = ["InstanceSnapshot", "ReadOnlyRouter", "SnapshotViews"]


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSnapshot:
    """A read-only view of an instance (or of a deployment's engines, summed) at one time.

    Attributes:
        instance_id: index of the instance (or deployment) among the router's choices.
        num_running: running requests.
        num_waiting: waiting requests.
        kv_usage_fraction: KV cache use in [0, 1] (mean over a deployment's engines).
    """

    instance_id: int
    num_running: int
    num_waiting: int
    kv_usage_fraction: float

    def kv_usage(self) -> float:
        """KV usage fraction in [0, 1] (the :class:`InstanceView` method)."""
        return self.kv_usage_fraction

    @staticmethod
    def of(index: int, members: Sequence[InstanceView]) -> InstanceSnapshot:
        """The summed snapshot of ``members`` under id ``index``."""
        return InstanceSnapshot(
            instance_id=index, num_running=sum(m.num_running for m in members),
            num_waiting=sum(m.num_waiting for m in members),
            kv_usage_fraction=sum(m.kv_usage() for m in members) / len(members))




class SnapshotViews(Sequence[InstanceSnapshot]):
    """Snapshots of live instances, taken on each read (see the module doc).

    Args:
        instances: the live instances (anything with the :class:`InstanceView` figures).
    """

    __slots__ = ("_instances",)

    def __init__(self, instances: Sequence[InstanceView]) -> None:
        self._instances = instances

    def __len__(self) -> int:
        return len(self._instances)

    @overload
    def __getitem__(self, index: int) -> InstanceSnapshot: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[InstanceSnapshot]: ...

    def __getitem__(self, index: int | slice) -> InstanceSnapshot | Sequence[InstanceSnapshot]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        inst = self._instances[index]
        return InstanceSnapshot(instance_id=inst.instance_id, num_running=inst.num_running,
                                num_waiting=inst.num_waiting,
                                kv_usage_fraction=inst.kv_usage())


class ReadOnlyRouter:
    """Gives ``inner`` :class:`SnapshotViews` of the instances instead of the live ones.

    Args:
        inner: the routing policy.
    """

    __slots__ = ("_instances", "_views", "inner")

    def __init__(self, inner: Router) -> None:
        self.inner = inner
        self._instances: Sequence[InstanceView] | None = None
        self._views: SnapshotViews | None = None

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        """Index (into ``instances``) chosen by the inner policy from snapshots."""
        views = self._views
        if views is None or instances is not self._instances:
            self._instances = instances
            views = self._views = SnapshotViews(instances)
        return self.inner.route(request, views)
