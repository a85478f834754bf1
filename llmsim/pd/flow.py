"""Prefill/decode disaggregation: a request's path through a prefill and a decode instance.

Mirrors vLLM 0.19's P/D flow behind its toy proxy (docs/cluster-semantics.md,
"Prefill/decode disaggregation"; ``../shared/VLLM_CLUSTER.md`` §5.2-5.5):

1. **Proxy -> prefill**: a request arrives at the proxy and goes to a prefill instance
   (the experiment's router over the prefill instances; vLLM's toy proxy: round robin)
   with ``max_tokens = 1`` and ``do_remote_decode``. It runs its prompt like any request
   and samples one token, which the proxy discards.
2. **Prefill finishes**: the request leaves ``running`` but its blocks stay allocated
   (NIXL's ``request_finished`` -> ``delay_free``): :attr:`Scheduler.kv_held`.
3. **Proxy -> decode**: P's response reaches the proxy, which sends the request to a
   decode instance (router over the decode instances, chosen now for NIXL; for P2pNccl
   chosen at arrival, since the prefill instance pushes to it) with ``do_remote_prefill``.
   The proxy's HTTP hops cost nothing here (an assumption: no sourced figure).
4. **NixlConnector** (pull, the default): when the request reaches the head of the decode
   instance's queue (strict FCFS, while fewer than ``max_num_seqs`` run and budget is
   left), blocks for the prompt minus its local prefix hits are reserved; if they cannot
   be, admission stops there and the request keeps waiting (back-pressure; the prefill
   instance keeps its blocks). Reserved, it waits in ``WAITING_FOR_REMOTE_KVS``, outside
   ``max_num_seqs``, while the KV is pulled from the prefill instance over the link
   (:mod:`llmsim.pd.links`: whole blocks, the KV per rank of the side with fewer TP ranks,
   ports serialized). The READs are issued when the step whose ``schedule()`` reserved the
   blocks is launched (``start_load_kv`` before its forward; with async scheduling that is
   when the step in flight ends), or at once when that ``schedule()`` scheduled nothing
   (the engine runs the connector without a forward). When it ends, the prefill instance frees its blocks
   (``finished_sending``) and the next ``schedule()`` of the decode instance admits the
   request for one token: the last prompt token is recomputed and samples the first
   output token, which the client sees.
5. **P2pNcclConnector** (push, the second policy): the prefill instance sends each
   prefill chunk's KV layer by layer during the forward (``save_kv_layer``, one send per
   request and layer) to the decode instance chosen at arrival, and the step ends only
   when its sends have (``wait_for_save``). Its blocks are freed when it finishes. The
   decode instance schedules the request at once for one token (synchronous
   ``get_num_new_matched_tokens`` = prompt - 1 - local hits), allocating its blocks then
   (a full pool keeps it waiting). The receive buffer's capacity and the copy into the
   paged cache are not modelled.

TTFT is reported three ways (:meth:`PdFlow.columns`): as the client sees it through the
proxy (``ttft_s``: first token of the decode instance - arrival at the proxy), and as each
instance's own vLLM metrics see it (first token there - arrival there, ``v1/metrics``
stats): the prefill instance's (its discarded token) and the decode instance's (which
excludes the prefill and the wait for it).

Not modelled: NIXL handshakes, the 480 s abort timeout (never reached unless a pull
waits that long), heterogeneous block sizes, preemption of a request while its KV is
being pulled (the decode instance's reserved blocks are never preempted), several
prefill/decode models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmsim.errors import ConfigError, InvariantError
from llmsim.instance.handoff import HandoffDescriptor
from llmsim.instance.instance import Instance, StepRecord
from llmsim.pd.config import KVConnectorKind, LinkSharing, PdRole
from llmsim.pd.links import FairSharePorts, KVLink, LinkPorts, kv_transfer_bytes
from llmsim.router.base import InstanceView, Router
from llmsim.scheduler.plan import BatchPlan
from llmsim.scheduler.state import SeqState
from llmsim.sim.loop import Simulation
from llmsim.trace.record import Request

__all__ = ["KVPull", "KVTransferParams", "PdFlow", "PoolRouter"]

NS_PER_S = 1_000_000_000

KV_PULL_DONE_PRIORITY = 5
"""A pull ending at ``t`` is handled after the step ends of ``t`` and before arrivals, so
the blocks it frees and the request it promotes are seen by every step starting at ``t``."""

KV_LINK_START_PRIORITY, KV_LINK_UPDATE_PRIORITY = 3, 4
"""Fair sharing (``link_sharing: fair_share``): a pull's bytes start flowing, and the
shares are re-divided when one's bytes are through; both before a pull ends at ``t``."""

