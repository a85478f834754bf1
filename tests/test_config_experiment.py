"""The experiment config layer: bounds naming the field, unknown keys, defaults written once,
errors mapped to ConfigError (file, line, dotted field), experiments built in code."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from llmsim.costmodel.base import MAX_STEP_COST_NS, StepCost
from llmsim.errors import ConfigError
from llmsim.experiment import (
    MAX_GPU_MEMORY_BYTES,
    MAX_INSTANCES,
    MAX_NUM_GPU_BLOCKS,
    MAX_NUM_SEQS,
    EngineConfig,
    Experiment,
    HardwareConfig,
    TraceConfig,
    default_cudagraph_capture_sizes,
    experiment_from_dict,
    load_experiment,
    parse_override,
)
from llmsim.instance.instance import CheckLevel
from llmsim.instance.step_time import StepOverheads
from llmsim.router.base import RouterPolicy
from llmsim.trace.record import Request, Trace

TINY_MODEL = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2, "hidden_size": 64,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
              "vocab_size": 1000}

BASE = """name: tiny
model: model.json
profile: model.json
hardware:
  name: fake
  gpu_memory_bytes: 1000000000
engine:
  max_num_seqs: 8
  max_num_batched_tokens: 64
  num_gpu_blocks_override: 40
overheads:
  cpu_step_ns: 1000
trace:
  format: llmservingsim
  path: trace.jsonl
