"""The Qwen3-8B model config of the ML.ENERGY comparison (examples/models/Qwen/Qwen3-8B.json).

Its fields are the HF config.json's architecture facts (source in the file and
examples/models/README.md); the checks below tie them to the model card's independent
figures (8.2 B parameters, 6.95 B non-embedding) and to the Qwen3 operator set."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmsim.costmodel.decompose import step_ops
from llmsim.model.config import load_model_config

PATH = Path(__file__).resolve().parents[2] / "examples/models/Qwen/Qwen3-8B.json"


def test_qwen3_8b_fields_and_parameter_count_match_the_model_card():
    m = load_model_config(PATH)
    assert (m.hidden_size, m.num_hidden_layers, m.num_attention_heads, m.num_key_value_heads,
            m.head_dim, m.intermediate_size, m.vocab_size) == (4096, 36, 32, 8, 128, 12288,
                                                              151936)
    assert not m.tie_word_embeddings and not m.is_moe and m.dtype_bytes == 2
    # model card: "Number of Parameters: 8.2B", "(Non-Embedding): 6.95B"
    assert m.num_params() / 1e9 == pytest.approx(8.2, abs=0.05)
    embed = 2 * m.vocab_size * m.hidden_size  # embed_tokens + untied lm_head
    assert (m.num_params() - embed) / 1e9 == pytest.approx(6.95, abs=0.01)
    # KV bytes per token: 2 x 36 layers x 8 heads x 128 x 2 B = 144 KiB
    assert m.kv_bytes_per_token() == 147456


def test_qwen3_8b_steps_carry_the_qk_norm_op():
    ops = {op.name: op for op in step_ops(load_model_config(PATH))}
    assert "qk_norm" in ops
    assert ops["qk_norm"].n == (32 + 8) * 128
    assert ops["qkv_proj"].n == (32 + 2 * 8) * 128 and ops["qkv_proj"].k == 4096
