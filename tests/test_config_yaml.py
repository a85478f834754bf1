"""The bounded YAML loader: alias bombs, recursion, depth, duplicate keys, bad bytes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llmsim.errors import ConfigError, ProfileError
from llmsim.yamlfile import (
    MAX_YAML_ALIASES,
    MAX_YAML_DEPTH,
    load_yaml_document,
    loads_yaml,
    read_yaml,
)


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """``width ** levels`` leaves from ``levels + 1`` lines (10^9 nodes for the defaults)."""
    lines = ['a0: &a0 "lol"']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_fast_with_a_short_message(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        read_yaml(path, what="experiment file")
    assert time.perf_counter() - t0 < 2.0
    assert "alias expansion is bounded" in str(err.value)
    assert len(str(err.value)) < 500
    assert err.value.path == str(path) and err.value.line is not None


def test_too_many_aliases_are_refused():
    text = "a: &x 1\nb: [" + ", ".join(["*x"] * (MAX_YAML_ALIASES + 1)) + "]\n"
    with pytest.raises(ConfigError, match=f"more than {MAX_YAML_ALIASES} aliases"):
        loads_yaml(text)


def test_recursive_alias_is_refused():
    with pytest.raises(ConfigError, match="recursive alias"):
        loads_yaml("a: &x [1, *x]\n")


def test_small_legitimate_aliases_still_load():
    doc = loads_yaml("base: &b {max_num_seqs: 8}\nengine:\n  <<: *b\n  block_size: 16\n")
    assert doc.data["engine"] == {"max_num_seqs": 8, "block_size": 16}
    assert doc.lines["engine.block_size"] == 4


def test_deep_nesting_is_refused_before_the_stack_runs_out():
    deep = "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1)
    with pytest.raises(ConfigError, match=f"deeper than {MAX_YAML_DEPTH}"):
        loads_yaml(deep)
    very_deep = "[" * 50_000 + "]" * 50_000
    with pytest.raises(ConfigError):
        loads_yaml(very_deep)
    ok = "[" * MAX_YAML_DEPTH + "]" * MAX_YAML_DEPTH
    assert loads_yaml(ok).data is not None


def test_duplicate_keys_are_refused_with_the_line():
    with pytest.raises(ConfigError, match="duplicate key 'max_num_seqs'") as err:
        loads_yaml("engine:\n  max_num_seqs: 8\n  max_num_seqs: 16\n", path="e.yaml")
    assert err.value.line == 3 and err.value.path == "e.yaml"


def test_non_utf8_bytes_name_line_and_offset(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: ok\nmodel: caf\xe9.json\n")
    with pytest.raises(ConfigError, match=r"not UTF-8.*0xe9 at offset 19") as err:
        read_yaml(path, what="experiment file")
    assert err.value.line == 2


def test_huge_integer_literal_is_a_located_error_not_a_traceback():
    with pytest.raises(ConfigError, match="cannot build a value"):
        loads_yaml("n: " + "9" * 10_000 + "\n")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError, match="invalid YAML") as err:
        read_yaml(path, what="experiment file")
    assert err.value.line is not None and err.value.line >= 2


def test_directories_and_devices_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        read_yaml(tmp_path, what="experiment file")
    if Path("/dev/zero").exists():
        with pytest.raises(ConfigError, match="not a regular file"):
            read_yaml("/dev/zero", what="experiment file")


def test_the_callers_error_class_is_raised(tmp_path):
    path = tmp_path / "meta.yaml"
    path.write_text(billion_laughs(levels=6, width=10))
    with pytest.raises(ProfileError, match="alias expansion"):
        read_yaml(path, what="bundle meta.yaml", error=ProfileError)


def test_line_map_covers_nested_keys_and_list_items(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("engine:\n  cudagraph_capture_sizes:\n    - 1\n    - 2\ntrace: {path: t}\n")
    doc = load_yaml_document(path, what="experiment file")
    assert doc.lines == {"engine": 1, "engine.cudagraph_capture_sizes": 2,
                         "engine.cudagraph_capture_sizes.0": 3,
                         "engine.cudagraph_capture_sizes.1": 4, "trace": 5, "trace.path": 5}
    assert read_yaml(path, what="x")[0]["trace"] == {"path": "t"}
