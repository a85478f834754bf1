"""Fuzzing experiment files: mutated real examples either load or raise ConfigError.

Every shipped example (``examples/*.yaml``) is mutated structurally (wrong types, huge and
non-finite numbers, unknown keys at every level, deleted keys) and textually (alias bombs,
bytes that are not UTF-8, truncation). Nothing may escape but a :class:`ConfigError` whose
message is short, names a field or the file, and points at a line of the file.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsim.errors import ConfigError
from llmsim.experiment import Experiment, load_experiment

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))
TINY_MODEL = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2, "hidden_size": 64,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
              "vocab_size": 1000}

HOSTILE = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 10**6, 10**12, 10**18, 10**30, 2**63, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=30),
    st.sampled_from(["1e18", "round_robin", "full", "grpc://127.0.0.1:1", "", "~", "../x",
                     "a" * 300, "/" + "b" * 300, "~no-such-user/x", "x\x00y", "é" * 5000]),
    st.lists(st.integers(min_value=-5, max_value=10**13), max_size=8),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    (d / "model.json").write_text(json.dumps(TINY_MODEL))
    (d / "trace.jsonl").write_text(json.dumps(
        {"arrival_time_ns": 0, "input_toks": 8, "output_toks": 2}) + "\n")
    return d


def _localized(path: Path, d: Path) -> dict[str, Any]:
    """The example with its inputs pointed at small local files (so every other field is
    validated instead of stopping at a missing dataset)."""
    raw = yaml.safe_load(path.read_text())
    raw["model"] = str(d / "model.json")
    raw["profile"] = str(d / "model.json")
    raw["trace"]["path"] = str(d / "trace.jsonl")
    raw.pop("measured", None)
    return raw


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    return out


def _check(path: Path) -> None:
    """Load ``path``: an Experiment, or a short located ConfigError."""
    try:
        exp = load_experiment(path)
    except ConfigError as exc:
        text = str(exc)
        assert len(text) < 2000, text[:300]
        assert exc.path == str(path)
        if exc.line is not None:
            assert 1 <= exc.line <= path.read_bytes().count(b"\n") + 1
        return
    assert isinstance(exp, Experiment)
    assert 1 <= exp.engine.max_num_seqs and exp.engine.cudagraph_capture_sizes == tuple(
        sorted(set(exp.engine.cudagraph_capture_sizes)))


def test_localized_examples_load(workdir):
    for i, example in enumerate(EXAMPLES):
        path = workdir / f"ok{i}.yaml"
        path.write_text(yaml.safe_dump(_localized(example, workdir)))
        assert load_experiment(path).name == example.stem


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(example=st.sampled_from(EXAMPLES), data=st.data())
def test_structural_mutations_load_or_raise_config_error(workdir, example, data):
    raw = _localized(example, workdir)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        where = data.draw(st.sampled_from(_paths(raw)))
        parent: Any = raw
        for k in where[:-1]:
            parent = parent[k] if isinstance(parent, dict) else None
        action = data.draw(st.sampled_from(["set", "unknown", "delete"]))
        if action == "unknown":
            target = raw
            for k in where:
                target = target[k] if isinstance(target, dict) else target
            if isinstance(target, dict):
                target[data.draw(st.text(min_size=1, max_size=12))] = data.draw(HOSTILE)
        elif isinstance(parent, dict) and where:
            if action == "delete":
                parent.pop(where[-1], None)
            else:
                parent[where[-1]] = data.draw(HOSTILE)
    path = workdir / "mutated.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(raw), allow_unicode=True))
    _check(path)


def _bomb(levels: int, width: int) -> str:
    lines = ['b0: &b0 "lol"']
    lines += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(example=st.sampled_from(EXAMPLES), data=st.data())
def test_text_mutations_load_or_raise_config_error(workdir, example, data):
    text = yaml.safe_dump(_localized(example, workdir)).encode()
    kind = data.draw(st.sampled_from(["bomb", "bad_bytes", "truncate", "flip", "nested_bomb"]))
    if kind == "bomb":
        text += _bomb(data.draw(st.integers(3, 10)), data.draw(st.integers(2, 12))).encode()
    elif kind == "nested_bomb":  # the bomb sits inside a real section, under a real key
        bomb = _bomb(6, 10).replace("\n", "\n  ").encode()
        text = text.replace(b"engine:\n", b"engine:\n  " + bomb.rstrip(b" "), 1)
    elif kind == "bad_bytes":
        at = data.draw(st.integers(0, len(text)))
        bad = data.draw(st.sampled_from([b"\xff", b"\xe9", b"\xc3(", b"\x00", b"\xed\xa0\x80"]))
        text = text[:at] + bad + text[at:]
    elif kind == "truncate":
        text = text[: data.draw(st.integers(0, len(text)))]
    else:
        at = data.draw(st.integers(0, len(text) - 1))
        text = text[:at] + bytes([data.draw(st.integers(0, 255))]) + text[at + 1:]
    path = workdir / "text.yaml"
    path.write_bytes(text)
    _check(path)


def test_a_bomb_under_a_real_key_is_refused_not_expanded(workdir):
    text = yaml.safe_dump(_localized(EXAMPLES[0], workdir))
    text += _bomb(9, 9).replace("b9: &b9", "description: &b9")
    path = workdir / "bomb.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="alias expansion is bounded") as err:
        load_experiment(path)
    assert len(str(err.value)) < 500


ENGINE_FIELDS = ["tensor_parallel_size", "max_num_seqs", "max_num_batched_tokens", "block_size",
                 "enable_prefix_caching", "gpu_memory_utilization", "num_gpu_blocks_override",
                 "cudagraph_capture_sizes", "async_scheduling", "scheduler_reserve_full_isl",
                 "long_prefill_token_threshold"]


@settings(max_examples=200, deadline=None)
@given(kwargs=st.dictionaries(st.sampled_from(ENGINE_FIELDS + ["bogus"]), HOSTILE, max_size=4))
def test_engine_config_from_code_is_valid_or_a_config_error(kwargs):
    from llmsim.experiment import EngineConfig

    try:
        e = EngineConfig(**kwargs)
    except ConfigError as exc:
        assert exc.field is not None and exc.field.startswith("engine.")
        assert len(str(exc)) < 2000
        return
    assert 1 <= e.block_size <= e.max_num_batched_tokens
    assert 0 < e.gpu_memory_utilization <= 1
    sizes = e.cudagraph_capture_sizes
    assert sizes == tuple(sorted(set(sizes))) and all(1 <= s <= e.max_num_batched_tokens
                                                       for s in sizes)
    if "cudagraph_capture_sizes" not in kwargs or kwargs["cudagraph_capture_sizes"] is None:
        from llmsim.experiment import default_cudagraph_capture_sizes

        assert sizes == default_cudagraph_capture_sizes(e.max_num_seqs, e.max_num_batched_tokens)
