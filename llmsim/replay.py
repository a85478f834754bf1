"""Replay a trace through simulated serving instances and write the results.

``run(experiment)`` builds the model config, the cost model (through
:mod:`llmsim.costmodel.registry`), the KV capacity (:mod:`llmsim.memory`), one scheduler +
KV cache + step-time model per instance, the router and the recorder, runs the event loop
(:mod:`llmsim.sim.loop`) and returns a :class:`ReplayResult`; ``write_outputs`` writes it
atomically.

Outputs of :func:`write_outputs` (all deterministic: the same experiment gives
byte-identical files):

* ``requests.csv`` / ``requests.parquet``: one row per request (see :class:`ReplayResult`);
* ``itls.parquet``: long format ``request_id, token_index, itl_s`` (gap before token
  ``token_index``, 1-based after the first token);
* ``timeseries.csv``: vLLM ``timeseries.csv`` columns at 1 s ticks (a run of more than
  60 quiet ticks keeps its first 60 and its last; see :mod:`llmsim.metrics.recorder`);
* ``steps.csv`` (only when asked): the per-step log (``energy_j`` per step);
* ``power.csv``: 1 s power per GPU, node and cluster (docs/power.md; header only when
  energy is unavailable);
* ``summary.json``: percentiles, throughput, preemptions, prefix hits, settings.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmsim.cluster.moe_dp import EpPricer, EpStepCostModel, MoeMode, check_moe_layout, moe_mode
from llmsim.cluster.parallel import SINGLE_GPU, ParallelConfig, check_supported
from llmsim.cluster.routing import ExpertRouting, load_popularity
from llmsim.costmodel.base import CostModel
from llmsim.costmodel.collectives import (
    CollectivesModel,
    HierarchicalCollectives,
    NcclModel,
    table_values,
)
from llmsim.costmodel.interp import GridND
from llmsim.costmodel.profile_model import ProfileCostModel
from llmsim.costmodel.registry import find_collective_tables, find_link_spec_for
from llmsim.data.atomic import publish_dir, temp_dir_next_to
from llmsim.errors import ConfigError, ProfileRangeError, TraceFormatError
from llmsim.experiment import Experiment, ResolvedGroup, line_of
from llmsim.instance.instance import Instance
from llmsim.instance.step_time import StepTimeModel
from llmsim.kvcache.manager import KVCacheManager
from llmsim.memory.capacity import KVCapacity, kv_capacity
from llmsim.memory.host import (
    BYTES_PER_CAPTURE_TOKEN,
    BYTES_PER_INSTANCE,
    BYTES_PER_KV_BLOCK,
    check_host_memory,
)
from llmsim.metrics.recorder import Recorder
from llmsim.metrics.summary import summarize
from llmsim.model.config import ModelConfig, load_model_config
from llmsim.router.base import Router, make_router, scrape_interval_ns
from llmsim.router.dp import DeploymentRouter
from llmsim.router.views import ReadOnlyRouter
from llmsim.scheduler.scheduler import Scheduler
from llmsim.sim.lockstep import LockstepGroup, LockstepSimulation
from llmsim.sim.loop import MAX_SIMULATED_NS, Simulation
from llmsim.trace.record import Request, Trace

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayResult:
    """Everything a replay produced.

    Attributes:
        requests: one row per request in trace order: ``request_id`` (str), ``arrival_s``,
            ``first_scheduled_s``, ``first_token_s``, ``finish_s`` (s from trace start),
            ``input_tokens``, ``output_tokens``, ``prefix_hit_tokens``, ``num_preemptions``,
            ``ttft_s``, ``tpot_s`` (NaN when ``output_tokens == 1``), ``e2e_s``,
            ``instance_id``.
        itls_s: per request (same order), the ``output_tokens - 1`` gaps between
            consecutive tokens, s.
        timeseries: ``t, prompt_throughput, gen_throughput, running, waiting,
            kv_cache_pct`` at 1 s ticks (``t`` = end of the tick, s); long runs of quiet
            ticks are cut short (:mod:`llmsim.metrics.recorder`: forward-filling restores
            them).
        steps: per-step log (:data:`llmsim.metrics.STEP_COLUMNS`) or ``None``.
        summary: JSON-able summary (``energy``: :mod:`llmsim.power.accumulator`).
        num_steps: engine steps simulated (all instances).
        wall_time_s: host wall time of the simulation itself (not in ``summary``, which
            stays deterministic).
        power: 1 s power per GPU, node and cluster
            (:data:`llmsim.power.accumulator.POWER_COLUMNS`; empty when energy is
            unavailable, ``summary["energy"]["reason"]`` says why).
    """

    requests: pd.DataFrame
    itls_s: list[np.ndarray]
    timeseries: pd.DataFrame
    steps: pd.DataFrame | None
    summary: dict[str, Any]
    num_steps: int
    wall_time_s: float
    power: pd.DataFrame | None = None


# ------------------------------------------------------------------------ building
def load_experiment_trace(experiment: Experiment) -> Trace:
    """Load (and transform) the experiment's trace via :func:`llmsim.trace.load_trace`."""
    from llmsim.trace import load_trace

    if experiment.trace.path is None:
        raise ConfigError("the experiment names no trace file", path=experiment.source,
                          field="trace.path")
    trace = load_trace(experiment.trace.format, experiment.trace.path, **experiment.trace.options)
    if experiment.trace.transforms:
        try:
            from llmsim.trace import apply_transforms
        except ImportError as exc:
            raise ConfigError("trace transforms are not available in this build",
                              path=experiment.source, field="trace.transforms") from exc
        trace = apply_transforms(trace, list(experiment.trace.transforms))
    return trace


