"""Names of prefill/decode disaggregation: instance roles and KV connectors.

vLLM 0.19 (docs/cluster-semantics.md, "Prefill/decode disaggregation"): a P/D deployment
runs every engine with ``--kv-transfer-config '{"kv_connector": ..., "kv_role": ...}'``;
``kv_role`` is ``kv_producer``, ``kv_consumer`` or ``kv_both``
(``vllm/config/kv_transfer.py``), and which engine prefills and which decodes is the
proxy's choice (it sends a request to a prefill engine with ``do_remote_decode`` and then to
a decode engine with ``do_remote_prefill``). llmsim names the role of each instance group
(:class:`PdRole`); :data:`KV_ROLE_OF` gives vLLM's ``kv_role`` for it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["KV_ROLE_OF", "KVConnectorKind", "LinkSharing", "PdRole"]


class PdRole(StrEnum):
    """What an instance group serves (YAML ``instance_groups.<i>.role``).

    ``prefill``: runs prompts only (vLLM's request with ``do_remote_decode``,
    ``max_tokens = 1``); ``decode``: gets the prompt's KV from a prefill instance and
    generates; ``both``: a colocated instance serving whole requests (the default).
    """

    PREFILL = "prefill"
    DECODE = "decode"
    BOTH = "both"


KV_ROLE_OF: dict[PdRole, str] = {PdRole.PREFILL: "kv_producer", PdRole.DECODE: "kv_consumer",
                                 PdRole.BOTH: "kv_both"}
"""vLLM's ``kv_role`` (``KVTransferConfig.kv_role``) of each llmsim role."""


class KVConnectorKind(StrEnum):
    """The KV connector (vLLM ``kv_transfer_config.kv_connector``) whose flow is mirrored.

    ``NixlConnector``: the decode instance reserves blocks and *pulls* the prompt's KV
    after the prefill has finished (vLLM's documented default for P/D).
    ``P2pNcclConnector``: the prefill instance *pushes* the KV layer by layer during its
    forward (the step waits for the sends at its end) into the decode instance chosen
    up front; the decode instance then schedules the request at once for one token.
    """

    NIXL = "NixlConnector"
    P2P_NCCL = "P2pNcclConnector"


class LinkSharing(StrEnum):
    """How concurrent KV transfers share an instance's ports (:mod:`llmsim.pd.links`).

    ``serialize`` (default): first come first served, one transfer per port at a time.
    ``fair_share``: every transfer in flight gets ``bandwidth / n`` of its busier port
    (``n`` transfers on it), re-divided whenever one starts or ends (NIXL pulls only).
    """

    SERIALIZE = "serialize"
    FAIR_SHARE = "fair_share"
