"""Decode attention offloaded to PIM devices (LLMServingSim's PIM path).

**This is a model without a measured validation**: no measured PIM run exists in the data,
and LLMServingSim's own PIM latencies are a linear fit to DRAMsim3 simulations, not to
hardware. Every figure below is LLMServingSim's (``github.com/casys-kaist/LLMServingSim``
@5daddb2, Aug 2026; facts only, no code copied):

* **Devices** (``configs/pim/<name>.ini``, DRAMsim3 format): bank groups, banks per group,
  rows, columns, device width, bus width, channel size (MB), data rate (MT/s), CL and tCK,
  idle / peak power (mW). A channel's capacity follows ``serving/core/pim_model.py``
  ``init_dram_params``: ``devices_per_rank = bus_width / device_width``, page =
  ``columns x device_width / 8`` bytes, MB per rank = page x rows / 2^20 x banks x
  devices_per_rank, capacity = the larger of channel_size and one rank; its bandwidth
  ``bus_width / 8 x data_rate / 1000`` GB/s; channels = the node's ``cpu_mem.mem_size`` /
  channel capacity (``config_builder.py``: one PIM channel is one DIMM).
* **Latency of one request's attention on one channel** (``PIMModel.estimate_with_linear``):
  ``(slope x g x L + intercept x s) / split`` ns, ``L`` the request's context length, slope
  and intercept fitted per device for Llama-3.1-8B (32 heads, 8 KV heads, head dim 128),
  ``g = (heads / kv_heads) / 4`` and ``s = heads x head_dim / 4096`` scaling to other models,
  ``split = min(channels, kv_heads)`` (``trace_generator.py``: a request's heads are split
  over that many channels).
* **Greedy channel assignment** (``trace_generator._attn_load_balancer``): decode requests
  longest first; each is placed ``split`` times, every time on the channel with the least
  accumulated length. Channels run in parallel and a channel runs its entries one after
  another, so a layer's PIM attention takes the busiest channel's sum (ASTRA-Sim runs the
  ``PIM <ch>`` blocks in parallel). Prefill attention stays on the GPU; every layer's PIM
  attention sits between its QKV projection and its output projection.
* **Sub-batch interleaving** (``_make_sub_batch``, ``_synthesize_interleaved_trace``): the
  batch is split in two by greedy balance of the tokens each request computes (longest
  first, to the lighter side, ties to the first); per layer the GPU runs sub-batch 1's dense
  work then sub-batch 2's while the PIM runs the other sub-batch's attention.
  :func:`interleaved_step_ns` schedules the two resources layer by layer (list scheduling,
  each sub-batch's GPU work of layer ``l + 1`` after its PIM attention of layer ``l``).

llmsim's counterpart (:class:`PimCostModel`): the GPU part of a step is the wrapped cost
model's price with the decodes' attention taken out (its ``attention`` op minus that of
the prefills alone); a sub-batch's GPU time is spread evenly over the layers (an
assumption: embedding, final norm and LM head are counted in every layer's share). Not
modelled: KV blocks living in PIM memory (the GPU's KV capacity is unchanged), the NPU<->PIM
activation transfers, TP or PP > 1 (refused), the PIM's energy per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmsim.costmodel.base import CostModel, StepBatch, StepCost
from llmsim.errors import ConfigError

__all__ = ["PIM_DEVICES", "PimCostModel", "PimDevice", "assign_channels",
           "interleaved_step_ns", "pim_attention_ns", "split_sub_batches"]

BASE_HEADS, BASE_KV_HEADS, BASE_HEAD_DIM = 32, 8, 128
"""The model LLMServingSim's latency fit was made for (Llama-3.1-8B)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PimDevice:
    """One DRAMsim3-style PIM device config (LLMServingSim ``configs/pim/<name>.ini``) and
    its fitted attention latency (``PIMModel.estimate_with_linear``).

    Attributes:
        name: the config name.
        bankgroups, banks_per_group, rows, columns: DRAM organisation.
        device_width_bits, bus_width_bits: chip and channel widths, bits.
        channel_size_mb: channel capacity asked for, MB (2^20 bytes).
        data_rate_mts: transfers per second, MT/s.
        cl_cycles: CAS latency, cycles; tck_ns: clock period, ns.
        idle_w, peak_w: power of one channel idle / computing, W (``idle_power`` /
            ``peak_power`` in mW).
        slope_ns_per_token, intercept_ns: the fitted latency of one request's attention.
    """

    name: str
    bankgroups: int
    banks_per_group: int
    rows: int
    columns: int
    device_width_bits: int
    bus_width_bits: int
    channel_size_mb: int
    data_rate_mts: int
    cl_cycles: int
    tck_ns: float
    idle_w: float
    peak_w: float
    slope_ns_per_token: float
    intercept_ns: float

    @property
    def channel_capacity_bytes(self) -> int:
        """Capacity of one channel (one DIMM), bytes (module doc)."""
        devices_per_rank = self.bus_width_bits / self.device_width_bits
        page_bytes = self.columns * self.device_width_bits / 8
        mb_per_rank = (page_bytes * (self.rows / 1024) / 1024
                       * self.bankgroups * self.banks_per_group * devices_per_rank)
        return int(max(mb_per_rank, self.channel_size_mb) * 2**20)

    @property
    def channel_bandwidth_bytes_per_s(self) -> float:
        """Peak bandwidth of one channel, bytes/s (LLMServingSim reads its GB/s as 10^9)."""
        return self.bus_width_bits / 8 * self.data_rate_mts * 1e6

    @property
    def read_latency_ns(self) -> float:
        """``CL x tCK``, ns."""
        return self.cl_cycles * self.tck_ns

    def num_channels(self, capacity_bytes: int) -> int:
        """Channels of a PIM memory of ``capacity_bytes`` (one per DIMM, whole ones)."""
        return capacity_bytes // self.channel_capacity_bytes

    def attention_ns(self, context_len: int, heads: int, kv_heads: int, head_dim: int,
                     split: int) -> float:
        """One request's decode attention on one channel, ns (module doc)."""
        g = (heads / kv_heads) / (BASE_HEADS / BASE_KV_HEADS)
        s = heads * head_dim / (BASE_HEADS * BASE_HEAD_DIM)
        return (self.slope_ns_per_token * g * context_len + self.intercept_ns * s) / split


