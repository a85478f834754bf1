"""In-context timing: time every operator inside whole forward passes, op by op.

Why: timing one operator in a tight loop keeps its weights in the CPU caches, while in a real
forward pass the other operators' weights (and the other layers' copies of its own) evict
them between two calls. On the 2-vCPU EPYC of the closed loop (32 MiB L3), ``qkv_proj`` at
1 token of the 4-layer closed-loop model takes 29 us in a hot loop and 94 us after flushing
64 MiB; flushing the whole cache before every call overshoots the other way (activations,
code, TLBs and the op's own inputs are cold too, which they are not in a real pass).

How: a *context pass* runs the whole operator sequence of a step, in the order the
closed-loop engine runs it (``embedding`` -> per layer ``layernorm, qkv_proj, [qk_norm],
rotary_emb, attention, o_proj, layernorm, gate_up_proj, act_fn, down_proj`` (or
``moe_gate, moe``) -> ``final_layernorm, lm_head, sampler``), and records
``perf_counter_ns`` around each operator call (torch on the CPU is synchronous, so the span
is the operator's time). :func:`forward` is that sequence, shared with the engine
(:mod:`profiler.closed_loop.engine`), so both run exactly the same calls.

Working set: the pass runs ``num_layer_copies`` decoder layers, each with its own random
weights and its own paged KV pool, so between two calls of the same operator the caches see
what a real forward pass makes them see. The default is as many copies as the profiled model
has layers, capped by a memory budget (:func:`layer_copies`, default
:data:`DEFAULT_BUDGET_BYTES`): once one layer's weights exceed the last-level cache, more
copies change nothing (every weight is read from DRAM once per pass either way), so the cap
only bites for models whose layers are far larger than the cache. The number used is
recorded in the profile (``context_layer_copies``).

Grid mapping: every grid point is priced from passes over a batch that contains it:

* dense op at ``T`` tokens: a batch shaped like the steps a serving engine runs at ``T``
  tokens (:func:`dense_batch`): ``min(T, D)`` decodes at a typical context ``K`` plus a
  prefill chunk of the remaining tokens (no cached KV), where ``D`` is the grid's largest
  decode count and ``K`` the middle value of its decode KV axis (:func:`typical_decode`).
  All dense per-layer ops, ``embedding`` and ``final_layernorm`` at ``T`` come from the same
  passes. The context matters for the small ops: on the closed-loop CPU, ``layernorm`` at 8
  tokens takes 31 us after an 8-token prefill's attention and 46 us after 8 decodes at KV
  300 (their KV gathers evict the caches), which is what a decode step of the engine sees;
* ``lm_head`` / ``sampler`` at ``S`` sequences: ``S`` decodes at ``K`` (``S`` rows sampled);
* attention at ``(pc, kp, nd, kv)``: a prefill chunk ``(pc, kp)`` plus ``nd`` decodes at ``kv``;
* MoE at ``(t, active)``: a prefill chunk of ``t`` tokens whose router logits send them to
  exactly ``active`` experts.

Samples: ``repetitions`` timed passes after ``warmup`` untimed ones; a per-layer operator
yields one sample per layer copy and call per pass (``layernorm`` two), a per-step operator
one per pass. On a shared machine, calls during which the OS ran another process (wall span
above the thread's CPU span, :func:`preempted`) are dropped and more passes run until every
operator has its count of clean samples (at most 4 x ``repetitions`` passes; an operator
still short keeps its preempted samples and is reported). Without this, one scheduler slice
(milliseconds) inside a 20 us call dominates the point's mean.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llmsim.model.config import ModelConfig
from profiler import ops
from profiler.suite import _paged_slots

DEFAULT_BUDGET_BYTES = 2 * 1024 ** 3
PREEMPT_SLACK_NS = 10_000
PREEMPT_SLACK_FRAC = 0.05


def _untimed(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class OpClock:
    """Records ``clock_ns()`` spans per operator name around each call.

    Args:
        clock_ns: the wall clock (``time.perf_counter_ns``; tests pass a fake).
        cpu_clock_ns: optional thread CPU clock (``time.thread_time_ns``), read outside the
            wall span; its spans go to ``cpu_ns`` so a caller can tell calls during which
            the OS ran another process (wall span well above CPU span).
    """

    def __init__(self, clock_ns: Callable[[], int] = time.perf_counter_ns,
                 cpu_clock_ns: Callable[[], int] | None = None) -> None:
        self._clock_ns = clock_ns
        self._cpu_ns = cpu_clock_ns
        self.samples_ns: dict[str, list[int]] = {}
        self.cpu_ns: dict[str, list[int]] = {}

    def __call__(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self._cpu_ns is None:
            t0 = self._clock_ns()
            out = fn(*args)
            dt = self._clock_ns() - t0
        else:
            c0 = self._cpu_ns()
            t0 = self._clock_ns()
            out = fn(*args)
            dt = self._clock_ns() - t0
            self.cpu_ns.setdefault(name, []).append(self._cpu_ns() - c0)
        self.samples_ns.setdefault(name, []).append(dt)
        return out

    def total_ns(self) -> int:
        """Sum of all recorded spans, ns."""
        return sum(sum(v) for v in self.samples_ns.values())


@torch.inference_mode()
def forward(shapes: ops.LayerShapes, layers: Sequence[ops.LayerWeights],
            step_w: ops.StepWeights, k_caches: Sequence[torch.Tensor],
            v_caches: Sequence[torch.Tensor], ids: torch.Tensor, positions: torch.Tensor,
            meta: ops.AttentionMeta, sample_rows: torch.Tensor, *,
            clock: OpClock | None = None,
            moe_logits: torch.Tensor | None = None) -> torch.Tensor:
    """One step's forward pass, operator by operator; greedy next tokens of ``sample_rows``.

    Args:
        shapes: per-rank shapes.
        layers: decoder layers, in order (each with its own weights).
        step_w: embedding, final norm, ``lm_head``, RoPE cache.
        k_caches, v_caches: per layer ``[num_slots, kv_heads, head_dim]`` paged pools.
        ids: ``[T]`` token ids; positions: ``[T]`` their positions.
        meta: the step's attention metadata.
        sample_rows: ``[S]`` rows whose next token is sampled.
        clock: records each operator's span (None: untimed).
        moe_logits: ``[T, E]`` router logits to use instead of the router's (MoE grid
            points); the router GEMM still runs.

    Returns:
        ``[S]`` token ids.
    """
    run = clock if clock is not None else _untimed
    s, sw = shapes, step_w
    x = run("embedding", ops.embedding, ids, sw.embed)
    residual = None
    for li, lw in enumerate(layers):
        h, residual = run("layernorm", ops.layernorm, x, residual, lw.input_norm)
        qkv = run("qkv_proj", ops.linear, h, lw.qkv)
        if s.qk_norm:
            qkv = run("qk_norm", ops.qk_norm, qkv, s, lw.q_norm, lw.k_norm)
        qkv = run("rotary_emb", ops.rotary_emb, qkv, positions, s, sw.rope_cos, sw.rope_sin)
        a = run("attention", ops.attention, qkv, s, k_caches[li], v_caches[li], meta)
        x = run("o_proj", ops.linear, a, lw.o)
        h, residual = run("layernorm", ops.layernorm, x, residual, lw.post_norm)
        if s.num_experts:
            logits = run("moe_gate", ops.linear, h, lw.moe_gate)
            x = run("moe", ops.moe, h, logits if moe_logits is None else moe_logits,
                    lw.w13, lw.w2, s.top_k)
        else:
            g = run("gate_up_proj", ops.linear, h, lw.gate_up)
            g = run("act_fn", ops.act_fn, g)
            x = run("down_proj", ops.linear, g, lw.down)
    h, _ = run("final_layernorm", ops.layernorm, x, residual, sw.final_norm)
    logits = run("lm_head", ops.linear, h.index_select(0, sample_rows), sw.lm_head)
    return run("sampler", ops.sampler, logits)


def layer_bytes(shapes: ops.LayerShapes, dtype_bytes: int) -> int:
    """Bytes of one decoder layer's weights (GEMMs and norms) at ``shapes``."""
    h = shapes.hidden
    n = h * (shapes.q_size + 2 * shapes.kv_size) + shapes.q_size * h + 2 * h
    if shapes.num_experts:
        n += h * shapes.num_experts + 3 * shapes.num_experts * h * shapes.moe_intermediate
    else:
        n += 3 * h * shapes.intermediate
    return n * dtype_bytes