PD_FORWARD_PRIORITY = 15
"""The proxy forwarding a request to its decode instance: after arrivals, before
hand-offs (core kinds 0 / 10 / 20 / 30, :class:`llmsim.sim.events.EventKind`)."""


class KVTransferParams:
    """vLLM's ``kv_transfer_params`` of a request on its decode instance (mutable: the
    scheduler reads :attr:`arrived`; :meth:`Scheduler.promote_remote` sets it).

    Attributes:
        src: the prefill instance holding the KV.
        num_external: tokens whose KV comes from ``src`` (set when blocks are reserved).
        arrived: the pulled KV is here (NIXL; the request then holds its blocks in the
            waiting queue). A pushed request (P2pNccl) is admitted synchronously instead.
    """

    __slots__ = ("arrived", "num_external", "src")

    def __init__(self, src: int, *, arrived: bool = False) -> None:
        self.src = src
        self.arrived = arrived
        self.num_external = 0  # tokens to pull, set when the blocks are reserved


@dataclass(frozen=True, slots=True, kw_only=True)
class KVPull:
    """One KV transfer from a prefill to a decode instance (payload of the pull-done
    event and a row of :attr:`PdFlow.transfers`).

    Attributes:
        index: the request's trace index.
        src: prefill instance.
        dst: decode instance.
        num_tokens: tokens whose KV moves (the prompt minus the decode side's hits).
        nbytes: bytes through each port (:func:`llmsim.pd.links.kv_transfer_bytes`).
        ready_ns: when its READs were issued (the forward after the reservation), ns.
        start_ns: when it started (its ports free), ns.
        end_ns: when it ended, ns.
    """

    index: int
    src: int
    dst: int
    num_tokens: int
    nbytes: int
    ready_ns: int
    start_ns: int
    end_ns: int


class _Pool(Sequence[InstanceView]):
    """The instances of one role, as a router sees them (ids of the pool's members)."""

    __slots__ = ("_ids", "_instances")

    def __init__(self, instances: Sequence[InstanceView], ids: Sequence[int]) -> None:
        self._instances = instances
        self._ids = ids

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(len(self))[i]]
        return self._instances[self._ids[i]]


class PoolRouter:
    """Routes over a subset of the instances (one role), returning global ids.

    Args:
        inner: the policy (sees the pool's members only).
        ids: instance ids of the pool.
    """

    def __init__(self, inner: Router, ids: Sequence[int]) -> None:
        self.inner = inner
        self.ids = tuple(ids)
        self._pool: _Pool | None = None
        self._instances: Sequence[InstanceView] | None = None

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        """Global id of the pool member ``inner`` picks."""
        if self._pool is None or instances is not self._instances:
            self._instances = instances
            self._pool = _Pool(instances, self.ids)
        return self.ids[self.inner.route(request, self._pool)]


