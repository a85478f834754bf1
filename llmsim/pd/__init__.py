"""Prefill/decode disaggregation: instance roles, KV connectors, KV transfers over links.

See :mod:`llmsim.pd.flow` for the request path (vLLM's NixlConnector pull and
P2pNcclConnector push flows) and :mod:`llmsim.pd.links` for transfer cost and contention.
"""

from llmsim.pd.config import KV_ROLE_OF, KVConnectorKind, LinkSharing, PdRole
from llmsim.pd.flow import KVPull, KVTransferParams, PdFlow, PoolRouter
from llmsim.pd.links import FairSharePorts, KVLink, LinkPorts, kv_transfer_bytes

__all__ = ["KV_ROLE_OF", "FairSharePorts", "KVConnectorKind", "KVLink", "KVPull",
           "KVTransferParams", "LinkPorts", "LinkSharing", "PdFlow", "PdRole", "PoolRouter",
           "kv_transfer_bytes"]
