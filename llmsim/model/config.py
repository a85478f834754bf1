"""HF-style model configs (``config.json``) reduced to the fields a simulator needs.

Supported families: Llama (``LlamaForCausalLM``), Qwen2/Qwen3 dense, Qwen3-MoE, Mixtral,
Phi-MoE: anything with the standard HF names below. MoE fields come from ``num_experts`` /
``num_local_experts`` and ``num_experts_per_tok``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmsim.cluster.parallel import SINGLE_GPU, ParallelConfig, pp_layer_split
from llmsim.errors import ConfigError
from llmsim.safeio import loads_json, read_text

MAX_CONFIG_BYTES = 16 * 2**20
"""Ceiling on one model config file, bytes (HF ``config.json`` files are a few KiB)."""

_DTYPE_BYTES = {
    "float32": 4, "fp32": 4, "float": 4, "float16": 2, "fp16": 2, "half": 2,
    "bfloat16": 2, "bf16": 2, "float8": 1, "fp8": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
    "int8": 1,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """Architecture of a decoder-only transformer.

    Attributes:
        name: model id, e.g. ``"meta-llama/Llama-3.1-8B"``.
        architecture: HF architecture class name.
        num_hidden_layers: decoder layers.
        hidden_size: model width (elements).
        num_attention_heads: query heads.
        num_key_value_heads: KV heads (GQA); equals query heads for MHA.
        head_dim: elements per head.
        intermediate_size: dense FFN width (elements); for MoE models the dense width if any.
        vocab_size: vocabulary entries.
        num_experts: routed experts (0 for dense models).
        num_experts_per_token: experts each token is routed to (0 for dense models).
        moe_intermediate_size: per-expert FFN width (0 for dense models).
        dtype_bytes: bytes per weight / activation / KV element.
        tie_word_embeddings: lm_head shares the embedding matrix.
        config_sha256: sha256 of the canonical JSON the config was built from.
    """

    name: str
    architecture: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    num_experts: int = 0
    num_experts_per_token: int = 0
    moe_intermediate_size: int = 0
    dtype_bytes: int = 2
    tie_word_embeddings: bool = False
    config_sha256: str = ""

    @property
    def is_moe(self) -> bool:
        """True when the FFN is a routed mixture of experts."""
        return self.num_experts > 0

    def stage_layers(self, parallel: ParallelConfig, stage: int | None) -> int:
        """Decoder layers of pipeline ``stage`` (None: every layer).

        Raises:
            ConfigError: ``stage`` is not a stage of ``parallel``, or a stage would hold no
                layer (:func:`llmsim.cluster.parallel.pp_layer_split`).
        """
        if stage is None:
            return self.num_hidden_layers
        split = pp_layer_split(self.num_hidden_layers, parallel.pipeline_parallel_size)
        if not 0 <= stage < len(split):
            raise ConfigError(f"stage {stage} is not one of the {len(split)} pipeline stages",
                              field="engine.pipeline_parallel_size")
        start, end = split[stage]
        return end - start

    def kv_bytes_per_token(self, parallel: ParallelConfig = SINGLE_GPU,
                           stage: int | None = None) -> int:
        """KV-cache bytes per token on one TP rank, over every layer (``stage`` None) or
        over the layers of one pipeline stage.

        ``2 (K and V) x layers x kv_heads / tp x head_dim x dtype_bytes`` with
        ``tp = parallel.tensor_parallel_size``
        (docs/engine-semantics.md, "Paged KV cache and prefix caching"); KV heads are replicated when ``tp`` exceeds
        them, so the per-rank head count is ``max(1, kv_heads // tp)``.
        """
        kv_heads = max(1, self.num_key_value_heads // parallel.tensor_parallel_size)
        layers = self.stage_layers(parallel, stage)
        return 2 * layers * kv_heads * self.head_dim * self.dtype_bytes

    def num_params(self) -> int:
        """Approximate parameter count (embeddings, attention, FFN/experts, norms, lm_head)."""
        h = self.hidden_size
        per_layer = self.layer_params()
        emb = self.vocab_size * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.num_hidden_layers * per_layer + emb + head + h

    def layer_params(self) -> int:
        """Approximate parameters of one decoder layer (attention, FFN/experts, 2 norms)."""
        h, d = self.hidden_size, self.head_dim
        attn = h * (self.num_attention_heads * d) * 2 + h * (self.num_key_value_heads * d) * 2
        if self.is_moe:
            ffn = self.num_experts * 3 * h * self.moe_intermediate_size + h * self.num_experts
        else:
            ffn = 3 * h * self.intermediate_size
        return attn + ffn + 2 * h

    def _expert_ranks(self, parallel: ParallelConfig) -> int:
        """GPUs the routed experts' weights are spread over: ``dp x tp`` for a MoE model with
        expert parallelism or with DP > 1 (vLLM ``FusedMoEParallelConfig``: experts whole on
        ``dp x tp`` EP ranks, or TP-sharded over ``dp x tp`` without EP;
        docs/cluster-semantics.md, "Expert parallelism"), else ``tp``."""
        tp = parallel.tensor_parallel_size
        if self.is_moe and (parallel.enable_expert_parallel or parallel.data_parallel_size > 1):
            return tp * parallel.data_parallel_size
        return tp

    def weight_bytes(self, parallel: ParallelConfig = SINGLE_GPU,
                     stage: int | None = None) -> int:
        """Weight bytes held by one TP rank (even split over
        ``parallel.tensor_parallel_size``, the routed experts of a MoE model over
        ``dp x tp`` where they span DP ranks; an approximation for norms): of the whole model
        (``stage`` None), or of one pipeline stage: its decoder layers, plus the embedding
        on the first stage and the final norm and ``lm_head`` on the last (vLLM 0.19
        ``LlamaModel``/``LlamaForCausalLM`` with PP: the last stage holds ``lm_head`` even
        when it is tied to the embedding, which then also lives there).
        """
        tp = parallel.tensor_parallel_size
        pp = parallel.pipeline_parallel_size
        if stage is None or pp == 1:
            spread = self._expert_ranks(parallel)
            if spread > tp:  # routed experts over dp x tp ranks, the rest over tp
                experts = self.num_hidden_layers * self.num_experts * 3 * (
                    self.hidden_size * self.moe_intermediate_size)
                return ((self.num_params() - experts) * self.dtype_bytes // tp
                        + experts * self.dtype_bytes // spread)
            return self.num_params() * self.dtype_bytes // tp
        h = self.hidden_size
        layers = self.stage_layers(parallel, stage)
        params = layers * self.layer_params()
        if stage == 0:
            params += self.vocab_size * h
        if stage == pp - 1:
            params += self.vocab_size * h + h
        spread = self._expert_ranks(parallel)
        if spread > tp:  # the stage's routed experts over its EP group (dp x tp ranks)
            experts = layers * self.num_experts * 3 * h * self.moe_intermediate_size
            return ((params - experts) * self.dtype_bytes // tp
                    + experts * self.dtype_bytes // spread)
        return params * self.dtype_bytes // tp


MAX_DIMENSION = 2**31 - 1
"""Largest value any architecture field may hold (the profile schema stores them as
``uint32``; real models are orders of magnitude smaller: hidden sizes reach ~16k, vocabularies
~256k, experts ~256)."""


def _req(cfg: dict[str, Any], key: str, path: str | None) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConfigError("required field missing from model config", path=path, field=key)
    return cfg[key]


def _as_int(cfg: dict[str, Any], key: str, path: str | None, default: int | None = None,
            *, minimum: int = 1) -> int:
    """``cfg[key]`` as an int in ``[minimum, MAX_DIMENSION]`` (``default`` when absent)."""
    if default is not None and (key not in cfg or cfg[key] is None):
        return default
    value = _req(cfg, key, path)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expected an integer, got {value!r}", path=path, field=key)
    if not minimum <= value <= MAX_DIMENSION:
        what = "a positive" if minimum == 1 else f"an integer >= {minimum} and"
        raise ConfigError(f"expected {what} integer <= {MAX_DIMENSION}, got {value!r}",
                          path=path, field=key)
    return value


def _as_str(cfg: dict[str, Any], key: str, path: str | None) -> str | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"expected a non-empty string, got {value!r}", path=path, field=key)
    return value


def _architecture(cfg: dict[str, Any], p: str | None) -> str:
    archs = cfg.get("architectures")
    if archs is None or archs == []:
        return _as_str(cfg, "model_type", p) or "unknown"
    if not isinstance(archs, list) or not all(isinstance(a, str) and a.strip() for a in archs):
        raise ConfigError(f"expected a list of class names, got {archs!r}", path=p,
                          field="architectures")
    name: str = archs[0]
    return name


def _dtype_bytes(cfg: dict[str, Any], p: str | None) -> int:
    key = "torch_dtype" if cfg.get("torch_dtype") is not None else "dtype"
    value = cfg.get(key)
    if value is None:
        return 2  # HF's default for the checkpoints served here (bf16)
    if not isinstance(value, str):
        raise ConfigError(f"expected a dtype name, got {value!r}", path=p, field=key)
    dtype_bytes = _DTYPE_BYTES.get(value.removeprefix("torch."))
    if dtype_bytes is None:
        raise ConfigError(f"unknown dtype {value!r} (known: {', '.join(_DTYPE_BYTES)})",
                          path=p, field=key)
    return dtype_bytes


def _moe_fields(cfg: dict[str, Any], p: str | None) -> tuple[int, int, int]:
    """``(num_experts, experts per token, per-expert FFN width)``; zeros for dense models."""
    num_experts = 0
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if cfg.get(key) is not None and cfg.get(key) != 0:
            num_experts = _as_int(cfg, key, p)
            break
    if not num_experts:
        return 0, 0, 0
    per_tok = _as_int(cfg, "num_experts_per_tok", p)
    if per_tok > num_experts:
        raise ConfigError(f"{per_tok} experts per token but only {num_experts} experts",
                          path=p, field="num_experts_per_tok")
    inter = cfg.get("intermediate_size")
    default = inter if isinstance(inter, int) and not isinstance(inter, bool) and inter > 0 \
        else None
    return num_experts, per_tok, _as_int(cfg, "moe_intermediate_size", p, default=default)


def model_config_from_dict(
    cfg: dict[str, Any], *, name: str | None = None, path: str | Path | None = None
) -> ModelConfig:
    """Build a :class:`ModelConfig` from a parsed HF ``config.json``.

    Every field the simulator reads is checked: sizes are integers in
    ``[1, MAX_DIMENSION]`` (``intermediate_size`` may be absent or 0 only for MoE models),
    ``num_key_value_heads`` divides ``num_attention_heads`` (grouped-query attention),
    ``hidden_size`` is a multiple of ``num_attention_heads`` when ``head_dim`` is absent
    (it is then ``hidden_size / num_attention_heads``), MoE models give experts per token
    (at most ``num_experts``) and a per-expert width, and ``torch_dtype`` is a known dtype.

    Raises:
        ConfigError: a required field is missing, has the wrong type or an impossible value
            (the error names ``path`` and the field).
    """
    p = str(path) if path is not None else None
    if not isinstance(cfg, dict):
        raise ConfigError("model config must be a JSON object", path=p)
    heads = _as_int(cfg, "num_attention_heads", p)
    hidden = _as_int(cfg, "hidden_size", p)
    if cfg.get("head_dim") is None and hidden % heads:
        raise ConfigError(f"hidden_size {hidden} is not a multiple of num_attention_heads "
                          f"{heads} and no head_dim is given", path=p, field="head_dim")
    head_dim = _as_int(cfg, "head_dim", p, default=hidden // heads)
    kv_heads = _as_int(cfg, "num_key_value_heads", p, default=heads)
    if heads % kv_heads:
        raise ConfigError(f"num_attention_heads {heads} is not a multiple of "
                          f"num_key_value_heads {kv_heads}", path=p, field="num_key_value_heads")
    num_experts, per_tok, moe_inter = _moe_fields(cfg, p)
    intermediate = _as_int(cfg, "intermediate_size", p, default=0 if num_experts else None,
                           minimum=0 if num_experts else 1)
    tie = cfg.get("tie_word_embeddings", False)
    if tie is None:
        tie = False
    if not isinstance(tie, bool):
        raise ConfigError(f"expected true or false, got {tie!r}", path=p,
                          field="tie_word_embeddings")
    architecture = _architecture(cfg, p)
    dtype_bytes = _dtype_bytes(cfg, p)
    if not name:
        name = _as_str(cfg, "_name_or_path", p) or (Path(p).stem if p else "model")
    try:
        canonical = json.dumps(cfg, sort_keys=True, separators=(",", ":"),
                               allow_nan=False).encode()
    except (TypeError, ValueError) as exc:  # an in-memory dict with non-JSON values
        raise ConfigError(f"model config is not plain JSON data: {exc}", path=p) from None
    return ModelConfig(
        name=name,
        architecture=architecture,
        num_hidden_layers=_as_int(cfg, "num_hidden_layers", p),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        vocab_size=_as_int(cfg, "vocab_size", p),
        num_experts=num_experts,
        num_experts_per_token=per_tok,
        moe_intermediate_size=moe_inter,
        dtype_bytes=dtype_bytes,
        tie_word_embeddings=tie,
        config_sha256=hashlib.sha256(canonical).hexdigest(),
    )


def load_model_config(path: str | Path, *, name: str | None = None) -> ModelConfig:
    """Read an HF-style ``config.json``.

    Args:
        path: the JSON file.
        name: model id to record; defaults to ``<parent dir>/<file stem>`` style names
            such as ``meta-llama/Llama-3.1-8B`` when the file sits in an org directory.

    Raises:
        ConfigError: not a regular file, larger than :data:`MAX_CONFIG_BYTES`, not UTF-8,
            invalid JSON (with line; ``NaN``, deep nesting and out-of-range numbers
            included), or a field :func:`model_config_from_dict` refuses.
    """
    path = Path(path)
    text = read_text(path, what="model config", error=ConfigError, max_bytes=MAX_CONFIG_BYTES)
    cfg = loads_json(text, path=path, error=ConfigError, what="model config JSON")
    if name is None:
        name = f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem
    return model_config_from_dict(cfg, name=name, path=path)