def build_cost_model(experiment: Experiment, model: ModelConfig,
                     group: ResolvedGroup | None = None) -> CostModel:
    """The cost model of ``group`` (default: the experiment's first group), through the
    registry.

    Raises:
        ConfigError: unknown spec, or the cost model's module is not available.
    """
    from llmsim.costmodel.registry import CostModelContext
    from llmsim.costmodel.registry import build_cost_model as build

    g = group or experiment.groups()[0]
    sizes = g.engine.cudagraph_capture_sizes
    ctx = CostModelContext(model=model, parallel=g.parallel,
                           profile_path=g.profile_path,
                           hardware=g.link or g.hardware.name,
                           cudagraph_max_tokens=max(sizes) if sizes else 0)
    try:
        return build(g.cost_model, ctx)
    except ImportError as exc:
        raise ConfigError(f"cost model {g.cost_model!r} is not available: {exc}",
                          path=experiment.source, field=f"{g.field}cost_model") from exc


def resolve_capacity(experiment: Experiment, model: ModelConfig,
                     group: ResolvedGroup | None = None) -> KVCapacity:
    """KV blocks per instance of ``group`` (default: the first): the override, else the
    memory model.

    Raises:
        ConfigError: the model leaves no room for the KV cache (names the experiment file
            and the field).
    """
    g = group or experiment.groups()[0]
    e = g.engine
    try:
        return kv_capacity(
            model, total_gpu_bytes=g.hardware.gpu_memory_bytes or 0,
            gpu_memory_utilization=e.gpu_memory_utilization, block_size=e.block_size,
            max_num_batched_tokens=e.max_num_batched_tokens, max_num_seqs=e.max_num_seqs,
            parallel=g.parallel,
            num_gpu_blocks_override=e.num_gpu_blocks_override)
    except ConfigError as exc:
        if exc.path is not None or experiment.source is None:
            raise
        field = f"{g.field}{exc.field}" if exc.field else exc.field
        raise ConfigError(exc.reason, path=experiment.source, field=field) from exc


def check_instances_memory(experiment: Experiment, capacity: KVCapacity) -> None:
    """Refuse ``experiment.num_instances`` identical instances whose block pools and tables
    cannot fit in host memory, before building any (estimates: :mod:`llmsim.memory.host`).

    Raises:
        ConfigError: naming ``engine.num_gpu_blocks_override`` or
            ``hardware.gpu_memory_bytes`` (whichever sized the cache) when one instance's
            pool alone does not fit, else ``instances``.
    """
    sizes = experiment.engine.cudagraph_capture_sizes
    pool_bytes = capacity.num_gpu_blocks * BYTES_PER_KV_BLOCK
    per_instance = (pool_bytes + BYTES_PER_INSTANCE
                    + BYTES_PER_CAPTURE_TOKEN * (max(sizes) if sizes else 0))
    src = experiment.source
    kv_field = ("engine.num_gpu_blocks_override" if capacity.source == "override"
                else "hardware.gpu_memory_bytes")
    check_host_memory(pool_bytes, path=src, field=kv_field,
                      what=f"a KV cache of {capacity.num_gpu_blocks} blocks per instance")
    n = experiment.num_instances
    check_host_memory(n * per_instance, path=src, field="instances",
                      what=f"{n} instances of {capacity.num_gpu_blocks} KV blocks each")


def check_groups_memory(experiment: Experiment, capacities: Sequence[KVCapacity]) -> None:
    """:func:`check_instances_memory` over every engine of every group.

    Args:
        experiment: the experiment.
        capacities: KV capacity per group (:meth:`Experiment.groups` order).

    Raises:
        ConfigError: naming the KV-sizing field of a group whose one pool does not fit,
            else the count (``instances`` or ``instance_groups.<i>.count``) of the group
            where the running total stops fitting.
    """
    groups = experiment.groups()
    src = experiment.source
    total = engines = 0
    for g, cap in zip(groups, capacities, strict=True):
        sizes = g.engine.cudagraph_capture_sizes
        pool_bytes = cap.num_gpu_blocks * BYTES_PER_KV_BLOCK
        per_instance = (pool_bytes + BYTES_PER_INSTANCE
                        + BYTES_PER_CAPTURE_TOKEN * (max(sizes) if sizes else 0))
        kv_field = (f"{g.field}engine.num_gpu_blocks_override" if cap.source == "override"
                    else f"{g.field}hardware.gpu_memory_bytes")
        check_host_memory(pool_bytes, path=src, field=kv_field,
                          what=f"a KV cache of {cap.num_gpu_blocks} blocks per instance")
        total += g.num_engines * per_instance
        engines += g.num_engines
        what = (f"{engines} instances of {cap.num_gpu_blocks} KV blocks each"
                if len(groups) == 1 else f"{engines} instances in all")
        check_host_memory(total, path=src, field=f"{g.field}count" if g.field else "instances",
                          what=what)


