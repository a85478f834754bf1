"""The gRPC cost bridge client: external simulators price llmsim's engine steps.

Public surface::

    BridgeCostModel(target, model=..., tp=1, dtype="bf16", options=BridgeOptions())
    from_context(spec, context)   # cost_model: grpc://HOST:PORT[?deadline_s=..&cache=..]
    BridgeOptions, TransportOptions, BridgeStats, BridgeQueryError

Transport: one ``CostStream`` call kept open per run when the server offers it (one message
per step that needs the server), else one unary ``CostBatch`` per such step; the queries of
steps the client can guess ride along (see :mod:`llmsim.bridge.client`).

Errors: everything that goes wrong with the server is a
:class:`~llmsim.errors.CostModelUnavailable` (a per-query error is its subclass
:class:`BridgeQueryError`). The protocol is ``proto/llmsim/v1/cost_model.proto``; servers
live in the top-level ``adapters`` package.
"""

from llmsim.bridge.client import (
    BridgeCostModel,
    BridgeOptions,
    BridgeQueryError,
    BridgeStats,
    from_context,
    parse_spec,
)
from llmsim.bridge.transport import PROTOCOL_VERSION, SERVICE_NAME, TransportOptions

__all__ = [
    "PROTOCOL_VERSION",
    "SERVICE_NAME",
    "BridgeCostModel",
    "BridgeOptions",
    "BridgeQueryError",
    "BridgeStats",
    "TransportOptions",
    "from_context",
    "parse_spec",
]
