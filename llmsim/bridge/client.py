"""The bridge cost model: prices engine steps with an external simulator over gRPC.

Per step: decompose the batch with :func:`llmsim.costmodel.decompose.step_ops` (the same
operators the profile cost model prices), look every operator's query up in the memo (and
the optional persistent cache), send the misses in **one** ``CostBatch`` RPC, and compose

    duration_ns = sum over operator names of round_half_up(sum of that name's answers)

where each answer covers all the step's executions of one operator (``repetitions`` =
``count x num_hidden_layers`` for per-layer ops, ``count`` for per-step ops). Rounding per
operator name then summing is the profile cost model's rule, so the profile server
reproduces it exactly. A step whose queries are all known makes no RPC; an identical batch is
answered from the step memo.

Speculation: a step that needs the server anyway also asks for queries of steps it can
guess (:meth:`BridgeCostModel._speculate`): the next steps of the batch decoding on
unchanged (an adaptive horizon that doubles while the guesses keep coming true), and the
CUDA-graph padded twin of a batch with a new token count (learned from the padded batches
the step-time model asks for). Guesses never change a result, only which queries are asked
when; they depend on the batches alone, so RPC counts are deterministic too.

Decode fast-forward: :meth:`BridgeCostModel.decode_run` prices a whole decode stretch (the
same sequences, every KV length one longer per step) with its attention queries in one
request, so a fast-forwarded replay over the bridge equals the in-process one step for step
and needs no request per decode step (:mod:`llmsim.instance.fastforward`).

Transport: a ``CostStream`` kept open for the run when the server offers it (one message per
step that needs the server; the server answers the needed queries first and prices the
guesses while the simulation goes on), else one unary ``CostBatch`` per such step.

If the server refuses the stream (all its stream slots are in use, RESOURCE_EXHAUSTED before
any answer), the client asks what was outstanding, and everything after, by unary
``CostBatch``: the same answers, so the same results.

Failure policy: any RPC failure, or a per-query error or missing answer for a query a step
needs, raises :class:`~llmsim.errors.CostModelUnavailable` (per-query errors as its subclass
:class:`BridgeQueryError`); a number is never made up. An error answer to a guess that no
step ever needs is not an error.

Answer validation: every latency must pass
:func:`~llmsim.costmodel.base.step_cost_is_valid` (finite, in ``[0, MAX_STEP_COST_NS]``)
and every energy must be finite and non-negative; anything else is an ``INVALID_ANSWER``
:class:`BridgeQueryError` (raised when a step needs that query, never cached), and a step
whose composed duration exceeds ``MAX_STEP_COST_NS`` raises
:class:`~llmsim.errors.CostModelUnavailable`. A server answering ``1e300`` ns therefore
ends the run with an error instead of stalling the simulated clock.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qs, urlsplit

import numpy as np

from llmsim.bridge.cache import PersistentCache
from llmsim.bridge.queries import (
    KIND_OF_CLASS,
    QueryKey,
    StepPlanner,
    StepShape,
    required_kinds,
)
from llmsim.bridge.transport import (
    BridgeTransport,
    CostStream,
    StreamRefused,
    TransportOptions,
    check_count,
)
from llmsim.costmodel.base import (
    MAX_STEP_COST_NS,
    StepBatch,
    StepCost,
    step_cost_is_valid,
)
from llmsim.errors import ConfigError, CostModelUnavailable
from llmsim.model.config import ModelConfig
from llmsim.v1 import cost_model_pb2 as pb

if TYPE_CHECKING:
    from llmsim.costmodel.registry import CostModelContext

log = logging.getLogger(__name__)


class BridgeQueryError(CostModelUnavailable):
    """The server answered a query with an error (unsupported operator, out of range...).

    Attributes:
        op_name: the operator.
        code: ``OpErrorCode`` name.
    """

    def __init__(self, message: str, *, op_name: str, code: str) -> None:
        super().__init__(message)
        self.op_name = op_name
        self.code = code


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeOptions:
    """Client settings.

    Attributes:
        transport: deadlines, retries, message size.
        cache_path: SQLite persistent cache file, ``None`` for memory only.
        step_memo_size: identical batches remembered (0 disables the step memo).
        lookahead_steps: when a step needs an RPC anyway, also ask for the queries of this
            many following steps assuming the batch carries on decoding unchanged, and of
            padded twins (0 disables all speculation; see
            :meth:`BridgeCostModel._speculate`).
        max_lookahead_steps: the horizon doubles, up to this, each time the steps ran
            exactly as guessed to its end.
        stream: use the server's ``CostStream`` when it offers one.
        split_guesses: a streamed request with guesses asks for two answers (the needed
            queries first, the guesses after, priced while the simulation goes on); False
            asks for one answer with all of them (one message fewer each way per request:
            cheaper with a fast server such as the profile server, whose guesses take less
            than a message; keep True for a slow simulator). Results are the same.

    Raises:
        ConfigError: a negative count, or a horizon above ``MAX_LOOKAHEAD_STEPS``.
    """

    transport: TransportOptions = field(default_factory=TransportOptions)
    cache_path: Path | None = None
    step_memo_size: int = 200_000
    lookahead_steps: int = 8
    max_lookahead_steps: int = 64
    stream: bool = True
    split_guesses: bool = True

    def __post_init__(self) -> None:
        check_count(self.step_memo_size, field="step_memo_size", low=0, high=2**62)
        check_count(self.lookahead_steps, field="lookahead", low=0, high=MAX_LOOKAHEAD_STEPS)
        check_count(self.max_lookahead_steps, field="max_lookahead", low=0,
                    high=MAX_LOOKAHEAD_STEPS)


MAX_LOOKAHEAD_STEPS: int = 4096
"""Longest guess horizon accepted, steps (a request's queries grow with it)."""


@dataclass(slots=True)
class BridgeStats:
    """Counters of one client (mutable; read them after a run).

    Attributes:
        steps: ``step_cost`` calls.
        step_memo_hits: steps answered from the step memo.
        lookups: operator queries looked up (after the step memo).
        memo_hits: lookups answered from the in-memory memo.
        persistent_hits: lookups answered from the persistent cache.
        queries_sent: queries sent to the server (speculative ones included).
        speculative_sent: queries sent ahead of need (guesses).
        speculative_used: guesses that a later step looked up.
        rpcs: requests made: ``CostBatch`` calls, or ``CostStream`` request messages.
        streamed: the requests went over ``CostStream``.
    """

    steps: int = 0
    step_memo_hits: int = 0
    lookups: int = 0
    memo_hits: int = 0
    persistent_hits: int = 0
    queries_sent: int = 0
    speculative_sent: int = 0
    speculative_used: int = 0
    rpcs: int = 0
    streamed: bool = False

    @property
    def hit_rate(self) -> float:
        """Fraction of operator lookups answered without a request of their own step."""
        return (self.memo_hits + self.persistent_hits) / self.lookups if self.lookups else 0.0

    @property
    def speculation_hit_rate(self) -> float:
        """Fraction of guessed queries that a step needed."""
        return (self.speculative_used / self.speculative_sent if self.speculative_sent
                else 0.0)

    def as_dict(self) -> dict[str, float]:
        """JSON-able counters."""
        return {"steps": self.steps, "step_memo_hits": self.step_memo_hits,
                "lookups": self.lookups, "memo_hits": self.memo_hits,
                "persistent_hits": self.persistent_hits, "queries_sent": self.queries_sent,
                "speculative_sent": self.speculative_sent,
                "speculative_used": self.speculative_used, "rpcs": self.rpcs,
                "streamed": self.streamed, "hit_rate": self.hit_rate,
                "speculation_hit_rate": self.speculation_hit_rate}


Answer = tuple[float, float | None]  # (latency_ns, energy_j)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Partial:
    """The answered non-attention part of a :class:`StepShape`, composed once.

    Attributes:
        before_ns: ``(name, rounded ns)`` of the operators before attention, in order.
        after_ns: the same for the operators after attention.
        static_ns: sum of both, ns.
        energy_before_j: energy of the operators before attention accumulated in order, J
            (``None`` when one has none).
        energies_after_j: energy of each operator after attention, in order, J.
    """

    before_ns: tuple[tuple[str, int], ...]
    after_ns: tuple[tuple[str, int], ...]
    static_ns: int
    energy_before_j: float | None
    energies_after_j: tuple[float | None, ...]


def _invalid_answer(answer: Answer) -> str:
    """Why ``(latency_ns, energy_j)`` is not a cost, or ``""`` when it is one."""
    latency_ns, energy_j = answer
    if not step_cost_is_valid(latency_ns):
        return (f"latency {latency_ns!r} ns (a cost must be finite and in "
                f"[0, {MAX_STEP_COST_NS}] ns, MAX_STEP_COST_NS)")
    if energy_j is not None and not (isinstance(energy_j, (int, float))
                                     and math.isfinite(energy_j) and energy_j >= 0):
        return f"energy {energy_j!r} J (must be finite and non-negative)"
    return ""


class BridgeCostModel:
    """A :class:`~llmsim.costmodel.base.CostModel` answered by a bridge server.

    Args:
        target: ``host:port`` of the server.
        model: the served model's architecture.
        tp: tensor-parallel degree (checked against the server at connect).
        dtype: dtype label sent with every query.
        options: client settings.

    Raises:
        CostModelUnavailable: the server is unreachable, unhealthy, speaks another protocol
            version, or cannot price an operator kind this model needs.
    """

    def __init__(self, target: str, *, model: ModelConfig, tp: int = 1, dtype: str = "bf16",
                 options: BridgeOptions | None = None) -> None:
        self.options = options or BridgeOptions()
        self.model = model
        self.tp = tp
        self.dtype = dtype
        self.stats = BridgeStats()
        self._transport = BridgeTransport(target, self.options.transport)
        try:
            self.server = self._transport.connect()
            self._check_capabilities()
        except BaseException:
            self._transport.close()
            raise
        self._planner = StepPlanner(model, dtype=dtype, per_decode=(
            self.server.attention_detail == pb.ATTENTION_DETAIL_PER_DECODE))
        self._memo: dict[int, dict[QueryKey, Answer]] = {}
        self._errors: dict[int, dict[QueryKey, BridgeQueryError]] = {}
        self._pending: dict[int, set[QueryKey]] = {}   # sent, answer not received yet
        self._guesses: set[tuple[int, QueryKey]] = set()   # sent as guesses, not yet needed
        self._step_memo: dict[StepBatch, StepCost] = {}
        self._partials: dict[StepShape, _Partial] = {}
        self._caches: dict[int, PersistentCache] = {}
        self._persisted: dict[int, dict[str, Answer]] = {}
        self._stream: CostStream | None = None
        if self.options.stream and self.server.supports_stream:
            self._stream = self._transport.open_stream()
            self.stats.streamed = True
        # speculation state (depends on the batches seen only)
        self._horizon = self.options.lookahead_steps
        self._run_end: tuple[int, ...] | None = None  # decode lens one step past the horizon
        self._pad_sizes: list[int] = []               # learned CUDA-graph sizes, ascending
        self._seen_tokens: set[int] = set()           # token counts of real batches priced
        log.info("cost bridge %s: %s %s on %s (fingerprint %s)", target,
                 self.server.server_name, self.server.server_version, self.server.hardware,
                 self.server.fingerprint or "-")

    @property
    def target(self) -> str:
        """``host:port`` of the server."""
        return self._transport.target

    def _check_capabilities(self) -> None:
        info = self.server
        missing = required_kinds(self.model, self.tp) - set(info.operator_kinds)
        if missing:
            names = ", ".join(sorted(pb.OperatorKind.Name(k) for k in missing))
            raise CostModelUnavailable(
                f"cost bridge {self.target}: {info.server_name} cannot price {names}, "
                f"which {self.model.name} needs")
        if info.tp_degrees and self.tp not in info.tp_degrees:
            raise CostModelUnavailable(
                f"cost bridge {self.target}: {info.server_name} has no TP degree {self.tp} "
                f"(has {', '.join(map(str, info.tp_degrees))})")
        if info.dtypes and self.dtype not in info.dtypes:
            raise CostModelUnavailable(
                f"cost bridge {self.target}: {info.server_name} cannot price dtype "
                f"{self.dtype!r} (has {', '.join(info.dtypes)})")
        if info.model_name and info.model_name != self.model.name:
            log.warning("cost bridge %s serves costs for %s, replaying %s", self.target,
                        info.model_name, self.model.name)

    # -- the CostModel protocol -------------------------------------------------------

    def step_cost(self, batch: StepBatch) -> StepCost:
        """Price ``batch`` (one request at most; none when every query is known).

        Raises:
            CostModelUnavailable: the server failed or timed out.
            BridgeQueryError: the server could not price one of the step's operators.
        """
        self.stats.steps += 1
        cached = self._step_memo.get(batch)
        if cached is not None:
            self.stats.step_memo_hits += 1
            return cached
        tp = batch.tp
        shape = self._planner.shape(tp, batch.num_tokens, batch.num_sampled)
        partial = self._partials.get(shape) if shape.attention_at >= 0 else None
        if partial is not None:
            cost = self._step_cost_fast(batch, shape, partial)
        else:
            cost = self._step_cost_full(batch, shape)
        if not step_cost_is_valid(cost.duration_ns):
            raise CostModelUnavailable(
                f"cost bridge {self.target}: {self.server.server_name} priced a step of "
                f"{batch.num_tokens} tokens at {cost.duration_ns} ns, above the "
                f"{MAX_STEP_COST_NS} ns ceiling (MAX_STEP_COST_NS)")
        if len(self._step_memo) < self.options.step_memo_size:
            self._step_memo[batch] = cost
        return cost

    def decode_run(self, batch: StepBatch, k: int) -> BridgeDecodeRun | None:
        """Price ``k`` decode-only steps at once, the ``j``-th (0-based) being ``batch`` with
        every KV length ``j`` longer, each exactly as :meth:`step_cost` prices it (the
        decode fast-forward, :meth:`llmsim.instance.step_time.StepTimeModel.decode_run_gpu_ns`).

        Along such a stretch only attention's query changes (same token and sequence
        counts: :meth:`StepPlanner.decode_run_attention_keys`), so the ``k`` attention keys
        the server does not know yet go in **one** request (instead of one per step that
        misses), and each step is composed as :meth:`_step_cost_fast` composes it.

        Returns:
            The price, or ``None`` (the caller prices step by step) when ``batch`` has a
            prefill chunk or no decode, when the shape's operators cannot be composed by
            the fast path, or when the server answered one of the stretch's queries with an
            error (step by step then raises it at the step that needs it).

        Raises:
            CostModelUnavailable: the server failed or timed out.
        """
        lens = batch.decode_context_lens
        if batch.prefills or not lens or k <= 0:
            return None
        shape = self._planner.shape(batch.tp, batch.num_tokens, batch.num_sampled)
        if shape.attention_at < 0:
            return None
        partial = self._partials.get(shape)
        if partial is None:
            try:
                self._answers(batch, [op.key for op in shape.ops])
            except BridgeQueryError:
                return None
            self._remember_partial(shape, self._memo[batch.tp])
            partial = self._partials.get(shape)
            if partial is None:
                return None
        n, total, hi, lo = len(lens), sum(lens), max(lens), min(lens)
        detail = tuple(sorted(lens)) if self._planner.per_decode else ()
        name, reps = shape.attention_name, shape.attention_reps
        keys: list[QueryKey] = [
            ("attention", name, reps, (), n, total + n * j, hi + j, lo + j,
             tuple(x + j for x in detail) if detail else ()) for j in range(k)]
        try:
            memo = self._answers(batch, keys)
        except BridgeQueryError:
            return None
        return BridgeDecodeRun(self, shape, partial, [memo[key] for key in keys])

    def _step_cost_full(self, batch: StepBatch, shape: StepShape) -> StepCost:
        """Price every operator of ``batch``; remember the shape's part for later steps."""
        planned = self._planner.plan(batch)
        answers = self._answers(batch, [p.key for p in planned])
        energy_j: float | None = 0.0
        breakdown: dict[str, float] = {}
        for op in planned:
            latency_ns, op_energy_j = answers[op.key]
            breakdown[op.name] = breakdown.get(op.name, 0.0) + latency_ns
            if energy_j is not None:
                energy_j = None if op_energy_j is None else energy_j + op_energy_j
        rounded = {name: int(total_ns + 0.5) for name, total_ns in breakdown.items()}
        if shape.attention_at >= 0:
            self._remember_partial(shape, answers)
        return StepCost(duration_ns=sum(rounded.values()), breakdown_ns=rounded,
                        energy_j=energy_j if planned else None)

    def _remember_partial(self, shape: StepShape, answers: dict[QueryKey, Answer]) -> None:
        """Store the composed non-attention part of ``shape`` (see :meth:`_step_cost_fast`).

        Only when attention's name is its own and no name runs both before and after it,
        so that the fast path reproduces :meth:`_step_cost_full` exactly.
        """
        at = shape.attention_at
        totals: list[dict[str, float]] = [{}, {}]
        energies: list[float | None] = []
        for i, op in enumerate(shape.ops):
            latency_ns, op_energy_j = answers[op.key]
            part = totals[i >= at]
            part[op.name] = part.get(op.name, 0.0) + latency_ns
            energies.append(op_energy_j)
        before, after = totals
        if shape.attention_name in before or shape.attention_name in after or (
                before.keys() & after.keys()):
            return
        energy_before: float | None = 0.0
        for e in energies[:at]:
            energy_before = None if energy_before is None or e is None else energy_before + e
        before_ns = tuple((n, int(t + 0.5)) for n, t in before.items())
        after_ns = tuple((n, int(t + 0.5)) for n, t in after.items())
        self._partials[shape] = _Partial(
            before_ns=before_ns, after_ns=after_ns,
            static_ns=sum(v for _, v in before_ns) + sum(v for _, v in after_ns),
            energy_before_j=energy_before, energies_after_j=tuple(energies[at:]))

    def _step_cost_fast(self, batch: StepBatch, shape: StepShape, partial: _Partial
                        ) -> StepCost:
        """A step whose shape's operators are all answered: only attention is looked up.

        Same numbers as :meth:`_step_cost_full`: per-name totals are summed and rounded
        in the same order, energy accumulated in execution order.
        """
        static = len(shape.ops)
        key = self._planner.attention_key(shape, batch)
        memo = self._answers(batch, [key])
        stats = self.stats
        stats.lookups += static
        stats.memo_hits += static
        latency_ns, att_energy_j = memo[key]
        att_ns = int(latency_ns + 0.5)
        breakdown = dict(partial.before_ns)
        breakdown[shape.attention_name] = att_ns
        breakdown.update(partial.after_ns)
        energy_j = partial.energy_before_j
        if energy_j is not None:
            energy_j = None if att_energy_j is None else energy_j + att_energy_j
            for e in partial.energies_after_j:
                if energy_j is None or e is None:
                    energy_j = None
                    break
                energy_j += e
        return StepCost(duration_ns=partial.static_ns + att_ns, breakdown_ns=breakdown,
                        energy_j=energy_j)

    # -- lookups ------------------------------------------------------------------------

    def _answers(self, batch: StepBatch, keys: list[QueryKey]) -> dict[QueryKey, Answer]:
        """The memo of ``batch.tp`` once it holds every key (one request at most)."""
        tp = batch.tp
        memo = self._memo.get(tp)
        if memo is None:
            memo = self._memo[tp] = {}
            self._errors[tp] = {}
            self._pending[tp] = set()
        errors, pending = self._errors[tp], self._pending[tp]
        stats = self.stats
        stats.lookups += len(keys)
        missing: list[QueryKey] = []
        seen: set[QueryKey] = set()
        guesses = self._guesses
        for key in keys:
            if key in memo or key in pending or key in errors:
                stats.memo_hits += 1
                if guesses and (tp, key) in guesses:
                    guesses.discard((tp, key))
                    stats.speculative_used += 1
            elif key not in seen:
                persisted = self._persisted_answer(tp, key)
                if persisted is not None:
                    memo[key] = persisted
                    stats.persistent_hits += 1
                else:
                    seen.add(key)
                    missing.append(key)
            else:
                stats.memo_hits += 1  # the same query twice in one step
        padding = self._is_padding(batch)
        if missing:
            near, far = ([], []) if padding else self._speculate(batch, memo, pending, seen)
            self._request(tp, missing, near, far)
        if padding:
            self._learn_padding(batch)
        else:
            self._seen_tokens.add(batch.num_tokens)
        if pending:
            for key in keys:
                while key in pending:
                    self._receive()
        if errors:
            for key in keys:
                if key in errors:
                    raise errors[key]
        return memo

    @staticmethod
    def _is_padding(batch: StepBatch) -> bool:
        """A CUDA-graph padded twin: dummy decodes of KV length 1 appended (a real decode
        has at least one prompt token plus its own, so length >= 2). Used only to steer
        guesses, never to price."""
        lens = batch.decode_context_lens
        return bool(lens) and lens[-1] == 1

    def _learn_padding(self, batch: StepBatch) -> None:
        size = batch.num_tokens
        i = bisect.bisect_left(self._pad_sizes, size)
        if i == len(self._pad_sizes) or self._pad_sizes[i] != size:
            self._pad_sizes.insert(i, size)

    def _padded_twin(self, batch: StepBatch) -> StepBatch | None:
        """``batch`` padded to the next learned graph size, if the step-time model will
        likely ask for it (a token count not priced before, below a learned size)."""
        tokens = batch.num_tokens
        sizes = self._pad_sizes
        if tokens in self._seen_tokens or not sizes or tokens > sizes[-1]:
            return None
        size = sizes[bisect.bisect_left(sizes, tokens)]
        if size == tokens:
            return None
        return StepBatch(prefills=batch.prefills, parallel=batch.parallel,
                         decode_context_lens=batch.decode_context_lens + (1,) * (size - tokens))

    def _speculate(self, batch: StepBatch, memo: dict[QueryKey, Answer],
                   pending: set[QueryKey], seen: set[QueryKey]
                   ) -> tuple[list[QueryKey], list[QueryKey]]:
        """Queries of steps that will likely follow ``batch`` (sent with its request).

        * Decode run: every request of ``batch`` that samples a token decodes in the next
          steps with its KV length one longer per step; steps ``1..horizon`` are guessed.
          The horizon starts at ``lookahead_steps`` and doubles (up to
          ``max_lookahead_steps``) when this step is exactly the step after the previous
          horizon, i.e. the last guesses all came true; otherwise it starts over. A prefill
          chunk that does not finish its prompt makes the run unknowable.
        * Padded twins of ``batch`` and of the run's first step (new token counts), at the
          CUDA-graph sizes learned from earlier padded batches.

        A wrong guess costs server time only. Depends on the batch sequence alone.

        Returns:
            ``(near, far)``: the keys of the twins and of the run's first step (needed by
            the very next call, so they ride in the needed part of a streamed request), and
            the keys of the run's later steps (the speculative part).
        """
        base = self.options.lookahead_steps
        if base <= 0:
            return [], []
        lens = batch.decode_context_lens
        if not batch.prefills and self._run_end is not None and lens == self._run_end:
            self._horizon = min(max(self.options.max_lookahead_steps, base),
                                2 * self._horizon)
        else:
            self._horizon = base
        candidates: list[StepBatch] = []
        twin = self._padded_twin(batch)
        if twin is not None:
            candidates.append(twin)
        extra_keys: list[QueryKey] = []
        self._run_end = None
        if all(p.emits_token for p in batch.prefills):
            run = lens + tuple(p.num_cached_tokens + p.num_new_tokens for p in batch.prefills)
            if run:
                horizon = self._horizon
                first = StepBatch(decode_context_lens=tuple(n + 1 for n in run),
                                  parallel=batch.parallel)
                candidates.append(first)
                twin = self._padded_twin(first)
                if twin is not None:
                    candidates.append(twin)
                if horizon > 1:
                    extra_keys = self._planner.decode_run_attention_keys(run, batch.tp, 2,
                                                                         horizon)
                self._run_end = tuple(n + horizon + 1 for n in run)
        tp = batch.tp

        def new(keys: Iterable[QueryKey]) -> list[QueryKey]:
            out = []
            for key in keys:
                if (key not in memo and key not in pending and key not in seen
                        and self._persisted_answer(tp, key) is None):
                    seen.add(key)
                    out.append(key)
            return out

        near = new(op.key for c in candidates for op in self._planner.plan(c))
        return near, new(extra_keys)

    def _request(self, tp: int, needed: list[QueryKey], near: list[QueryKey],
                 far: list[QueryKey]) -> None:
        """One request: ``needed`` and ``near`` guesses answered first, then ``far``."""
        keys = needed + near + far
        queries = [self._planner.to_proto(k, tp) for k in keys]
        stats = self.stats
        stats.rpcs += 1
        stats.queries_sent += len(queries)
        stats.speculative_sent += len(near) + len(far)
        self._guesses.update((tp, k) for k in near)
        self._guesses.update((tp, k) for k in far)
        if self._stream is not None:
            self._pending[tp].update(keys)
            self._stream.send(queries, len(needed) + len(near) if self.options.split_guesses
                              else 0, tag=(tp, keys))
        else:
            self._store(tp, keys, self._transport.cost_batch(queries))

    def _receive(self) -> None:
        """Wait for the next streamed part and store it (or, when the server refused the
        stream, ask everything outstanding by unary calls and stop streaming)."""
        stream = cast(CostStream, self._stream)   # only streamed requests are pending
        try:
            tag, first, answers = stream.recv()
        except StreamRefused as exc:
            self._fall_back_to_unary(stream, exc)
            return
        tp, keys = cast(tuple[int, list[QueryKey]], tag)
        part = keys[first:first + len(answers)]
        self._pending[tp].difference_update(part)
        self._store(tp, part, answers)

    def _fall_back_to_unary(self, stream: CostStream, refusal: StreamRefused) -> None:
        """Re-ask the refused stream's unanswered queries with ``CostBatch``, in order."""
        log.warning("%s; asking by unary CostBatch calls from now on", refusal)
        self._stream = None
        self.stats.streamed = False
        for tag, first, queries in stream.take_unanswered():
            tp, keys = cast(tuple[int, list[QueryKey]], tag)
            part = keys[first:]
            self.stats.rpcs += 1
            answers = self._transport.cost_batch(queries)
            self._pending[tp].difference_update(part)
            self._store(tp, part, answers)
        stream.close()

    def _store(self, tp: int, keys: list[QueryKey], answers: Sequence[pb.OpAnswer]) -> None:
        """Remember answers; errors are kept and raised only when a step needs them."""
        memo, errors = self._memo[tp], self._errors[tp]
        cache = self._cache(tp)
        for key, answer in zip(keys, answers, strict=True):
            which = answer.WhichOneof("result")
            if which != "cost":
                err = answer.error
                code = pb.OpErrorCode.Name(err.code) if which == "error" else "NO_RESULT"
                errors[key] = BridgeQueryError(
                    f"cost bridge {self.target}: {self.server.server_name} could not price "
                    f"{key[1]} {key[2:]}: {code}: {err.message}", op_name=key[1], code=code)
                continue
            value = (answer.cost.latency_ns,
                     answer.cost.energy_j if answer.cost.HasField("energy_j") else None)
            problem = _invalid_answer(value)
            if problem:
                errors[key] = BridgeQueryError(
                    f"cost bridge {self.target}: {self.server.server_name} answered "
                    f"{key[1]} {key[2:]} with {problem}", op_name=key[1],
                    code="INVALID_ANSWER")
                continue
            memo[key] = value
            if cache is not None:
                cache.put(repr(key), *value)
        if cache is not None:
            cache.flush()  # the serving loop never closes cost models: commit per request

    def _cache(self, tp: int) -> PersistentCache | None:
        if self.options.cache_path is None:
            return None
        cache = self._caches.get(tp)
        if cache is None:
            namespace = "|".join([self.server.server_name, self.server.fingerprint,
                                  self.dtype, f"tp{tp}", "detail"
                                  + str(self.server.attention_detail)])
            cache = self._caches[tp] = PersistentCache(self.options.cache_path, namespace)
            self._persisted[tp] = cache.load()
        return cache

    def _persisted_answer(self, tp: int, key: QueryKey) -> Answer | None:
        if self._cache(tp) is None:
            return None
        return self._persisted[tp].get(repr(key))

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Flush the persistent cache and close the channel."""
        try:
            if self._stream is not None:
                self._stream.close()
            for cache in self._caches.values():
                cache.close()
            self._caches.clear()
        finally:
            self._transport.close()

    def __enter__(self) -> BridgeCostModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BridgeDecodeRun:
    """The price of a decode stretch (:meth:`BridgeCostModel.decode_run`).

    Attributes:
        duration_ns: kernel time per step, ns (int64, shape ``(k,)``): the shape's
            non-attention total plus attention rounded half up, as
            :meth:`BridgeCostModel._step_cost_fast` composes one step.
    """

    __slots__ = ("_model", "_partial", "_name", "_att_ns", "_att_energy_j", "duration_ns")

    def __init__(self, model: BridgeCostModel, shape: StepShape, partial: _Partial,
                 answers: list[Answer]) -> None:
        self._model = model
        self._partial = partial
        self._name = shape.attention_name
        self._att_ns = [int(latency_ns + 0.5) for latency_ns, _ in answers]
        self._att_energy_j = [energy_j for _, energy_j in answers]
        self.duration_ns = np.asarray(self._att_ns, dtype=np.int64) + partial.static_ns

    def cost_at(self, j: int) -> StepCost:
        """The :class:`StepCost` :meth:`BridgeCostModel.step_cost` returns for step ``j``."""
        partial = self._partial
        breakdown = dict(partial.before_ns)
        breakdown[self._name] = self._att_ns[j]
        breakdown.update(partial.after_ns)
        energy_j = partial.energy_before_j
        if energy_j is not None:
            att_energy_j = self._att_energy_j[j]
            energy_j = None if att_energy_j is None else energy_j + att_energy_j
            for e in partial.energies_after_j:
                if energy_j is None or e is None:
                    energy_j = None
                    break
                energy_j += e
        return StepCost(duration_ns=int(self.duration_ns[j]), breakdown_ns=breakdown,
                        energy_j=energy_j)

    def count(self, m: int) -> None:
        """Count the first ``m`` steps as run (:attr:`BridgeStats.steps`)."""
        if m > 0:
            self._model.stats.steps += m


def parse_spec(spec: str) -> tuple[str, BridgeOptions]:
    """Parse ``grpc://HOST:PORT[?option=value&...]``.

    ``HOST`` is a name or an IPv4 address, or an IPv6 address in brackets
    (``grpc://[::1]:50051``); ``PORT`` is in ``1..65535``; nothing else (user, path,
    fragment) may appear. Options: ``deadline_s``, ``connect_timeout_s`` (seconds, see
    :class:`~llmsim.bridge.transport.TransportOptions` for the ranges), ``retries``,
    ``cache`` (SQLite path), ``lookahead`` (first guess horizon, steps; 0 = no guesses),
    ``max_lookahead`` (steps), ``stream`` (``0`` forces unary ``CostBatch`` calls),
    ``split_guesses`` (``0``: one streamed answer per request, guesses included).

    Raises:
        ConfigError: (field ``cost_model``) not such a spec, or a bad option value.
    """
    def bad(why: str) -> ConfigError:
        return ConfigError(f"{why} in {spec!r} (expected grpc://HOST:PORT[?option=value])",
                           field="cost_model")

    try:
        parts = urlsplit(spec)
        port = parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", ...
        raise bad(str(exc)) from None
    if parts.scheme != "grpc":
        raise bad(f"scheme {parts.scheme!r} is not grpc")
    if not parts.hostname:
        raise bad("no host")
    if port is None or not 1 <= port <= 65535:
        raise bad("no port in 1..65535" if port is None else f"port {port} is not in 1..65535")
    if parts.username is not None or parts.path not in ("", "/") or parts.fragment:
        raise bad("unexpected user, path or fragment")
    host = parts.hostname
    if ":" in host and not parts.netloc.split("@")[-1].startswith("["):
        raise bad("an IPv6 host must be in brackets")
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True,
                                                 strict_parsing=bool(parts.query)).items()}
    except ValueError as exc:
        raise bad(f"malformed options ({exc})") from None
    transport = TransportOptions()
    options = BridgeOptions()
    option = ""
    try:
        option = "deadline_s"
        if option in params:
            transport = replace(transport, deadline_s=float(params.pop(option)))
        option = "connect_timeout_s"
        if option in params:
            transport = replace(transport, connect_timeout_s=float(params.pop(option)))
        option = "retries"
        if option in params:
            transport = replace(transport, max_retries=int(params.pop(option)))
        option = "cache"
        if option in params:
            value = params.pop(option)
            if not value:
                raise ValueError("empty path")
            options = replace(options, cache_path=Path(value))
        option = "lookahead"
        if option in params:
            options = replace(options, lookahead_steps=int(params.pop(option)))
        option = "max_lookahead"
        if option in params:
            options = replace(options, max_lookahead_steps=int(params.pop(option)))
        for option in ("stream", "split_guesses"):
            if option in params:
                flag = params.pop(option).lower()
                if flag not in ("0", "1", "true", "false"):
                    raise ValueError(f"{flag!r} (use 0 or 1)")
                on = flag in ("1", "true")
                options = (replace(options, stream=on) if option == "stream"
                           else replace(options, split_guesses=on))
    except (ValueError, ConfigError) as exc:
        why = exc.reason if isinstance(exc, ConfigError) else str(exc)
        raise bad(f"bad option {option}: {why}") from None
    if params:
        raise bad(f"unknown option(s) {', '.join(params)} (have deadline_s, "
                  "connect_timeout_s, retries, cache, lookahead, max_lookahead, stream, "
                  "split_guesses)")
    return target, replace(options, transport=transport)


def from_context(spec: str, context: CostModelContext) -> BridgeCostModel:
    """Factory for :mod:`llmsim.costmodel.registry` (``cost_model: grpc://host:port``).

    Args:
        spec: ``grpc://HOST:PORT[?options]`` (see :func:`parse_spec`).
        context: a ``CostModelContext`` (model, tp, dtype).
    """
    target, options = parse_spec(spec)
    return BridgeCostModel(target, model=context.model, tp=context.tp, dtype=context.dtype,
                           options=options)


__all__ = [
    "KIND_OF_CLASS",
    "BridgeCostModel",
    "BridgeDecodeRun",
    "BridgeOptions",
    "BridgeQueryError",
    "BridgeStats",
    "from_context",
    "parse_spec",
]
