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

Failure policy: any RPC failure, a per-query error or a missing answer raises
:class:`~llmsim.errors.CostModelUnavailable` (per-query errors as its subclass
:class:`BridgeQueryError`); a number is never made up.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from llmsim.bridge.cache import PersistentCache
from llmsim.bridge.queries import KIND_OF_CLASS, QueryKey, StepPlanner, required_kinds
from llmsim.bridge.transport import BridgeTransport, TransportOptions
from llmsim.costmodel.base import StepBatch, StepCost
from llmsim.errors import ConfigError, CostModelUnavailable
from llmsim.model.config import ModelConfig
from llmsim.v1 import cost_model_pb2 as pb

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
            many following steps assuming the batch carries on decoding unchanged
            (0 disables; see :meth:`BridgeCostModel._speculate`).
    """

    transport: TransportOptions = field(default_factory=TransportOptions)
    cache_path: Path | None = None
    step_memo_size: int = 200_000
    lookahead_steps: int = 4


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
        speculative_sent: queries sent ahead of need (lookahead).
        rpcs: ``CostBatch`` RPCs made.
    """

    steps: int = 0
    step_memo_hits: int = 0
    lookups: int = 0
    memo_hits: int = 0
    persistent_hits: int = 0
    queries_sent: int = 0
    speculative_sent: int = 0
    rpcs: int = 0

    @property
    def hit_rate(self) -> float:
        """Fraction of operator lookups answered without the server."""
        return (self.memo_hits + self.persistent_hits) / self.lookups if self.lookups else 0.0

    def as_dict(self) -> dict[str, float]:
        """JSON-able counters."""
        return {"steps": self.steps, "step_memo_hits": self.step_memo_hits,
                "lookups": self.lookups, "memo_hits": self.memo_hits,
                "persistent_hits": self.persistent_hits, "queries_sent": self.queries_sent,
                "speculative_sent": self.speculative_sent, "rpcs": self.rpcs,
                "hit_rate": self.hit_rate}


