"""Build an :class:`~llmsim.power.accumulator.EnergyAccumulator` for an experiment.

Sources of every constant, in order: the experiment's ``power`` section (a node's own
``power`` replacing it; ``power.gpu.<hardware>`` overriding the GPU's file), then the GPU's
power file (``llmsim/power/data``). A GPU constant the model needs without a source makes the
replay's energy "unavailable" (the reason says which and where to set it); a node component
without a source is left out of the totals and listed under ``not_covered``.

Nodes: the ``cluster`` nodes; without a cluster, one node (``node0``) holds every instance's
GPUs, numbered in instance order (an assumption: the experiment says nothing of hosts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmsim.experiment import Experiment, PowerConfig
from llmsim.memory.capacity import KVCapacity
from llmsim.model.config import ModelConfig
from llmsim.power.accumulator import EnergyAccumulator, GpuPower, InstancePower, NodePower
from llmsim.power.model import StepShape
from llmsim.power.spec import find_power_spec

__all__ = ["attach_ep_links", "attach_weight_streams", "build_accumulator", "charge_kv_offload",
           "charge_pd_transfers", "ep_link_bytes", "node_power", "resolve_gpu"]


def resolve_gpu(hardware: str, cfg: PowerConfig, where: str) -> tuple[GpuPower | None, str]:
    """The power constants of GPU type ``hardware``, or None and the reason.

    Args:
        hardware: hardware name.
        cfg: the node's power section (its ``gpu`` entry overrides the power file).
        where: dotted prefix of ``cfg`` in the experiment (for sources and messages).
    """
    spec = find_power_spec(hardware)
    ov = cfg.gpu_overrides(hardware)
    sources: list[tuple[str, float | None, str]] = []

    def pick(name: str, spec_name: str | None) -> float | None:
        if ov is not None and getattr(ov, name, None) is not None:
            v = float(getattr(ov, name))
            sources.append((name, v, f"experiment {where}.gpu.{hardware}.{name}"))
            return v
        if spec is not None and spec_name is not None:
            sv = getattr(spec, spec_name)
            sources.append((name, sv.value, sv.source))
            return None if sv.value is None else float(sv.value)
        return None

    idle = pick("idle_w", "idle_w")
    limit = pick("power_limit_w", "power_limit_w")
    active = pick("active_w", None)
    standby = pick("standby_w", None)
    standby_s = pick("standby_s", None)
    peak = pick("peak_flops_per_s", "peak_bf16_flops_per_s")
    bw = pick("memory_bandwidth_bytes_per_s", "memory_bandwidth_bytes_per_s")
    file = f"llmsim/power/data/{spec.path.rsplit('/', 1)[-1]}" if spec and spec.path else (
        "no power file in llmsim/power/data")
    if idle is None:
        return None, (f"no sourced idle power for GPU '{hardware}' ({file}); set "
                      f"{where}.gpu.{hardware}.idle_w with its source")
    if active is None and (limit is None or peak is None or bw is None):
        return None, (f"GPU '{hardware}' has neither {where}.gpu.{hardware}.active_w nor a "
                      f"complete power-state spec (power limit, peak FLOP/s, memory "
                      f"bandwidth; {file})")
    return GpuPower(name=hardware, idle_w=idle, power_limit_w=limit, active_w=active,
                    standby_w=standby, standby_s=standby_s or 0.0, peak_flops_per_s=peak,
                    memory_bandwidth_bytes_per_s=bw, sources=tuple(sources)), ""


def node_power(name: str, cfg: PowerConfig, where: str) -> NodePower:
    """Component power of a node from its power section (LLMServingSim's ``PowerModel``
    base powers; :mod:`llmsim.power.accumulator`)."""
    const: dict[str, float] = {}
    miss: dict[str, str] = {}

    def unset(comp: str, keys: str) -> None:
        miss[comp] = f"{where}.{comp} {keys} not set (no source)"

    if cfg.base_node_w is None:
        miss["base_node"] = f"{where}.base_node_w not set (no source)"
    else:
        const["base_node"] = cfg.base_node_w
    c = cfg.cpu
    cpu_busy = None
    if c.idle_w is None or c.active_w is None or c.utilization is None:
        unset("cpu", "idle_w / active_w / utilization")
    else:
        const["cpu"] = c.idle_w + (c.active_w - c.idle_w) * c.utilization
        if c.busy_utilization is not None:
            cpu_busy = (c.active_w - c.idle_w) * max(c.busy_utilization - c.utilization, 0.0)
    d = cfg.dram
    if d.num_dimms is None or d.idle_w_per_dimm is None:
        unset("dram", "num_dimms / idle_w_per_dimm")
    else:
        const["dram"] = d.num_dimms * d.idle_w_per_dimm
    for comp in ("link", "nic", "storage", "cxl"):
        dev = getattr(cfg, comp)
        if dev.count is None and comp == "cxl":
            continue  # no CXL memory
        if dev.count is None or dev.idle_w is None:
            unset(comp, "count / idle_w")
        else:
            const[comp] = dev.count * dev.idle_w
    pim = None
    if d.pim_active_w is not None and d.idle_w_per_dimm is not None:
        pim = max(d.pim_active_w - d.idle_w_per_dimm, 0.0)
    return NodePower(name=name, constant_w=const, cpu_busy_w=cpu_busy,
                     dram_pj_per_bit=d.energy_pj_per_bit,
                     link_pj_per_bit=cfg.link.energy_pj_per_bit,
                     cxl_pj_per_bit=cfg.cxl.energy_pj_per_bit, pim_extra_w=pim,
                     unavailable=miss)


def _active_params(model: ModelConfig) -> float:
    """Parameters a token multiplies: all but the experts it is not routed to."""
    n = float(model.num_params())
    if model.is_moe:
        idle = model.num_experts - model.num_experts_per_token
        n -= model.num_hidden_layers * idle * 3 * model.hidden_size * model.moe_intermediate_size
    return n


def _shape(model: ModelConfig, group: Any, capacity: KVCapacity) -> StepShape:
    par = group.parallel
    tp, pp = par.tensor_parallel_size, par.pipeline_parallel_size
    g = tp * pp
    return StepShape(gpus_per_instance=g, flops_per_token=2.0 * _active_params(model) / g,
                     weight_bytes=model.weight_bytes(par) / pp,
                     kv_bytes_per_token=model.kv_bytes_per_token(par) / pp,
                     kv_capacity_tokens=float(capacity.num_kv_tokens))


def _link_bytes(model: ModelConfig, tp: int) -> tuple[float, float]:
    """Link bytes per computed token and per sampled token of a TP group.

    Per token: ``2 x layers + 1`` all-reduces of ``hidden x dtype_bytes``
    (:mod:`llmsim.costmodel.decompose`), ring-counted ``2 (tp - 1) / tp`` as LLMServingSim's
    ``total_ring_data``; per sampled token: the logits all-gather, ``(tp - 1) / tp x vocab x
    dtype_bytes``.
    """
    if tp <= 1:
        return 0.0, 0.0
    h = model.hidden_size * model.dtype_bytes
    per_tok = (2 * model.num_hidden_layers + 1) * h * 2.0 * (tp - 1) / tp
    per_sample = model.vocab_size * model.dtype_bytes * (tp - 1) / tp
    return per_tok, per_sample


def build_accumulator(experiment: Experiment, models: Sequence[ModelConfig],
                      capacities: Sequence[KVCapacity], num_requests: int
                      ) -> tuple[EnergyAccumulator | None, str, dict[str, Any]]:
    """The accumulator of ``experiment``, or None and why energy is unavailable.

    Args:
        experiment: the experiment.
        models, capacities: per group (:meth:`Experiment.groups` order).
        num_requests: requests of the trace.

    Returns:
        ``(accumulator or None, reason, gpus)``: ``gpus`` maps each GPU type to its
        constants and their sources.
    """
    groups = experiment.groups()
    cluster = experiment.cluster
    gpus_info: dict[str, Any] = {}
    cache: dict[tuple[str, int], tuple[GpuPower | None, str]] = {}

    def gpu_of(hardware: str, cfg: PowerConfig, where: str, key: int) -> GpuPower:
        k = (hardware.lower(), key)
        if k not in cache:
            cache[k] = resolve_gpu(hardware, cfg, where)
        gp, why = cache[k]
        if gp is None:
            raise _Unavailable(why)
        gpus_info[hardware] = {n: {"value": v, "source": s} for n, v, s in gp.sources}
        return gp

    notes = []
    if any(m.is_moe and g.parallel.data_parallel_size > 1 for m, g in zip(models, groups,
                                                                          strict=True)):
        notes.append("MoE DP/EP: the expert dispatch / combine traffic is charged to the "
                     "links once per group step; EP over TP alone (DP 1) is not")
    try:
        names: list[str] = []
        node_of: list[int] = []
        idle: list[float] = []
        nodes: list[NodePower] = []
        offset: dict[str, int] = {}
        if cluster is not None:
            for k, n in enumerate(cluster.nodes):
                cfg = n.power if n.power is not None else experiment.power
                where = f"cluster.nodes.{k}.power" if n.power is not None else "power"
                nodes.append(node_power(n.name, cfg, where))
                gp = gpu_of(n.gpus[0].hardware, cfg, where, k)
                offset[n.name] = len(names)
                for j in range(n.num_gpus):
                    names.append(f"{n.name}/gpu{j}")
                    node_of.append(k)
                    idle.append(gp.idle_w)
        else:
            nodes.append(node_power("node0", experiment.power, "power"))
        instances: list[InstancePower] = []
        for g, m, cap in zip(groups, models, capacities, strict=True):
            shape = _shape(m, g, cap)
            per_tok, per_sample = _link_bytes(m, g.parallel.tensor_parallel_size)
            dp = g.parallel.data_parallel_size
            for e in range(g.num_engines):
                node_name = g.node_of(e)  # the engine's node (placement.spans)
                if cluster is not None and node_name is not None:
                    k = next(i for i, n in enumerate(cluster.nodes) if n.name == node_name)
                    n = cluster.nodes[k]
                    cfg = n.power if n.power is not None else experiment.power
                    where = f"cluster.nodes.{k}.power" if n.power is not None else "power"
                    gp = gpu_of(g.hardware.name, cfg, where, k)
                    own = tuple(offset[node_name] + x for x in g.gpus[e // dp][e % dp])
                else:
                    k = 0
                    gp = gpu_of(g.hardware.name, experiment.power, "power", 0)
                    own = tuple(range(len(names), len(names) + shape.gpus_per_instance))
                    for j in own:
                        names.append(f"node0/gpu{j}")
                        node_of.append(0)
                        idle.append(gp.idle_w)
                instances.append(InstancePower(node=k, gpus=own, gpu=gp, shape=shape,
                                               link_bytes_per_token=per_tok,
                                               link_bytes_per_sample=per_sample))
    except _Unavailable as exc:
        return None, str(exc), gpus_info
    acc = EnergyAccumulator(instances=instances, nodes=nodes, gpu_names=names,
                            gpu_node=node_of, gpu_idle_w=idle, num_requests=num_requests,
                            notes=notes)
    return acc, "", gpus_info


class _Unavailable(Exception):
    """A GPU constant without a source (the message says which)."""


def attach_weight_streams(acc: EnergyAccumulator, tiers: Any) -> None:
    """Weights streamed every step from host / CXL / disk tiers (``weight_offload``;
    :class:`llmsim.memory.tiers_setup.TierSetup`): each rank reads its offloaded bytes per
    step, charged at the tier's pJ/bit (LLMServingSim charges non-``LOCAL`` weights at the
    DRAM ``energy_per_bit``)."""
    for inst, placed in zip(tiers.instances, tiers.placements, strict=True):
        if placed is None:
            continue
        ranks = len(acc.instances[inst.instance_id].gpus)
        for loc, _layers, per_rank in placed.bytes_by_location:
            kind = str(tiers.tiers[loc.partition(":")[0]].kind.value)
            acc.add_stream(inst.instance_id, kind, per_rank * ranks)


def attach_kv_offload(tiers: Any) -> None:
    """Have every KV offload manager (``kv_offload``) keep the times of its copies
    (:attr:`llmsim.kvcache.offload.OffloadManager.copies`), so that
    :func:`charge_kv_offload` charges them when they run. Call before the replay."""
    for mgr in tiers.managers:
        if mgr is not None:
            mgr.copies = []


def charge_kv_offload(acc: EnergyAccumulator, tiers: Any) -> None:
    """KV blocks loaded from and stored to the tiers (``kv_offload``), charged after the
    replay. Copies whose times the manager kept (:func:`attach_kv_offload`: vLLM-native
    asynchronous loads, every store) are charged over their own ``[start, end]``; the rest
    of each total (LMCache's blocking loads, priced inside the step, and anything recorded
    without a timed copy) over the whole replay, so the power series spreads it evenly. The
    totals are the managers' exact byte counts either way. Stores go to the first tier of
    the spill order."""
    horizon = acc.horizon_ns or 0
    for inst, mgr in zip(tiers.instances, tiers.managers, strict=True):
        if mgr is None:
            continue
        iid = inst.instance_id
        kinds = [str(pool.spec.kind.value) for pool in mgr.pools]
        loads = [int(b) for b in mgr.load_bytes]
        stores = int(mgr.store_bytes)
        for is_store, p, nbytes, a, b in mgr.copies or ():
            if is_store:
                nbytes = min(nbytes, stores)
                stores -= nbytes
            else:
                nbytes = min(nbytes, loads[p])
                loads[p] -= nbytes
            if nbytes:
                acc.on_transfer(iid, kinds[p], nbytes, max(0, a), max(0, a, b))
        for kind, nbytes in zip(kinds, loads, strict=True):
            acc.on_transfer(iid, kind, nbytes, 0, horizon)
        if kinds and stores:
            acc.on_transfer(iid, kinds[0], stores, 0, horizon)


def charge_pd_transfers(acc: EnergyAccumulator, flow: Any) -> None:
    """KV blocks sent from prefill to decode instances (:class:`llmsim.pd.flow.PdFlow`):
    each request's bytes on the node's links between its transfer's ready and done times,
    charged to the prefill instance's node (LLMServingSim counts the P/D KV send once on
    the link, no ring factor)."""
    for i, nbytes in enumerate(flow.kv_bytes):
        if nbytes <= 0:
            continue
        src = flow.prefill_of[i]
        a, b = flow.kv_ready_ns[i], flow.kv_done_ns[i]
        if src < 0:
            continue
        a = max(0, a)
        acc.on_transfer(src, "link", int(nbytes), a, max(a, b))


def ep_link_bytes(cost: Any) -> int:
    """Link bytes of one group step's cross-rank MoE collectives
    (:class:`llmsim.cluster.moe_dp.EpLayerCost`): per collective, ``calls x bytes`` ring-counted
    as LLMServingSim's ``total_ring_data`` (all-reduce ``2 (n - 1) / n``, all-gather,
    reduce-scatter and all-to-all ``(n - 1) / n``)."""
    total = 0.0
    for c in cost.collectives:
        n = max(1, int(c.ranks))
        ring = 2.0 * (n - 1) / n if str(c.collective) == "all_reduce" else (n - 1) / n
        total += c.calls * c.nbytes * ring
    return int(total)


def attach_ep_links(acc: EnergyAccumulator, groups: Sequence[Any]) -> None:
    """Charge every MoE DP group step's EP collectives to its node's links
    (:attr:`llmsim.sim.lockstep.LockstepGroup.on_ep_cost`), once per group step as
    LLMServingSim charges a node's link traffic."""
    for grp in groups:
        leader = grp.leader

        def hook(start_ns: int, end_ns: int, cost: Any, leader: int = leader) -> None:
            acc.on_transfer(leader, "link", ep_link_bytes(cost), start_ns, end_ns)

        grp.on_ep_cost = hook
