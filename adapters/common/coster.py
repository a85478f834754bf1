"""The plug point of a bridge server: something that prices operator queries.

A server is a :class:`OpCoster` wrapped by :func:`adapters.common.server.serve`. Most
costers price one query at a time and subclass :class:`PerQueryCoster`; a coster that
benefits from seeing the whole batch (SCALE-Sim runs its misses in parallel workers)
implements ``cost_batch`` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llmsim.v1 import cost_model_pb2 as pb

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """What ``Describe`` reports (see ``DescribeResponse`` in ``cost_model.proto``).

    Attributes:
        server_name: e.g. ``"llmsim-roofline"``.
        server_version: the adapter's version.
        hardware: short hardware label.
        hardware_description: longer hardware name.
        operator_kinds: ``pb.OperatorKind`` values the coster can price.
        provides_energy: answers carry ``energy_j``.
        attention_detail: ``pb.AttentionDetail`` the coster needs in attention queries.
        dtypes: dtype labels it can price.
        model_name: the one model its costs are for, empty when any.
        tp_degrees: TP degrees it can price, empty when any.
        fingerprint: changes whenever the answers could change (persistent cache key).
        attributes: free-form facts.
    """

    server_name: str
    server_version: str
    hardware: str
    hardware_description: str = ""
    operator_kinds: tuple[int, ...] = ()
    provides_energy: bool = False
    attention_detail: int = pb.ATTENTION_DETAIL_SUMMARY
    dtypes: tuple[str, ...] = ()
    model_name: str = ""
    tp_degrees: tuple[int, ...] = ()
    fingerprint: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


class OpFailure(Exception):
    """A query the coster cannot answer; becomes a per-query ``OpError``.

    Attributes:
        code: ``pb.OpErrorCode`` value.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class OpCoster(Protocol):
    """Prices operator queries for one server."""

    def info(self) -> ServerInfo:
        """Describe the coster."""
        ...

    def cost_batch(self, queries: Sequence[pb.OpQuery]) -> list[pb.OpAnswer]:
        """One answer per query, in order (a per-query error rather than an exception)."""
        ...


def cost_answer(latency_ns: float, energy_j: float | None = None) -> pb.OpAnswer:
    """An answer carrying a cost."""
    cost = pb.OpCost(latency_ns=float(latency_ns))
    if energy_j is not None:
        cost.energy_j = float(energy_j)
    return pb.OpAnswer(cost=cost)


def error_answer(code: int, message: str) -> pb.OpAnswer:
    """An answer carrying a per-query error."""
    return pb.OpAnswer(error=pb.OpError(code=code, message=message))


class PerQueryCoster:
    """Base for costers that price queries one by one.

    Subclasses implement :meth:`info` and :meth:`cost_one`; ``cost_one`` raises
    :class:`OpFailure` for queries it cannot answer. Any other exception becomes an
    ``OP_ERROR_CODE_INTERNAL`` answer for that query only (and is logged).
    """

    def info(self) -> ServerInfo:  # pragma: no cover - abstract
        raise NotImplementedError

    def cost_one(self, query: pb.OpQuery) -> tuple[float, float | None]:  # pragma: no cover
        """``(latency_ns, energy_j or None)`` of one execution of ``query``."""
        raise NotImplementedError

    def cost_batch(self, queries: Sequence[pb.OpQuery]) -> list[pb.OpAnswer]:
        answers: list[pb.OpAnswer] = []
        for query in queries:
            try:
                latency_ns, energy_j = self.cost_one(query)
            except OpFailure as exc:
                answers.append(error_answer(exc.code, str(exc)))
            except Exception as exc:  # noqa: BLE001 - one bad query must not fail the batch
                log.exception("internal error pricing %s", query.op_name)
                answers.append(error_answer(pb.OP_ERROR_CODE_INTERNAL,
                                            f"{type(exc).__name__}: {exc}"))
            else:
                answers.append(cost_answer(latency_ns, energy_j))
        return answers


def check_common(query: pb.OpQuery, info: ServerInfo) -> None:
    """Refuse a query whose dtype or TP degree the server does not price.

    Raises:
        OpFailure: unsupported dtype or TP degree.
    """
    if info.dtypes and query.dtype not in info.dtypes:
        raise OpFailure(pb.OP_ERROR_CODE_UNSUPPORTED,
                        f"dtype {query.dtype!r} not supported (have {', '.join(info.dtypes)})")
    if info.tp_degrees and query.tp_degree not in info.tp_degrees:
        raise OpFailure(pb.OP_ERROR_CODE_OUT_OF_RANGE,
                        f"TP degree {query.tp_degree} not available "
                        f"(have {', '.join(map(str, info.tp_degrees))})")
