"""Weight offload: layers whose weights live in CPU or CXL memory, streamed every step.

Mirrors LLMServingSim's ``placement`` (``configs/cluster/single_node_cxl_instance.json``:
``default`` / ``blocks`` / ``layers`` rules, layer rule over block rule over default; a
location is ``npu``, ``cpu`` or ``cxl:<device>``; its trace generator tags each layer with
its weight location and ASTRA-Sim loads those weights from that memory on every
iteration). vLLM's counterpart is ``--cpu-offload-gb``: offloaded parameters stay in pinned
host memory and are read by the GPU during every forward.

Cost (an assumption, stated: no prefetch, no overlap with compute): every step adds, per
offloaded layer, ``latency + layer bytes / bandwidth`` of its device, the bandwidth capped
by the host link (:func:`llmsim.kvcache.tiers.transfer_ns`); layers are read one after the
other. (LLMServingSim's CXL page says four devices "approximate 4 x 60 GB/s aggregate";
with layers read in order, only one device is busy at a time here.) The time enters the
step through :class:`StreamedWeightsCost`, which wraps the instance's cost model (CUDA-graph
padding and decode fast-forward see it as part of every step).

Layer bytes, per TP rank (the parameter counts of :meth:`ModelConfig.num_params`):
decoder layer ``attention + FFN (all experts) + 2 norms``, ``embedding = vocab x hidden``,
``lm_head = vocab x hidden`` (0 when tied to the embedding), ``final_layernorm = hidden``;
times ``dtype_bytes``, over ``tp``. Offloaded bytes leave GPU memory, so the memory model
gives their room to the KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmsim.errors import ConfigError, InvariantError
from llmsim.kvcache.tiers import TierPool, transfer_ns
from llmsim.model.config import ModelConfig

GPU = "gpu"
NAMED_LAYERS = ("embedding", "final_layernorm", "lm_head")


def layer_param_counts(model: ModelConfig) -> dict[str, int]:
    """Parameters per decoder layer (key ``"decoder"``) and per named layer.

    Raises:
        InvariantError: the parts do not add up to :meth:`ModelConfig.num_params`.
    """
    h, d = model.hidden_size, model.head_dim
    attn = h * (model.num_attention_heads * d) * 2 + h * (model.num_key_value_heads * d) * 2
    if model.is_moe:
        ffn = model.num_experts * 3 * h * model.moe_intermediate_size + h * model.num_experts
    else:
        ffn = 3 * h * model.intermediate_size
    parts = {"decoder": attn + ffn + 2 * h, "embedding": model.vocab_size * h,
             "lm_head": 0 if model.tie_word_embeddings else model.vocab_size * h,
             "final_layernorm": h}
    total = parts["decoder"] * model.num_hidden_layers + parts["embedding"] + \
        parts["lm_head"] + parts["final_layernorm"]
    if total != model.num_params():
        raise InvariantError(f"layer parameters add up to {total}, not {model.num_params()}")
    return parts


def parse_layers(expr: str, num_layers: int, *, field: str) -> list[int]:
    """Decoder layers of ``"0-3,5,8-9"`` (LLMServingSim's block expression).

    Raises:
        ConfigError: a malformed part or a layer outside ``[0, num_layers)``.
    """
    out: set[int] = set()
    for part in str(expr).split(","):
        part = part.strip()
        lo_s, sep, hi_s = part.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise ConfigError(f"layer range {part!r} is not N or N-M", field=field) from None
        if lo > hi:
            lo, hi = hi, lo
        if lo < 0 or hi >= num_layers:
            raise ConfigError(f"layers {part!r} outside the model's {num_layers} decoder "
                              f"layers (0-{num_layers - 1})", field=field)
        out.update(range(lo, hi + 1))
    return sorted(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightPlacement:
    """Resolved placement of one instance's weights.

    Attributes:
        bytes_by_location: ``(location, layer count, bytes per rank)`` for every location
            other than the GPU (``cpu``, ``cxl:1``, ...).
        offloaded_bytes: weight bytes per rank not in GPU memory.
        stream_ns: GPU time every step adds to read them, ns.
    """

    bytes_by_location: tuple[tuple[str, int, int], ...]
    offloaded_bytes: int
    stream_ns: int


def resolve_placement(cfg: Any, model: ModelConfig, tp: int,
                      pools: dict[str, TierPool], *, link_bw: int | None,
                      field: str = "weight_offload") -> WeightPlacement:
    """Where each layer's weights live and what streaming them costs per step.

    Args:
        cfg: the ``weight_offload`` section (``default``, ``layers``, named layers).
        model: the served model.
        tp: tensor-parallel degree (each rank streams its shard over its own link).
        pools: tier name -> the pool this instance uses for it.
        link_bw: host-link cap of every copy, bytes/s, or None.
        field: dotted config prefix for errors.

    Raises:
        ConfigError: an unknown tier, a device beyond the tier's ``num_devices``, or a bad
            layer range (names the field).
    """
    params = layer_param_counts(model)
    per_rank = {k: v * model.dtype_bytes // tp for k, v in params.items()}
    where = [cfg.default] * model.num_hidden_layers
    for expr, loc in cfg.layers.items():
        for layer in parse_layers(expr, model.num_hidden_layers, field=f"{field}.layers"):
            where[layer] = loc
    named = {n: getattr(cfg, n) or cfg.default for n in NAMED_LAYERS}
    items = [(loc, per_rank["decoder"]) for loc in where]
    items += [(named[n], per_rank[n]) for n in NAMED_LAYERS]
    totals: dict[str, list[int]] = {}
    stream_ns = 0
    for loc, nbytes in items:
        if loc.lower() == GPU:
            continue
        pool, bw = _device(loc, pools, link_bw, field)
        stream_ns += transfer_ns(nbytes, bandwidth_bytes_per_s=bw, latency_ns=pool.spec.latency_ns)
        acc = totals.setdefault(loc, [0, 0])
        acc[0] += 1
        acc[1] += nbytes
    for loc, (_n, nbytes) in totals.items():
        pool, _bw = _device(loc, pools, link_bw, field)
        pool.reserve(nbytes * tp, what=f"weights placed on {loc}")
    placed = tuple((loc, n, b) for loc, (n, b) in sorted(totals.items()))
    return WeightPlacement(bytes_by_location=placed,
                           offloaded_bytes=sum(b for _l, _n, b in placed), stream_ns=stream_ns)


def _device(loc: str, pools: dict[str, TierPool], link_bw: int | None,
            field: str) -> tuple[TierPool, int]:
    """The pool and copy bandwidth of location ``tier[:device]`` (one device's bandwidth)."""
    name, _sep, dev = loc.partition(":")
    pool = pools.get(name)
    if pool is None:
        known = ", ".join([GPU, *sorted(pools)])
        raise ConfigError(f"unknown weight location {loc!r} (known: {known})", field=field)
    try:
        device = int(dev) if dev else 0
    except ValueError:
        raise ConfigError(f"weight location {loc!r}: device is not a number",
                          field=field) from None
    if not 0 <= device < pool.spec.num_devices:
        raise ConfigError(f"weight location {loc!r}: tier {name!r} has devices 0-"
                          f"{pool.spec.num_devices - 1}", field=field)
    bw = pool.spec.bandwidth_bytes_per_s
    return pool, bw if link_bw is None else min(bw, link_bw)


WEIGHT_STREAM_OP = "weight_stream"
"""``StepCost.breakdown_ns`` key of the streamed weights' time."""


class StreamedWeightsCost:
    """A cost model whose every step also reads the offloaded weights: ``stream_ns`` added
    to the inner model's duration (and breakdown, under :data:`WEIGHT_STREAM_OP`), for each
    step of a priced decode run too, so decode fast-forward prices it like step by step.
    Other attributes are the inner model's.

    Args:
        inner: the cost model of the instance.
        stream_ns: what one step's weight reads cost, ns (:attr:`WeightPlacement.stream_ns`).
    """

    def __init__(self, inner: Any, stream_ns: int) -> None:
        self.inner = inner
        self.stream_ns = stream_ns

    def step_cost(self, batch: Any) -> Any:
        """The inner model's cost with the weight stream added."""
        return _with_stream(self.inner.step_cost(batch), self.stream_ns)

    def decode_run(self, batch: Any, k: int) -> Any:
        """The inner model's decode-run price with the weight stream added to every step,
        or None (no vectorized price)."""
        price = getattr(self.inner, "decode_run", None)
        run = price(batch, k) if price is not None else None
        return None if run is None else _StreamedRun(run, self.stream_ns)

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "stream_ns"):  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)


def _with_stream(cost: Any, stream_ns: int) -> Any:
    import dataclasses

    bd = dict(cost.breakdown_ns)
    bd[WEIGHT_STREAM_OP] = bd.get(WEIGHT_STREAM_OP, 0) + stream_ns
    return dataclasses.replace(cost, duration_ns=cost.duration_ns + stream_ns, breakdown_ns=bd)


class _StreamedRun:
    """A decode-run price with ``stream_ns`` added to every step."""

    __slots__ = ("_run", "_stream", "duration_ns")

    def __init__(self, run: Any, stream_ns: int) -> None:
        self._run = run
        self._stream = stream_ns
        self.duration_ns = run.duration_ns + stream_ns

    def cost_at(self, j: int) -> Any:
        return _with_stream(self._run.cost_at(j), self._stream)

    def count(self, m: int) -> None:
        self._run.count(m)
