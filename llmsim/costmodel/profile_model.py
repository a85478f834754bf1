"""The profile cost model: price an engine step from measured operator tables.

Composition (docs/cost-model.md, "Kernel time from operator profiles";
operator list from :func:`llmsim.costmodel.decompose.step_ops`)::

    step = L x [ sum_dense_layer_ops  count x op(T)  +  attention(batch)  +  moe(T)
                 + 2 x all_reduce(T x hidden x dtype_bytes)   (TP > 1) ]
         + embedding(T) + final_layernorm(T) + lm_head(S) + sampler(S)
         + embedding_all_reduce(T x hidden x dtype_bytes) + logits_all_gather(S x vocab x
           dtype_bytes)                                       (TP > 1)

with ``L`` = ``num_hidden_layers`` of the served model (the bundles profile one layer),
``T`` = tokens computed in the step (prefill chunk tokens + one per decode) and ``S`` =
sequences that emit a token. Kernel time only (the profiles were taken with CUDA graphs off);
CPU overheads and CUDA-graph padding belong to the serving loop.

Decisions, with the data behind them (figures from the RTXPRO6000 Llama-3.1-8B TP1 bundle):

* **Statistic.** A table's ``mean_ns`` is used as is when present (the LLMServingSim bundles
  report the mean of 3 runs), else ``median_ns``. No scaling or fudge factors.
* **layernorm counts twice per layer**, as ``step_ops`` says (input and post-attention RMSNorm
  of every decoder layer). The bundle's single ``layernorm`` entry is one call's time, not the
  pair's sum: at 1 token it is 2.416 us vs 2.422 us for ``final_layernorm`` (one call of the
  same kind and shape), at 2048 tokens 15.7 us vs 19.6 us; a sum of two such kernels could not
  be below one of them.
* **Attention regimes.** The 4-D grid ``(prefill_chunk, kv_prefill, n_decode, kv_decode)``
  holds three physically different kernels, interpolated separately (so that e.g. a 5-token
  chunk is never interpolated towards "no prefill"):
  decode-only ``(0, 0, n, kv)``, prefill-only ``(pc, kp, 0, 0)`` and mixed ``(pc, kp, n, kv)``.
  The mixed kernel is not the sum of the other two (with one prefill chunk present, 128
  decodes at KV 16384 cost 21.7 ms vs 5.65 ms decode-only), so a mixed step is always looked
  up in the mixed sub-grid.
* **Several prefill chunks in one step.** LLMServingSim collapses them into one virtual chunk,
  which prices attention as if every chunk attended to every other chunk's tokens
  (quadratic in the summed length: two fresh 1024-token chunks would cost T(2048, 0) =
  172.6 us). Attention is per-request work in a varlen kernel, and the data shows the kernel
  time is close to additive in per-request work: adding 32 decodes at KV 4096 to a prefill
  chunk adds 547 +- 32 us (mean +- std over 96 (pc, kp) points whose prefill-only cost spans
  7.8-2138 us). So each chunk is priced against its own cached KV: the chunk with the
  largest prefill-only cost is the *primary* chunk and is looked up together with the decodes
  (mixed regime); every other chunk adds its prefill-only cost minus the launch floor
  ``P(16, 0)`` (the smallest measured prefill, 7.77 us), floored at 0. Two fresh 1024-token
  chunks: 61.1 + 61.1 - 7.8 = 114.4 us.
* **Decode skew.** Decodes with unequal KV lengths are priced
  ``t_mean + alpha (t_max - t_mean)`` with ``t_mean``/``t_max`` the lookups at the mean/max
  KV length and ``alpha`` from the ``skew_fit`` bucket of (primary chunk's pc mapped to the
  nearest profiled pc in log scale, n decodes, skew rate, max KV, primary chunk's cached KV).
  The buckets were cut on the skew rate ``nb / n`` of the profiled two-level batches
  (``nb`` of ``n`` decodes at ``kv_big``, the rest at ``kvs = kv_big / S``; ``S`` = 4 in
  every published bundle, the median of the skew table's ``skew`` column). A real batch has
  a continuous spread of KV lengths, so it is mapped to *the profiled two-level batch with
  the same mean and max KV*: ``rate = (S kv_mean / kv_max - 1) / (S - 1)``, clamped to
  [0, 1]. Mean and max are what drive a split-KV decode kernel (total KV work and the
  straggler); the shortest sequence does not. On the two-level batches this equals ``nb / n``
  exactly, as does the min-based ``(kv_mean - kv_min) / (kv_max - kv_min)`` used when a
  profile has no skew table (both reproduce the published per-bucket sample counts for 3961
  of 3982 buckets). Measured effect on the RTXPRO6000 Llama-3.1-8B validation run: mean
  |error| 2.50% with the min-based rate, 1.94% with the mean/max mapping (RTX4090 is
  unaffected: its fit is disabled, see below). A missing bucket uses ``alpha_default``; a bundle
  that defines no buckets in ``meta.yaml`` (RTX4090) has them read from the label text
  (``n<=8``, ``sr>70%``, ``kvB<=4k`` with k = 1024, ``kp=0``) and, lacking an
  ``alpha_default``, uses the sample-weighted mean of its bucket alphas. Alpha is clamped to
  [0, 1]: the skewed batch does the work of the all-at-mean batch and less than the
  all-at-max one; values outside come from buckets where ``t_max ~ t_mean`` and the ratio is
  noise (e.g. -735 in RTXPRO6000 Llama TP2). A fit its source declares disabled
  (``SkewFit.disabled_by_source``: the RTX4090 bundle's ``meta.yaml`` says
  ``skew_profile.enabled: false`` and ``skew_fit.enabled: false``) is not applied unless the
  caller forces it with ``skew=True``; decodes are then priced at the mean KV length
  (``skew=False`` forces that for any profile). On the two measured Llama-3.1-8B runs this
  choice moves the mean |error| by several points (see the validation notes in README), so
  it is a property recorded in the profile, never a per-run switch.
* **lm_head / sampler** at ``S`` sequences (per-sequence table).
* **MoE** experts per layer from the ``moe`` table at ``(T, E_active)`` with the expected
  number of distinct experts hit under uniform routing, ``E (1 - (1 - k/E)^T)``, capped at
  ``T k``. A missing ``moe_gate`` (router GEMM; the LLMServingSim bundles do not profile it)
  costs 0 and is reported in :attr:`ProfileCostModel.missing_optional_ops`; any other missing
  op raises :class:`~llmsim.errors.ProfileRangeError`.
* **TP communication** (:mod:`llmsim.costmodel.collectives`): every collective of
  ``step_ops`` priced by the TP group's :class:`~llmsim.costmodel.collectives.CollectivesModel`:
  a measured table when one covers it (rows of the step's execution mode: CUDA graph when
  the step's tokens are at most ``cudagraph_max_tokens``, else eager; the logits all-gather
  always eager, it runs outside the graph), else the analytic NCCL model of the hardware's
  link description, else (no link description) the unsourced default ring model, with a
  warning. Which source and which vLLM implementation priced each collective is logged when
  the tables are built and counted per step in
  :attr:`ProfileCostModel.collective_sources` (:meth:`ProfileCostModel.collectives_report`).
  Breakdown keys: ``all_reduce`` (the ``2 L`` per-layer calls), ``embedding_all_reduce``,
  ``logits_all_gather``.
* **Pipeline parallelism** (docs/cluster-semantics.md, "Pipeline parallelism"): with vLLM
  0.19's default async scheduling the stages of one step run one after another (the next
  step waits on the sampled-token broadcast), so a PP step costs the sum over its stages:
  every layer once at the stage's TP degree (the same ``L x`` per-layer ops, since the
  stages' layers add up to ``L``), the embedding on the first stage, ``lm_head`` and the
  sampler on the last, plus the communication ``step_ops`` adds for PP: ``pp_send_recv``
  and ``pp_token_broadcast`` priced by a collectives model of the PP group (point-to-point
  messages, outside the CUDA graph: eager rows), ``pp_all_gather`` by the TP group's.
  :meth:`ProfileCostModel.step_communication` lists every collective of a step with its
  bytes, time and source.
* **Off-grid** lookups follow :mod:`llmsim.costmodel.interp`: linear between points; above
  the grid linear through the last two points (attention, per-sequence ops, MoE) or
  proportional to tokens (dense per-token ops); below it the first value is held. Every
  step that needed an extrapolation increments :attr:`ProfileCostModel.extrapolations`
  for that op (memoized repeats included).
* **Rounding.** Each op's total (over layers) is rounded to integer ns; ``duration_ns`` is
  the sum of the breakdown.
"""

