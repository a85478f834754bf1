"""Online energy accounting: fed one :class:`~llmsim.instance.instance.StepRecord` at a time.

The metrics recorder hands every finished step to :meth:`EnergyAccumulator.on_step` (whether
or not it keeps a step log), so a replay's energy never needs the step list. Everything is a
sum of terms, each physical and each with its source (docs/power.md):

* **GPU** (per GPU, its instance's GPUs drawing alike): ``idle_w`` at all times over
  ``[0, horizon]``; while kernels run (``busy = min(gpu_ns, end - start)`` of each step,
  CUDA-graph and DP padding included, DP dummy passes too) the extra ``active_w - idle_w``;
  after a kernel ends, ``standby_w - idle_w`` for up to ``standby_s`` (LLMServingSim's NPU
  standby state) until the next kernel starts. ``active_w`` is, in order of precedence:
  the step's energy measured by the profile (``StepCost.energy_j``, one rank's kernel
  energy, times the instance's GPUs; padding beyond the priced kernel time at the modelled
  power); a constant ``active_w`` (LLMServingSim's law); else the power-state law
  ``idle_w + (power_limit_w - idle_w) x min(1, u_compute + u_memory)`` (roofline shares of
  the step, :func:`llmsim.power.model.step_power`). It is capped at ``power_limit_w``.
* **Node** components (LLMServingSim ``serving/core/power_model.py``): constant
  ``base_node_w``, CPU ``idle + (active - idle) x utilization``, DRAM ``num_dimms x
  idle_w_per_dimm``, links / NICs / storage / CXL ``count x idle_w``; plus, per event, the
  CPU's ``(active - idle) x max(busy_utilization - utilization, 0)`` over each step's
  kernel time, link ``pJ/bit`` x the bytes of the step's TP collectives (ring-counted as
  LLMServingSim's ``total_ring_data``), DRAM / CXL ``pJ/bit`` x bytes moved through host or
  CXL memory (:meth:`EnergyAccumulator.on_transfer`), PIM ``pim_active_w - dram idle`` over
  PIM busy time (:meth:`EnergyAccumulator.on_pim`).

A step's energy (the ``energy_j`` column of the step log) is its instance's GPU energy over
``[start, end]`` plus its CPU and link terms. It is split among the step's requests by their
share of its tokens (``num_new_tokens`` of each chunk); energy no step claims (idle time,
gaps, idle GPUs, node background, dummy passes) is then shared in proportion, so the
per-request energies sum to the total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from llmsim.instance.instance import StepRecord
from llmsim.power.model import StepShape

NS_PER_S = 1_000_000_000
PJ = 1e-12
"""Joules per picojoule."""

QUIET_TICKS_WRITTEN = 60
"""Of a run of ticks where every device draws its background power, the first 60 and the
last are written to the power series (as :mod:`llmsim.metrics.recorder` does for
``timeseries.csv``); forward-filling restores the omitted ones."""

POWER_COLUMNS = ["t", "scope", "name", "power_w"]
"""Columns of the 1 s power series: ``t`` end of the tick (s), ``scope`` ``gpu`` / ``node``
/ ``cluster``, ``name`` (``<node>/gpu<k>``, the node's name, ``all``), average power, W."""

GPU_COMPONENTS = ("gpu_idle", "gpu_active", "gpu_standby")
NODE_COMPONENTS = ("base_node", "cpu", "dram", "link", "nic", "storage", "cxl", "pim")


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuPower:
    """Resolved power constants of one GPU type.

    Attributes:
        name: hardware name.
        idle_w: power with no kernel running, W.
        power_limit_w: cap of the active power, W (None: no cap known).
        active_w: constant active power, W (None: the power-state law).
        standby_w: power for ``standby_s`` after a kernel, W (None: idle at once).
        standby_s: standby duration, s.
        peak_flops_per_s: dense BF16 peak, FLOP/s (power-state law).
        memory_bandwidth_bytes_per_s: memory bandwidth, bytes/s (power-state law).
        sources: ``(field, value, source)`` of every constant used.
    """

    name: str
    idle_w: float
    power_limit_w: float | None = None
    active_w: float | None = None
    standby_w: float | None = None
    standby_s: float = 0.0
    peak_flops_per_s: float | None = None
    memory_bandwidth_bytes_per_s: float | None = None
    sources: tuple[tuple[str, float | None, str], ...] = ()

    @property
    def law(self) -> str:
        """``constant`` (a fixed active power) or ``power_state`` (roofline law)."""
        return "constant" if self.active_w is not None else "power_state"


@dataclass(frozen=True, slots=True, kw_only=True)
class InstancePower:
    """What the accumulator needs of one simulated instance (engine).

    Attributes:
        node: index of its node in :attr:`EnergyAccumulator.nodes`.
        gpus: global indices of its GPUs (:attr:`EnergyAccumulator.gpu_names`).
        gpu: its GPUs' power constants.
        shape: FLOPs and bytes per step of one of its GPUs.
        link_bytes_per_token: link bytes per computed token (TP all-reduces), bytes.
        link_bytes_per_sample: link bytes per sampled token (logits all-gather), bytes.
    """

    node: int
    gpus: tuple[int, ...]
    gpu: GpuPower
    shape: StepShape
    link_bytes_per_token: float = 0.0
    link_bytes_per_sample: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NodePower:
    """Component power of one node.

    Attributes:
        name: node name.
        constant_w: component -> power drawn at all times, W (available components only).
        cpu_busy_w: extra CPU power while an instance's kernels run, W (None: unknown).
        dram_pj_per_bit, link_pj_per_bit, cxl_pj_per_bit: energy per bit moved, pJ/bit.
        pim_extra_w: extra memory power while PIM units compute, W.
        unavailable: component -> why it has no figure (no source).
    """

    name: str
    constant_w: Mapping[str, float] = field(default_factory=dict)
    cpu_busy_w: float | None = None
    dram_pj_per_bit: float | None = None
    link_pj_per_bit: float | None = None
    cxl_pj_per_bit: float | None = None
    pim_extra_w: float | None = None
    unavailable: Mapping[str, str] = field(default_factory=dict)


def _spread(bins: dict[int, float], a_ns: int, b_ns: int, joules: float, tick_ns: int) -> None:
    """Add ``joules``, drawn uniformly over ``[a_ns, b_ns]``, to the ticks it overlaps
    (tick ``k`` covers ``((k-1) tick, k tick]``; an instant goes to the tick holding it)."""
    if joules == 0.0:
        return
    if b_ns <= a_ns:
        k = max(1, -(-a_ns // tick_ns))
        bins[k] = bins.get(k, 0.0) + joules
        return
    rate = joules / (b_ns - a_ns)
    k = a_ns // tick_ns + 1
    while True:
        hi = min(b_ns, k * tick_ns)
        bins[k] = bins.get(k, 0.0) + rate * (hi - max(a_ns, (k - 1) * tick_ns))
        if hi >= b_ns:
            return
        k += 1


def _on_ticks(bins: dict[int, float], ticks: np.ndarray) -> np.ndarray:
    """``bins`` (tick -> J) on the sorted ``ticks`` (every key of ``bins`` is among them)."""
    out = np.zeros(len(ticks))
    if bins:
        keys = np.fromiter(bins.keys(), dtype=np.int64, count=len(bins))
        vals = np.fromiter(bins.values(), dtype=np.float64, count=len(bins))
        np.add.at(out, np.searchsorted(ticks, keys), vals)
    return out


class EnergyAccumulator:
    """Energy of a replay, accumulated step by step (module docstring).

    Args:
        instances: per simulated instance (instance id order).
        nodes: the nodes.
        gpu_names: label of every GPU (``<node>/gpu<k>``), global index order.
        gpu_node: node index of every GPU.
        gpu_idle_w: idle power of every GPU, W.
        num_requests: requests of the trace (per-request energy, trace order).
        tick_ns: power-series period, ns.
        notes: remarks carried into the summary (terms not modelled).
    """

    def __init__(self, *, instances: Sequence[InstancePower], nodes: Sequence[NodePower],
                 gpu_names: Sequence[str], gpu_node: Sequence[int],
                 gpu_idle_w: Sequence[float], num_requests: int, tick_ns: int = NS_PER_S,
                 notes: Sequence[str] = ()) -> None:
        self.instances = tuple(instances)
        self.nodes = tuple(nodes)
        self.gpu_names = tuple(gpu_names)
        self.gpu_node = tuple(gpu_node)
        self.gpu_idle_w = tuple(float(w) for w in gpu_idle_w)
        self.tick_ns = tick_ns
        self.notes = tuple(notes)
        n_inst = len(self.instances)
        self._last_end = [0] * n_inst
        self._standby_left_ns = [0] * n_inst
        self._last_kv = [0.0] * n_inst
        self._gpu_bins: list[dict[int, float]] = [{} for _ in range(n_inst)]
        # energy sums are kept per instance and merged in instance order when read: each
        # instance sees its steps in the same order whether they were simulated one by one or
        # fast-forwarded (llmsim.instance.fastforward), which interleaves instances
        # differently; float sums must not depend on that interleaving
        self._node_bins_i: list[dict[int, float]] = [{} for _ in range(n_inst)]
        self._energy_i = [dict.fromkeys(GPU_COMPONENTS + NODE_COMPONENTS, 0.0)
                          for _ in range(n_inst)]
        self._moved_bytes = [{"dram": 0, "cxl": 0, "link": 0, "disk": 0} for _ in self.nodes]
        self._streams: list[list[tuple[str, int]]] = [[] for _ in range(n_inst)]
        self.shares = [0.0] * num_requests
        self._step_j = [0.0] * n_inst
        self._prefill_j = [0.0] * n_inst
        self.sources = {"profile": 0, "constant": 0, "power_state": 0}
        self.num_dummy_passes = 0
        self.horizon_ns: int | None = None

    # ------------------------------------------------------------------ hot path
    def _active_w(self, ip: InstancePower, busy_s: float, tokens: int, kv_usage: float) -> float:
        gp = ip.gpu
        limit = gp.power_limit_w if gp.power_limit_w is not None else math.inf
        if gp.active_w is not None:
            return min(gp.active_w, limit)
        if busy_s <= 0.0:
            return gp.idle_w
        s = ip.shape
        u_c = s.flops_per_token * tokens / (gp.peak_flops_per_s * busy_s)  # type: ignore[operator]
        u_m = (s.weight_bytes + kv_usage * s.kv_capacity_tokens * s.kv_bytes_per_token) \
            / (gp.memory_bandwidth_bytes_per_s * busy_s)  # type: ignore[operator]
        return min(gp.idle_w + (limit - gp.idle_w) * min(1.0, u_c + u_m), limit)

    def _gap(self, i: int, until_ns: int) -> None:
        """Standby after instance ``i``'s last kernel, up to ``until_ns`` (background)."""
        ip = self.instances[i]
        left = self._standby_left_ns[i]
        gp = ip.gpu
        if left <= 0 or gp.standby_w is None:
            return
        a = self._last_end[i]
        n = min(max(0, until_ns - a), left)
        self._standby_left_ns[i] = left - n
        j = len(ip.gpus) * (gp.standby_w - gp.idle_w) * n / NS_PER_S
        self._energy_i[i]["gpu_standby"] += j
        _spread(self._gpu_bins[i], a, a + n, j, self.tick_ns)

    def _run(self, i: int, start_ns: int, end_ns: int, gpu_ns: int, tokens: int,
             kv_usage: float, measured_j: float | None, priced_ns: int, sampled: int
             ) -> float:
        """Account one forward pass of instance ``i``; returns the step's energy, J."""
        ip = self.instances[i]
        gp = ip.gpu
        start_ns = max(start_ns, self._last_end[i])
        end_ns = max(end_ns, start_ns)
        self._gap(i, start_ns)
        dur = end_ns - start_ns
        busy = min(gpu_ns, dur)
        busy_s = busy / NS_PER_S
        g = len(ip.gpus)
        act = self._active_w(ip, busy_s, tokens, kv_usage)
        if measured_j is not None and math.isfinite(measured_j):
            pad_s = max(0, busy - priced_ns) / NS_PER_S
            kernel_j = g * (measured_j + act * pad_s)
            self.sources["profile"] += 1
        else:
            kernel_j = g * act * busy_s
            self.sources[gp.law] += 1
        extra = kernel_j - g * gp.idle_w * busy_s
        e = self._energy_i[i]
        e["gpu_active"] += extra
        bins = self._gpu_bins[i]
        _spread(bins, start_ns, start_ns + busy, extra, self.tick_ns)
        standby_j = 0.0
        if gp.standby_w is not None and gp.standby_s > 0:
            s_ns = round(gp.standby_s * NS_PER_S)
            n = min(dur - busy, s_ns)
            standby_j = g * (gp.standby_w - gp.idle_w) * n / NS_PER_S
            e["gpu_standby"] += standby_j
            _spread(bins, start_ns + busy, start_ns + busy + n, standby_j, self.tick_ns)
            self._standby_left_ns[i] = s_ns - n
        node = self.nodes[ip.node]
        node_j = 0.0
        if node.cpu_busy_w is not None and busy:
            cpu_j = node.cpu_busy_w * busy_s
            e["cpu"] += cpu_j
            node_j += cpu_j
            _spread(self._node_bins_i[i], start_ns, start_ns + busy, cpu_j, self.tick_ns)
        link_bytes = tokens * ip.link_bytes_per_token + sampled * ip.link_bytes_per_sample
        if link_bytes:
            self._moved_bytes[ip.node]["link"] += int(link_bytes)
            if node.link_pj_per_bit is not None:
                link_j = link_bytes * 8.0 * node.link_pj_per_bit * PJ
                e["link"] += link_j
                node_j += link_j
                _spread(self._node_bins_i[i], start_ns, end_ns, link_j, self.tick_ns)
        for kind, nbytes in self._streams[i]:
            node_j += self.on_transfer(i, kind, nbytes, start_ns, end_ns)
        self._last_end[i] = end_ns
        self._last_kv[i] = kv_usage
        return g * gp.idle_w * dur / NS_PER_S + extra + standby_j + node_j

    def on_step(self, rec: StepRecord) -> float:
        """A step finished (every step, in end order); returns its energy, J."""
        plan = rec.plan
        pre = plan.num_prefill_tokens
        tokens = pre + plan.num_decodes
        cost = rec.cost
        step_j = self._run(rec.instance_id, rec.start_ns, rec.end_ns, rec.gpu_ns, tokens,
                           rec.kv_usage, cost.energy_j, cost.duration_ns,
                           len(rec.output.emitted))
        i = rec.instance_id
        self._step_j[i] += step_j
        if tokens:
            self._prefill_j[i] += step_j * pre / tokens
        chunks = plan.chunks
        tot = 0
        for c in chunks:
            tot += c[1]
        if tot:
            f = step_j / tot
            sh = self.shares
            for c in chunks:
                sh[c[0].index] += f * c[1]
        return step_j

    def on_decode_run(self, instance_id: int, seq_indices: Sequence[int], start_ns: np.ndarray,
                      end_ns: np.ndarray, gpu_ns: np.ndarray, kv_usage: np.ndarray,
                      energy_j: np.ndarray | None = None) -> list[float]:
        """Steps of a decode fast-forward (:class:`llmsim.instance.fastforward.DecodeRun`):
        each decodes one token of every sequence of ``seq_indices``; the same accounting as
        :meth:`on_step` for each.

        Args:
            instance_id: the instance.
            seq_indices: trace indices of the run's sequences.
            start_ns, end_ns, gpu_ns: per step, ns (shape ``(k,)``).
            kv_usage: per step, KV usage fraction after the step.
            energy_j: per step, the cost model's measured energy of one rank (NaN or None:
                not measured; then the step's GPU time is taken as its priced time).

        Returns:
            each step's energy, J.
        """
        n = len(seq_indices)
        k = len(end_ns)
        meas = [None] * k if energy_j is None else [float(e) for e in energy_j.tolist()]
        out = [self._run(instance_id, int(a), int(b), int(g), n, float(kv), m, int(g), n)
               for a, b, g, kv, m in zip(start_ns.tolist(), end_ns.tolist(), gpu_ns.tolist(),
                                         kv_usage.tolist(), meas, strict=True)]
        # the additions of on_step, step by step and per sequence in the same order (float
        # addition is not associative: a run's total added once would differ in the last bits)
        for e in out:
            self._step_j[instance_id] += e
        if n:
            sh = self.shares
            acc = np.array([sh[i] for i in seq_indices], dtype=np.float64)
            for e in out:
                acc += e / n  # on_step: f = step_j / tokens, times 1 token per sequence
            for i, v in zip(seq_indices, acc.tolist(), strict=True):
                sh[i] = v
        return out

    def on_dummy(self, instance_id: int, start_ns: int, end_ns: int, gpu_ns: int) -> None:
        """A DP rank ran a dummy pass (1 token, uniform decode; no request's)."""
        self.num_dummy_passes += 1
        self._run(instance_id, start_ns, end_ns, gpu_ns, 1, self._last_kv[instance_id],
                  None, gpu_ns, 0)

    def add_stream(self, instance_id: int, kind: str, bytes_per_step: int) -> None:
        """Bytes ``instance_id`` moves through ``kind`` memory on every step it runs (weights
        streamed from host or CXL memory, LLMServingSim's non-``LOCAL`` weights), charged as
        :meth:`on_transfer` over each step and counted in its energy."""
        self._check_kind(kind)
        if bytes_per_step > 0:
            self._streams[instance_id].append((kind, int(bytes_per_step)))

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in ("dram", "cxl", "link", "disk"):
            raise ValueError(f"unknown transfer kind {kind!r} (dram, cxl, link, disk)")

    def on_transfer(self, instance_id: int, kind: str, nbytes: int, start_ns: int,
                    end_ns: int) -> float:
        """Bytes moved through host memory (``dram``), CXL memory (``cxl``), the node's
        links (``link``) or disks (``disk``) on behalf of ``instance_id``, charged at that
        kind's pJ/bit (CXL without its own figure at DRAM's, as LLMServingSim charges
        off-device weights; disks have none: LLMServingSim's storage term is idle power
        only, so their bytes are counted, not priced).

        Returns:
            the energy charged, J.

        Raises:
            ValueError: an unknown ``kind``.
        """
        self._check_kind(kind)
        k = self.instances[instance_id].node
        node = self.nodes[k]
        self._moved_bytes[k][kind] += int(nbytes)
        pj = {"dram": node.dram_pj_per_bit, "link": node.link_pj_per_bit, "disk": None,
              "cxl": node.cxl_pj_per_bit if node.cxl_pj_per_bit is not None
              else node.dram_pj_per_bit}[kind]
        if pj is None or not nbytes:
            return 0.0
        j = nbytes * 8.0 * pj * PJ
        e = self._energy_i[instance_id]
        e["dram" if kind == "cxl" and node.cxl_pj_per_bit is None else kind] += j
        _spread(self._node_bins_i[instance_id], start_ns, end_ns, j, self.tick_ns)
        return j

    def on_pim(self, instance_id: int, start_ns: int, busy_ns: int) -> None:
        """PIM units of ``instance_id``'s node computed for ``busy_ns``."""
        k = self.instances[instance_id].node
        w = self.nodes[k].pim_extra_w
        if w is None:
            self._moved_bytes[k].setdefault("pim_ns", 0)
            self._moved_bytes[k]["pim_ns"] += int(busy_ns)
            return
        j = w * busy_ns / NS_PER_S
        self._energy_i[instance_id]["pim"] += j
        _spread(self._node_bins_i[instance_id], start_ns, start_ns + busy_ns, j, self.tick_ns)

    def finish(self, end_ns: int) -> None:
        """Close the accounting at ``end_ns`` (the replay's end; at least the last step's)."""
        horizon = max([end_ns, *self._last_end])
        for i in range(len(self.instances)):
            self._gap(i, horizon)
        self.horizon_ns = horizon

    # ------------------------------------------------------------------ results
    def _unavailable(self) -> list[dict[str, str]]:
        """Per node, the components without a figure (constants unset, or bytes moved at
        an unknown pJ/bit)."""
        out = []
        for k, node in enumerate(self.nodes):
            miss = dict(node.unavailable)
            moved = self._moved_bytes[k]
            for kind, pj in (("link", node.link_pj_per_bit), ("dram", node.dram_pj_per_bit)):
                if moved[kind] and pj is None:
                    miss.setdefault(kind, f"{moved[kind]} bytes moved but power.{kind}."
                                    "energy_pj_per_bit is not set (no source)")
            if moved["cxl"] and node.cxl_pj_per_bit is None and node.dram_pj_per_bit is None:
                miss.setdefault("cxl", "CXL bytes moved but neither power.cxl nor power.dram "
                                "energy_pj_per_bit is set")
            if moved.get("pim_ns"):
                miss.setdefault("pim", "PIM ran but power.dram.pim_active_w is not set")
            if node.cpu_busy_w is None:
                miss.setdefault("cpu", "power.cpu idle_w / active_w / utilization not set")
            out.append(miss)
        return out

    @property
    def step_j(self) -> float:
        """Energy of every step so far, J (instance sums added in instance order)."""
        return float(sum(self._step_j))

    @property
    def prefill_j(self) -> float:
        """The prefill tokens' share of :attr:`step_j`, J."""
        return float(sum(self._prefill_j))

    @property
    def _energy(self) -> list[dict[str, float]]:
        """Per node, component -> energy of its instances' steps and transfers, J."""
        out = [dict.fromkeys(GPU_COMPONENTS + NODE_COMPONENTS, 0.0) for _ in self.nodes]
        for ip, e in zip(self.instances, self._energy_i, strict=True):
            acc = out[ip.node]
            for c, v in e.items():
                acc[c] += v
        return out

    @property
    def _node_bins(self) -> list[dict[int, float]]:
        """Per node, tick -> node-level energy (CPU, links, transfers) of its instances, J."""
        out: list[dict[int, float]] = [{} for _ in self.nodes]
        for ip, bins in zip(self.instances, self._node_bins_i, strict=True):
            acc = out[ip.node]
            for t, v in bins.items():
                acc[t] = acc.get(t, 0.0) + v
        return out

    def node_energy(self) -> list[dict[str, float]]:
        """Per node, component -> energy over ``[0, horizon]``, J (available ones only)."""
        if self.horizon_ns is None:
            raise RuntimeError("finish() first")
        h_s = self.horizon_ns / NS_PER_S
        miss = self._unavailable()
        out = []
        energy = self._energy
        for k, node in enumerate(self.nodes):
            e = dict(energy[k])
            e["gpu_idle"] = h_s * sum(w for w, n in zip(self.gpu_idle_w, self.gpu_node,
                                                        strict=True) if n == k)
            for comp, w in node.constant_w.items():
                e[comp] += w * h_s
            out.append({c: v for c, v in e.items() if c not in miss[k]})
        return out

    def total_j(self) -> float:
        """Energy of every available component of every node, J."""
        return float(sum(sum(e.values()) for e in self.node_energy()))

    def request_energy_j(self) -> np.ndarray:
        """Per request (trace order), its share of :meth:`total_j`, J (module docstring);
        all zeros when no step computed a token."""
        sh = np.asarray(self.shares, dtype=np.float64)
        s = float(sh.sum())
        if s <= 0.0:
            return np.zeros_like(sh)
        return sh * (self.total_j() / s)

    def power_frame(self) -> pd.DataFrame:
        """The 1 s power series (:data:`POWER_COLUMNS`), quiet runs cut as the module says."""
        if self.horizon_ns is None:
            raise RuntimeError("finish() first")
        tick = self.tick_ns
        n_ticks = max(1, -(-self.horizon_ns // tick))
        node_bins = self._node_bins
        busy = sorted(set().union(*self._gpu_bins, *node_bins))
        ticks: list[int] = []
        prev = 0
        for k in [*busy, n_ticks + 1]:
            gap = list(range(prev + 1, min(k, n_ticks + 1)))
            if len(gap) > QUIET_TICKS_WRITTEN + 1:
                gap = gap[:QUIET_TICKS_WRITTEN] + gap[-1:]
            ticks += gap
            if k <= n_ticks:
                ticks.append(k)
            prev = k
        ks = np.asarray(ticks, dtype=np.int64)
        span_s = (np.minimum(ks * tick, self.horizon_ns) - (ks - 1) * tick) / NS_PER_S
        span_s = np.where(span_s > 0, span_s, tick / NS_PER_S)
        node_w = np.zeros((len(self.nodes), len(ks)))
        miss = self._unavailable()
        for k, node in enumerate(self.nodes):
            node_w[k] += sum(w for c, w in node.constant_w.items() if c not in miss[k])
            node_w[k] += _on_ticks(node_bins[k], ks) / span_s
        gpu_w = np.tile(np.asarray(self.gpu_idle_w, dtype=np.float64)[:, None], (1, len(ks)))
        for i, ip in enumerate(self.instances):
            dyn = _on_ticks(self._gpu_bins[i], ks) / span_s
            for gidx in ip.gpus:
                gpu_w[gidx] += dyn / len(ip.gpus)
        for gidx, k in enumerate(self.gpu_node):
            node_w[k] += gpu_w[gidx]
        t = ks * tick / NS_PER_S
        frames = [pd.DataFrame({"t": t, "scope": "gpu", "name": name, "power_w": gpu_w[g]})
                  for g, name in enumerate(self.gpu_names)]
        frames += [pd.DataFrame({"t": t, "scope": "node", "name": node.name,
                                 "power_w": node_w[k]}) for k, node in enumerate(self.nodes)]
        frames.append(pd.DataFrame({"t": t, "scope": "cluster", "name": "all",
                                    "power_w": node_w.sum(axis=0)}))
        return pd.concat(frames, ignore_index=True)[POWER_COLUMNS]

    def summary(self, input_tokens: int, output_tokens: int, power: pd.DataFrame | None = None,
                gpus: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The ``energy`` entry of ``summary.json`` (docs/power.md, "Definitions").

        Args:
            input_tokens, output_tokens: tokens of the replay's requests.
            power: :meth:`power_frame` (built when None).
            gpus: per GPU type, its constants and their sources.
        """
        nodes = self.node_energy()
        total = float(sum(sum(e.values()) for e in nodes))
        h_s = (self.horizon_ns or 0) / NS_PER_S
        if power is None:
            power = self.power_frame()
        cl = power[power["scope"] == "cluster"]["power_w"]
        pre = total * self.prefill_j / self.step_j if self.step_j > 0 else 0.0

        def ratio(a: float, b: float) -> float | str:
            return a / b if b > 0 else "unavailable"

        miss = self._unavailable()
        present = {c for node in self.nodes for c in node.constant_w} | {
            c for e in nodes for c, v in e.items() if v}
        covered = sorted({c for c in present if not c.startswith("gpu")}
                         - {c for m in miss for c in m} | {"gpu"})
        not_covered = {c: r for m in miss for c, r in m.items()}
        return {
            "available": True, "reason": "", "covers": covered, "not_covered": not_covered,
            "energy_j": total, "horizon_s": h_s, "avg_power_w": ratio(total, h_s),
            "peak_power_w": float(cl.max()) if len(cl) else 0.0,
            "gpu_energy_j": float(sum(e[c] for e in nodes for c in GPU_COMPONENTS)),
            "j_per_output_token": ratio(total, output_tokens),
            "j_per_input_token": ratio(pre, input_tokens),
            "j_per_output_token_decode": ratio(total - pre, output_tokens),
            "tokens_per_j": ratio(input_tokens + output_tokens, total),
            "steps_by_source": dict(self.sources), "dp_dummy_passes": self.num_dummy_passes,
            "nodes": {node.name: {"energy_j": float(sum(e.values())),
                                  "avg_power_w": ratio(float(sum(e.values())), h_s),
                                  "components_j": {c: float(v) for c, v in e.items()
                                                   if c in GPU_COMPONENTS or c in present},
                                  "moved_bytes": {k: int(v) for k, v in
                                                  self._moved_bytes[i].items()}}
                      for i, (node, e) in enumerate(zip(self.nodes, nodes, strict=True))},
            "gpus": dict(gpus or {}), "notes": list(self.notes) + [
                f"{m['disk']} bytes moved through disk tiers on node {n.name} are not priced "
                "(LLMServingSim's storage term is idle power only)"
                for n, m in zip(self.nodes, self._moved_bytes, strict=True) if m["disk"]],
        }


UNAVAILABLE_KEYS = ("energy_j", "horizon_s", "avg_power_w", "peak_power_w", "gpu_energy_j",
                    "j_per_output_token", "j_per_input_token", "j_per_output_token_decode",
                    "tokens_per_j")


def unavailable_summary(reason: str) -> dict[str, Any]:
    """The ``energy`` entry when no power source exists: every figure "unavailable"."""
    return {"available": False, "reason": reason, "covers": [], "not_covered": {},
            **dict.fromkeys(UNAVAILABLE_KEYS, "unavailable")}