def build_instances(experiment: Experiment, cost_model: CostModel | Sequence[CostModel],
                    model: ModelConfig | Sequence[ModelConfig] | None,
                    capacity: KVCapacity | Sequence[KVCapacity]) -> list[Instance]:
    """Every engine of every group, numbered in group order (a deployment's DP ranks
    next to each other).

    Args:
        experiment: the experiment.
        cost_model, model, capacity: per group (one value: the same for every group).

    Raises:
        ConfigError: they would not fit in host memory (:func:`check_groups_memory`).
    """
    groups = experiment.groups()

    def per_group(value: Any) -> list[Any]:
        if value is None or not isinstance(value, list | tuple):
            return [value] * len(groups)
        return list(value)

    costs, models, caps = per_group(cost_model), per_group(model), per_group(capacity)
    check_groups_memory(experiment, caps)
    out: list[Instance] = []
    for g, cm, m, cap in zip(groups, costs, models, caps, strict=True):
        e = g.engine
        for _ in range(g.num_engines):
            kv = KVCacheManager(cap.num_gpu_blocks, e.block_size, e.enable_prefix_caching)
            sched = Scheduler(e.scheduler_config(), kv, parallel=g.parallel)
            step_time = StepTimeModel(cm, g.overheads,
                                      cudagraph_capture_sizes=e.cudagraph_capture_sizes,
                                      model=m, parallel=g.parallel)
            out.append(Instance(instance_id=len(out), name=g.hardware.name, scheduler=sched,
                                step_time=step_time, async_scheduling=e.async_scheduling,
                                check=experiment.check))
    return out


def build_router(experiment: Experiment, models: Sequence[ModelConfig] | None = None
                 ) -> Router:
    """The experiment's router over every engine.

    Without DP (every group's ``data_parallel_size`` is 1) this is the top-level policy
    over the instances. With DP, the policy chooses a deployment (a group instance), and
    vLLM's DP load balancer (:class:`llmsim.router.dp.DPLoadBalancer`) chooses its rank.
    Either way the policy reads frozen snapshots, never the live instances
    (:class:`llmsim.router.views.ReadOnlyRouter`).
    """
    groups = experiment.groups()
    if all(g.parallel.data_parallel_size == 1 for g in groups):
        return ReadOnlyRouter(make_router(experiment.router))
    deployments: list[tuple[int, ...]] = []
    publishes: list[bool] = []
    first = 0
    for i, g in enumerate(groups):
        dp = g.parallel.data_parallel_size
        moe = models is not None and models[i].is_moe  # MoE DP engines publish counts
        for _ in range(g.count):
            deployments.append(tuple(range(first, first + dp)))
            publishes.append(moe and dp > 1)
            first += dp
    interval = scrape_interval_ns(experiment.router)
    router: Router = DeploymentRouter(make_router(experiment.router, scraped=False),
                                      deployments, publishes_counts=publishes)
    if interval > 0:  # the scrape covers every engine; the deployments sum its snapshots
        from llmsim.router.scrape import MetricsScraper, ScrapedRouter

        router = ScrapedRouter(router, MetricsScraper(interval))
    return ReadOnlyRouter(router)


def build_lockstep_groups(experiment: Experiment, models: Sequence[ModelConfig],
                          costs: Sequence[CostModel], instances: Sequence[Instance]
                          ) -> list[LockstepGroup]:
    """One :class:`llmsim.sim.lockstep.LockstepGroup` per MoE DP deployment (its ranks in
    lock-step, its MoE layers priced across them by :func:`build_moe_pricer`).

    Raises:
        ConfigError: see :func:`build_moe_pricer`.
    """
    out: list[LockstepGroup] = []
    first = 0
    for g, m, cm in zip(experiment.groups(), models, costs, strict=True):
        dp = g.parallel.data_parallel_size
        if not (m.is_moe and dp > 1):
            first += g.num_engines
            continue
        for _ in range(g.count):
            ep = build_moe_pricer(experiment, g, m, cm)
            out.append(LockstepGroup(instances[first:first + dp], ep=ep))
            first += dp
    return out


def wrap_tp_expert_parallel(experiment: Experiment, models: Sequence[ModelConfig],
                            costs: Sequence[CostModel]) -> list[CostModel]:
    """The groups' cost models, those of DP = 1 engines with experts spread over their TP
    ranks (:attr:`llmsim.cluster.moe_dp.MoeMode.EP_OVER_TP`) wrapped in
    :class:`llmsim.cluster.moe_dp.EpStepCostModel`.

    Raises:
        ConfigError: see :func:`build_moe_pricer`.
    """
    out = list(costs)
    for i, (g, m, cm) in enumerate(zip(experiment.groups(), models, costs, strict=True)):
        if m.is_moe and moe_mode(g.parallel) is MoeMode.EP_OVER_TP:
            out[i] = EpStepCostModel(cm, build_moe_pricer(experiment, g, m, cm))
    return out


