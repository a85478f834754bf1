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

from llmsim.errors import ConfigError

_DTYPE_BYTES = {
    "float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "half": 2,
    "bfloat16": 2, "bf16": 2, "float8": 1, "fp8": 1, "int8": 1,
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

    def kv_bytes_per_token(self, tp: int = 1) -> int:
        """KV-cache bytes per token on one TP rank.

        ``2 (K and V) x layers x kv_heads / tp x head_dim x dtype_bytes``
        (VLLM_SEMANTICS.md, "Paged KV cache"); KV heads are replicated when ``tp`` exceeds
        them, so the per-rank head count is ``max(1, kv_heads // tp)``.
        """
        kv_heads = max(1, self.num_key_value_heads // tp)
        return 2 * self.num_hidden_layers * kv_heads * self.head_dim * self.dtype_bytes

    def num_params(self) -> int:
        """Approximate parameter count (embeddings, attention, FFN/experts, norms, lm_head)."""
        h, d = self.hidden_size, self.head_dim
        attn = h * (self.num_attention_heads * d) * 2 + h * (self.num_key_value_heads * d) * 2
        if self.is_moe:
            ffn = self.num_experts * 3 * h * self.moe_intermediate_size + h * self.num_experts
        else:
            ffn = 3 * h * self.intermediate_size
        per_layer = attn + ffn + 2 * h
        emb = self.vocab_size * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.num_hidden_layers * per_layer + emb + head + h

    def weight_bytes(self, tp: int = 1) -> int:
        """Weight bytes held by one TP rank (even split; an approximation for norms)."""
        return self.num_params() * self.dtype_bytes // tp


def _req(cfg: dict[str, Any], key: str, path: str | None) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConfigError("required field missing from model config", path=path, field=key)
    return cfg[key]


def _as_int(cfg: dict[str, Any], key: str, path: str | None, default: int | None = None) -> int:
    if default is not None and (key not in cfg or cfg[key] is None):
        return default
    value = _req(cfg, key, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"expected a non-negative integer, got {value!r}", path=path, field=key)
    return value


def model_config_from_dict(
    cfg: dict[str, Any], *, name: str | None = None, path: str | Path | None = None
) -> ModelConfig:
    """Build a :class:`ModelConfig` from a parsed HF ``config.json``.

    Raises:
        ConfigError: a required field is missing or not a non-negative integer
            (the error names ``path`` and the field).
    """
    p = str(path) if path is not None else None
    if not isinstance(cfg, dict):
        raise ConfigError("model config must be a JSON object", path=p)
    heads = _as_int(cfg, "num_attention_heads", p)
    hidden = _as_int(cfg, "hidden_size", p)
    if heads == 0:
        raise ConfigError("must be positive", path=p, field="num_attention_heads")
    head_dim = _as_int(cfg, "head_dim", p, default=hidden // heads)
    num_experts = 0
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if cfg.get(key):
            num_experts = _as_int(cfg, key, p)
            break
    per_tok = _as_int(cfg, "num_experts_per_tok", p, default=0) if num_experts else 0
    if num_experts and per_tok == 0:
        raise ConfigError("MoE config needs experts per token", path=p, field="num_experts_per_tok")
    moe_inter = 0
    if num_experts:
        moe_inter = _as_int(cfg, "moe_intermediate_size", p,
                            default=cfg.get("intermediate_size") or 0)
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    dtype_bytes = _DTYPE_BYTES.get(dtype.replace("torch.", ""), 2)
    archs = cfg.get("architectures") or [cfg.get("model_type", "unknown")]
    canonical = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    return ModelConfig(
        name=name or str(cfg.get("_name_or_path") or (Path(p).stem if p else "model")),
        architecture=str(archs[0]),
        num_hidden_layers=_as_int(cfg, "num_hidden_layers", p),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=_as_int(cfg, "num_key_value_heads", p, default=heads),
        head_dim=head_dim,
        intermediate_size=_as_int(cfg, "intermediate_size", p, default=0),
        vocab_size=_as_int(cfg, "vocab_size", p),
        num_experts=num_experts,
        num_experts_per_token=per_tok,
        moe_intermediate_size=moe_inter,
        dtype_bytes=dtype_bytes,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        config_sha256=hashlib.sha256(canonical).hexdigest(),
    )


def load_model_config(path: str | Path, *, name: str | None = None) -> ModelConfig:
    """Read an HF-style ``config.json``.

    Args:
        path: the JSON file.
        name: model id to record; defaults to ``<parent dir>/<file stem>`` style names
            such as ``meta-llama/Llama-3.1-8B`` when the file sits in an org directory.

    Raises:
        ConfigError: unreadable file, invalid JSON (with line), or a missing field.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read model config: {exc}", path=path) from exc
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno) from exc
    if name is None:
        name = f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem
    return model_config_from_dict(cfg, name=name, path=path)