def layer_copies(model: ModelConfig, shapes: ops.LayerShapes, dtype_bytes: int,
                 budget_bytes: int = DEFAULT_BUDGET_BYTES) -> int:
    """Distinct layer weight copies of a context pass: the model's layer count, capped so the
    copies fit in ``budget_bytes`` (at least 1)."""
    per = max(1, layer_bytes(shapes, dtype_bytes))
    return max(1, min(model.num_hidden_layers, budget_bytes // per))


def typical_decode(kv_decode: Sequence[int], n_decode: Sequence[int]) -> tuple[int, int]:
    """``(K, D)``: the middle value of the grid's decode KV axis (upper middle for an even
    count; 16 when empty) and its largest decode count (at least 1)."""
    kvs = sorted(kv_decode)
    return (kvs[len(kvs) // 2] if kvs else 16), max(1, max(n_decode, default=1))


def dense_batch(tokens: int, kv: int, max_decodes: int) -> ContextBatch:
    """The context batch of a dense point at ``tokens``: ``min(tokens, max_decodes)``
    decodes at context ``kv`` plus a prefill chunk of the remaining tokens (none when
    ``tokens <= max_decodes``)."""
    n = min(tokens, max_decodes)
    rest = tokens - n
    return ContextBatch(prefills=((rest, 0),) if rest else (), decode_lens=(kv,) * n)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextBatch:
    """The batch of a context pass.

    Attributes:
        prefills: ``(new tokens, cached tokens)`` per prefill chunk (each chunk completes
            its prompt, so its last row is sampled).
        decode_lens: context length of every decode, including its new token.
        moe_active: route the tokens to exactly this many experts (0: the router decides).
    """

    prefills: tuple[tuple[int, int], ...] = ()
    decode_lens: tuple[int, ...] = ()
    moe_active: int = 0

    @property
    def num_tokens(self) -> int:
        """Tokens computed by the pass."""
        return sum(n for n, _ in self.prefills) + len(self.decode_lens)


class ContextRunner:
    """Layer copies plus step weights; builds timed context passes for batches.

    Args:
        model: architecture.
        tp: TP degree (one rank's shapes).
        dtype: weight / activation dtype.
        device: torch device (CPU: in-context timing relies on synchronous execution).
        max_positions: RoPE cache length.
        num_layer_copies: distinct decoder layers per pass (see :func:`layer_copies`).
        seed: weight / input seed.
        clock_ns: the clock of the recorded spans.
        cpu_clock_ns: thread CPU clock for preemption checks (None: no check).
    """

    def __init__(self, model: ModelConfig, tp: int, *, dtype: torch.dtype,
                 device: torch.device, max_positions: int, num_layer_copies: int,
                 seed: int = 0, clock_ns: Callable[[], int] = time.perf_counter_ns,
                 cpu_clock_ns: Callable[[], int] | None = time.thread_time_ns) -> None:
        self.shapes = ops.layer_shapes(model, tp)
        self.dtype, self.device = dtype, device
        self.layers = [ops.build_layer(self.shapes, dtype=dtype, device=device,
                                       seed=seed + 10 * i) for i in range(num_layer_copies)]
        self.step_w = ops.build_step_weights(self.shapes, dtype=dtype, device=device,
                                             max_positions=max_positions, seed=seed + 1)
        self._gen = torch.Generator().manual_seed(seed + 2)
        self._clock_ns = clock_ns
        self._cpu_clock_ns = cpu_clock_ns

    def prepare(self, batch: ContextBatch) -> Callable[[], OpClock]:
        """Allocate the inputs and KV pools of ``batch``; return a call that runs one timed
        pass and gives its :class:`OpClock` (each operator's spans in call order)."""
        s = self.shapes
        lengths = [n + c for n, c in batch.prefills] + list(batch.decode_lens)
        slots, num_slots = _paged_slots(lengths, self._gen)
        np_ = len(batch.prefills)
        meta = ops.build_attention_meta(
            [(slots[i].to(self.device), batch.prefills[i][0]) for i in range(np_)],
            [sl.to(self.device) for sl in slots[np_:]], self.device)

        def pool() -> torch.Tensor:
            x = torch.randn((num_slots, s.kv_heads, s.head_dim), generator=self._gen) * 0.5
            return x.to(self.device, self.dtype)

        k_caches = [pool() for _ in self.layers]
        v_caches = [pool() for _ in self.layers]
        t = batch.num_tokens
        ids = torch.randint(0, s.full_vocab, (t,), generator=self._gen).to(self.device)
        pos, rows, row = [], [], 0
        for n, c in batch.prefills:
            pos.append(torch.arange(c, c + n))
            row += n
            rows.append(row - 1)
        for length in batch.decode_lens:
            pos.append(torch.tensor([length - 1]))
            rows.append(row)
            row += 1
        positions = torch.cat(pos).to(self.device)
        sample_rows = torch.tensor(rows, dtype=torch.long, device=self.device)
        moe_logits = None
        if batch.moe_active:
            moe_logits = ops.forced_router_logits(t, s.num_experts, s.top_k, batch.moe_active)
            moe_logits = moe_logits.to(self.device, self.dtype)

        def one_pass() -> OpClock:
            clock = OpClock(self._clock_ns, self._cpu_clock_ns)
            forward(s, self.layers, self.step_w, k_caches, v_caches, ids, positions, meta,
                    sample_rows, clock=clock, moe_logits=moe_logits)
            return clock

        return one_pass


def preempted(wall_ns: float, cpu_ns: float) -> bool:
    """The OS ran something else during the call: its wall span exceeds its thread CPU span
    by more than ``10 us + 5 %`` (an uncontended call's CPU span equals its wall span plus
    the CPU-clock reads)."""
    return wall_ns - cpu_ns > PREEMPT_SLACK_NS + PREEMPT_SLACK_FRAC * wall_ns


@dataclass(frozen=True, slots=True, kw_only=True)
class PassSamples:
    """Per-operator samples of a point's passes.

    Attributes:
        samples_ns: kept wall spans per operator, ns (``repetitions`` passes' worth).
        dropped: spans discarded because the call was preempted.
        passes: timed passes run (more than ``repetitions`` when some were preempted).
        fallback_ops: operators for which too few clean spans came within the pass limit,
            kept with their preempted spans.
    """

    samples_ns: dict[str, list[float]]
    dropped: int
    passes: int
    fallback_ops: tuple[str, ...] = ()


def time_passes(one_pass: Callable[[], OpClock], *, warmup: int, repetitions: int,
                max_pass_factor: int = 4) -> PassSamples:
    """Run ``warmup`` passes (discarded), then timed passes until every operator has
    ``repetitions`` passes' worth of spans from calls that were not preempted (see
    :func:`preempted`; all spans count when the clock has no CPU clock), at most
    ``max_pass_factor x repetitions`` passes; each operator keeps its first clean spans.

    On a shared machine another process takes the core for a scheduler slice (ms), which
    lands inside some calls; those spans measure the machine's load, not the operator.
    """
    for _ in range(warmup):
        one_pass()
    clean: dict[str, list[float]] = {}
    raw: dict[str, list[float]] = {}
    want: dict[str, int] = {}
    dropped = passes = 0
    while passes < max(1, max_pass_factor) * repetitions:
        clock = one_pass()
        passes += 1
        for name, spans in clock.samples_ns.items():
            want.setdefault(name, repetitions * len(spans))
            raw.setdefault(name, []).extend(float(v) for v in spans)
            cpus = clock.cpu_ns.get(name)
            for i, v in enumerate(spans):
                if cpus is not None and preempted(v, cpus[i]):
                    dropped += 1
                else:
                    clean.setdefault(name, []).append(float(v))
        if passes >= repetitions and all(len(clean.get(n, ())) >= k for n, k in want.items()):
            break
    out, fallback = {}, []
    for name, k in want.items():
        got = clean.get(name, [])
        if len(got) >= k:
            out[name] = got[:k]
        else:
            out[name] = raw[name][:k]
            fallback.append(name)
    return PassSamples(samples_ns=out, dropped=dropped, passes=passes,
                       fallback_ops=tuple(fallback))