def build_moe_pricer(experiment: Experiment, g: ResolvedGroup, m: ModelConfig,
                     cm: CostModel) -> EpPricer:
    """The cross-rank MoE pricer of one deployment of group ``g`` (:mod:`llmsim.cluster.
    moe_dp`): the profile's ``moe`` table (TP 1 under EP; TP ``dp x tp`` for TP-sharded
    experts over DP), the collectives of the dispatch group (DP ranks, or all ``dp x tp``
    GPUs under sequence-parallel MoE) and of one engine's TP group, the placement and the
    experiment's routing policy.

    Raises:
        ConfigError: a cost model other than the profile one, or a profile without the
            ``moe`` table the layout needs ("not supported yet: ...", file, line, field).
    """
    par = g.parallel
    mode = moe_mode(par)
    src = experiment.source
    if not isinstance(cm, ProfileCostModel):
        field = f"{g.field}cost_model"
        raise ConfigError("not supported yet: MoE layers across ranks (MoE data or expert "
                          f"parallelism) with a cost model other than 'profile' "
                          f"({type(cm).__name__})", path=src, field=field,
                          line=_source_line(experiment, field))
    dp, tp = par.data_parallel_size, par.tensor_parallel_size
    table_layout = SINGLE_GPU if par.enable_expert_parallel else ParallelConfig(
        tensor_parallel_size=dp * tp)
    try:
        grid = cm.tp_tables(table_layout).moe
    except ProfileRangeError:
        grid = None
    if grid is None:
        want = table_layout.tensor_parallel_size
        field = (f"{g.field}engine.enable_expert_parallel" if par.enable_expert_parallel
                 else f"{g.field}engine.data_parallel_size")
        how = ("expert parallelism prices each rank's whole experts from it"
               if par.enable_expert_parallel else
               "MoE data parallelism without enable_expert_parallel shards every expert over "
               f"the dp x tp = {want} ranks (vLLM FusedMoEParallelConfig) and prices them "
               "from it")
        raise ConfigError(f"not supported yet: the profile {cm.source} has no 'moe' table "
                          f"at TP {want}; {how}", path=src, field=field,
                          line=_source_line(experiment, field))
    # the dispatch group's link: as a TP group's of the same hardware (a TP1 cost model
    # looked none up; llmsim.costmodel.profile_model.from_context)
    link_spec = cm.link_spec or find_link_spec_for(g.link or g.hardware.name, cm.profile)
    tables = list(cm.collectives) + list(find_collective_tables(
        link_spec, framework_version=cm.profile.provenance.framework_version))
    analytic = NcclModel.from_link(link_spec) if link_spec is not None else cm.link
    ranks = dp * tp if mode is MoeMode.EP_SEQUENCE_PARALLEL else dp
    comm = CollectivesModel(ranks=ranks // g.num_nodes, tables=tables, link=link_spec,
                            analytic=analytic)
    if g.num_nodes > 1 and ranks > 1:  # placement.spans: the group crosses nodes
        comm = HierarchicalCollectives(intra=comm, inter=_network_model(experiment, g),
                                       nodes=g.num_nodes, ranks_per_node=ranks // g.num_nodes)
    tp_comm = cm.tp_tables(par).comm if tp > 1 else None
    full_grid, name = grid, "moe"
    if par.enable_expert_parallel:  # a measured per-EP-rank table (AIConfigurator import)
        ep_grid = _moe_ep_grid(cm, par.expert_parallel_size)
        if ep_grid is not None:
            grid, name = ep_grid, f"moe_ep{par.expert_parallel_size}"
    return EpPricer(moe_grid=grid, model=m, comm=comm if ranks > 1 else None, parallel=par,
                    placement=g.engine.expert_placement_strategy,
                    routing=moe_routing(experiment, m), tp_comm=tp_comm,
                    tp_graph_max_tokens=cm.cudagraph_max_tokens, full_grid=full_grid,
                    expert_table=f"tp1/{name}")


def _network_model(experiment: Experiment, g: ResolvedGroup) -> NcclModel:
    """The inter-node stage of a spanning group's collectives: the slowest of its nodes'
    networks (lowest bandwidth per GPU, then highest latency), with its source.

    Raises:
        ConfigError: a node of the group without ``network`` (file, line, field).
    """
    cluster = experiment.cluster
    assert cluster is not None
    for name, net in g.networks:
        if net is None:
            k = next(i for i, n in enumerate(cluster.nodes) if n.name == name)
            field = f"cluster.nodes.{k}.network"
            raise ConfigError(f"group {g.name!r} runs DP ranks on node {name!r} and on other "
                              "nodes, and its MoE layers communicate across them: the node "
                              "needs a network (bandwidth_bytes_per_s, latency_ns, source)",
                              path=experiment.source, field=field,
                              line=_source_line(experiment, field))
    name, net = min(((n, x) for n, x in g.networks if x is not None),
                    key=lambda kv: (kv[1].bandwidth_bytes_per_s, -kv[1].latency_ns))
    label = (f"network {name}: {net.bandwidth_bytes_per_s:.4g} B/s per GPU, "
             f"{net.latency_ns:g} ns; {net.source or 'source not given'}")
    return NcclModel(latency_ns=net.latency_ns,
                     bus_bandwidth_bytes_per_s=net.bandwidth_bytes_per_s, label=label)


def _moe_ep_grid(cm: ProfileCostModel, ep: int) -> GridND | None:
    """The profile's TP1 ``moe_ep<ep>`` table (one EP rank's experts, measured), if any."""
    tpp = next((t for t in cm.profile.tp if t.tp_degree == 1), None)
    table = None if tpp is None else next(
        (t for t in tpp.ops if t.op == f"moe_ep{ep}"), None)
    if table is None:
        return None
    axes = [list(a.values) for a in table.axes]
    return GridND(list(zip(*axes, strict=True)), table_values(table))


def moe_routing(experiment: Experiment, model: ModelConfig) -> ExpertRouting:
    """The experiment's ``moe_routing`` section resolved for ``model``.

    Raises:
        ConfigError: a bad popularity table (file, line, field), or one of another expert
            count than the model's.
    """
    r = experiment.moe_routing
    popularity: tuple[float, ...] = ()
    if r.popularity_path is not None:
        popularity = load_popularity(r.popularity_path, model.num_experts,
                                     field="moe_routing.popularity_path")
    return ExpertRouting(policy=r.policy, seed=r.seed, zipf_exponent=r.zipf_exponent,
                         popularity=popularity)


def check_parallel_supported(experiment: Experiment, models: Sequence[ModelConfig]) -> None:
    """Refuse a parallel layout llmsim does not model yet (:func:`check_supported`).

    Raises:
        ConfigError: "not supported yet: ..." naming the experiment file and the field.
    """
    for g, m in zip(experiment.groups(), models, strict=True):
        found = check_supported(g.parallel, is_moe=m.is_moe, where=f"{g.field}engine",
                                num_layers=m.num_hidden_layers,
                                async_scheduling=g.engine.async_scheduling,
                                cost_model=g.cost_model.split("://", 1)[0])
        if found is None and m.is_moe:
            found = check_moe_layout(g.parallel, m, all2all_backend=g.engine.all2all_backend,
                                     where=f"{g.field}engine")
        if found is not None:
            field, message = found
            raise ConfigError(message, path=experiment.source, field=field,
                              line=_source_line(experiment, field))


def _source_line(experiment: Experiment, field: str) -> int | None:
    """1-based line of dotted ``field`` (or of its nearest enclosing key) in the
    experiment file, None without a readable file (the file may have changed since)."""
    if experiment.source is None:
        return None
    from llmsim.yamlfile import load_yaml_document

    try:
        lines = load_yaml_document(experiment.source, what="experiment file").lines
    except ConfigError:
        return None
    return line_of(field, lines)


def validate_trace(trace: Trace, *, capacity_tokens: int) -> None:
    """Reject traces the loop cannot replay.

    Raises:
        TraceFormatError: unsorted arrivals, an arrival outside ``[0, MAX_SIMULATED_NS]``,
            non-positive token counts,
            token-id lists whose length differs from the count, duplicate ids, a
            ``parent_id`` that is not an earlier request; the message names the trace file
            and the request (``line`` = 1-based request position).
        ConfigError: a request longer than the KV cache of an instance.
    """
    src = trace.source or None
    prev = -1
    seen: set[str] = set()
    for i, r in enumerate(trace.requests):
        line = i + 1

        def bad(field: str, msg: str, r: Request = r, line: int = line) -> TraceFormatError:
            return TraceFormatError(f"request {r.request_id!r}: {msg}", path=src, line=line,
                                    field=field)

        if r.arrival_ns < 0:
            raise bad("arrival_ns", f"negative arrival {r.arrival_ns}")
        if r.arrival_ns > MAX_SIMULATED_NS:
            raise bad("arrival_ns", f"arrival {r.arrival_ns} ns is beyond the simulated horizon "
                                    f"of {MAX_SIMULATED_NS} ns (MAX_SIMULATED_NS)")
        if r.arrival_ns < prev:
            raise bad("arrival_ns", f"arrivals not sorted ({r.arrival_ns} after {prev})")
        prev = r.arrival_ns
        if r.input_tokens <= 0:
            raise bad("input_tokens", f"must be > 0, got {r.input_tokens}")
        if r.output_tokens <= 0:
            raise bad("output_tokens", f"must be > 0, got {r.output_tokens}")
        if r.input_token_ids is not None and len(r.input_token_ids) != r.input_tokens:
            raise bad("input_token_ids", f"{len(r.input_token_ids)} ids for "
                                         f"{r.input_tokens} input tokens")
        if r.output_token_ids is not None and len(r.output_token_ids) != r.output_tokens:
            raise bad("output_token_ids", f"{len(r.output_token_ids)} ids for "
                                          f"{r.output_tokens} output tokens")
        if r.request_id in seen:
            raise bad("request_id", "duplicate request id")
        if r.parent_id is not None and r.parent_id not in seen:
            raise bad("parent_id", f"parent {r.parent_id!r} is not an earlier request")
        seen.add(r.request_id)
        if r.input_tokens + r.output_tokens > capacity_tokens:
            raise ConfigError(
                f"request {r.request_id!r} needs {r.input_tokens + r.output_tokens} KV tokens, "
                f"more than an instance holds ({capacity_tokens})", path=src, line=line,
                field="input_tokens")


# ----------------------------------------------------------------------------- run
def run(experiment: Experiment, *, trace: Trace | None = None,
        cost_model: CostModel | None = None, progress: bool = False,
        model: ModelConfig | None = None, keep_steps: bool = False,
        exact_steps: bool = False) -> ReplayResult:
    """Replay ``experiment`` (or ``trace`` / ``cost_model`` in place of its own).

    Args:
        keep_steps: keep the per-step log (``ReplayResult.steps``; None otherwise); it turns
            decode fast-forward off (the log is written step by step).
        exact_steps: simulate every engine step one by one, as does the experiment's
            ``exact_steps: true``; by default decode stretches are fast-forwarded
            (:mod:`llmsim.instance.fastforward`), with identical outputs.

    Raises:
        ConfigError, TraceFormatError, ProfileError, DataNotFoundError: bad inputs, including
            sizes the host memory cannot hold (:mod:`llmsim.memory.host`) and a simulated
            clock past :data:`llmsim.sim.loop.MAX_SIMULATED_NS`.
        CostModelUnavailable: the cost model failed or priced a step outside ``[0,
            MAX_STEP_COST_NS]``.
        InvariantError: the simulation broke an invariant (a bug).
    """
    groups = experiment.groups()
    loaded: dict[Path, ModelConfig] = {}
    if model is not None:
        loaded[experiment.model_path] = model
    models = []
    for g in groups:
        if g.model_path not in loaded:
            loaded[g.model_path] = load_model_config(g.model_path)
        models.append(loaded[g.model_path])
    check_parallel_supported(experiment, models)
    if trace is None:
        trace = load_experiment_trace(experiment)
    if cost_model is None:
        costs = [build_cost_model(experiment, m, g) for g, m in zip(groups, models, strict=True)]
    else:
        costs = [cost_model] * len(groups)
    costs = wrap_tp_expert_parallel(experiment, models, costs)
    if experiment.pim:  # decode attention on PIM devices (llmsim.pim)
        from llmsim.pim.build import wrap_pim

        costs = wrap_pim(experiment, models, costs)
    capacities = [resolve_capacity(experiment, m, g) for g, m in zip(groups, models, strict=True)]
    tiers = _tier_setup(experiment, models)
    if tiers is not None:
        capacities = tiers.adjust_capacities(capacities)
    validate_trace(trace, capacity_tokens=min(
        (c.num_gpu_blocks - 1) * g.engine.block_size for g, c in zip(groups, capacities,
                                                                      strict=True)))
    if tiers is not None:
        check_groups_memory(experiment, capacities)
        instances = tiers.build_instances(costs, capacities)
    else:
        instances = build_instances(experiment, costs, models, capacities)
    capacity = capacities[0]
    from llmsim.power.build import build_accumulator

    energy, energy_reason, energy_gpus = build_accumulator(experiment, models, capacities,
                                                           len(trace.requests))
    if energy is not None and tiers is not None:
        from llmsim.power.build import attach_kv_offload, attach_weight_streams

        attach_weight_streams(energy, tiers)
        attach_kv_offload(tiers)
    recorder = Recorder(trace.requests, keep_steps=keep_steps, energy=energy)
    # A kept step log is written by exact stepping: a fast-forwarded step's queue gauges
    # (``waiting``) can miss a request routed to the instance mid-stretch (a session turn
    # released by another instance), although every token time is identical
    # (tests/serving/test_fastforward_equal.py).
    fast_forward = not (exact_steps or keep_steps or getattr(experiment, "exact_steps", False))
    for inst in instances:  # subclasses (KV tiers) override the step methods: step by step
        inst.fast_forward = fast_forward and type(inst) is Instance
    from llmsim.pd.build import add_pd_columns, build_pd_flow

    pd_flow = build_pd_flow(experiment, models, instances, len(trace.requests))
    if pd_flow is not None and tiers is not None:  # (DP, hence MoE lock-step: refused at load)
        raise ConfigError("not supported yet: prefill/decode roles with KV tiers",
                          path=experiment.source, field="instance_groups")
    bar = None
    on_finished = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(trace), unit="req", desc=experiment.name, leave=False)
        on_finished = bar.update
    lockstep = build_lockstep_groups(experiment, models, costs, instances)
    if energy is not None:
        from llmsim.power.build import attach_ep_links

        for grp in lockstep:
            grp.on_dummy = energy.on_dummy
        attach_ep_links(energy, lockstep)
    if lockstep:
        sim: Simulation = LockstepSimulation(trace.requests, instances,
                                             build_router(experiment, models), recorder,
                                             on_finished=on_finished, groups=lockstep)
    else:
        from llmsim.sim.tiered import TieredSimulation

        sim = (Simulation if tiers is None else TieredSimulation)(
            trace.requests, instances,
            build_router(experiment) if pd_flow is None else pd_flow.arrival_router,
            recorder, on_finished=on_finished)
        if pd_flow is not None:
            pd_flow.install(sim)
    from llmsim.router.scrape import install_routing

    install_routing(sim, experiment.router, pd_flow)
    t0 = time.perf_counter()
    try:
        stats = sim.run()
    finally:
        if bar is not None:
            bar.close()
    requests, itls, timeseries, steps = recorder.tables()
    if tiers is not None:
        requests = tiers.add_columns(requests)
    pd_summary = None
    if pd_flow is not None:
        requests, pd_summary = add_pd_columns(requests, pd_flow, recorder.first_token_ns)
    wall = time.perf_counter() - t0
    kv = [i.scheduler.kv for i in instances]
    summary = summarize(
        requests, itls, num_steps=stats.num_steps,
        num_preemptions=sum(i.scheduler.num_preemptions for i in instances),
        prefix_query_tokens=sum(k.query_tokens for k in kv),
        prefix_hit_tokens=sum(k.hit_tokens for k in kv),
        extra=_settings(experiment, trace, capacity, steps, capacities,
                        peak_kv_usage=recorder.peak_kv_usage))
    summary["fast_forward"] = _fast_forward_summary(fast_forward, instances, lockstep)
    if lockstep:
        summary["moe_dp"] = _lockstep_summary(lockstep)
    if tiers is not None:
        summary["kv_tiers"] = tiers.summary()
    communication = _communication_summary(experiment, costs, instances)
    if communication:
        summary["communication"] = communication
    if pd_summary is not None:
        summary["pd"] = pd_summary
    if energy is not None and pd_flow is not None:
        from llmsim.power.build import charge_pd_transfers

        charge_pd_transfers(energy, pd_flow)
    if energy is not None and tiers is not None:
        from llmsim.power.build import charge_kv_offload

        charge_kv_offload(energy, tiers)
    power, summary["energy"] = _energy_outputs(energy, energy_reason, energy_gpus, requests)
    logger.info("replayed %d requests in %d steps, %.3f s wall", len(trace), stats.num_steps, wall)
    return ReplayResult(requests=requests, itls_s=itls, timeseries=timeseries, steps=steps,
                        summary=summary, num_steps=stats.num_steps, wall_time_s=wall,
                        power=power)