_SRC = "LLMServingSim configs/pim/*.ini and serving/core/pim_model.py @5daddb2"
PIM_DEVICES: Mapping[str, PimDevice] = {d.name: d for d in (
    PimDevice(name="DDR4_8GB_3200_pim", bankgroups=2, banks_per_group=4, rows=65536,
              columns=1024, device_width_bits=16, bus_width_bits=64, channel_size_mb=8192,
              data_rate_mts=3200, cl_cycles=22, tck_ns=0.63, idle_w=0.623, peak_w=3.803,
              slope_ns_per_token=333.2538, intercept_ns=30675.2739),
    PimDevice(name="HBM2_1GB_2000_pim", bankgroups=4, banks_per_group=4, rows=32768,
              columns=64, device_width_bits=128, bus_width_bits=128, channel_size_mb=1024,
              data_rate_mts=2000, cl_cycles=14, tck_ns=1.0, idle_w=0.160, peak_w=0.760,
              slope_ns_per_token=242.0548, intercept_ns=14513.5015),
    PimDevice(name="LPDDR4X_2GB_4266_pim", bankgroups=4, banks_per_group=4, rows=65536,
              columns=1024, device_width_bits=16, bus_width_bits=16, channel_size_mb=2048,
              data_rate_mts=4266, cl_cycles=36, tck_ns=0.468, idle_w=0.070, peak_w=0.771,
              slope_ns_per_token=432.4458, intercept_ns=33918.1734),
    PimDevice(name="LPDDR5_2GB_6400_pim", bankgroups=4, banks_per_group=4, rows=65536,
              columns=1024, device_width_bits=16, bus_width_bits=16, channel_size_mb=2048,
              data_rate_mts=6400, cl_cycles=34, tck_ns=0.3125, idle_w=0.071, peak_w=0.877,
              slope_ns_per_token=282.4338, intercept_ns=15996.7018),
)}
"""The four PIM device configs LLMServingSim ships (figures from """ + _SRC + ")."


def assign_channels(context_lens: Sequence[int], num_channels: int, split: int
                    ) -> list[list[int]]:
    """Greedy min-load assignment: per channel, the context lengths placed on it.

    Longest request first (stable); each is placed ``split`` times, every time on the
    channel with the smallest accumulated length (lowest index on ties).

    Raises:
        ConfigError: ``num_channels`` < 1 or ``split`` not in ``[1, num_channels]``.
    """
    if num_channels < 1 or not 1 <= split <= num_channels:
        raise ConfigError(f"PIM: {num_channels} channels, split {split}", field="pim")
    lens: list[list[int]] = [[] for _ in range(num_channels)]
    load = [0] * num_channels
    for length in sorted(context_lens, reverse=True):
        for _ in range(split):
            ch = min(range(num_channels), key=load.__getitem__)
            lens[ch].append(length)
            load[ch] += length
    return lens


def pim_attention_ns(device: PimDevice, context_lens: Sequence[int], *, num_channels: int,
                     heads: int, kv_heads: int, head_dim: int) -> int:
    """One layer's decode attention on the PIM, ns: the busiest channel's sum (module
    doc); 0 without decodes. Each entry is truncated to whole ns, as LLMServingSim's
    ``int(...)``."""
    if not context_lens:
        return 0
    split = min(num_channels, kv_heads)
    per_ch = assign_channels(context_lens, num_channels, split)
    return max(sum(int(device.attention_ns(n, heads, kv_heads, head_dim, split)) for n in ch)
               for ch in per_ch)


