"""Roofline pricing of operator queries from a :class:`HardwareSpec`.

Every operator takes ``max(compute time, memory time) + kernel launch overhead``
(Williams, Waterman, Patterson, "Roofline: an insightful visual performance model",
CACM 2009), with achievable-efficiency factors applied to the peaks:

* GEMM ``(M x K) @ (K x N)``: ``2MNK`` FLOPs; ``b(MK + KN + MN)`` bytes (``b`` = dtype bytes).
* Attention (one layer, one rank, ``H`` query heads, ``G`` KV heads, head dim ``d``):
  a prefill chunk of ``q`` new tokens over ``c`` cached ones computes causal scores over
  ``q*c + q(q+1)/2`` (query, key) pairs; a decode with KV length ``L`` over ``L`` pairs.
  FLOPs ``= 4 H d x pairs`` (QK^T and PV, 2 FLOPs per MAC); bytes ``= b x (2 G d x KV tokens
  read + 2 H d x query tokens)`` (K and V read once per request, Q read and O written).
  Decodes only need the sum of KV lengths, so the summary attention shape suffices.
* Element-wise (norms, activations, rotary, embedding gather, sampler): memory-bound,
  ``2 x rows x row_elements x b`` bytes (read + write).
* Collective all_reduce over ``p`` ranks (ring): each rank sends and receives
  ``2(p-1)/p x bytes`` over the link, plus ``2(p-1)`` hops of link latency
  (Patarasuk & Yuan, "Bandwidth optimal all-reduce algorithms", JPDC 2009); all_gather /
  reduce_scatter move half of that; send_recv moves ``bytes`` once.
* Memory transfer: ``bytes`` over the tier's bandwidth.
* MoE (one layer): routed tokens ``T x top_k`` through 3 expert GEMMs of ``h x i``;
  weights of ``min(experts, T x top_k)`` experts read once.

Energy (optional): ``FLOPs x pJ/FLOP + device-memory bytes x pJ/byte``.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.common.coster import OpFailure
from adapters.roofline.hardware import HardwareSpec
from llmsim.v1 import cost_model_pb2 as pb

DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "fp16": 2, "float16": 2, "bfloat16": 2,
               "fp8": 1, "int8": 1}


@dataclass(frozen=True, slots=True, kw_only=True)
class Work:
    """What an operator does.

    Attributes:
        flops: floating-point operations.
        memory_bytes: bytes moved to/from device memory.
        link_bytes: bytes over the device or host link.
        link_hops: sequential link latencies paid.
        compute_efficiency: efficiency factor for the FLOPs.
        link_bandwidth_bytes_per_s: bandwidth for ``link_bytes`` (0 = device link).
    """

    flops: float = 0.0
    memory_bytes: float = 0.0
    link_bytes: float = 0.0
    link_hops: int = 0
    compute_efficiency: float = 1.0
    link_bandwidth_bytes_per_s: float = 0.0


class RooflineModel:
    """Prices queries on one :class:`HardwareSpec`."""

    def __init__(self, hw: HardwareSpec) -> None:
        self.hw = hw

    def dtype_bytes(self, dtype: str) -> int:
        """Bytes per element of ``dtype``.

        Raises:
            OpFailure: the hardware has no peak for that dtype.
        """
        if dtype not in self.hw.peak_flops_per_s or dtype not in DTYPE_BYTES:
            raise OpFailure(pb.OP_ERROR_CODE_UNSUPPORTED,
                            f"dtype {dtype!r} not in {self.hw.name}'s peak_flops_per_s")
        return DTYPE_BYTES[dtype]

    def work(self, query: pb.OpQuery) -> Work:
        """The :class:`Work` of ``query``.

        Raises:
            OpFailure: unsupported kind or dtype, or an invalid shape.
        """
        b = self.dtype_bytes(query.dtype)
        eff = self.hw.efficiency
        kind = query.WhichOneof("shape")
        if kind == "gemm":
            g = query.gemm
            return Work(flops=2.0 * g.m * g.n * g.k,
                        memory_bytes=b * (g.m * g.k + g.k * g.n + g.m * g.n),
                        compute_efficiency=eff.gemm_compute)
        if kind == "attention":
            return self._attention(query.attention, b)
        if kind == "elementwise":
            e = query.elementwise
            return Work(memory_bytes=2.0 * e.rows * e.row_elements * b)
        if kind == "collective":
            return self._collective(query.collective)
        if kind == "memory_transfer":
            return self._transfer(query.memory_transfer)
        if kind == "moe":
            m = query.moe
            routed = m.tokens * m.experts_per_token
            active = min(m.num_experts, routed)
            weights = 3 * m.hidden_size * m.intermediate_size
            return Work(flops=2.0 * routed * weights,
                        memory_bytes=b * (active * weights + 2 * routed * m.hidden_size),
                        compute_efficiency=eff.gemm_compute)
        raise OpFailure(pb.OP_ERROR_CODE_INVALID, f"query {query.op_name!r} has no shape")

    def _attention(self, a: pb.AttentionShape, b: int) -> Work:
        if a.num_q_heads == 0 or a.head_dim == 0:
            raise OpFailure(pb.OP_ERROR_CODE_INVALID, "attention needs heads and head_dim")
        pairs = 0
        kv_tokens = 0
        q_tokens = 0
        for p in a.prefills:
            q, c = p.new_tokens, p.cached_tokens
            pairs += q * c + q * (q + 1) // 2
            kv_tokens += q + c
            q_tokens += q
        pairs += a.decode_kv_sum
        kv_tokens += a.decode_kv_sum
        q_tokens += a.num_decodes
        hd, gd = a.num_q_heads * a.head_dim, max(1, a.num_kv_heads) * a.head_dim
        return Work(flops=4.0 * hd * pairs,
                    memory_bytes=float(b) * (2 * gd * kv_tokens + 2 * hd * q_tokens),
                    compute_efficiency=self.hw.efficiency.attention_compute)

    def _collective(self, c: pb.CollectiveShape) -> Work:
        p = c.ranks
        if p <= 1:
            return Work()
        if c.collective == "all_reduce":
            return Work(link_bytes=2.0 * (p - 1) / p * c.bytes, link_hops=2 * (p - 1))
        if c.collective in ("all_gather", "reduce_scatter"):
            return Work(link_bytes=(p - 1) / p * c.bytes, link_hops=p - 1)
        if c.collective == "send_recv":
            return Work(link_bytes=float(c.bytes), link_hops=1)
        raise OpFailure(pb.OP_ERROR_CODE_UNSUPPORTED, f"collective {c.collective!r}")

    def _transfer(self, t: pb.MemoryTransferShape) -> Work:
        hw = self.hw
        if t.tier == pb.MEMORY_TIER_DEVICE:
            return Work(memory_bytes=float(t.bytes))
        bandwidth = {
            pb.MEMORY_TIER_HOST: hw.host_link_bandwidth_bytes_per_s,
            pb.MEMORY_TIER_PEER: hw.link_bandwidth_bytes_per_s,
            pb.MEMORY_TIER_CXL: hw.tier_bandwidth_bytes_per_s.get("cxl", 0.0),
            pb.MEMORY_TIER_STORAGE: hw.tier_bandwidth_bytes_per_s.get("storage", 0.0),
        }.get(t.tier, 0.0)
        if bandwidth <= 0:
            raise OpFailure(pb.OP_ERROR_CODE_UNSUPPORTED,
                            f"no bandwidth for memory tier {pb.MemoryTier.Name(t.tier)} "
                            f"in {hw.name}")
        return Work(link_bytes=float(t.bytes), link_hops=1, link_bandwidth_bytes_per_s=bandwidth)

    def latency_ns(self, query: pb.OpQuery, work: Work | None = None) -> float:
        """Roofline latency of one execution of ``query``, ns."""
        work = work if work is not None else self.work(query)
        hw, eff = self.hw, self.hw.efficiency
        compute_ns = 0.0
        if work.flops:
            peak = hw.peak_flops_per_s[query.dtype] * work.compute_efficiency
            compute_ns = work.flops / peak * 1e9
        memory_ns = work.memory_bytes / (hw.memory_bandwidth_bytes_per_s * eff.memory) * 1e9
        link_ns = 0.0
        if work.link_bytes:
            bw = work.link_bandwidth_bytes_per_s or hw.link_bandwidth_bytes_per_s
            link_ns = work.link_bytes / (bw * eff.link) * 1e9 + work.link_hops * hw.link_latency_ns
        if not (work.flops or work.memory_bytes or work.link_bytes):
            return 0.0
        return max(compute_ns, memory_ns, link_ns) + hw.kernel_launch_overhead_ns

    def energy_j(self, query: pb.OpQuery, work: Work) -> float | None:
        """Energy of one execution, J; ``None`` without an energy table."""
        table = self.hw.energy
        if table is None:
            return None
        pj_flop = table.pj_per_flop.get(query.dtype)
        if pj_flop is None and work.flops:
            return None
        return ((pj_flop or 0.0) * work.flops + table.pj_per_dram_byte * work.memory_bytes) * 1e-12