def _energy_outputs(energy: Any, reason: str, gpus: dict[str, Any], requests: pd.DataFrame
                    ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The power series and ``summary["energy"]`` (``"unavailable"`` with ``reason``);
    ``requests["energy_j"]`` is set again in place, so that energy charged after the loop
    (KV transfers and offload totals) is shared too."""
    from llmsim.power.accumulator import POWER_COLUMNS, unavailable_summary

    if energy is None:
        return pd.DataFrame(columns=POWER_COLUMNS), {**unavailable_summary(reason),
                                                     "gpus": gpus}
    requests["energy_j"] = energy.request_energy_j()
    done = requests["finish_s"].notna()
    power = energy.power_frame()
    return power, energy.summary(int(requests.loc[done, "input_tokens"].sum()),
                                 int(requests.loc[done, "output_tokens"].sum()), power, gpus)


def _communication_summary(experiment: Experiment, costs: Sequence[CostModel],
                           instances: Sequence[Instance]) -> list[dict[str, Any]]:
    """Per communicating group: each modelled collective's count, bytes and mean ms per
    step and its source (:mod:`llmsim.metrics.communication`)."""
    from llmsim.metrics.communication import group_communication

    out = []
    first = 0
    for g, cm in zip(experiment.groups(), costs, strict=True):
        engines = instances[first:first + g.num_engines]
        label = f"{g.hardware.name} (instances {first}-{first + g.num_engines - 1})"
        first += g.num_engines
        shapes = [i.step_time.comm_shapes for i in engines
                  if i.step_time.comm_shapes is not None]
        report = group_communication(label, g.parallel, cm, shapes)
        if report is not None:
            out.append(report)
    return out


def _tier_setup(experiment: Experiment, models: Sequence[ModelConfig]) -> Any:
    """The experiment's memory tiers (:mod:`llmsim.memory.tiers_setup`), or None when it
    offloads nothing.

    Raises:
        ConfigError: a weight placement that does not fit (file, line, field).
    """
    from llmsim.memory.tiers_setup import TierSetup, tiers_enabled

    if not tiers_enabled(experiment):
        return None
    try:
        return TierSetup(experiment, models)
    except ConfigError as exc:
        if exc.path is not None or experiment.source is None:
            raise
        field = exc.field or "weight_offload"
        raise ConfigError(exc.reason, path=experiment.source,
                          line=_source_line(experiment, field), field=field) from None


def _lockstep_summary(groups: Sequence[LockstepGroup]) -> dict[str, Any]:
    """Counters of the MoE DP groups: group steps, dummy passes, what priced EP's
    collectives."""
    sources: dict[str, int] = {}
    for g in groups:
        if g.ep is not None:
            for (op, src), n in sorted(g.ep.sources.items()):
                sources[f"{op}: {src}"] = sources.get(f"{op}: {src}", 0) + n
    steps = sum(g.num_steps for g in groups)
    comm_ns = sum(g.ep_comm_ns for g in groups)
    return {"group_steps": steps,
            "dummy_passes": sum(g.num_dummy_passes for g in groups),
            "ep_expert_extrapolations": sum(g.ep.extrapolated for g in groups if g.ep),
            "ep_collective_sources": sources,
            "moe_modes": sorted({g.ep.mode.value for g in groups if g.ep}),
            "ep_expert_tables": sorted({g.ep.expert_table for g in groups if g.ep}),
            "ep_expert_lookup": sorted({g.ep.expert_lookup for g in groups if g.ep}),
            "ep_communication_ms_per_group_step": comm_ns / steps / 1e6 if steps else 0.0,
            "ep_slowest_experts_ms_per_group_step": (
                sum(g.ep_expert_ns for g in groups) / steps / 1e6 if steps else 0.0),
            "dp_sync_all_reduce": "not modelled (no sourced figure for the CPU/gloo "
                                  "all-reduce of int32[4, dp])"}


def _fast_forward_summary(enabled: bool, instances: Sequence[Instance],
                          lockstep: Sequence[LockstepGroup]) -> dict[str, Any]:
    """``summary["fast_forward"]``: runs, steps they covered, and per reason the decode
    steps a feature kept step by step (MoE DP lock-step: every group step)."""
    fallbacks: dict[str, int] = {}
    for inst in instances:
        for why, count in inst.ff_stats.fallbacks.items():
            fallbacks[why] = fallbacks.get(why, 0) + count
    if enabled and lockstep:
        fallbacks["moe dp lock-step"] = sum(g.num_steps for g in lockstep)
    return {"enabled": enabled,
            "runs": sum(i.ff_stats.runs for i in instances),
            "steps_fast_forwarded": sum(i.ff_stats.steps for i in instances),
            "fallbacks": dict(sorted(fallbacks.items()))}


def _settings(experiment: Experiment, trace: Trace, capacity: KVCapacity,
              steps: pd.DataFrame | None, capacities: Sequence[KVCapacity] = (), *,
              peak_kv_usage: float | None = None) -> dict[str, Any]:
    e, o = experiment.engine, experiment.overheads
    if peak_kv_usage is not None:  # as the steps frame's kv_cache_pct: x 100, np.round(2)
        peak_kv = float(np.round(peak_kv_usage * 100.0, 2))
    else:
        peak_kv = float(steps["kv_cache_pct"].max()) if steps is not None and len(steps) else 0.0
    out = {
        "name": experiment.name,
        "hardware": experiment.hardware.name,
        "num_instances": experiment.num_instances,
        "cost_model": experiment.cost_model,
        "trace": {"source": Path(trace.source).name if trace.source else "",
                  "num_requests": len(trace)},
        "kv_cache": {"num_gpu_blocks": capacity.num_gpu_blocks, "block_size": capacity.block_size,
                     "num_kv_tokens": capacity.num_kv_tokens, "source": capacity.source,
                     "peak_usage_pct": peak_kv},
        "engine": {"max_num_seqs": e.max_num_seqs,
                   "max_num_batched_tokens": e.max_num_batched_tokens,
                   "enable_prefix_caching": e.enable_prefix_caching,
                   "async_scheduling": e.async_scheduling,
                   "scheduler_reserve_full_isl": e.scheduler_reserve_full_isl,
                   "tensor_parallel_size": e.tensor_parallel_size,
                   "pipeline_parallel_size": e.pipeline_parallel_size},
        "overheads": {"cpu_step_ns": o.cpu_step_ns, "cpu_per_seq_ns": o.cpu_per_seq_ns,
                      "cudagraph_padding": o.cudagraph_padding},
    }
    groups = experiment.groups()
    if experiment.instance_groups or any(g.parallel.data_parallel_size > 1 for g in groups):
        # only then: the settings of a one-group, DP-1 experiment stay as they were
        out["num_instances"] = sum(g.num_engines for g in groups)
        out["hardware"] = ",".join(dict.fromkeys(g.hardware.name for g in groups))
        out["instance_groups"] = [
            {"name": g.name, "count": g.count, "hardware": g.hardware.name,
             "model": g.model_path.name, "node": g.node, "gpus": [list(map(list, d))
                                                                  for d in g.gpus],
             **({"rank_nodes": [list(r) for r in g.rank_nodes]} if g.rank_nodes else {}),
             "tensor_parallel_size": g.parallel.tensor_parallel_size,
             "data_parallel_size": g.parallel.data_parallel_size,
             "num_gpu_blocks": c.num_gpu_blocks, "max_num_seqs": g.engine.max_num_seqs}
            for g, c in zip(groups, capacities or [capacity] * len(groups), strict=True)]
    return out


# -------------------------------------------------------------------------- output
def write_outputs(result: ReplayResult, out_dir: str | Path, *, steps_log: bool = True) -> Path:
    """Write ``result`` into ``out_dir`` atomically (temp dir, then rename).

    An existing ``out_dir`` is replaced only after the new one is complete.

    Returns:
        The output directory.
    """
    tmp = temp_dir_next_to(out_dir)
    try:
        _write_files(result, tmp, steps_log=steps_log)
        return publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_files(result: ReplayResult, d: Path, *, steps_log: bool) -> None:
    result.requests.to_csv(d / "requests.csv", index=False)
    result.requests.to_parquet(d / "requests.parquet", index=False)
    ids = result.requests["request_id"].to_numpy()
    lens = [len(a) for a in result.itls_s]
    itls = pd.DataFrame({
        "request_id": np.repeat(ids, lens),
        "token_index": np.concatenate([np.arange(1, n + 1) for n in lens]) if lens else [],
        "itl_s": np.concatenate(result.itls_s) if lens else [],
    })
    itls.to_parquet(d / "itls.parquet", index=False)
    result.timeseries.to_csv(d / "timeseries.csv", index=False)
    if result.power is not None:
        result.power.to_csv(d / "power.csv", index=False)
    if steps_log and result.steps is not None:
        result.steps.to_csv(d / "steps.csv", index=False)
    with open(d / "summary.json", "w") as f:
        json.dump(result.summary, f, indent=2, sort_keys=True)
        f.write("\n")