def split_sub_batches(compute_tokens: Sequence[int]) -> tuple[list[int], list[int]]:
    """Indices of the two sub-batches: longest compute first (stable), each to the side
    with fewer tokens so far (ties: the first)."""
    order = sorted(range(len(compute_tokens)), key=lambda i: -compute_tokens[i])
    sides: tuple[list[int], list[int]] = ([], [])
    load = [0, 0]
    for i in order:
        s = 0 if load[0] <= load[1] else 1
        sides[s].append(i)
        load[s] += compute_tokens[i]
    return sorted(sides[0]), sorted(sides[1])


def interleaved_step_ns(gpu_layer_ns: tuple[int, int], pim_layer_ns: tuple[int, int],
                        num_layers: int) -> int:
    """Two sub-batches over ``num_layers`` layers on a GPU and a PIM (module doc): per
    layer the GPU runs sub-batch 1 then 2, the PIM their attentions in the same order; a
    sub-batch's GPU work of a layer waits for its own attention of the layer before.
    Returns the time the last GPU work ends, ns."""
    gpu_free = pim_free = 0
    attn_done = [0, 0]
    for _ in range(num_layers):
        for s in (0, 1):
            start = max(gpu_free, attn_done[s])
            gpu_free = start + gpu_layer_ns[s]
            a = max(pim_free, gpu_free)
            pim_free = attn_done[s] = a + pim_layer_ns[s]
    return max(gpu_free, pim_free)


class PimCostModel:
    """A cost model whose decode attention runs on a PIM device (module doc).

    Args:
        inner: the GPU's cost model (must report an ``attention`` op in its breakdown).
        device: the PIM device.
        num_channels: PIM channels of the node.
        heads, kv_heads, head_dim, num_layers: the served model's attention shape.
        sub_batch_interleaving: split each step in two interleaved sub-batches.

    Raises:
        ConfigError: fewer than one channel.
    """

    def __init__(self, inner: CostModel, device: PimDevice, *, num_channels: int, heads: int,
                 kv_heads: int, head_dim: int, num_layers: int,
                 sub_batch_interleaving: bool = False) -> None:
        if num_channels < 1:
            raise ConfigError(f"PIM {device.name}: the memory holds no whole channel of "
                              f"{device.channel_capacity_bytes} bytes", field="pim")
        self.inner = inner
        self.device = device
        self.num_channels = num_channels
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.num_layers = max(1, num_layers)
        self.sub_batch_interleaving = sub_batch_interleaving

    def __getattr__(self, name: str) -> Any:  # the inner model's other members
        return getattr(self.inner, name)

    def _gpu(self, batch: StepBatch) -> StepCost:
        """The GPU's price of ``batch`` without the decodes' attention."""
        full = self.inner.step_cost(batch)
        if not batch.decode_context_lens:
            return full
        attn = full.breakdown_ns.get("attention")
        if attn is None:
            raise ConfigError("PIM attention offload needs a cost model that reports its "
                              "attention time (the profile cost model)", field="pim")
        pre = self.inner.step_cost(dataclasses.replace(batch, decode_context_lens=()))
        keep = pre.breakdown_ns.get("attention", 0)
        bd = dict(full.breakdown_ns)
        bd["attention"] = keep
        return StepCost(duration_ns=full.duration_ns - attn + keep, breakdown_ns=bd)

    def _pim(self, lens: Sequence[int]) -> int:
        return pim_attention_ns(self.device, lens, num_channels=self.num_channels,
                                heads=self.heads, kv_heads=self.kv_heads,
                                head_dim=self.head_dim)

    def step_cost(self, batch: StepBatch) -> StepCost:
        """GPU work + PIM attention of ``batch`` (serial per layer, or interleaved)."""
        n_pre = len(batch.prefills)
        tokens = [p.num_new_tokens for p in batch.prefills] + [1] * batch.num_decodes
        if self.sub_batch_interleaving and len(tokens) >= 2:
            a, b = split_sub_batches(tokens)
            subs = []
            for side in (a, b):
                pre = tuple(batch.prefills[i] for i in side if i < n_pre)
                dec = tuple(batch.decode_context_lens[i - n_pre] for i in side if i >= n_pre)
                sb = dataclasses.replace(batch, prefills=pre, decode_context_lens=dec)
                subs.append((self._gpu(sb).duration_ns, self._pim(dec)))
            layers = self.num_layers
            total = interleaved_step_ns((subs[0][0] // layers, subs[1][0] // layers),
                                        (subs[0][1], subs[1][1]), layers)
            pim_busy = layers * (subs[0][1] + subs[1][1])
            # overlapped: the two figures are busy times, they do not add up to the step
            return StepCost(duration_ns=total, breakdown_ns={
                "gpu": subs[0][0] + subs[1][0], "pim_attention": pim_busy})
        gpu = self._gpu(batch)
        pim = self.num_layers * self._pim(batch.decode_context_lens)
        bd = dict(gpu.breakdown_ns)
        bd["pim_attention"] = pim
        return StepCost(duration_ns=gpu.duration_ns + pim, breakdown_ns=bd)
