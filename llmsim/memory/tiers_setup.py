"""Build the memory tiers of an experiment: pools by scope, offload managers, tiered
instances, weight placements; and report them (summary, per-request columns).

Used by :func:`llmsim.replay.run` only when the experiment has ``kv_offload`` or
``weight_offload`` (:func:`tiers_enabled`); otherwise nothing here runs and every output is
what it was.

Pools: one :class:`~llmsim.kvcache.tiers.TierPool` per tier and scope key (``instance``:
the engine; ``node``: the group's cluster node, one for all engines without a cluster;
``cluster``: one). Each engine's spill order links its pools (``lower``); engines with
different spill orders sharing a pool keep the order of the first engine that built it.

Reports: ``summary["kv_tiers"]`` (per tier: hit tokens and their share of the looked-up
tokens, loaded and stored bytes, entries, peak use, evictions; per engine: the backend and
weight streaming) and per request ``prefix_hit_tokens_<tier>`` columns after
``prefix_hit_tokens`` (the GPU hit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd

from llmsim.costmodel.base import CostModel
from llmsim.experiment import Experiment, ResolvedGroup
from llmsim.instance.instance import Instance
from llmsim.instance.step_time import StepTimeModel
from llmsim.instance.tiered import TieredInstance
from llmsim.kvcache.manager import KVCacheManager
from llmsim.kvcache.offload import LMCACHE_CHUNK_TOKENS, OffloadBackend, OffloadManager
from llmsim.kvcache.tiers import PoolScope, TierPool
from llmsim.memory.capacity import KVCapacity
from llmsim.memory.weights import StreamedWeightsCost, WeightPlacement, resolve_placement
from llmsim.model.config import ModelConfig
from llmsim.scheduler.offload import OffloadScheduler
from llmsim.scheduler.scheduler import Scheduler


def tiers_enabled(experiment: Experiment) -> bool:
    """True when some group offloads KV or weights."""
    return any(g.kv_offload is not None or g.weight_offload is not None
               for g in experiment.groups())


class TierSetup:
    """The experiment's pools and, once built, its tiered engines.

    Args:
        experiment: the experiment (tiers enabled).
        models: per group, the served model.

    Raises:
        ConfigError: a weight placement that does not fit its tier, or a bad layer range
            (names the field).
    """

    def __init__(self, experiment: Experiment, models: Sequence[ModelConfig]) -> None:
        self.experiment = experiment
        self.groups = experiment.groups()
        self.models = list(models)
        self.tiers = {t.name: t for t in experiment.memory_tiers}
        self._pools: dict[tuple[str, str], TierPool] = {}
        self.managers: list[OffloadManager | None] = []
        self.placements: list[WeightPlacement | None] = []
        self.instances: list[Instance] = []
        tags: dict[str, int] = {}
        self._tags = [tags.setdefault(str(g.model_path), len(tags)) for g in self.groups]
        self._group_pools: list[list[dict[str, TierPool]]] = []
        for gi, g in enumerate(self.groups):
            engines = []
            for e in range(g.num_engines):
                engines.append(self._pools_for(g, gi, e))
            self._group_pools.append(engines)
        self._placements_by_group = [self._place(gi) for gi in range(len(self.groups))]

    def _scope_key(self, g: ResolvedGroup, scope: PoolScope, gi: int, e: int) -> str:
        if scope is PoolScope.INSTANCE:
            return f"{g.name}/{e}"
        if scope is PoolScope.NODE:
            return g.node or ""
        return ""

    def _pools_for(self, g: ResolvedGroup, gi: int, e: int) -> dict[str, TierPool]:
        """Tier name -> the pool engine ``e`` of group ``gi`` uses."""
        out: dict[str, TierPool] = {}
        for name, t in self.tiers.items():
            key = (name, self._scope_key(g, t.shared, gi, e))
            pool = self._pools.get(key)
            if pool is None:
                label = name if not key[1] else f"{name}@{key[1]}"
                pool = self._pools[key] = TierPool(t.spec(), label)
            out[name] = pool
        if g.kv_offload is not None:
            order = [out[n] for n in g.kv_offload.tiers]
            for upper, lower in zip(order, order[1:], strict=False):
                if upper.lower is None and upper is not lower:
                    upper.lower = lower
        return out

    def _place(self, gi: int) -> list[WeightPlacement | None]:
        g, m = self.groups[gi], self.models[gi]
        w = g.weight_offload
        if w is None:
            return [None] * g.num_engines
        link = w.host_link_bandwidth_bytes_per_s or (
            g.kv_offload.host_link_bandwidth_bytes_per_s if g.kv_offload else None)
        field = f"{g.field}weight_offload" if (
            self.experiment.instance_groups and
            self.experiment.instance_groups[gi].weight_offload) else "weight_offload"
        return [resolve_placement(w, m, g.parallel.tensor_parallel_size, pools, link_bw=link,
                                  field=field)
                for pools in self._group_pools[gi]]

    def adjust_capacities(self, capacities: Sequence[KVCapacity]) -> list[KVCapacity]:
        """KV capacities with the room of offloaded weights given to the KV cache (memory
        model only; an override stays)."""
        out = []
        for cap, placed in zip(capacities, self._placements_by_group, strict=True):
            p = placed[0] if placed else None
            if p is None or not p.offloaded_bytes or cap.source != "memory_model":
                out.append(cap)
                continue
            kv_bytes = cap.kv_bytes + p.offloaded_bytes
            out.append(dataclasses.replace(
                cap, weight_bytes=cap.weight_bytes - p.offloaded_bytes, kv_bytes=kv_bytes,
                num_gpu_blocks=kv_bytes // cap.bytes_per_block))
        return out

    def build_instances(self, costs: Sequence[CostModel], capacities: Sequence[KVCapacity],
                        ) -> list[Instance]:
        """Every engine, as :func:`llmsim.replay.build_instances` builds them, tiered where
        its group offloads."""
        exp = self.experiment
        out: list[Instance] = []
        for gi, (g, cm, m, cap) in enumerate(zip(self.groups, costs, self.models, capacities,
                                                 strict=True)):
            e = g.engine
            for k in range(g.num_engines):
                kv = KVCacheManager(cap.num_gpu_blocks, e.block_size, e.enable_prefix_caching)
                mgr = self._manager(gi, k, m)
                sched: Scheduler
                if mgr is not None:
                    sched = OffloadScheduler(e.scheduler_config(), kv, offload=mgr,
                                             parallel=g.parallel)
                else:
                    sched = Scheduler(e.scheduler_config(), kv, parallel=g.parallel)
                placed = self._placements_by_group[gi][k]
                if placed is not None and placed.stream_ns:
                    cm = StreamedWeightsCost(costs[gi], placed.stream_ns)
                step_time = StepTimeModel(cm, g.overheads,
                                          cudagraph_capture_sizes=e.cudagraph_capture_sizes,
                                          model=m, parallel=g.parallel)
                self.managers.append(mgr)
                self.placements.append(placed)
                common: dict[str, Any] = dict(
                    instance_id=len(out), name=g.hardware.name, scheduler=sched,
                    step_time=step_time, async_scheduling=e.async_scheduling, check=exp.check)
                out.append(Instance(**common) if mgr is None else TieredInstance(**common))
        self.instances = out
        return out

    def _manager(self, gi: int, k: int, m: ModelConfig) -> OffloadManager | None:
        g = self.groups[gi]
        kvo = g.kv_offload
        if kvo is None:
            return None
        pools = self._group_pools[gi][k]
        backend = kvo.backend
        default = (g.engine.block_size if backend is OffloadBackend.NATIVE
                   else LMCACHE_CHUNK_TOKENS)
        tp = g.parallel.tensor_parallel_size
        return OffloadManager(
            backend=backend, pools=tuple(pools[n] for n in kvo.tiers),
            gpu_block_size=g.engine.block_size, block_tokens=kvo.block_size or default,
            kv_bytes_per_token=m.kv_bytes_per_token(g.parallel), tp=tp,
            host_link_bandwidth_bytes_per_s=kvo.host_link_bandwidth_bytes_per_s,
            model_tag=self._tags[gi])

    # ----------------------------------------------------------------- reports
    def summary(self) -> dict[str, Any]:
        """``summary["kv_tiers"]`` (module doc)."""
        queried = sum(i.scheduler.kv.query_tokens for i in self.instances)
        gpu_hits = sum(i.scheduler.kv.hit_tokens for i in self.instances)
        tiers: dict[str, dict[str, Any]] = {}
        for pool in self._pools.values():
            tiers[pool.label] = {
                "kind": pool.spec.kind.value, "capacity_bytes": pool.capacity_bytes,
                "bandwidth_bytes_per_s": pool.spec.bandwidth_bytes_per_s,
                "latency_ns": pool.spec.latency_ns, "num_devices": pool.spec.num_devices,
                "shared": pool.spec.shared.value, "hit_tokens": 0, "load_bytes": 0,
                "entries": pool.num_entries, "used_bytes": pool.used_bytes,
                "peak_used_bytes": pool.peak_used_bytes,
                "weight_bytes": pool.reserved_bytes, "stored_entries": pool.num_stored,
                "evicted_entries": pool.num_evicted, "demoted_entries": pool.num_demoted,
                "replaced_entries": pool.num_replaced}
        engines = []
        for inst, mgr, placed in zip(self.instances, self.managers, self.placements,
                                     strict=True):
            row: dict[str, Any] = {"instance_id": inst.instance_id}
            if mgr is not None:
                for pool, hits, nbytes in zip(mgr.pools, mgr.hit_tokens, mgr.load_bytes,
                                              strict=True):
                    tiers[pool.label]["hit_tokens"] += hits
                    tiers[pool.label]["load_bytes"] += nbytes
                row["kv_offload"] = mgr.summary()
                if isinstance(inst, TieredInstance):
                    row["kv_offload"]["blocking_transfer_ns"] = inst.kv_transfer_ns
                    row["kv_offload"]["async_load_ns"] = mgr.load_ns_total
            if placed is not None:
                row["weight_offload"] = {
                    "offloaded_bytes_per_rank": placed.offloaded_bytes,
                    "stream_ns_per_step": placed.stream_ns,
                    "locations": [{"location": loc, "layers": n, "bytes_per_rank": b}
                                  for loc, n, b in placed.bytes_by_location]}
            engines.append(row)
        for t in tiers.values():
            t["hit_rate"] = t["hit_tokens"] / queried if queried else 0.0
        return {"query_tokens": queried, "gpu_hit_tokens": gpu_hits,
                "gpu_hit_rate": gpu_hits / queried if queried else 0.0,
                "tiers": tiers, "engines": engines}

    def add_columns(self, requests: pd.DataFrame) -> pd.DataFrame:
        """Per request, ``prefix_hit_tokens_<tier>`` after ``prefix_hit_tokens`` (tokens
        of its first admission's prefix hit served by each tier; 0 when none)."""
        names = list(dict.fromkeys(n for g in self.groups if g.kv_offload
                                   for n in g.kv_offload.tiers))
        if not names:
            return requests
        cols = {n: [0] * len(requests) for n in names}
        for mgr in self.managers:
            if mgr is None:
                continue
            tier_names = [p.spec.name for p in mgr.pools]
            for index, hits in mgr.request_hits.items():
                for name, h in zip(tier_names, hits, strict=True):
                    cols[name][index] += h
        out = requests.copy()
        at = list(out.columns).index("prefix_hit_tokens") + 1
        for j, n in enumerate(names):
            out.insert(at + j, f"prefix_hit_tokens_{n}", cols[n])
        return out