from __future__ import annotations

import logging
import math
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmsim.cluster.parallel import SINGLE_GPU, ParallelConfig
from llmsim.costmodel.base import PrefillChunk, StepBatch, StepCost
from llmsim.costmodel.collectives import (
    Collective,
    CollectivesModel,
    LinkModel,
    NcclModel,
    PricedCollective,
    collective_grid,
    table_values,
)
from llmsim.costmodel.decompose import OpClass, Rows, Scope, step_ops
from llmsim.costmodel.interp import GridND
from llmsim.errors import ConfigError, ProfileError, ProfileRangeError
from llmsim.hardware.links import LinkSpec
from llmsim.model.config import ModelConfig
from llmsim.v1 import profile_pb2 as pb

if TYPE_CHECKING:
    from llmsim.costmodel.registry import CostModelContext

logger = logging.getLogger(__name__)

OPTIONAL_OPS = frozenset({"moe_gate"})
"""Ops priced at 0 when the profile lacks them (reported, never silent)."""

_MEMO_MAX = 1 << 17

_SCALAR_RUN_MAX = 6
"""Decode runs of at most this many steps are priced by the scalar lookups, step by step
(below it the array set-up of the vectorized path costs more than it saves)."""


def model_from_profile(profile: pb.Profile, source: str | None = None) -> ModelConfig:
    """The :class:`ModelConfig` recorded in ``profile``.

    Raises:
        ConfigError: the profile carries no architecture (pass ``model=`` instead).
    """
    m = profile.model
    if not m.num_hidden_layers or not m.hidden_size:
        raise ConfigError("profile carries no model architecture; pass model=",
                          path=source, field="model")
    return ModelConfig(
        name=m.name, architecture=m.architecture, num_hidden_layers=m.num_hidden_layers,
        hidden_size=m.hidden_size, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_key_value_heads, head_dim=m.head_dim,
        intermediate_size=m.intermediate_size, vocab_size=m.vocab_size,
        num_experts=m.num_experts, num_experts_per_token=m.num_experts_per_token,
        moe_intermediate_size=m.moe_intermediate_size, dtype_bytes=m.dtype_bytes or 2,
        tie_word_embeddings=m.tie_word_embeddings, config_sha256=m.config_sha256,
    )


# --------------------------------------------------------------------------- skew fit

_LABEL = re.compile(r"^[A-Za-z_]+\s*(<=|>|=)\s*([0-9.]+)\s*(k|%)?$")


def _label_edges(labels: list[str]) -> tuple[list[float], list[str]]:
    """Bucket edges read from labels such as ``n<=8``, ``sr>70%``, ``kvB<=4k``, ``kp=0``.

    Returns ``(edges, labels)`` in ascending order with ``len(edges) == len(labels) + 1``;
    the outer edges are +-inf.
    """
    uppers: list[tuple[float, str]] = []
    tail: str | None = None
    for lab in set(labels):
        m = _LABEL.match(lab)
        if m is None:
            raise ValueError(f"cannot read bucket label {lab!r}")
        op, num, unit = m.groups()
        value = float(num) * (1024 if unit == "k" else 1) / (100 if unit == "%" else 1)
        if op == ">":
            tail = lab
        else:
            uppers.append((value, lab))
    uppers.sort()
    edges = [-math.inf] + [u for u, _ in uppers]
    names = [lab for _, lab in uppers]
    if tail is not None:
        edges.append(math.inf)
        names.append(tail)
    return edges, names


def _bucket(edges: list[float], x: float) -> int:
    """Index ``i`` with ``edges[i] < x <= edges[i+1]``, or -1 when outside."""
    i = bisect_left(edges, x) - 1
    return i if 0 <= i < len(edges) - 1 else -1


