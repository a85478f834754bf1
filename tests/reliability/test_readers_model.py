"""Model configs (HF ``config.json``): every input loads into a usable ModelConfig or raises a
ConfigError that names the file and the field."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from readers_factories import JSON_VALUES, MODEL_CFG, MOE_CFG, load_or_error, mutated_bytes

from llmsim.cluster.parallel import ParallelConfig
from llmsim.errors import ConfigError
from llmsim.model.config import MAX_DIMENSION, ModelConfig, load_model_config, model_config_from_dict
from llmsim.profile.importers.llmservingsim import architecture_from_config

READ_FIELDS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
               "intermediate_size", "num_hidden_layers", "vocab_size", "num_experts",
               "num_local_experts", "n_routed_experts", "num_experts_per_tok",
               "moe_intermediate_size", "torch_dtype", "dtype", "architectures", "model_type",
               "tie_word_embeddings", "_name_or_path")


def _error(cfg: dict) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        model_config_from_dict(cfg, path="cfg.json")
    assert exc.value.path == "cfg.json"
    return exc.value


@pytest.mark.parametrize(("key", "value"), [
    ("hidden_size", 0), ("hidden_size", -8), ("hidden_size", 8.0), ("hidden_size", "8"),
    ("hidden_size", True), ("hidden_size", 2**40), ("num_attention_heads", 0),
    ("num_hidden_layers", 0), ("vocab_size", None), ("vocab_size", [32]),
    ("num_key_value_heads", 0), ("head_dim", 0), ("intermediate_size", 0),
    ("intermediate_size", -1),
])
def test_sizes_must_be_positive_integers(key, value):
    err = _error({**MODEL_CFG, key: value})
    assert err.field == key and key in str(err)


def test_hidden_size_zero_is_refused_not_divided_by():
    # was ZeroDivisionError / a head_dim of 0 downstream
    assert _error({**MODEL_CFG, "hidden_size": 0}).field == "hidden_size"


@pytest.mark.parametrize("value", [5, "LlamaForCausalLM", [5], [""], {"a": 1}])
def test_architectures_must_be_a_list_of_names(value):
    assert _error({**MODEL_CFG, "architectures": value}).field == "architectures"


def test_divisibility_where_the_code_divides():
    # head_dim = hidden / heads when absent
    assert _error({**MODEL_CFG, "hidden_size": 9}).field == "head_dim"
    # GQA groups: query heads must be a multiple of KV heads
    assert _error({**MODEL_CFG, "num_attention_heads": 3, "hidden_size": 9,
                   "num_key_value_heads": 2}).field == "num_key_value_heads"
    # an explicit head_dim lifts the first rule (Qwen3: 5120 / 64 != 128)
    cfg = model_config_from_dict({**MODEL_CFG, "hidden_size": 9, "head_dim": 4,
                                  "num_attention_heads": 2})
    assert cfg.head_dim == 4


@pytest.mark.parametrize(("patch", "field"), [
    ({"num_experts_per_tok": 0}, "num_experts_per_tok"),
    ({"num_experts_per_tok": 5}, "num_experts_per_tok"),
    ({"num_experts_per_tok": None}, "num_experts_per_tok"),
    ({"num_experts": "4"}, "num_experts"),
    ({"num_experts": -4}, "num_experts"),
    ({"moe_intermediate_size": 0, "intermediate_size": 0}, "moe_intermediate_size"),
])
def test_moe_fields(patch, field):
    assert _error({**MOE_CFG, **patch}).field == field


def test_moe_model_may_omit_dense_width():
    cfg = {k: v for k, v in MOE_CFG.items() if k != "intermediate_size"}
    m = model_config_from_dict(cfg)
    assert m.is_moe and m.intermediate_size == 0 and m.moe_intermediate_size == 8


@pytest.mark.parametrize(("key", "value"), [("torch_dtype", 5), ("torch_dtype", "float13"),
                                            ("dtype", ["bf16"]), ("tie_word_embeddings", "no"),
                                            ("tie_word_embeddings", 1),
                                            ("_name_or_path", 7), ("model_type", 3)])
def test_other_fields_typed(key, value):
    cfg = {**MODEL_CFG, key: value}
    if key in ("dtype", "model_type"):
        cfg.pop("torch_dtype" if key == "dtype" else "architectures")
    assert _error(cfg).field == key


def test_known_dtypes():
    for name, nbytes in (("torch.float16", 2), ("float32", 4), ("float8_e4m3fn", 1)):
        assert model_config_from_dict({**MODEL_CFG, "torch_dtype": name}).dtype_bytes == nbytes


# ------------------------------------------------------------------------------- the file


def test_file_errors_name_file_and_line(tmp_path):
    p = tmp_path / "cfg.json"
    p.write_bytes(b'{\n  "hidden_size": 8,\n  "name": "caf\xe9"\n}\n')
    with pytest.raises(ConfigError) as exc:
        load_model_config(p)
    assert exc.value.path == str(p) and exc.value.line == 3 and "UTF-8" in str(exc.value)
    p.write_text("[" * 100_000 + "]" * 100_000)  # RecursionError in json.loads before
    with pytest.raises(ConfigError, match="nests deeper"):
        load_model_config(p)
    p.write_text(json.dumps({**MODEL_CFG, "hidden_size": float("nan")}))
    with pytest.raises(ConfigError, match="not a number"):
        load_model_config(p)
    p.write_text(json.dumps(MODEL_CFG)[:-1] + ',\n"x": }')
    with pytest.raises(ConfigError) as exc:
        load_model_config(p)
    assert exc.value.line == 2
    with pytest.raises(ConfigError, match="directory"):
        load_model_config(tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ConfigError, match="regular file"):
            load_model_config("/dev/zero")


def test_real_configs_load(data_path):
    root = data_path("llmservingsim/configs/model")
    paths = sorted(root.rglob("*.json"))
    assert len(paths) >= 6
    for p in paths:
        m = load_model_config(p)
        assert m.num_attention_heads % m.num_key_value_heads == 0
        architecture_from_config(m)


# ------------------------------------------------------------------------------- fuzzing


def _check_usable(m: ModelConfig) -> None:
    """What 'loaded correctly' means: every size the simulator uses is positive and bounded,
    and the derived quantities can be computed and stored in a profile."""
    for name in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "vocab_size"):
        assert 1 <= getattr(m, name) <= MAX_DIMENSION, name
    assert m.num_attention_heads % m.num_key_value_heads == 0
    assert m.dtype_bytes in (1, 2, 4)
    if m.is_moe:
        assert 1 <= m.num_experts_per_token <= m.num_experts and m.moe_intermediate_size >= 1
    else:
        assert m.intermediate_size >= 1
    for tp in (1, 2, 8):
        par = ParallelConfig(tensor_parallel_size=tp)
        assert m.kv_bytes_per_token(par) > 0 and m.weight_bytes(par) > 0
    architecture_from_config(m)  # uint32 fields: raises if a value does not fit


@settings(max_examples=200, deadline=None)
@given(base=st.sampled_from([MODEL_CFG, MOE_CFG]),
       edits=st.lists(st.tuples(st.sampled_from(READ_FIELDS), JSON_VALUES | st.just(None)),
                      min_size=1, max_size=4))
def test_fuzz_field_values(base, edits):
    cfg = dict(base)
    for key, value in edits:
        cfg[key] = value
    m = load_or_error(lambda: model_config_from_dict(cfg, path="cfg.json"))
    if m is not None:
        _check_usable(m)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.sampled_from([MODEL_CFG, MOE_CFG]).flatmap(
    lambda c: mutated_bytes(json.dumps(c, indent=1).encode())))
def test_fuzz_file_bytes(tmp_path, data):
    p = tmp_path / "cfg.json"
    p.write_bytes(data)
    m = load_or_error(lambda: load_model_config(p))
    if m is not None:
        _check_usable(m)


@pytest.mark.parametrize("extra", [{"rope": float("nan")}, {"rope": {1, 2}}, {1: 2}])
def test_in_memory_dict_must_be_json_data(extra):
    # the config hash is taken over canonical JSON; a value JSON cannot hold is refused
    with pytest.raises(ConfigError, match="plain JSON"):
        model_config_from_dict({**MODEL_CFG, **extra}, path="cfg.json")