class _ProducerConnector:
    """Scheduler side of a prefill instance's connector: every request it serves was
    sent with ``do_remote_decode``; finishing, it keeps its blocks (``delay_free``)."""

    def get_num_new_matched_tokens(self, seq: SeqState, num_local: int) -> tuple[int, bool]:
        return 0, False

    def update_state_after_alloc(self, seq: SeqState, num_hit: int, n_ext: int,
                                 now_ns: int) -> None:
        return None

    def build_connector_meta(self, plan: BatchPlan | None, now_ns: int) -> None:
        return None

    def request_finished(self, seq: SeqState) -> bool:
        return True


class _ConsumerConnector:
    """Scheduler side of a decode instance's connector (module doc, steps 4-5)."""

    def __init__(self, flow: PdFlow, inst_id: int) -> None:
        self.flow = flow
        self.inst_id = inst_id
        self.pull = flow.connector is KVConnectorKind.NIXL
        self._pending: list[SeqState] = []  # reserved by the schedule() in progress
        self._by_plan: dict[int, tuple[BatchPlan, list[SeqState]]] = {}

    def get_num_new_matched_tokens(self, seq: SeqState, num_local: int) -> tuple[int, bool]:
        """NIXL: every prompt token not hit locally, asynchronously; P2pNccl: all but the
        last prompt token, synchronously (the push already delivered them)."""
        if self.pull:
            return seq.num_prompt - num_local, True
        return max(0, seq.num_prompt - 1 - num_local), False

    def update_state_after_alloc(self, seq: SeqState, num_hit: int, n_ext: int,
                                 now_ns: int) -> None:
        """Blocks reserved: the pull goes into this step's connector metadata."""
        seq.kv_params.num_external = n_ext
        self._pending.append(seq)
        self.flow._note(now_ns, f"reserve {seq.request_id} ({len(seq.blocks)} blocks)")

    def build_connector_meta(self, plan: BatchPlan | None, now_ns: int) -> None:
        """End of ``schedule()``: the step's forward issues the pulls (``start_load_kv``,
        when it is launched); with nothing scheduled the engine runs the connector alone
        at once (``kv_connector_no_forward``)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        if plan is None:
            for seq in pending:
                self.flow.start_pull(self.inst_id, seq, seq.kv_params.num_external, now_ns)
        else:
            self._by_plan[id(plan)] = (plan, pending)  # the plan is kept: its id stays unique

    def start_load_kv(self, plan: BatchPlan, start_ns: int, end_ns: int) -> int:
        """Worker side, at the launch of ``plan``: issue its pulls at its GPU start."""
        entry = self._by_plan.pop(id(plan), None)
        if entry is not None:
            for seq in entry[1]:
                self.flow.start_pull(self.inst_id, seq, seq.kv_params.num_external, start_ns)
        return end_ns

    def request_finished(self, seq: SeqState) -> bool:
        return False


class PdFlow:
    """Drives P/D requests through a :class:`Simulation` (module doc).

    Args:
        instances: every instance (``instance_id`` = index).
        roles: per instance, its role (prefill or decode; ``both`` is not mixed in).
        connector: the connector flow mirrored.
        link: the P->D transfer cost.
        kv_bytes_per_token: ``(src, dst) -> KV bytes per token on one rank at
            min(tp_src, tp_dst)``.
        num_layers: decoder layers (P2pNccl sends one message per request and layer).
        prefill_router, decode_router: policies over each pool (global ids returned).
        num_requests: requests of the trace (rows of :meth:`columns`).
        keep_log: keep a ``(time_ns, event)`` log of every request's path (tests).
        link_sharing: how concurrent transfers share the ports (:mod:`llmsim.pd.links`;
            ``fair_share`` for NIXL pulls only).
        decide: the proxy's P/D decision per request (llm-d's ``pd-decider`` plug point):
            False sends the request straight to a decode instance, which serves it whole
            (its own prefill); None disaggregates every request (vLLM's toy proxy).

    Raises:
        InvariantError: no prefill or no decode instance.
    """

    def __init__(self, instances: Sequence[Instance], roles: Sequence[PdRole], *,
                 connector: KVConnectorKind, link: KVLink,
                 kv_bytes_per_token: Any, num_layers: int, prefill_router: Router,
                 decode_router: Router, num_requests: int, keep_log: bool = False,
                 decide: Callable[[Request], bool] | None = None,
                 link_sharing: LinkSharing = LinkSharing.SERIALIZE) -> None:
        self.instances = instances
        self.roles = tuple(roles)
        self.prefill_ids = tuple(i for i, r in enumerate(roles) if r is PdRole.PREFILL)
        self.decode_ids = tuple(i for i, r in enumerate(roles) if r is PdRole.DECODE)
        if not self.prefill_ids or not self.decode_ids:
            raise InvariantError("P/D needs at least one prefill and one decode instance")
        self.connector = connector
        self.link = link
        self.kv_bytes_per_token = kv_bytes_per_token
        self.num_layers = max(1, num_layers)
        self.prefill_router = PoolRouter(prefill_router, self.prefill_ids)
        self.decode_router = PoolRouter(decode_router, self.decode_ids)
        self.ports = LinkPorts(len(instances))
        self.link_sharing = link_sharing
        self.shared: FairSharePorts | None = None
        if link_sharing is LinkSharing.FAIR_SHARE:
            if connector is not KVConnectorKind.NIXL:
                raise ConfigError("not supported yet: link_sharing fair_share with "
                                  f"{connector.value} (layer-wise pushes are serialized)",
                                  field="kv_transfer_config.link_sharing")
            self.shared = FairSharePorts(len(instances), link)
        self._sharing: dict[int, tuple[SeqState, int, int, int, int]] = {}
        self.transfers: list[KVPull] = []
        self.keep_log = keep_log
        self.decide = decide
        self.log: list[tuple[int, str]] = []
        n = num_requests
        self.prefill_of = [-1] * n
        self.decode_of = [-1] * n
        self.prefill_arrival_ns = [-1] * n
        self.prefill_first_token_ns = [-1] * n
        self.decode_arrival_ns = [-1] * n
        self.kv_ready_ns = [-1] * n  # pull: READs issued; push: first layer's KV ready
        self.kv_done_ns = [-1] * n
        self.kv_bytes = [0] * n
        self._decode_for: dict[str, int] = {}  # P2pNccl: decode instance chosen at arrival
        self._sim: Simulation | None = None
        self._pull_done = self._forward = self._link_start = self._link_update = -1

    # ------------------------------------------------------------------ set-up
    def install(self, sim: Simulation) -> None:
        """Register the flow's event kinds and step hook, and give the instances their
        connectors (the simulation must route arrivals with :attr:`arrival_router`)."""
        self._sim = sim
        self._pull_done = sim.register_event("kv_pull_done", KV_PULL_DONE_PRIORITY,
                                             self._on_pull_done)
        self._forward = sim.register_event("pd_forward", PD_FORWARD_PRIORITY,
                                           self._on_forward)
        if self.shared is not None:
            self._link_start = sim.register_event("kv_link_start", KV_LINK_START_PRIORITY,
                                                  self._on_link_start)
            self._link_update = sim.register_event("kv_link_update",
                                                   KV_LINK_UPDATE_PRIORITY,
                                                   self._on_link_update)
        sim.add_step_hook(self._on_step)
        for inst in self.instances:  # every step's record and launch matters
            inst.fast_forward = False
        for i in self.prefill_ids:
            inst = self.instances[i]
            inst.scheduler.connector = _ProducerConnector()
            inst.max_output_tokens = 1
            if self.connector is KVConnectorKind.P2P_NCCL:
                inst.kv_connector_step = self._push_saver(i)
        for i in self.decode_ids:
            conn = _ConsumerConnector(self, i)
            self.instances[i].scheduler.connector = conn
            self.instances[i].kv_connector_step = conn.start_load_kv

    @property
    def arrival_router(self) -> Router:
        """The proxy's first hop: a prefill instance (and, for P2pNccl, the decode
        instance it will push to, chosen now)."""
        flow = self

        class _Arrival:
            def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
                if flow.decide is not None and not flow.decide(request):
                    return flow.decode_router.route(request, instances)  # served whole there
                p = flow.prefill_router.route(request, instances)
                if flow.connector is KVConnectorKind.P2P_NCCL:
                    flow._decode_for[request.request_id] = flow.decode_router.route(
                        request, instances)
                return p

        return _Arrival()

    def assign_decode(self, request_id: str, dst: int) -> None:
        """Fix the decode instance of a request before its prefill (a router that picks
        the decode side first, :class:`llmsim.router.scrape.PdDeciderRouter`)."""
        self._decode_for[request_id] = dst

    def _note(self, t: int, what: str) -> None:
        if self.keep_log:
            self.log.append((t, what))

    # ------------------------------------------------------------ prefill side
    def _on_step(self, rec: StepRecord, now_ns: int) -> None:
        """Step hook: note the first scheduling of prefills, forward finished ones."""
        if self.roles[rec.instance_id] is not PdRole.PREFILL:
            if self.keep_log:
                for seq in rec.output.first_tokens:
                    self._note(now_ns, f"decode first token {seq.request_id}")
                for seq in rec.output.finished:
                    self._note(now_ns, f"finish {seq.request_id}")
            return
        held = rec.output.kv_held
        if self.keep_log:
            for seq in rec.plan.admitted:
                self._note(rec.plan.scheduled_ns, f"prefill scheduled {seq.request_id}")
        if not held:
            return
        inst = self.instances[rec.instance_id]
        sim = self._sim
        if sim is None:
            raise InvariantError("PdFlow used before install()")
        release = sim.recorder.release_ns
        for seq in held:
            i = seq.index
            self.prefill_of[i] = rec.instance_id
            self.prefill_arrival_ns[i] = seq.arrival_ns
            self.prefill_first_token_ns[i] = now_ns
            self._note(now_ns, f"prefill sampled {seq.request_id}")
            desc = inst.describe(seq, release_ns=release[i])
            if self.connector is KVConnectorKind.P2P_NCCL:
                inst.scheduler.release_kv(i)  # pushed during the forward: freed at once
            sim.schedule(now_ns, self._forward, (desc, rec.instance_id))

    def _push_saver(self, src: int) -> Any:
        """The P2pNccl ``wait_for_save`` of prefill instance ``src``: queue each prefill
        chunk's layer-wise sends on the ports and end the step when they have."""
        def kv_save(plan: BatchPlan, start_ns: int, end_ns: int) -> int:
            by_dst: dict[int, list[tuple[SeqState, int]]] = {}
            for seq, n_new, _c, _e, _ep in plan.chunks:
                dst = self._decode_for.get(seq.request_id)
                if dst is not None:
                    by_dst.setdefault(dst, []).append((seq, n_new))
            out = end_ns
            for dst, chunks in by_dst.items():
                per_tok = self.kv_bytes_per_token(src, dst)
                nbytes = sum(kv_transfer_bytes(n, per_tok) for _s, n in chunks)
                send_ns = self.link.duration_ns(nbytes // self.num_layers,
                                                messages=len(chunks))
                slot = self.ports.reserve_pipelined(src, dst, start_ns=start_ns,
                                                    compute_ns=end_ns - start_ns,
                                                    layers=self.num_layers, send_ns=send_ns)
                for seq, n in chunks:
                    i = seq.index
                    self.kv_bytes[i] += kv_transfer_bytes(n, per_tok)
                    if self.kv_ready_ns[i] < 0:
                        self.kv_ready_ns[i] = slot.ready_ns
                    self.kv_done_ns[i] = slot.end_ns
                    self._note(slot.end_ns, f"pushed {n} tokens of {seq.request_id}")
                out = max(out, slot.end_ns)
            return out

        return kv_save

    # ------------------------------------------------------------- decode side
    def _on_forward(self, payload: tuple[HandoffDescriptor, int], now_ns: int) -> None:
        """The proxy got the prefill's response: send the request to a decode instance."""
        desc, src = payload
        sim = self._sim
        if sim is None:
            raise InvariantError("PdFlow used before install()")
        req = desc.request
        dst = self._decode_for.pop(req.request_id, -1)
        if dst < 0:
            dst = self.decode_router.route(req, self.instances)
        inst = self.instances[dst]
        seq = SeqState(req, desc.index, inst.scheduler.config.block_size, now_ns)
        seq.first_scheduled_ns = desc.first_scheduled_ns
        seq.prefix_hit_tokens = desc.prefix_hit_tokens
        seq.num_preemptions = desc.num_preemptions
        seq.kv_params = KVTransferParams(src)
        inst.scheduler.add(seq)
        self.decode_of[desc.index] = dst
        self.decode_arrival_ns[desc.index] = now_ns
        self._note(now_ns, f"decode arrival {req.request_id} at {dst}")
        sim.recorder.on_release(desc.index, dst, desc.release_ns)
        sim.request_start(dst, now_ns)

    def start_pull(self, dst: int, seq: SeqState, n_ext: int, now_ns: int) -> None:
        """Issue the pull of ``n_ext`` tokens' KV into ``dst`` at ``now_ns`` (NIXL's
        ``start_load_kv``): book the ports and schedule its end."""
        sim = self._sim
        if sim is None:
            raise InvariantError("PdFlow used before install()")
        src = seq.kv_params.src
        bs = self.instances[dst].scheduler.config.block_size
        nbytes = kv_transfer_bytes(n_ext, self.kv_bytes_per_token(src, dst), block_size=bs)
        i = seq.index
        self.kv_ready_ns[i] = now_ns
        self.kv_bytes[i] = nbytes
        if self.shared is not None:  # its bytes join the shared ports at now_ns
            self._sharing[i] = (seq, src, dst, n_ext, nbytes)
            sim.schedule(now_ns, self._link_start, (i, now_ns))
            return
        slot = self.ports.reserve(src, dst, now_ns, self.link.duration_ns(nbytes))
        pull = KVPull(index=seq.index, src=src, dst=dst, num_tokens=n_ext, nbytes=nbytes,
                      ready_ns=now_ns, start_ns=slot.start_ns, end_ns=slot.end_ns)
        self.transfers.append(pull)
        self._note(slot.start_ns, f"pull start {seq.request_id} {nbytes} B")
        sim.schedule(slot.end_ns, self._pull_done, pull)

    def _on_link_start(self, payload: tuple[int, int], now_ns: int) -> None:
        """Fair sharing: a pull's bytes start; the shares change."""
        shared, sim = self.shared, self._sim
        if shared is None or sim is None:
            raise InvariantError("fair-share event without fair sharing")
        i, _ready = payload
        seq, src, dst, _n, nbytes = self._sharing[i]
        shared.add(i, src, dst, nbytes, now_ns)
        self._note(now_ns, f"pull start {seq.request_id} {nbytes} B")
        self._schedule_link_update()

    def _schedule_link_update(self) -> None:
        shared, sim = self.shared, self._sim
        if shared is None or sim is None:
            raise InvariantError("fair-share event without fair sharing")
        t = shared.next_event_ns()
        if t is not None:
            sim.schedule(t, self._link_update, shared.version)

    def _on_link_update(self, version: int, now_ns: int) -> None:
        """Fair sharing: the pulls whose bytes are through end ``latency`` later; the
        rest are re-shared. An update for an older state is stale and ignored."""
        shared, sim = self.shared, self._sim
        if shared is None or sim is None:
            raise InvariantError("fair-share event without fair sharing")
        if version != shared.version:
            return
        lat = int(-(-self.link.latency_ns // 1))
        for i in shared.advance(now_ns):
            seq, src, dst, n_ext, nbytes = self._sharing.pop(i)
            pull = KVPull(index=i, src=src, dst=dst, num_tokens=n_ext, nbytes=nbytes,
                          ready_ns=self.kv_ready_ns[i], start_ns=self.kv_ready_ns[i],
                          end_ns=now_ns + lat)
            self.transfers.append(pull)
            sim.schedule(now_ns + lat, self._pull_done, pull)
        self._schedule_link_update()

    def _on_pull_done(self, pull: KVPull, now_ns: int) -> None:
        sim = self._sim
        if sim is None:
            raise InvariantError("PdFlow used before install()")
        self.kv_done_ns[pull.index] = now_ns
        self.instances[pull.src].scheduler.release_kv(pull.index)
        seq = self.instances[pull.dst].scheduler.promote_remote(pull.index)
        self._note(now_ns, f"pull done {seq.request_id}")
        sim.request_start(pull.dst, now_ns)
        sim.request_start(pull.src, now_ns)

    # ----------------------------------------------------------------- outputs
    def columns(self, first_token_ns: Sequence[int]) -> dict[str, np.ndarray]:
        """Per-request P/D columns for ``requests.csv`` (seconds; NaN where unknown):
        the instances, the prefill's (discarded) first token, the arrival at the decode
        instance, the KV transfer from when it could start (NIXL: READs issued; P2pNccl:
        the first layer's KV ready) to its end and its bytes per port, and each
        instance's own TTFT.

        Args:
            first_token_ns: the client-visible first token times (the recorder's).
        """
        def secs(v: Sequence[int]) -> np.ndarray:
            a = np.asarray(v, dtype=np.float64)
            return np.where(a < 0, np.nan, a / NS_PER_S)

        p_arr, p_first = secs(self.prefill_arrival_ns), secs(self.prefill_first_token_ns)
        d_arr, first = secs(self.decode_arrival_ns), secs(first_token_ns)
        return {
            "prefill_instance_id": np.asarray(self.prefill_of, dtype=np.int64),
            "decode_instance_id": np.asarray(self.decode_of, dtype=np.int64),
            "prefill_first_token_s": p_first,
            "decode_arrival_s": d_arr,
            "kv_transfer_ready_s": secs(self.kv_ready_ns),
            "kv_transfer_end_s": secs(self.kv_done_ns),
            "kv_transfer_bytes": np.asarray(self.kv_bytes, dtype=np.int64),
            "ttft_prefill_instance_s": p_first - p_arr,
            "ttft_decode_instance_s": first - d_arr,
        }

    def summary(self, columns: dict[str, np.ndarray]) -> dict[str, Any]:
        """The summary's ``pd`` section."""
        from llmsim.metrics.summary import distribution

        wait = columns["kv_transfer_end_s"] - columns["kv_transfer_ready_s"]
        return {
            "connector": self.connector.value,
            "prefill_instances": list(self.prefill_ids),
            "decode_instances": list(self.decode_ids),
            "link": self.link.source,
            "link_contention": (
                "serialized FCFS per instance port (llmsim.pd.links)"
                if self.shared is None else
                "fair share of the busier port's bandwidth (llmsim.pd.links)"),
            "ttft_prefill_instance_s": distribution(columns["ttft_prefill_instance_s"]),
            "ttft_decode_instance_s": distribution(columns["ttft_decode_instance_s"]),
            "kv_transfer_s": distribution(wait),
            "kv_transfer_bytes_total": int(columns["kv_transfer_bytes"].sum()),
            "num_transfers": (self.ports if self.shared is None else self.shared).num_transfers,
            "num_transfers_queued": (self.ports if self.shared is None else self.shared
                                     ).num_queued,
            "proxy_overhead": "not modelled (0 ns per hop)",
        }