"""


def make_files(d: Path) -> Path:
    """A tiny model, trace and experiment file in ``d``; returns the experiment file."""
    (d / "model.json").write_text(json.dumps(TINY_MODEL))
    (d / "trace.jsonl").write_text("".join(
        json.dumps({"arrival_time_ns": i * 1_000_000, "input_toks": 12, "output_toks": 3}) + "\n"
        for i in range(10)))
    path = d / "exp.yaml"
    path.write_text(BASE)
    return path


def write(d: Path, text: str) -> Path:
    make_files(d)
    path = d / "exp.yaml"
    path.write_text(text)
    return path


def make_trace(n: int = 6) -> Trace:
    return Trace(requests=tuple(
        Request(request_id=f"r{i}", arrival_ns=i * 2_000_000, input_tokens=10 + i,
                output_tokens=3) for i in range(n)), source="", name="mem")


class ConstCost:
    """Every step takes 2 ms."""

    def step_cost(self, batch):
        return StepCost(duration_ns=2_000_000)


# ----------------------------------------------------------------------- defaults once
def test_python_engine_defaults_equal_the_yaml_defaults(tmp_path):
    text = BASE.replace("engine:\n  max_num_seqs: 8\n  max_num_batched_tokens: 64\n"
                        "  num_gpu_blocks_override: 40\n", "engine: {}\n")
    path = write(tmp_path, text.replace("overheads:\n  cpu_step_ns: 1000\n", ""))
    from_yaml = load_experiment(path)
    assert from_yaml.engine == EngineConfig()
    assert EngineConfig().cudagraph_capture_sizes == default_cudagraph_capture_sizes(256)
    assert EngineConfig().cudagraph_capture_sizes[-1] == 512
    assert from_yaml.overheads == StepOverheads()
    assert from_yaml.router.policy is RouterPolicy.ROUND_ROBIN
    assert from_yaml.check is CheckLevel.COUNTERS
    assert from_yaml.num_instances == 1 and from_yaml.output_dir == Path("out/tiny")


def test_capture_sizes_default_follows_max_num_seqs_and_budget():
    assert EngineConfig(max_num_seqs=8).cudagraph_capture_sizes == (1, 2, 4, 8, 16)
    assert EngineConfig(max_num_seqs=8, cudagraph_capture_sizes=None).cudagraph_capture_sizes \
        == (1, 2, 4, 8, 16)
    # vLLM caps the largest captured size at the step token budget
    assert EngineConfig(max_num_seqs=256, max_num_batched_tokens=64).cudagraph_capture_sizes \
        == (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64)
    assert EngineConfig(cudagraph_capture_sizes=()).cudagraph_capture_sizes == ()
    assert EngineConfig(cudagraph_capture_sizes=(8, 1, 8)).cudagraph_capture_sizes == (1, 8)


def test_yaml_null_capture_sizes_get_the_default_for_an_overridden_max_num_seqs(tmp_path):
    path = make_files(tmp_path)
    exp = load_experiment(path, {"engine.max_num_seqs": 4})
    assert exp.engine.cudagraph_capture_sizes == (1, 2, 4, 8)


# ------------------------------------------------------------------ errors from YAML
@pytest.mark.parametrize(("section_line", "key"), [
    ("colour: red\n", "colour"),
    ("engine:\n  max_num_seqs_typo: 3\n", "engine.max_num_seqs_typo"),
    ("hardware:\n  vram: 3\n", "hardware.vram"),
    ("trace:\n  paht: trace.jsonl\n", "trace.paht"),
    ("overheads:\n  gpu_step_ns: 3\n", "overheads.gpu_step_ns"),
])
def test_unknown_keys_at_every_level_name_file_line_and_field(tmp_path, section_line, key):
    top = key.split(".")[0]
    text = BASE
    if "." in key:  # replace the section by one holding the bad key (and what it needs)
        keep = {"trace": "  path: trace.jsonl\n", "hardware": "  gpu_memory_bytes: 10\n"}
        text = _drop_section(BASE, top) + section_line + keep.get(top, "")
    else:
        text = BASE + section_line
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert err.value.field == key and "unknown key (known:" in str(err.value)
    lines = text.splitlines()
    assert lines[err.value.line - 1].strip().startswith(key.split(".")[-1] + ":")
    assert str(err.value).startswith(f"{path}:{err.value.line}: field '{key}'")


def _drop_section(text: str, name: str) -> str:
    out, skip = [], False
    for line in text.splitlines(keepends=True):
        if not line.startswith(" "):
            skip = line.startswith(name + ":")
        if not skip:
            out.append(line)
    return "".join(out)


@pytest.mark.parametrize(("override", "field", "words"), [
    ({"engine.max_num_seqs": 10**12}, "engine.max_num_seqs", str(MAX_NUM_SEQS)),
    ({"engine.num_gpu_blocks_override": 10**12}, "engine.num_gpu_blocks_override",
     str(MAX_NUM_GPU_BLOCKS)),
    ({"engine.cudagraph_capture_sizes": [1, 10**12]}, "engine.cudagraph_capture_sizes",
     "exceeds max_num_batched_tokens"),
    ({"engine.tensor_parallel_size": 0}, "engine.tensor_parallel_size", ">= 1"),
    ({"engine.gpu_memory_utilization": 1.5}, "engine.gpu_memory_utilization", "<= 1"),
    ({"engine.gpu_memory_utilization": float("nan")}, "engine.gpu_memory_utilization", "finite"),
    ({"engine.block_size": 10**6}, "engine.block_size", "4096"),
    ({"engine.max_num_batched_tokens": 10**9}, "engine.max_num_batched_tokens", "16777216"),
    ({"engine.long_prefill_token_threshold": -1}, "engine.long_prefill_token_threshold", ">= 0"),
    ({"hardware.gpu_memory_bytes": 10**30}, "hardware.gpu_memory_bytes",
     str(MAX_GPU_MEMORY_BYTES)),
    ({"overheads.cpu_step_ns": 10**18}, "overheads.cpu_step_ns", str(MAX_STEP_COST_NS)),
    ({"overheads.cpu_per_seq_ns": MAX_STEP_COST_NS}, "overheads.cpu_per_seq_ns",
     "MAX_STEP_COST_NS"),
    ({"instances": 10**6}, "instances", str(MAX_INSTANCES)),
    ({"instances": 4000, "engine.num_gpu_blocks_override": 10**6}, "instances",
     "blocks in all"),
    ({"engine.max_num_seqs": True}, "engine.max_num_seqs", "valid integer"),
    ({"engine.max_num_seqs": "8"}, "engine.max_num_seqs", "valid integer"),
    ({"engine.max_num_seqs": 8.0}, "engine.max_num_seqs", "valid integer"),
    ({"engine.enable_prefix_caching": "yes"}, "engine.enable_prefix_caching", "valid boolean"),
    ({"router": "random"}, "router", "known: round_robin, least_loaded"),
    ({"check_invariants": "some"}, "check_invariants", "known:"),
    ({"trace.format": "parquet"}, "trace.format", "unknown trace format"),
    ({"trace.transforms": [{"shuffle": 1}]}, "trace.transforms.0", "unknown transform"),
    ({"trace.options": [1]}, "trace.options", "dictionary"),
    ({"trace.options": {"colour": 1}}, "trace.options.colour", "unexpected keyword option"),
    ({"trace.options": {"sort": "yes"}}, "trace.options.sort", "true or false"),
    ({"engine": [1, 2]}, "engine", "mapping"),
    ({"model": "missing.json"}, "model", "not found"),
    ({"model": "a" * 300}, "model", "not a usable path"),
    ({"trace.path": "/" + "b" * 300}, "trace.path", "not a usable path"),
    ({"profile": "~no-such-user-here/x.pb"}, "profile", "not a usable path"),
    ({"model": 7}, "model", "must be a path string"),
])
def test_bad_values_name_the_field_and_its_bound(tmp_path, override, field, words):
    path = make_files(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_experiment(path, override)
    assert err.value.field == field, str(err.value)
    assert words in str(err.value)
    assert len(str(err.value)) < 1000
    assert err.value.path == str(path)


def test_bound_violations_quote_the_reason(tmp_path):
    path = make_files(tmp_path)
    with pytest.raises(ConfigError, match=r"\(bound: .*host state per running sequence"):
        load_experiment(path, {"engine.max_num_seqs": 10**7})


def test_error_line_is_the_offending_key(tmp_path):
    path = make_files(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_experiment(path, {"engine.max_num_batched_tokens": 8})
    assert err.value.field == "engine.max_num_batched_tokens" and err.value.line == 9
    path.write_text(BASE.replace("cpu_step_ns: 1000", "cpu_step_ns: -5"))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert err.value.line == 12 and err.value.field == "overheads.cpu_step_ns"


def test_missing_sections_and_cross_field_checks(tmp_path):
    make_files(tmp_path)
    with pytest.raises(ConfigError, match="field 'trace': missing"):
        experiment_from_dict({"model": str(tmp_path / "model.json"), "profile": str(tmp_path)})
    raw = {"model": str(tmp_path / "model.json"), "trace": {"path": str(tmp_path / "trace.jsonl")}}
    with pytest.raises(ConfigError, match="needs a profile") as err:
        experiment_from_dict(dict(raw, hardware={"gpu_memory_bytes": 10**9}))
    assert err.value.field == "profile"
    with pytest.raises(ConfigError) as err:
        experiment_from_dict(dict(raw, profile=str(tmp_path)))
    assert err.value.field == "hardware.gpu_memory_bytes"
    with pytest.raises(ConfigError, match="unknown key") as err:
        experiment_from_dict(dict(raw, source="x.yaml"))
    assert err.value.field == "source"
    assert load_experiment(make_files(tmp_path), {"name": ""}).name == "exp"  # the file's stem
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        experiment_from_dict([1, 2])


def test_several_errors_report_the_first_in_file_order(tmp_path):
    text = BASE.replace("max_num_seqs: 8", "max_num_seqs: 0").replace(
        "cpu_step_ns: 1000", "cpu_step_ns: -1")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"and 1 more invalid field") as err:
        load_experiment(path)
    assert err.value.field == "engine.max_num_seqs" and err.value.line == 8


def test_cli_override_values_go_through_the_bounded_loader():
    assert parse_override("engine.max_num_seqs=64") == ("engine.max_num_seqs", 64)
    key, value = parse_override("name=&a [*a]")  # refused YAML: kept as the literal string
    assert key == "name" and value == "&a [*a]"
    with pytest.raises(ConfigError):
        parse_override("no-equals")


# ---------------------------------------------------------------- built in Python code
def test_python_construction_raises_config_error_not_pydantic():
    with pytest.raises(ConfigError) as err:
        EngineConfig(max_num_seqs=0)
    assert err.value.field == "engine.max_num_seqs" and err.value.path is None
    with pytest.raises(ConfigError, match="field 'hardware.gpu_memory_bytes'"):
        HardwareConfig(gpu_memory_bytes=-1)
    with pytest.raises(ConfigError, match="field 'engine.colour': unknown key"):
        EngineConfig(colour=1)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="field 'trace.path': missing"):
        TraceConfig()
    with pytest.raises(ConfigError, match="field 'engine.max_num_seqs'"):
        dataclasses.replace(EngineConfig(), max_num_seqs=-3)


def test_configs_are_frozen_slotted_dataclasses():
    e = EngineConfig()
    assert dataclasses.is_dataclass(e) and not hasattr(e, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.max_num_seqs = 3  # type: ignore[misc]


def test_experiment_in_code_with_in_memory_trace_runs(tmp_path):
    import llmsim

    (tmp_path / "model.json").write_text(json.dumps(TINY_MODEL))
    exp = Experiment(model_path=tmp_path / "model.json", cost_model="profile",
                     profile_path=tmp_path / "model.json",
                     engine=EngineConfig(max_num_seqs=4, max_num_batched_tokens=64,
                                         num_gpu_blocks_override=64),
                     trace=make_trace(), check=CheckLevel.FULL)
    assert exp.trace.requests is not None and exp.trace.path is None
    assert exp.name == "experiment" and exp.output_dir == Path("out/experiment")
    result = llmsim.run(exp, cost_model=ConstCost())
    assert list(result.requests["request_id"]) == [f"r{i}" for i in range(6)]
    assert (result.requests["ttft_s"] > 0).all()
    itls = llmsim.itls_frame(result)
    assert len(itls) == 6 * 2 and list(itls.columns) == ["request_id", "token_index", "itl_s"]
    # transforms apply to in-memory traces too
    cut = Experiment(model_path=tmp_path / "model.json", profile_path=tmp_path / "model.json",
                     engine=exp.engine, trace=TraceConfig(
                         requests=make_trace(), transforms=({"truncate": {"max_requests": 2}},)))
    assert len(llmsim.run(cut, cost_model=ConstCost()).requests) == 2


def test_the_same_experiment_from_yaml_and_from_code_replays_identically(tmp_path):
    import llmsim
    from llmsim.trace import load_trace

    path = make_files(tmp_path)
    from_yaml = load_experiment(path)
    in_code = Experiment(
        name="tiny", model_path=tmp_path / "model.json", profile_path=tmp_path / "model.json",
        hardware=HardwareConfig(name="fake", gpu_memory_bytes=1_000_000_000),
        engine=EngineConfig(max_num_seqs=8, max_num_batched_tokens=64,
                            num_gpu_blocks_override=40),
        overheads=StepOverheads(cpu_step_ns=1000),
        trace=load_trace("llmservingsim", tmp_path / "trace.jsonl"))
    assert in_code.engine == from_yaml.engine and in_code.overheads == from_yaml.overheads
    a = llmsim.run(from_yaml, cost_model=ConstCost())
    b = llmsim.run(in_code, cost_model=ConstCost())
    assert a.requests.equals(b.requests) and a.timeseries.equals(b.timeseries)


def test_experiment_accepts_yaml_names_and_paths_as_strings(tmp_path):
    make_files(tmp_path)
    exp = Experiment(model=str(tmp_path / "model.json"),  # type: ignore[call-arg]
                     profile=str(tmp_path / "model.json"), instances=2,
                     hardware={"gpu_memory_bytes": 10**9},  # type: ignore[arg-type]
                     trace={"path": str(tmp_path / "trace.jsonl")})  # type: ignore[arg-type]
    assert exp.num_instances == 2 and isinstance(exp.model_path, Path)
    assert isinstance(exp.trace, TraceConfig) and exp.trace.path == tmp_path / "trace.jsonl"
    with pytest.raises(ConfigError, match="field 'overheads.cpu_step_ns'"):
        Experiment(model_path=tmp_path / "model.json", profile_path=tmp_path,
                   hardware=HardwareConfig(gpu_memory_bytes=10**9), trace=make_trace(),
                   overheads=StepOverheads(cpu_step_ns=MAX_STEP_COST_NS + 1))


def test_run_refuses_overrides_for_an_experiment_object(tmp_path):
    import llmsim

    exp = load_experiment(make_files(tmp_path))
    with pytest.raises(ConfigError, match="overrides apply to experiment files"):
        llmsim.run(exp, overrides={"engine.max_num_seqs": 2})
    result = llmsim.run(make_files(tmp_path), overrides={"engine.max_num_seqs": 2},
                        cost_model=ConstCost())
    assert result.summary["engine"]["max_num_seqs"] == 2


def test_validate_without_a_measured_run_is_a_config_error(tmp_path):
    import llmsim

    with pytest.raises(ConfigError, match="no measured run") as err:
        llmsim.validate(make_files(tmp_path))
    assert err.value.field == "measured"


@pytest.mark.realdata
def test_validate_api_matches_the_cli_pipeline(data_path, tmp_path):
    import llmsim
    from llmsim.validate.pipeline import validate_experiment

    data_path("llmservingsim/measured/RTX4090/Llama-3.1-8B")
    example = Path(__file__).resolve().parent.parent / "examples" / "rtx4090-llama-3.1-8b.yaml"
    ours = llmsim.validate(example, out_dir=tmp_path / "report")
    theirs = validate_experiment(example, "llmservingsim/measured/RTX4090/Llama-3.1-8B",
                                 write=False)
    assert ours.comparison.mean_abs_error_pct == theirs.comparison.mean_abs_error_pct
    assert ours.files is not None and ours.files.markdown.exists()
    assert ours.result.requests.equals(theirs.result.requests)