Answer = tuple[float, float | None]  # (latency_ns, energy_j)


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
        self._step_memo: dict[StepBatch, StepCost] = {}
        self._caches: dict[int, PersistentCache] = {}
        self._persisted: dict[int, dict[str, Answer]] = {}
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
        """Price ``batch`` (one RPC at most; none when every query is known).

        Raises:
            CostModelUnavailable: the server failed or timed out.
            BridgeQueryError: the server could not price one of the step's operators.
        """
        self.stats.steps += 1
        cached = self._step_memo.get(batch)
        if cached is not None:
            self.stats.step_memo_hits += 1
            return cached
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
        cost = StepCost(duration_ns=sum(rounded.values()), breakdown_ns=rounded,
                        energy_j=energy_j if planned else None)
        if len(self._step_memo) < self.options.step_memo_size:
            self._step_memo[batch] = cost
        return cost

    # -- lookups ------------------------------------------------------------------------

    def _answers(self, batch: StepBatch, keys: list[QueryKey]) -> dict[QueryKey, Answer]:
        tp = batch.tp
        memo = self._memo.get(tp)
        if memo is None:
            memo = self._memo[tp] = {}
        self.stats.lookups += len(keys)
        missing: list[QueryKey] = []
        seen: set[QueryKey] = set()
        for key in keys:
            if key in memo:
                self.stats.memo_hits += 1
            elif key not in seen:
                persisted = self._persisted_answer(tp, key)
                if persisted is not None:
                    memo[key] = persisted
                    self.stats.persistent_hits += 1
                else:
                    seen.add(key)
                    missing.append(key)
            else:
                self.stats.memo_hits += 1  # the same query twice in one step
        if missing:
            speculative = self._speculate(batch, memo, seen)
            self.stats.speculative_sent += len(speculative)
            self._fetch(tp, missing + speculative, memo)
        return memo

    def _speculate(self, batch: StepBatch, memo: dict[QueryKey, Answer],
                   seen: set[QueryKey]) -> list[QueryKey]:
        """Queries of the next ``lookahead`` steps if the batch carries on unchanged.

        Every request of ``batch`` that has sampled a token decodes in the next steps with
        its KV length growing by one per step; prefill chunks that do not finish their
        prompt make the prediction unknowable and stop it. The guesses ride along in an RPC
        the step makes anyway (never an extra RPC); a wrong guess costs server time only.
        """
        steps = self.options.lookahead_steps
        if steps <= 0 or any(not p.emits_token for p in batch.prefills):
            return []
        lens = batch.decode_context_lens + tuple(
            p.num_cached_tokens + p.num_new_tokens for p in batch.prefills)
        extra: list[QueryKey] = []
        for j in range(1, steps + 1):
            ahead = StepBatch(decode_context_lens=tuple(n + j for n in lens), tp=batch.tp)
            for op in self._planner.plan(ahead):
                key = op.key
                if key not in memo and key not in seen and (
                        self._persisted_answer(batch.tp, key) is None):
                    seen.add(key)
                    extra.append(key)
        return extra

    def _fetch(self, tp: int, keys: list[QueryKey], memo: dict[QueryKey, Answer]) -> None:
        queries = [self._planner.to_proto(k, tp) for k in keys]
        self.stats.rpcs += 1
        self.stats.queries_sent += len(queries)
        answers = self._transport.cost_batch(queries)
        cache = self._cache(tp)
        for key, answer in zip(keys, answers, strict=True):
            which = answer.WhichOneof("result")
            if which != "cost":
                err = answer.error
                code = pb.OpErrorCode.Name(err.code) if which == "error" else "NO_RESULT"
                raise BridgeQueryError(
                    f"cost bridge {self.target}: {self.server.server_name} could not price "
                    f"{key[1]} {key[2:]}: {code}: {err.message}", op_name=key[1], code=code)
            latency_ns = answer.cost.latency_ns
            if not math.isfinite(latency_ns) or latency_ns < 0:
                raise BridgeQueryError(
                    f"cost bridge {self.target}: invalid latency {latency_ns!r} for {key[1]}",
                    op_name=key[1], code="INVALID_ANSWER")
            value = (latency_ns, answer.cost.energy_j if answer.cost.HasField("energy_j")
                     else None)
            memo[key] = value
            if cache is not None:
                cache.put(repr(key), *value)
        if cache is not None:
            cache.flush()  # the serving loop never closes cost models: commit per RPC

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
            for cache in self._caches.values():
                cache.close()
            self._caches.clear()
        finally:
            self._transport.close()

    def __enter__(self) -> BridgeCostModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_spec(spec: str) -> tuple[str, BridgeOptions]:
    """Parse ``grpc://HOST:PORT[?deadline_s=S&connect_timeout_s=S&retries=N&cache=PATH&lookahead=N]``.

    Raises:
        ConfigError: not a ``grpc://`` spec, no port, or a bad option.
    """
    parts = urlsplit(spec)
    if parts.scheme != "grpc" or not parts.hostname or parts.port is None:
        raise ConfigError(f"expected grpc://HOST:PORT, got {spec!r}", field="cost_model")
    host = parts.hostname
    target = f"[{host}]:{parts.port}" if ":" in host else f"{host}:{parts.port}"
    params = {k: v[-1] for k, v in parse_qs(parts.query, strict_parsing=False).items()}
    transport = TransportOptions()
    options = BridgeOptions()
    try:
        if "deadline_s" in params:
            transport = replace(transport, deadline_s=float(params.pop("deadline_s")))
        if "connect_timeout_s" in params:
            transport = replace(transport,
                                connect_timeout_s=float(params.pop("connect_timeout_s")))
        if "retries" in params:
            transport = replace(transport, max_retries=int(params.pop("retries")))
        if "cache" in params:
            options = replace(options, cache_path=Path(params.pop("cache")))
        if "lookahead" in params:
            options = replace(options, lookahead_steps=int(params.pop("lookahead")))
    except ValueError as exc:
        raise ConfigError(f"bad option in {spec!r}: {exc}", field="cost_model") from exc
    if params:
        raise ConfigError(f"unknown option(s) {', '.join(params)} in {spec!r} (have "
                          "deadline_s, connect_timeout_s, retries, cache, lookahead)", field="cost_model")
    return target, replace(options, transport=transport)


def from_context(spec: str, context) -> BridgeCostModel:
    """Factory for :mod:`llmsim.costmodel.registry` (``cost_model: grpc://host:port``).

    Args:
        spec: ``grpc://HOST:PORT[?options]`` (see :func:`parse_spec`).
        context: a ``CostModelContext`` (model, tp, dtype).
    """
    target, options = parse_spec(spec)
    return BridgeCostModel(target, model=context.model, tp=context.tp, dtype=context.dtype,
                           options=options)


__all__ = ["BridgeCostModel", "BridgeOptions", "BridgeQueryError", "BridgeStats",
           "KIND_OF_CLASS", "from_context", "parse_spec"]