class _SkewFit:
    """Per-bucket alpha of the decode-skew correction (see the module docstring)."""

    __slots__ = ("axes", "alphas", "pcs", "alpha_default")

    def __init__(self, fit: pb.SkewFit) -> None:
        axes = []
        for name, col in (("n", "n_label"), ("skew_rate", "skew_rate_label"),
                          ("kv_big", "kv_big_label"), ("kp", "kp_label")):
            edges = list(getattr(fit, f"{name}_edges"))
            labels = list(getattr(fit, f"{name}_labels"))
            if not edges:
                edges, labels = _label_edges(list(getattr(fit, col)))
            axes.append((edges, {lab: i for i, lab in enumerate(labels)}))
        self.axes = [edges for edges, _ in axes]
        self.alphas: dict[tuple[int, int, int, int, int], float] = {}
        cols = (fit.n_label, fit.skew_rate_label, fit.kv_big_label, fit.kp_label)
        weight = total = 0.0
        for r in range(len(fit.pc)):
            idx = []
            for (_, index), labels_col in zip(axes, cols, strict=True):
                i = index.get(labels_col[r])
                if i is None:
                    raise ProfileError(
                        f"skew_fit row {r + 1}: unknown bucket label {labels_col[r]!r}",
                        field="skew_fit")
                idx.append(i)
            alpha = fit.bucket_alpha[r]
            self.alphas[(fit.pc[r], idx[0], idx[1], idx[2], idx[3])] = min(max(alpha, 0.0), 1.0)
            w = fit.bucket_num_samples[r] if r < len(fit.bucket_num_samples) else 1
            weight += w
            total += w * alpha
        self.pcs = sorted({pc for pc in fit.pc if pc > 0})
        if fit.method or fit.alpha_default:
            default = fit.alpha_default
        else:
            default = total / weight if weight else 0.0
        self.alpha_default = min(max(default, 0.0), 1.0)

    def pc_key(self, pc: int) -> int:
        """The profiled pc nearest to ``pc`` in log scale (0 stays 0)."""
        pcs = self.pcs
        if pc <= 0 or not pcs:
            return 0
        i = bisect_left(pcs, pc)
        if i == 0:
            return pcs[0]
        if i == len(pcs):
            return pcs[-1]
        lo, hi = pcs[i - 1], pcs[i]
        return hi if hi * lo <= pc * pc else lo

    def alphas_for(self, n: int, skew_rate: np.ndarray, kv_big: np.ndarray) -> np.ndarray:
        """:meth:`alpha` of decode-only batches (``pc = kp = 0``) with ``n`` decodes, per
        ``(skew_rate[j], kv_big[j])``."""
        a = self.axes

        def buckets(edges: list[float], x: np.ndarray) -> np.ndarray:
            i = np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="left") - 1
            return np.where((i >= 0) & (i < len(edges) - 1), i, -1)

        head = (self.pc_key(0), _bucket(a[0], n))
        kp = _bucket(a[3], 0)
        br, bk = buckets(a[1], skew_rate), buckets(a[2], kv_big)
        out = np.empty(len(br), dtype=np.float64)
        pairs = br * (len(a[2]) + 1) + (bk + 1)
        for code in np.unique(pairs).tolist():
            sel = pairs == code
            r, k = int(br[sel][0]), int(bk[sel][0])
            alpha = self.alphas.get((*head, r, k, kp))
            out[sel] = self.alpha_default if alpha is None else alpha
        return out

    def alpha(self, pc: int, kp: int, n: int, skew_rate: float, kv_big: float) -> float:
        """Alpha of the bucket holding the query, else ``alpha_default``."""
        a = self.axes
        key = (self.pc_key(pc), _bucket(a[0], n), _bucket(a[1], skew_rate),
               _bucket(a[2], kv_big), _bucket(a[3], kp))
        alpha = self.alphas.get(key)
        return self.alpha_default if alpha is None else alpha


# --------------------------------------------------------------------------- per TP degree


