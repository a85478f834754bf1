"""What every bridge server shares: servicer, health, reflection, version check, CLI."""

from adapters.common.coster import OpCoster, OpFailure, PerQueryCoster, ServerInfo
from adapters.common.server import (
    PROTOCOL_VERSION,
    SERVICE_NAME,
    RunningServer,
    add_server_arguments,
    run_server_cli,
    serve,
)

__all__ = [
    "PROTOCOL_VERSION",
    "SERVICE_NAME",
    "OpCoster",
    "OpFailure",
    "PerQueryCoster",
    "RunningServer",
    "ServerInfo",
    "add_server_arguments",
    "run_server_cli",
    "serve",
]