class _TpCost:
    """Precomputed tables of one parallel layout (see :class:`ProfileCostModel`)."""

    def __init__(self, profile: pb.Profile, model: ModelConfig, parallel: ParallelConfig,
                 source: str,
                 collectives: Sequence[pb.OpTable], link: LinkModel | NcclModel,
                 skew: bool | None = None, *,
                 link_spec: LinkSpec | None = None,
                 cudagraph_max_tokens: int | None = None) -> None:
        tp = parallel.tensor_parallel_size
        tpp = next((t for t in profile.tp if t.tp_degree == tp), None)
        if tpp is None:
            have = ", ".join(str(t.tp_degree) for t in profile.tp) or "none"
            raise ProfileRangeError(f"TP degree {tp} is not in the profile (has: {have})",
                                    path=source, field="tp")
        self.tp = tp
        self.parallel = parallel
        self.layers = model.num_hidden_layers
        # dense / per-sequence parts depend only on the token / sequence count
        self._dense_memo: dict[int, tuple[dict[str, int], tuple[str, ...]]] = {}
        self._seq_memo: dict[int, tuple[dict[str, int], tuple[str, ...]]] = {}
        tables = {t.op: t for t in tpp.ops}
        self.missing_optional: list[str] = []
        where = f"tp{tp}"

        def need(name: str) -> pb.OpTable:
            t = tables.get(name)
            if t is None:
                raise ProfileRangeError(f"operator '{name}' is not in the profile at TP {tp}",
                                        path=source, field=f"{where}/{name}")
            return t

        dense: dict[tuple[float, ...], list[tuple[str, list[float]]]] = {}
        seq: dict[tuple[float, ...], list[tuple[str, list[float]]]] = {}
        self.has_moe = False
        self.n_all_reduce = 0
        # (breakdown key, collective, calls per step, scales with sampled sequences?,
        #  bytes per row, runs between pipeline stages?)
        self.collective_ops: list[tuple[str, Collective, int, bool, int, bool]] = []
        for op in step_ops(model, parallel):
            if op.op_class is OpClass.ATTENTION:
                continue
            if op.op_class is OpClass.MOE:
                self.has_moe = True
                continue
            if op.op_class is OpClass.MOE_ACROSS_RANKS:  # priced by llmsim.cluster.moe_dp
                continue
            if op.op_class is OpClass.COLLECTIVE:
                calls = op.count * (self.layers if op.scope is Scope.LAYER else 1)
                if op.name == "all_reduce":
                    self.n_all_reduce += calls
                self.collective_ops.append((op.name, Collective(op.collective), calls,
                                            op.rows is Rows.SEQUENCES,
                                            op.n * (op.elem_bytes or model.dtype_bytes),
                                            op.group == "pp"))
                continue
            if op.name not in tables and op.name in OPTIONAL_OPS:
                self.missing_optional.append(op.name)
                continue
            table = need(op.name)
            weight = op.count * (self.layers if op.scope is Scope.LAYER else 1)
            pairs = sorted(zip(table.axes[0].values, table_values(table), strict=True))
            xs = tuple(float(x) for x, _ in pairs)
            ys = [weight * y for _, y in pairs]
            group = seq if op.rows is Rows.SEQUENCES else dense
            entries = group.setdefault(xs, [])
            for i, (name, prev) in enumerate(entries):
                if name == op.name:  # the same op listed twice: add up
                    entries[i] = (name, [a + b for a, b in zip(prev, ys, strict=True)])
                    break
            else:
                entries.append((op.name, ys))
        self.dense = [(list(xs), ops) for xs, ops in dense.items()]
        self.seq = [(list(xs), ops) for xs, ops in seq.items()]
        self._build_attention(need("attention"), source, where)
        has_fit = tpp.HasField("skew_fit") and len(tpp.skew_fit.pc) > 0
        use_fit = has_fit and (not tpp.skew_fit.disabled_by_source if skew is None else skew)
        self.skew = _SkewFit(tpp.skew_fit) if use_fit else None
        # long/short KV ratio of the profiled two-level skew batches (kv_big / kvs)
        ratios = sorted(tpp.skew.skew) if tpp.HasField("skew") else []
        ratio = ratios[len(ratios) // 2] if ratios else 0.0
        self.skew_ratio = ratio if ratio > 1.0 else None
        self.moe = None
        if self.has_moe:
            moe = need("moe")
            axes = [list(a.values) for a in moe.axes]
            self.moe = GridND(list(zip(*axes, strict=True)), table_values(moe))
            self.experts = model.num_experts
            self.experts_per_token = model.num_experts_per_token
        self.dtype_bytes = model.dtype_bytes
        self.ar_bytes_per_token = model.hidden_size * model.dtype_bytes
        self.ar_grid = collective_grid(collectives, "all_reduce", tp) if tp > 1 else None
        self.link = link
        self.cudagraph_max_tokens = cudagraph_max_tokens
        self.comm = CollectivesModel(ranks=tp, tables=collectives, link=link_spec,
                                     analytic=link)
        # between pipeline stages: point-to-point messages (a pair of ranks) and the
        # sampled-token broadcast over the pp stages, all outside the CUDA graph
        self.pp_comm = CollectivesModel(ranks=parallel.pipeline_parallel_size,
                                        tables=collectives, link=link_spec, analytic=link)

    def communication(self, tokens: int, sampled: int) -> tuple[StepCollective, ...]:
        """Every collective of a step at ``tokens`` tokens and ``sampled`` sampled
        sequences, priced as :meth:`cost` prices them (one entry per op, in step order)."""
        out = []
        cap = self.cudagraph_max_tokens
        graph = cap is None or tokens <= cap
        for name, coll, calls, per_seq, row_bytes, pp in self.collective_ops:
            rows = sampled if per_seq else tokens
            nbytes = rows * row_bytes
            if not rows:
                priced = PricedCollective(duration_ns=0.0, source="none", impl="")
            elif pp:
                priced = self.pp_comm.price(coll, nbytes, cuda_graph=False)
            else:
                priced = self.comm.price(coll, nbytes, cuda_graph=graph and not per_seq)
            out.append(StepCollective(
                name=name, collective=coll.value, group="pp" if pp else "tp",
                ranks=(2 if coll is Collective.SEND_RECV else
                       (self.parallel.pipeline_parallel_size if pp else self.tp)),
                calls=calls if rows else 0, bytes_per_call=nbytes,
                duration_ns=int(priced.duration_ns * calls + 0.5) if rows else 0,
                impl=priced.impl, source=priced.source))
        return tuple(out)

    def _build_attention(self, table: pb.OpTable, source: str, where: str) -> None:
        names = [a.name for a in table.axes]
        expected = ["prefill_chunk", "kv_prefill", "n_decode", "kv_decode"]
        if names != expected:
            raise ProfileError(f"attention axes must be {expected}, got {names}",
                               path=source, field=f"{where}/attention")
        values = table_values(table)
        cols = [list(a.values) for a in table.axes]
        # (coordinates, times) of the decode-only, prefill-only and mixed points
        dec: tuple[list[tuple[float, ...]], list[float]] = ([], [])
        pre: tuple[list[tuple[float, ...]], list[float]] = ([], [])
        mix: tuple[list[tuple[float, ...]], list[float]] = ([], [])
        for pc, kp, n, kv, t in zip(*cols, values, strict=True):
            if pc == 0 and n > 0:
                dec[0].append((n, kv))
                dec[1].append(t)
            elif pc > 0 and n == 0:
                pre[0].append((pc, kp))
                pre[1].append(t)
            elif pc > 0 and n > 0:
                mix[0].append((pc, kp, n, kv))
                mix[1].append(t)
        for label, part in (("decode-only", dec), ("prefill-only", pre), ("mixed", mix)):
            if not part[0]:
                raise ProfileError(f"attention table has no {label} points",
                                   path=source, field=f"{where}/attention")
        self.att_dec = GridND(*dec)
        self.att_pre = GridND(*pre)
        self.att_mix = GridND(*mix)
        # launch floor: the cheapest measured prefill-only call
        self.att_floor = min(pre[1])

    # ------------------------------------------------------------------ evaluation

    def cost(self, batch: StepBatch
             ) -> tuple[StepCost, tuple[str, ...], tuple[tuple[str, str, str], ...]]:
        """The step's cost, the ops that extrapolated, and ``(op, impl, source)`` per
        priced collective."""
        prefills = batch.prefills
        decodes = batch.decode_context_lens
        tokens = len(decodes)
        sampled = tokens
        for p in prefills:
            tokens += p.num_new_tokens
            if p.emits_token:
                sampled += 1
        if tokens <= 0:
            return StepCost(duration_ns=0, breakdown_ns={}), (), ()
        dense = self._dense_memo.get(tokens)
        if dense is None:
            dense = self._dense_memo[tokens] = self._rows_ns(self.dense, tokens, True)
        out = dict(dense[0])
        ex: list[str] = list(dense[1])
        if sampled:
            seq = self._seq_memo.get(sampled)
            if seq is None:
                seq = self._seq_memo[sampled] = self._rows_ns(self.seq, sampled, False)
            out.update(seq[0])
            ex.extend(seq[1])
        bd: dict[str, float] = {}
        attn, attn_ex = self.attention(prefills, decodes)
        bd["attention"] = attn * self.layers
        if attn_ex:
            ex.append("attention")
        if self.moe is not None:
            e, k = self.experts, self.experts_per_token
            active = expected_active_experts(e, k, tokens)
            t, moe_ex = self.moe(tokens, active)
            bd["moe"] = t * self.layers
            if moe_ex:
                ex.append("moe")
        sources: list[tuple[str, str, str]] = []
        if self.collective_ops:
            cap = self.cudagraph_max_tokens
            graph = cap is None or tokens <= cap
            for name, coll, calls, per_seq, row_bytes, pp in self.collective_ops:
                rows = sampled if per_seq else tokens
                if not rows:  # nothing sampled: no logits to gather (as lm_head)
                    continue
                if pp:
                    priced = self.pp_comm.price(coll, rows * row_bytes, cuda_graph=False)
                else:
                    priced = self.comm.price(coll, rows * row_bytes,
                                             cuda_graph=graph and not per_seq)
                bd[name] = bd.get(name, 0.0) + priced.duration_ns * calls
                if priced.extrapolated and name not in ex:
                    ex.append(name)
                entry = (name, priced.impl, priced.source)
                if entry not in sources:
                    sources.append(entry)
        for op_name, v in bd.items():
            out[op_name] = int(v + 0.5)
        cost = StepCost(duration_ns=sum(out.values()), breakdown_ns=out)
        return cost, tuple(ex), tuple(sources)

    @staticmethod
    def _rows_ns(groups: list[tuple[list[float], list[tuple[str, list[float]]]]], rows: int,
                 proportional: bool
                 ) -> tuple[dict[str, int], tuple[str, ...]]:
        """Every op of ``groups`` at ``rows`` rows, each rounded to ns, and extrapolations.

        Depends on ``rows`` only, so :meth:`cost` memoizes it per token / sequence count.
        """
        bd: dict[str, float] = {}
        ex: list[str] = []
        for xs, ops in groups:
            _eval_ops(xs, ops, rows, proportional, bd, ex)
        return {k: int(v + 0.5) for k, v in bd.items()}, tuple(ex)

    def attention(self, prefills: tuple[PrefillChunk, ...], decodes: tuple[int, ...]
                  ) -> tuple[float, bool]:
        """One layer's attention time (ns) for the batch, and whether it extrapolated."""
        n = len(decodes)
        if not prefills:
            if not n:
                return 0.0, False
            return self._decodes(None, 0, 0, decodes)
        pre = self.att_pre
        if len(prefills) == 1:
            p = prefills[0]
            pc, kp = p.num_new_tokens, p.num_cached_tokens
            if not n:
                return pre(pc, kp)
            return self._decodes(self.att_mix, pc, kp, decodes)
        # several chunks: the costliest is primary, the others add their own work
        costs = []
        any_ex = False
        for p in prefills:
            t, e = pre(p.num_new_tokens, p.num_cached_tokens)
            costs.append(t)
            any_ex = any_ex or e
        j = costs.index(max(costs))
        floor = self.att_floor
        extra = sum(max(t - floor, 0.0) for i, t in enumerate(costs) if i != j)
        if not n:
            return costs[j] + extra, any_ex
        p = prefills[j]
        t, e = self._decodes(self.att_mix, p.num_new_tokens, p.num_cached_tokens, decodes)
        return t + extra, any_ex or e

    def decode_run_attention(self, n: int, sums: np.ndarray, maxs: np.ndarray,
                             mins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`attention` of many decode-only batches at once (no prefill chunk).

        Batch ``j`` has ``n`` decodes whose KV lengths sum to ``sums[j]``, with maximum
        ``maxs[j]`` and minimum ``mins[j]`` (int64 arrays of one length): all
        :meth:`_decodes` reads of a batch. Same rules and the same IEEE operations as the
        scalar path (:meth:`GridND.many_at`; a few batches are priced by it one by one,
        cheaper than the array set-up), so each value equals :meth:`attention` of the
        batch bit for bit.

        Returns:
            ``(one layer's attention time ns, extrapolated)`` per batch (float64, bool).
        """
        if len(sums) <= _SCALAR_RUN_MAX:
            pairs = [self._decode_only(n, s, mx, mn) for s, mx, mn in
                     zip(sums.tolist(), maxs.tolist(), mins.tolist(), strict=True)]
            return (np.fromiter((p[0] for p in pairs), dtype=np.float64, count=len(pairs)),
                    np.fromiter((p[1] for p in pairs), dtype=bool, count=len(pairs)))
        grid = self.att_dec
        equal = maxs == mins
        t_max, e2 = grid.many_at(n, maxs.astype(np.float64))
        if equal.all():
            return t_max, e2
        kv_mean = sums / n  # int64 / int: both exact in float64, one correctly rounded division
        t_mean, e1 = grid.many_at(n, kv_mean)
        skew = self.skew
        if skew is None:
            t, ex = t_mean, e1
        else:
            ratio = self.skew_ratio
            if ratio is None:
                rate = (kv_mean - mins) / (maxs - mins)
            else:
                rate = (ratio * kv_mean / maxs - 1.0) / (ratio - 1.0)
                rate = np.where(0.0 > rate, 0.0, rate)   # max(rate, 0.0)
                rate = np.where(1.0 < rate, 1.0, rate)   # min(rate, 1.0)
            alpha = skew.alphas_for(n, rate, maxs)
            t = t_mean + alpha * (t_max - t_mean)
            ex = e1 | e2
        return np.where(equal, t_max, t), np.where(equal, e2, ex)

    def _decode_only(self, n: int, kv_sum: int, kv_max: int, kv_min: int) -> tuple[float, bool]:
        """:meth:`_decodes` of a decode-only batch from its decodes' count, sum, max, min
        (the same operations)."""
        grid = self.att_dec
        if kv_max == kv_min:
            return grid(n, kv_max)
        kv_mean = kv_sum / n
        t_mean, e1 = grid(n, kv_mean)
        t_max, e2 = grid(n, kv_max)
        skew = self.skew
        if skew is None:
            return t_mean, e1
        ratio = self.skew_ratio
        if ratio is None:
            rate = (kv_mean - kv_min) / (kv_max - kv_min)
        else:
            rate = min(max((ratio * kv_mean / kv_max - 1.0) / (ratio - 1.0), 0.0), 1.0)
        alpha = skew.alpha(0, 0, n, rate, kv_max)
        return t_mean + alpha * (t_max - t_mean), e1 or e2

    def _decodes(self, mix: GridND | None, pc: int, kp: int, decodes: tuple[int, ...]
                 ) -> tuple[float, bool]:
        n = len(decodes)
        kv_max = max(decodes)
        kv_min = min(decodes)
        if mix is None:
            grid = self.att_dec
            if kv_max == kv_min:
                return grid(n, kv_max)
            kv_mean = sum(decodes) / n
            t_mean, e1 = grid(n, kv_mean)
            t_max, e2 = grid(n, kv_max)
        else:
            if kv_max == kv_min:
                return mix(pc, kp, n, kv_max)
            kv_mean = sum(decodes) / n
            t_mean, e1 = mix(pc, kp, n, kv_mean)
            t_max, e2 = mix(pc, kp, n, kv_max)
        skew = self.skew
        if skew is None:
            return t_mean, e1
        ratio = self.skew_ratio
        if ratio is None:
            rate = (kv_mean - kv_min) / (kv_max - kv_min)
        else:  # the profiled two-level batch with this mean and max (module docstring)
            rate = min(max((ratio * kv_mean / kv_max - 1.0) / (ratio - 1.0), 0.0), 1.0)
        alpha = skew.alpha(pc, kp, n, rate, kv_max)
        return t_mean + alpha * (t_max - t_mean), e1 or e2


@dataclass(frozen=True, slots=True, kw_only=True)
class StepCollective:
    """One collective op of one step, as the cost model priced it.

    Attributes:
        name: breakdown key (``all_reduce``, ``pp_send_recv``, ...).
        collective: collective kind (:class:`~llmsim.costmodel.collectives.Collective` value).
        group: rank group: ``"tp"`` (a stage's TP group) or ``"pp"`` (between stages).
        ranks: ranks of one call (2 for a send/recv).
        calls: calls in the step (0 when it has no rows, e.g. nothing sampled).
        bytes_per_call: bytes of one call (full tensor; a send/recv's message).
        duration_ns: all calls of the step together, ns (as in ``breakdown_ns``).
        impl: the implementation vLLM runs (``custom_ar``, ``nccl``, ...).
        source: what priced it (a measured table, the analytic model, ...).
    """

    name: str
    collective: str
    group: str
    ranks: int
    calls: int
    bytes_per_call: int
    duration_ns: int
    impl: str
    source: str


class DecodeRunPrice:
    """The price of a decode stretch (:meth:`ProfileCostModel.decode_run`).

    Attributes:
        duration_ns: kernel time per step, ns (int64, shape ``(k,)``).
    """

    __slots__ = ("_model", "duration_ns", "_first", "_attn_ns", "_attn_ex", "_ex", "_sources")

    def __init__(self, model: ProfileCostModel, first: StepCost, attn_ns: np.ndarray,
                 attn_ex: np.ndarray, ex: tuple[str, ...],
                 sources: tuple[tuple[str, str, str], ...]) -> None:
        self._model = model
        self._first = first
        self._attn_ns = attn_ns
        self.duration_ns = (first.duration_ns - first.breakdown_ns["attention"]) + attn_ns
        self._attn_ex = attn_ex
        self._ex = ex
        self._sources = sources

    def cost_at(self, j: int) -> StepCost:
        """The :class:`StepCost` :meth:`ProfileCostModel.step_cost` returns for step ``j``
        (0-based; only attention differs between the steps)."""
        bd = dict(self._first.breakdown_ns)
        bd["attention"] = int(self._attn_ns[j])
        return StepCost(duration_ns=int(self.duration_ns[j]), breakdown_ns=bd,
                        energy_j=self._first.energy_j)

    def count(self, m: int) -> None:
        """Advance the model's counters as :meth:`ProfileCostModel.step_cost` calls for the
        first ``m`` steps would."""
        if m <= 0:
            return
        counts: Counter[str] = Counter()
        for name in self._ex:
            counts[name] += m
        n_ex = int(self._attn_ex[:m].sum())
        if n_ex:
            counts["attention"] += n_ex
        if counts:
            self._model.extrapolations.update(counts)
        if self._sources:
            self._model.collective_sources.update({src: m for src in self._sources})


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectivesReport:
    """Which sources priced a cost model's TP collectives.

    Attributes:
        link: name of the hardware link description used (None: none matched).
        link_path: its file.
        analytic: source label of the model for collectives no table covers.
        coverage: one line per collective and TP degree: what prices it.
        calls: ``((op, vLLM implementation, source), step_cost calls)``, sorted.
    """

    link: str | None
    link_path: str | None
    analytic: str
    coverage: tuple[str, ...]
    calls: tuple[tuple[tuple[str, str, str], int], ...]


def expected_active_experts(num_experts: int, experts_per_token: int, tokens: int) -> float:
    """Expected distinct experts hit by ``tokens`` tokens under uniform top-k routing.

    ``E (1 - (1 - k/E)^T)``, capped at ``T k`` (each token picks ``k`` of ``E`` experts; the
    probability that a given expert is missed by all ``T`` tokens is ``(1 - k/E)^T``).
    """
    e, k = num_experts, experts_per_token
    return min(e * (1.0 - (1.0 - k / e) ** tokens), float(tokens * k))


def rows_ns(xs: list[float], ys: list[float], rows: int, proportional: bool) -> float:
    """One per-token / per-sequence table at ``rows`` rows, by :class:`ProfileCostModel`'s rules.

    Args:
        xs: ascending row counts of the table.
        ys: the (already weighted) value at each of ``xs``, ns.
        rows: the query.
        proportional: above the grid, scale proportionally (token-scaled ops) instead of
            extrapolating linearly.
    """
    out: dict[str, float] = {}
    _eval_ops(xs, [("op", ys)], rows, proportional, out, [])
    return out["op"]


def _eval_ops(xs: list[float], ops: list[tuple[str, list[float]]], x: int,
              proportional: bool, bd: dict[str, float], ex: list[str]) -> None:
    """Add every op of one shared-grid group at ``x`` rows to ``bd``."""
    i = bisect_left(xs, x)
    n = len(xs)
    if i < n:
        xi = xs[i]
        if xi == x:
            for name, ys in ops:
                bd[name] = ys[i]
            return
        if i == 0:
            for name, ys in ops:
                bd[name] = ys[0]
                ex.append(name)
            return
        x0 = xs[i - 1]
        f = (x - x0) / (xi - x0)
        for name, ys in ops:
            y0 = ys[i - 1]
            bd[name] = y0 + (ys[i] - y0) * f
        return
    x1 = xs[-1]
    for name, ys in ops:
        ex.append(name)
        if proportional or n == 1:
            bd[name] = ys[-1] * x / x1
        else:
            slope = (ys[-1] - ys[-2]) / (x1 - xs[-2])
            bd[name] = ys[-1] + max(slope, 0.0) * (x - x1)


# --------------------------------------------------------------------------- public model


class ProfileCostModel:
    """Step cost from a ``llmsim.v1.Profile`` (kernel time, ns), memoized per batch.

    Args:
        profile: the operator profile.
        model: the served model; defaults to the architecture recorded in the profile.
        parallel: the instance's parallel layout (batches may name another one whose TP
            degree is in the profile; each layout's tables are built on first use).
        collectives: measured collective tables (``OpTable``), in priority order, e.g. from
            an AIConfigurator or Vidur import; defaults to the profile's own ``collectives``.
        link: an explicit analytic model for collectives no table covers (overrides the one
            built from ``link_spec``).
        link_spec: the hardware's TP link description (vLLM's implementation rule and the
            NCCL constants); when None and no ``link`` is given, collectives no table covers
            are priced by the unsourced default ring model, with a warning.
        cudagraph_max_tokens: largest CUDA-graph capture size of the engine: steps of at
            most this many tokens use the tables' CUDA-graph rows, larger ones the eager
            rows; None when unknown (graph rows, said in the log and the report).
        source: where the profile came from, for error messages.
        skew: apply the decode-skew fit: ``None`` follows the profile
            (``SkewFit.disabled_by_source``), ``True``/``False`` force it.

    Attributes:
        extrapolations: op name -> number of :meth:`step_cost` calls whose lookup of that op
            left the measured grid.
        missing_optional_ops: optional ops (``moe_gate``) the profile lacks, priced at 0.
        collective_sources: ``(op, vLLM implementation, source)`` -> number of
            :meth:`step_cost` calls that priced that collective so (memoized repeats
            included).

    Raises:
        ProfileRangeError: the TP degree or a needed operator is not in the profile.
        ConfigError: no model architecture available.
    """

    def __init__(self, profile: pb.Profile, *, model: ModelConfig | None = None,
                 parallel: ParallelConfig = SINGLE_GPU,
                 collectives: Iterable[pb.OpTable] | None = None,
                 link: LinkModel | NcclModel | None = None,
                 link_spec: LinkSpec | None = None, cudagraph_max_tokens: int | None = None,
                 source: str | Path | None = None, skew: bool | None = None) -> None:
        self.skew = skew
        self.source = str(source) if source is not None else (
            profile.provenance.source.path or "<profile>")
        self.profile = profile
        self.model = model if model is not None else model_from_profile(profile, self.source)
        recorded = profile.model.config_sha256
        if model is not None and recorded and model.config_sha256 and (
                recorded != model.config_sha256):
            logger.warning("%s: profiled model config %s differs from the served model %s",
                           self.source, recorded[:12], model.config_sha256[:12])
        self.parallel = parallel
        self.collectives = list(collectives) if collectives is not None else list(
            profile.collectives)
        self.link_spec = link_spec
        self.cudagraph_max_tokens = cudagraph_max_tokens
        if link is None and link_spec is not None:
            link = NcclModel.from_link(link_spec)
        self.link: LinkModel | NcclModel = link or LinkModel()
        self.extrapolations: Counter[str] = Counter()
        self.collective_sources: Counter[tuple[str, str, str]] = Counter()
        self._tps: dict[ParallelConfig, _TpCost] = {}
        # key: (prefills, decode count, sum, max, min, parallel), see step_cost
        self._memo: dict[tuple[Any, ...], tuple[StepCost, tuple[str, ...],
                                                tuple[tuple[str, str, str], ...]]] = {}
        main = self.tp_tables(parallel)
        self.missing_optional_ops = tuple(main.missing_optional)
        for name in self.missing_optional_ops:
            logger.warning("%s: op '%s' not profiled; priced at 0", self.source, name)
        if parallel.tensor_parallel_size > 1 or parallel.pipeline_parallel_size > 1:
            self._log_collectives(main)

    def _log_collectives(self, tpc: _TpCost) -> None:
        """Log what prices each collective of TP degree ``tpc.tp`` (warning if not measured)."""
        for line, measured in self._coverage(tpc):
            (logger.info if measured else logger.warning)("%s: %s", self.source, line)

    def _coverage(self, tpc: _TpCost) -> list[tuple[str, bool]]:
        lines = [(f"tp{tpc.tp} all-reduce rule: {tpc.comm.rule_summary()}",
                  self.link_spec is not None)]
        if self.cudagraph_max_tokens is None:
            note = (f"tp{tpc.tp}: CUDA-graph size limit not given; collective tables read "
                    "at their CUDA-graph rows for every step")
            lines.append((note, False))
        seen = set()
        pp = tpc.parallel.pipeline_parallel_size
        where = f"tp{tpc.tp}" if pp == 1 else f"tp{tpc.tp} pp{pp}"
        for name, coll, _calls, per_seq, _n, between_stages in tpc.collective_ops:
            if name in seen:
                continue
            seen.add(name)
            text = (tpc.pp_comm.coverage(coll, cuda_graph=False) if between_stages
                    else tpc.comm.coverage(coll, cuda_graph=not per_seq))
            lines.append((f"{where} {name} ({coll.value}) priced by {text}",
                          not text.endswith("(no measured table)")))
        return lines

    def step_communication(self, parallel: ParallelConfig, tokens: int, sampled: int
                           ) -> tuple[StepCollective, ...]:
        """Every collective of one step of ``tokens`` tokens (the CUDA-graph-padded count
        the step ran at) and ``sampled`` sampled sequences, priced as :meth:`step_cost`
        prices them (for reports: :mod:`llmsim.metrics.communication`).

        Raises:
            ProfileRangeError: the layout's TP degree is not in the profile.
        """
        return self.tp_tables(parallel).communication(tokens, sampled)

    @classmethod
    def from_path(cls, path: str | Path, *, model: ModelConfig | None = None,
                  parallel: ParallelConfig = SINGLE_GPU, **kwargs: Any) -> ProfileCostModel:
        """Build from a ``.pb`` file or an LLMServingSim bundle directory."""
        from llmsim.profile import load_profile

        return cls(load_profile(path), model=model, parallel=parallel, source=path, **kwargs)

    @property
    def tp(self) -> int:
        """Tensor-parallel degree of the instance (``parallel.tensor_parallel_size``)."""
        return self.parallel.tensor_parallel_size

    def tp_tables(self, parallel: ParallelConfig) -> _TpCost:
        """The precomputed lookups of one parallel layout (built on first use).

        Raises:
            ProfileRangeError: its TP degree is not in the profile.
        """
        tpc = self._tps.get(parallel)
        if tpc is None:
            tpc = self._tps[parallel] = _TpCost(self.profile, self.model, parallel, self.source,
                                          self.collectives, self.link, self.skew,
                                          link_spec=self.link_spec,
                                          cudagraph_max_tokens=self.cudagraph_max_tokens)
        return tpc

    def step_cost(self, batch: StepBatch) -> StepCost:
        """Kernel time of ``batch`` with a per-op breakdown (see the module docstring).

        Raises:
            ProfileRangeError: ``batch.tp`` is not in the profile.
        """
        d = batch.decode_context_lens
        # the price reads the decodes only through their count, sum, max and min
        # (_TpCost.cost, _decodes): a key of those hits where every exact KV length would
        # miss, and holds 5 ints instead of a tuple per decode
        key = ((batch.prefills, len(d), sum(d), max(d), min(d), batch.parallel) if d
               else (batch.prefills, 0, 0, 0, 0, batch.parallel))
        hit = self._memo.get(key)
        if hit is None:
            tpc = self._tps.get(batch.parallel) or self.tp_tables(batch.parallel)
            hit = tpc.cost(batch)
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[key] = hit
        if hit[1]:
            self.extrapolations.update(hit[1])
        if hit[2]:
            self.collective_sources.update(hit[2])
        return hit[0]

    def decode_run_ns(self, batch: StepBatch, k: int) -> np.ndarray | None:
        """Kernel times of ``k`` decode-only steps, the ``j``-th (0-based) being ``batch``
        with every KV length ``j`` longer (a decode stretch: the same sequences, one token
        each per step), ns, int64, shape ``(k,)``; the counters advance as ``k``
        :meth:`step_cost` calls would (:meth:`decode_run` without counting first).

        Returns:
            The times, or ``None`` when ``batch`` has a prefill chunk or no decode.
        """
        run = self.decode_run(batch, k)
        if run is None:
            return None
        run.count(k)
        return run.duration_ns

    def decode_run(self, batch: StepBatch, k: int) -> DecodeRunPrice | None:
        """Price the decode stretch of :meth:`decode_run_ns` without counting it: each step
        priced exactly as :meth:`step_cost` prices it (attention vectorized over the KV
        growth by :meth:`_TpCost.decode_run_attention`; the token- and sequence-count parts
        are the same every step). :meth:`DecodeRunPrice.count` then advances
        :attr:`extrapolations` and :attr:`collective_sources` for the steps that run.

        Returns:
            The price, or ``None`` when ``batch`` has a prefill chunk or no decode (the
            caller prices such steps one by one).
        """
        d = batch.decode_context_lens
        if batch.prefills or not d or k <= 0:
            return None
        tpc = self._tps.get(batch.parallel) or self.tp_tables(batch.parallel)
        cost, ex, sources = tpc.cost(batch)
        attn0 = cost.breakdown_ns.get("attention")
        if attn0 is None:
            return None
        n = len(d)
        steps = np.arange(k, dtype=np.int64)
        t, t_ex = tpc.decode_run_attention(n, sum(d) + n * steps, max(d) + steps,
                                           min(d) + steps)
        attn_ns = (t * tpc.layers + 0.5).astype(np.int64)  # int(v + 0.5), v >= 0
        return DecodeRunPrice(self, cost, attn_ns, t_ex,
                              tuple(e for e in ex if e != "attention"), sources)

    def collectives_report(self) -> CollectivesReport:
        """What priced the TP communication so far (see :class:`CollectivesReport`)."""
        link = self.link_spec
        coverage: list[str] = []
        for par in sorted(self._tps, key=_layout_key):
            if par.tensor_parallel_size > 1:
                coverage += [line for line, _ in self._coverage(self._tps[par])]
        return CollectivesReport(
            link=link.name if link is not None else None,
            link_path=link.path if link is not None else None,
            analytic=self.link.source,
            coverage=tuple(coverage),
            calls=tuple(sorted(self.collective_sources.items())),
        )

    def attention_ns(self, batch: StepBatch) -> float:
        """One layer's attention time for ``batch`` (ns, unrounded; for tests and tools)."""
        return self.tp_tables(batch.parallel).attention(batch.prefills, batch.decode_context_lens)[0]

    def clear_cache(self) -> None:
        """Forget memoized step costs."""
        self._memo.clear()


def _layout_key(parallel: ParallelConfig) -> tuple[int, int, int, bool]:
    """Sort key of a layout (TP degree first, as the report lists them)."""
    return (parallel.tensor_parallel_size, parallel.pipeline_parallel_size,
            parallel.data_parallel_size, parallel.enable_expert_parallel)


def from_context(spec: str, context: CostModelContext) -> ProfileCostModel:
    """Factory for :mod:`llmsim.costmodel.registry` (spec ``profile``).

    Raises:
        ConfigError: the experiment names no profile.
    """
    from llmsim.costmodel.registry import find_collective_tables, find_link_spec_for
    from llmsim.profile import load_profile

    if context.profile_path is None:
        raise ConfigError("cost model 'profile' needs a profile (.pb or bundle dir)",
                          field="profile")
    profile = load_profile(context.profile_path)
    link_spec = tables = None
    # one-GPU steps communicate nothing: no lookup, no warnings
    if context.tp > 1 or context.parallel.pipeline_parallel_size > 1:
        link_spec = find_link_spec_for(getattr(context, "hardware", None), profile)
        tables = list(profile.collectives) + find_collective_tables(
            link_spec, framework_version=profile.provenance.framework_version)
    return ProfileCostModel(profile, model=context.model, parallel=context.parallel,
                            source=context.profile_path, collectives=tables, link_spec=link_spec,
                            cudagraph_max_tokens=getattr(context, "cudagraph_max_tokens", None))
