"""``llmsim cluster import llmservingsim``: every LLMServingSim cluster config of the data
imports; the YAML loads, then runs a short replay or stops with a located "not supported
yet"; every JSON field is in the field table (an unknown one is refused with file, line and
field); facts read from the JSON survive the conversion."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmsim.cli.cluster import first_refusal
from llmsim.cli.main import main
from llmsim.cluster.importers.llmservingsim import (
    FIELDS,
    GIB_BYTES,
    import_config,
    import_directory,
    write_imported,
)
from llmsim.errors import ConfigError, LlmsimError, ProfileError
from llmsim.experiment import load_experiment
from llmsim.replay import run

CONFIGS = "llmservingsim/configs/cluster"
NAMES = [
    "dual_node_moe_dp_ep_intra_inter_instance", "dual_node_multi_instance",
    "rtx4090_multi_instance", "rtx4090_single_instance", "rtx4090_tp2_instance",
    "single_node_4_instance_2TP", "single_node_cxl_instance", "single_node_dp_instance",
    "single_node_heterogeneous", "single_node_memory_instance",
    "single_node_moe_dp_ep_instance", "single_node_moe_dp_pp_instance",
    "single_node_moe_dp_tp_instance", "single_node_moe_dp_tp_pp_instance",
    "single_node_moe_multi_instance", "single_node_moe_pd_instance",
    "single_node_moe_pp_instance", "single_node_moe_single_instance",
    "single_node_multi_instance", "single_node_pd_instance",
    "single_node_pd_per_instance_config", "single_node_pim_instance",
    "single_node_power_instance", "single_node_pp_instance", "single_node_single_instance",
    "single_node_single_instance_H100", "single_node_tp_pp_instance",
]
"""The 27 configs of LLMServingSim @ 5daddb2 (configs/cluster/README.md lists them)."""

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cluster-semantics.md"


def _pending_keys() -> set[str]:
    """Keys the importer writes for other helpers' features (P/D roles, KV tiers, weight
    offload; docs/cluster-semantics.md) that the config layer does not define yet: while
    their work has not landed, a config using them stops at "unknown key"."""
    from llmsim.experiment import Experiment, InstanceGroupConfig

    top = set(Experiment.__pydantic_fields__)  # type: ignore[attr-defined]
    group = set(InstanceGroupConfig.__pydantic_fields__)  # type: ignore[attr-defined]
    return ({k for k in ("memory_tiers", "kv_transfer_config") if k not in top}
            | {k for k in ("weight_offload", "role") if k not in group})
REPLAY_REQUESTS = 12


@pytest.fixture
def configs(data_path) -> Path:
    return data_path(CONFIGS)


def _json(configs: Path, name: str) -> dict[str, Any]:
    return json.loads((configs / f"{name}.json").read_text())


def _instances(raw: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(n, inst) for n, node in enumerate(raw["nodes"]) for inst in node["instances"]]


def test_the_data_holds_the_27_configs(configs: Path) -> None:
    assert sorted(p.stem for p in configs.glob("*.json")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_config_imports_and_the_yaml_is_the_mapping(name: str, configs: Path,
                                                          tmp_path: Path) -> None:
    imported = import_config(configs / f"{name}.json")
    out = write_imported(imported, tmp_path / f"{name}.yaml")
    assert yaml.safe_load(out.read_text()) == imported.experiment
    assert imported.experiment["name"] == name
    # every knowingly ignored field is named, with its value, in the header
    header = out.read_text().split("\nname:", 1)[0]
    for field, value, _ in imported.ignored:
        assert f"{field} = {json.dumps(value)}" in header
    for key, _ in imported.unsupported + imported.data_gaps:
        assert f"#   {key}:" in header


def _covered(field: str, keys: list[str]) -> bool:
    return any(field == k or field.startswith(k + ".") or k.startswith(field + ".")
               for k in keys)


@pytest.mark.parametrize("name", NAMES)
def test_the_yaml_runs_or_stops_with_a_located_not_supported_yet(name: str, configs: Path,
                                                                 tmp_path: Path) -> None:
    imported = import_config(configs / f"{name}.json")
    out = write_imported(imported, tmp_path / f"{name}.yaml")
    cut = {"trace.transforms": [{"truncate": {"max_requests": REPLAY_REQUESTS}}]}
    try:
        refusal = first_refusal(out)
        if refusal is None:
            result = run(load_experiment(out, overrides=cut))
    except ProfileError as exc:  # a bundle without the instance's TP tables
        assert imported.data_gaps, exc
        assert "not in the profile" in str(exc)
        return
    except ConfigError as exc:
        if imported.data_gaps and exc.field == "profile" or (exc.field or "").endswith(
                ".profile"):
            assert imported.data_gaps and "not found" in exc.reason, exc
            return
        refusal = str(exc)
        assert exc.path == str(out) and exc.line is not None, exc
        if exc.reason.startswith("unknown key") and (exc.field or "").split(".")[-1] in \
                _pending_keys():
            return
        assert exc.reason.startswith("not supported yet: "), exc
        assert _covered(exc.field or "", [k for k, _ in imported.unsupported]), (
            exc.field, imported.unsupported)
        return
    if refusal is not None:
        assert "not supported yet: " in refusal and str(out) in refusal, refusal
        assert imported.unsupported, refusal
        return
    # runs: a short replay end to end
    assert imported.runnable or imported.unsupported, name
    req = result.requests
    assert len(req) == REPLAY_REQUESTS
    assert req["ttft_s"].notna().all() and (req["ttft_s"] > 0).all()
    assert req["e2e_s"].ge(req["ttft_s"]).all()
    expected = sum(g["count"] * _eff(imported.experiment, g, "engine").get(
        "data_parallel_size", 1) for g in imported.experiment["instance_groups"])
    assert result.summary["num_instances"] == expected


def test_configs_without_unmodelled_features_run(configs: Path, tmp_path: Path) -> None:
    """The importer's own promise: nothing refused and nothing missing -> it replays."""
    pending = _pending_keys()
    runnable = [r for r in import_directory(configs) if r.runnable and not any(
        k in r.experiment or any(k in g for g in r.experiment["instance_groups"])
        for k in pending)]
    assert {r.source.stem for r in runnable} >= {
        "single_node_single_instance", "rtx4090_single_instance", "single_node_dp_instance",
        "single_node_4_instance_2TP", "dual_node_multi_instance", "single_node_memory_instance",
        "single_node_power_instance",
        "single_node_moe_dp_ep_instance", "single_node_moe_multi_instance"}
    for r in runnable:
        out = write_imported(r, tmp_path / f"{r.source.stem}.yaml")
        assert first_refusal(out) is None, r.source.name


# ------------------------------------------------------------------------ field table
def _patterns(value: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            named = prefix.endswith((".power.npu", ".placement.layers"))
            p = f"{prefix}.{'*' if named else key}" if prefix else key
            out.add(p)
            out |= _patterns(item, p)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                out.add(prefix + "[]")
                out |= _patterns(item, prefix + "[]")
    return out


def test_every_field_of_the_27_configs_is_in_the_table(configs: Path) -> None:
    seen: set[str] = set()
    for name in NAMES:
        seen |= _patterns(_json(configs, name))
    table = {r.pattern for r in FIELDS}
    assert seen <= table, sorted(seen - table)
    # and the table holds no rule nothing could reach but the documented extras
    extras = table - seen
    assert extras == {
        "nodes[].instances[].reserve_full_isl", "nodes[].instances[].enable_local_offloading",
        "nodes[].instances[].enable_attn_offloading",
        "nodes[].instances[].enable_sub_batch_interleaving",
        "nodes[].instances[].enable_block_copy"}, sorted(extras)
    assert {r.action for r in FIELDS} <= {"mapped", "checked", "ignored", "section"}
    assert all(r.note or r.action == "section" for r in FIELDS)
    assert all(r.ignored or r.note for r in FIELDS if r.action == "ignored")


def test_the_docs_table_lists_every_field() -> None:
    text = DOCS.read_text()
    section = text.split("## Importing LLMServingSim configs", 1)[1]
    for rule in FIELDS:  # the docs table is FIELDS (pattern, action, target)
        target = f"`{rule.target}`" if rule.target else ""
        assert f"| `{rule.pattern}` | {rule.action} | {target} |" in section, rule.pattern


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(("edit", "field", "needle"), [
    (lambda d: d["nodes"][0]["instances"][0].update(foo=1), "nodes.0.instances.0.foo",
     '"foo"'),
    (lambda d: d.update(topology="ring"), "topology", '"topology"'),
    (lambda d: d["nodes"][0]["cpu_mem"].update(channels=8), "nodes.0.cpu_mem.channels",
     '"channels"'),
    (lambda d: d["nodes"][0]["instances"][0]["npu_mem"].update(mem_util_pct=90),
     "nodes.0.instances.0.npu_mem.mem_util_pct", '"mem_util_pct"'),
])
def test_an_unknown_field_is_refused_with_file_line_and_field(edit, field: str, needle: str,
                                                              configs: Path,
                                                              tmp_path: Path) -> None:
    raw = _json(configs, "single_node_single_instance")
    edit(raw)
    path = tmp_path / "edited.json"
    text = json.dumps(raw, indent=4)
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        import_config(path)
    assert err.value.path == str(path) and err.value.field == field
    assert err.value.line == _line_of(text, needle)
    assert "unknown LLMServingSim field" in err.value.reason


def test_an_unknown_power_component_field_is_refused(configs: Path, tmp_path: Path) -> None:
    raw = _json(configs, "single_node_power_instance")
    raw["nodes"][0]["power"]["npu"]["RTXPRO6000"]["boost_power"] = 700
    path = tmp_path / "p.json"
    path.write_text(json.dumps(raw, indent=2))
    with pytest.raises(ConfigError) as err:
        import_config(path)
    assert err.value.field == "nodes.0.power.npu.RTXPRO6000.boost_power"
    assert "active_power" in err.value.reason  # the known keys are listed


@pytest.mark.parametrize(("edit", "field", "says"), [
    (lambda d: d.update(num_nodes=2), "num_nodes", "1 nodes are listed"),
    (lambda d: d["nodes"][0].update(num_instances=3), "nodes.0.num_instances",
     "1 instances are listed"),
    (lambda d: d["nodes"][0]["instances"][0].update(num_npus=3, tp_size=2),
     "nodes.0.instances.0.num_npus", "num_npus 3"),
    (lambda d: d["nodes"][0]["instances"][0].update(max_num_seqs=0),
     "nodes.0.instances.0.max_num_seqs", "no vLLM counterpart"),
    (lambda d: d["nodes"][0]["instances"][0].update(kv_cache_dtype="fp8"),
     "nodes.0.instances.0.kv_cache_dtype", "not supported yet"),
    (lambda d: d["nodes"][0]["instances"][0].update(enable_attn_offloading=True),
     "nodes.0.instances.0.enable_attn_offloading", "not supported yet"),
    (lambda d: d["nodes"][0]["instances"][0].update(tp_size="2"),
     "nodes.0.instances.0.tp_size", "must be int"),
    (lambda d: d["nodes"][0]["instances"][0].update(pd_type="both"),
     "nodes.0.instances.0.pd_type", "'prefill', 'decode' or null"),
    (lambda d: d["nodes"][0]["instances"][0]["npu_mem"].update(mem_util=90),
     "nodes.0.instances.0.npu_mem.mem_util", "fraction"),
    (lambda d: d["nodes"][0]["instances"][0].pop("pd_type"), "nodes.0.instances.0",
     "'pd_type'"),
])
def test_bad_values_are_refused_where_they_are(edit, field: str, says: str, configs: Path,
                                              tmp_path: Path) -> None:
    raw = _json(configs, "single_node_single_instance")
    edit(raw)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw, indent=4))
    with pytest.raises(ConfigError) as err:
        import_config(path)
    assert err.value.path == str(path) and err.value.field == field, err.value
    assert says in err.value.reason
    assert err.value.line is not None


def test_invalid_json_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "num_nodes": 1,\n  "nodes": [\n')
    with pytest.raises(ConfigError) as err:
        import_config(path)
    assert err.value.path == str(path) and err.value.line == 4


# ------------------------------------------------------------------- round-trip facts
def _eff(exp: dict[str, Any], g: dict[str, Any], key: str) -> Any:
    """A group's section as the config layer resolves it (a left-out section: the top-level
    one; a left-out hardware of a placed group: its node's GPUs)."""
    if key in g:
        return g[key]
    if key == "hardware":
        node = next(n for n in exp["cluster"]["nodes"] if n["name"] == g["placement"]["node"])
        (gpu,) = node["gpus"]
        return {"name": gpu["hardware"], "gpu_memory_bytes": gpu["gpu_memory_bytes"]}
    if key == "profile":
        assert "model" not in g  # a group's own model needs its own profile
    return exp[key]


def _group_engines(exp: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(tp, pp, dp) per group."""
    out = []
    for g in exp["instance_groups"]:
        e = _eff(exp, g, "engine")
        out.append((e["tensor_parallel_size"], e.get("pipeline_parallel_size", 1),
                    e.get("data_parallel_size", 1)))
    return out


@pytest.mark.parametrize("name", ["single_node_single_instance", "single_node_4_instance_2TP",
                                  "dual_node_multi_instance", "single_node_dp_instance",
                                  "single_node_tp_pp_instance", "rtx4090_multi_instance",
                                  "single_node_moe_dp_ep_instance",
                                  "single_node_single_instance_H100"])
def test_parallel_layout_instances_and_hardware_survive(name: str, configs: Path) -> None:
    raw = _json(configs, name)
    exp = import_config(configs / f"{name}.json").experiment
    insts = _instances(raw)
    groups = exp["instance_groups"]
    # instances: one group per JSON instance, a dp_group's members merged into one
    dp_groups = {i.get("dp_group") for _, i in insts} - {None}
    engines = sum(g["count"] * _eff(exp, g, "engine").get("data_parallel_size", 1)
                  for g in groups)
    assert engines == len(insts)
    assert len(groups) == len([i for _, i in insts if i.get("dp_group") is None]) + len(
        dp_groups)
    # TP / PP (num_npus = tp x pp when pp is not given) and DP per group
    for (tp, pp, dp), g in zip(_group_engines(exp), groups, strict=True):
        node = int(g["placement"]["node"][1:])
        k = int(g["name"].split("i")[1].split("-")[0])
        inst = raw["nodes"][node]["instances"][k]
        assert tp == inst["tp_size"]
        assert pp == inst.get("pp_size", inst.get("num_npus", tp) // tp)
        assert dp == (sum(1 for _, i in insts if i.get("dp_group") == inst["dp_group"])
                      if inst.get("dp_group") else 1)
        assert _eff(exp, g, "hardware") == {
            "name": inst["hardware"], "gpu_memory_bytes": inst["npu_mem"]["mem_size"] * GIB_BYTES}
        assert len(g["placement"]["gpus"]) == tp * pp * dp
        assert _eff(exp, g, "model") == f"llmservingsim/configs/model/{inst['model_name']}.json"
        assert _eff(exp, g, "profile") == (f"llmservingsim/profiles/{inst['hardware']}/"
                                           f"{inst['model_name']}/bf16")
    # nodes: as many as the JSON's, each with the GPUs its instances take
    nodes = exp["cluster"]["nodes"]
    assert len(nodes) == raw["num_nodes"]
    for n, node in enumerate(nodes):
        want = sum(i.get("num_npus", i["tp_size"] * i.get("pp_size", 1))
                   for i in raw["nodes"][n]["instances"])
        assert sum(g["count"] for g in node["gpus"]) == want
        placed = sorted(x for g in groups if g["placement"]["node"] == node["name"]
                        for x in g["placement"]["gpus"])
        assert placed == list(range(want))  # every GPU once


def test_moe_ep_and_dp_follow_vllm(configs: Path) -> None:
    dp_ep = import_config(configs / "single_node_moe_dp_ep_instance.json").experiment
    (g,) = dp_ep["instance_groups"]
    e = _eff(dp_ep, g, "engine")
    assert e["data_parallel_size"] == 2 and e["enable_expert_parallel"]
    # ep_size 2 over dp 2 x tp 2 = 4 ranks: no vLLM layout; the closest one vLLM runs (EP
    # over all dp x tp ranks), with a warning naming the difference, in the header too
    odd = import_config(configs / "single_node_moe_dp_tp_instance.json")
    (g,) = odd.experiment["instance_groups"]
    assert "llmservingsim" not in g and odd.runnable
    assert _eff(odd.experiment, g, "engine")["enable_expert_parallel"] is True
    (warning,) = odd.warnings
    assert warning.startswith("nodes.0.instances.0.ep_size: ep_size 2 over dp x tp = 4 ranks")
    assert "EP 4" in warning and "over 2 EP ranks" in warning
    assert "# WARNING: not LLMServingSim's layout" in odd.text
    # a MoE model without ep_size at tp 1: ep 1, experts not expert-parallel
    multi = import_config(configs / "single_node_moe_multi_instance.json").experiment
    assert all("enable_expert_parallel" not in _eff(multi, g, "engine")
               for g in multi["instance_groups"])


def test_per_instance_engine_settings_and_roles(configs: Path, data_path) -> None:
    raw = _json(configs, "single_node_pd_per_instance_config")
    exp = import_config(configs / "single_node_pd_per_instance_config.json").experiment
    prefill, decode = exp["instance_groups"]
    p_raw, d_raw = raw["nodes"][0]["instances"]
    assert (prefill["role"], decode["role"]) == (p_raw["pd_type"], d_raw["pd_type"])
    for g, r in ((prefill, p_raw), (decode, d_raw)):
        for key in ("max_num_seqs", "max_num_batched_tokens", "block_size",
                    "enable_chunked_prefill"):
            assert _eff(exp, g, "engine")[key] == r[key]
    assert _eff(exp, prefill, "engine")["long_prefill_token_threshold"] == 2048
    assert exp["kv_transfer_config"] == {"kv_connector": "NixlConnector"}
    # max_num_batched_tokens 0: the model's context length, as LLMServingSim resolves it
    het = import_config(configs / "single_node_heterogeneous.json").experiment
    model = json.loads(data_path("llmservingsim/configs/model/Qwen/Qwen3-32B.json").read_text())
    decode_engine = _eff(het, het["instance_groups"][1], "engine")
    assert decode_engine["max_num_batched_tokens"] == model["max_position_embeddings"]
    assert decode_engine["enable_chunked_prefill"] is False


def test_mem_util_sizes_the_kv_cache_as_llmservingsim_does(configs: Path, data_path) -> None:
    """mem_util calibrates LLMServingSim's weights-plus-KV formula; the importer writes the
    block count it gives, which for the RTX 4090 config is the measured run's."""
    raw = _json(configs, "rtx4090_single_instance")
    exp = import_config(configs / "rtx4090_single_instance.json").experiment
    util = raw["nodes"][0]["instances"][0]["npu_mem"]["mem_util"]
    engine = _eff(exp, exp["instance_groups"][0], "engine")
    assert engine["gpu_memory_utilization"] == util
    meta = json.loads(data_path("llmservingsim/measured/RTX4090/Llama-3.1-8B/vllm/meta.json")
                      .read_text())
    assert engine["num_gpu_blocks_override"] == meta["kv_cache"]["num_gpu_blocks"] == 2588
    # without mem_util (and without --llmservingsim-defaults) vLLM's accounting applies
    plain = import_config(configs / "single_node_single_instance.json").experiment
    assert "num_gpu_blocks_override" not in plain["engine"]


def test_the_imported_rtx4090_run_replays_like_the_example(data_path, tmp_path: Path) -> None:
    """LLMServingSim's config of the measured RTX 4090 run (KV cache saturates) with the
    run's max_num_seqs replays request for request like examples/rtx4090-llama-3.1-8b.yaml."""
    cfg = data_path("llmservingsim/measured/RTX4090/Llama-3.1-8B/config.json")
    out = write_imported(import_config(cfg, name="m4090"), tmp_path / "m4090.yaml")
    mine = run(load_experiment(out, overrides={"engine.max_num_seqs": 256}))
    example = Path(__file__).resolve().parents[2] / "examples" / "rtx4090-llama-3.1-8b.yaml"
    theirs = run(load_experiment(example))
    cols = ["ttft_s", "tpot_s", "e2e_s"]
    assert mine.num_steps == theirs.num_steps
    assert mine.requests[cols].equals(theirs.requests[cols])
    assert mine.summary["num_preemptions"] > 0  # the cache does fill in this run


def test_power_block_maps_to_the_power_config(configs: Path) -> None:
    raw = _json(configs, "single_node_power_instance")["nodes"][0]
    power = import_config(configs / "single_node_power_instance.json").experiment[
        "cluster"]["nodes"][0]["power"]
    src = raw["power"]
    assert power["base_node_w"] == src["base_node_power"]
    gpu = src["npu"]["RTXPRO6000"]
    assert power["gpu"]["RTXPRO6000"] == {
        "idle_w": gpu["idle_power"], "active_w": gpu["active_power"],
        "standby_w": gpu["standby_power"], "standby_s": gpu["standby_duration"]}
    assert power["dram"]["num_dimms"] == raw["cpu_mem"]["mem_size"] // src["dram"]["dimm_size"]
    assert power["dram"]["energy_pj_per_bit"] == src["dram"]["energy_per_bit"]
    assert power["link"] == {"count": src["link"]["num_links"],
                             "idle_w": src["link"]["idle_power"],
                             "energy_pj_per_bit": src["link"]["energy_per_bit"]}
    assert power["storage"]["count"] == src["storage"]["num_devices"]


def test_cxl_placement_becomes_weight_offload_over_a_cxl_tier(configs: Path) -> None:
    raw = _json(configs, "single_node_cxl_instance")
    exp = import_config(configs / "single_node_cxl_instance.json").experiment
    (tier,) = exp["memory_tiers"]
    cxl = raw["cxl_mem"]
    assert tier["kind"] == "cxl" and tier["num_devices"] == cxl["num_devices"]
    assert tier["capacity_bytes"] * cxl["num_devices"] == cxl["mem_size"] * GIB_BYTES
    assert tier["bandwidth_bytes_per_s"] == cxl["mem_bw"] * GIB_BYTES
    offload = exp["instance_groups"][0]["weight_offload"]
    assert offload["default"] == "cxl:0"
    assert offload["layers"] == {"0-3": "cxl:0", "4-7": "cxl:1", "8-10": "cxl:2",
                                 "11-23": "cxl:3", "24-31": "cxl:0"}
    assert (offload["embedding"], offload["final_layernorm"], offload["lm_head"]) == (
        "cxl:1", "cxl:2", "cxl:3")
    # an all-GPU placement is llmsim's layout: nothing written, nothing refused
    mem = import_config(configs / "single_node_memory_instance.json")
    assert "weight_offload" not in mem.experiment["instance_groups"][0]
    assert "memory_tiers" not in mem.experiment and mem.runnable


def test_cross_node_dp_group_writes_the_inter_node_link(configs: Path) -> None:
    raw = _json(configs, "dual_node_moe_dp_ep_intra_inter_instance")
    exp = import_config(configs / "dual_node_moe_dp_ep_intra_inter_instance.json").experiment
    (g,) = exp["instance_groups"]
    assert g["placement"] == {"node": "n0", "gpus": [0, 1],
                              "spans": [{"node": "n1", "gpus": [0, 1]}]}
    e = _eff(exp, g, "engine")
    assert e["data_parallel_size"] == 2 and e["enable_expert_parallel"]
    for node in exp["cluster"]["nodes"]:  # the outer topology dimension: between nodes
        net = dict(node["network"])
        assert net.pop("source").startswith(
            "LLMServingSim dual_node_moe_dp_ep_intra_inter_instance.json: link_bw[1] = 16 GB/s")
        assert net == {"bandwidth_bytes_per_s": raw["link_bw"][1] * GIB_BYTES,
                       "latency_ns": raw["link_latency"][1]}


@pytest.mark.parametrize("name", [
    "dual_node_moe_dp_ep_intra_inter_instance", "single_node_moe_dp_pp_instance",
    "single_node_moe_dp_tp_pp_instance", "single_node_moe_pp_instance",
    "single_node_moe_dp_tp_instance"])
def test_moe_layouts_vllm_runs_import_and_replay(name: str, configs: Path, tmp_path: Path,
                                                 data_path) -> None:
    """Inter-node DP+EP, PP with MoE DP / EP, and LLMServingSim's EP-degree layout (as
    vLLM's closest): nothing refused, a short replay end to end in lock-step."""
    data_path("llmservingsim/profiles/RTXPRO6000/Qwen/Qwen3-30B-A3B-Instruct-2507/bf16")
    imported = import_config(configs / f"{name}.json")
    assert imported.runnable, (imported.unsupported, imported.data_gaps)
    out = write_imported(imported, tmp_path / f"{name}.yaml")
    assert first_refusal(out) is None
    cut = {"trace.transforms": [{"truncate": {"max_requests": REPLAY_REQUESTS}}]}
    result = run(load_experiment(out, overrides=cut))
    assert result.summary["num_finished"] == REPLAY_REQUESTS
    (g,) = imported.experiment["instance_groups"]
    engine = _eff(imported.experiment, g, "engine")
    assert engine["enable_expert_parallel"] is True
    if engine.get("data_parallel_size", 1) > 1:
        assert result.summary["moe_dp"]["group_steps"] > 0
    if engine.get("pipeline_parallel_size", 1) > 1:
        ops = {op for grp in result.summary["communication"] for op in grp["collectives"]}
        assert "pp_send_recv" in ops
    crossing = any("hierarchical" in k
                   for k in result.summary.get("moe_dp", {}).get("ep_collective_sources", {}))
    assert crossing == name.startswith("dual_node")


def test_data_gaps_are_named(configs: Path) -> None:
    h100 = import_config(configs / "single_node_single_instance_H100.json")
    assert [k for k, _ in h100.data_gaps] == ["instance_groups.0.profile"]
    tp2 = import_config(configs / "rtx4090_tp2_instance.json")
    assert tp2.data_gaps and "tp2" in tp2.data_gaps[0][1]


def test_a_profile_given_per_hardware_fills_the_gap(configs: Path, data_path, tmp_path: Path
                                                   ) -> None:
    """The H100 config runs on a profile built from AIConfigurator's H100 database."""
    systems = data_path("aiconfigurator/systems")
    model = data_path("llmservingsim/configs/model/meta-llama/Llama-3.1-70B.json")
    pb = tmp_path / "h100-llama70b-tp4.pb"
    hint = import_config(configs / "single_node_single_instance_H100.json").data_gaps[0][1]
    assert "--system h100_sxm" in hint and "--tp 4" in hint
    assert main(["profile", "import", "aiconfigurator", str(systems), "--system", "h100_sxm",
                 "--model", str(model), "--tp", "4", "-o", str(pb)]) == 0
    imported = import_config(configs / "single_node_single_instance_H100.json",
                             profiles={"h100": str(pb)})
    assert imported.runnable
    assert _eff(imported.experiment, imported.experiment["instance_groups"][0],
                "profile") == str(pb)
    out = write_imported(imported, tmp_path / "h100.yaml")
    result = run(load_experiment(out, overrides={
        "trace.transforms": [{"truncate": {"max_requests": REPLAY_REQUESTS}}]}))
    assert len(result.requests) == REPLAY_REQUESTS
    assert result.summary["instance_groups"][0]["hardware"] == "H100"


def test_llmservingsim_defaults_replay_the_measured_run_like_the_example(data_path,
                                                                        tmp_path: Path) -> None:
    """LLMServingSim's own config of the measured RTX PRO 6000 run, imported with its
    command-line defaults (max_num_seqs 128 = the run's), replays request for request like
    examples/rtxpro6000-llama-3.1-8b.yaml: the KV cache (96 GiB here, 97,887 MiB there)
    never fills in this run."""
    cfg = data_path("llmservingsim/measured/RTXPRO6000/Llama-3.1-8B/config.json")
    imported = import_config(cfg, cli_defaults=True, name="m")
    assert imported.runnable and imported.experiment["engine"]["max_num_seqs"] == 128
    assert "max_num_seqs" not in import_config(cfg).experiment["engine"]
    cut = {"trace.transforms": [{"truncate": {"max_requests": 60}}]}
    mine = run(load_experiment(write_imported(imported, tmp_path / "m.yaml"), overrides=cut))
    example = Path(__file__).resolve().parents[2] / "examples" / "rtxpro6000-llama-3.1-8b.yaml"
    theirs = run(load_experiment(example, overrides=cut))
    cols = ["ttft_s", "tpot_s", "e2e_s", "instance_id"]
    assert mine.requests[cols].equals(theirs.requests[cols])
    # top-level engine: a replay --set reaches the single group
    again = run(load_experiment(tmp_path / "m.yaml", overrides={
        **cut, "engine.max_num_seqs": 4}))
    assert again.requests["ttft_s"].mean() > mine.requests["ttft_s"].mean()


# ------------------------------------------------------------------------------- CLI
def test_cli_converts_a_directory_and_one_file(configs: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "yaml"
    assert main(["cluster", "import", "llmservingsim", str(configs), "--out", str(out)]) == 0
    assert sorted(p.stem for p in out.glob("*.yaml")) == sorted(NAMES)
    printed = capsys.readouterr().out
    assert printed.count(" -> ") == len(NAMES)
    one = tmp_path / "one.yaml"
    assert main(["cluster", "import", "llmservingsim",
                 str(configs / "single_node_single_instance.json"), "--out", str(one),
                 "--check"]) == 0
    assert "[runs]" in capsys.readouterr().out
    exp = load_experiment(one)
    assert exp.groups()[0].hardware.gpu_memory_bytes == 96 * GIB_BYTES


def test_cli_reports_a_bad_config_without_a_traceback(configs: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    raw = _json(configs, "single_node_single_instance")
    raw["nodes"][0]["instances"][0]["foo"] = 1
    path = tmp_path / "x.json"
    path.write_text(json.dumps(raw, indent=4))
    assert main(["cluster", "import", "llmservingsim", str(path), "--out",
                 str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"x\.json:\d+: field 'nodes\.0\.instances\.0\.foo'", err), err
    assert "Traceback" not in err and not (tmp_path / "x.yaml").exists()


def test_import_errors_are_llmsim_errors(tmp_path: Path) -> None:
    with pytest.raises(LlmsimError):
        import_directory(tmp_path)  # no .json in it


def test_cli_refuses_a_profile_option_without_a_path(configs: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "import", "llmservingsim",
                 str(configs / "single_node_single_instance.json"), "--out",
                 str(tmp_path / "a.yaml"), "--profile", "H100"]) == 2
    assert "field '--profile': expected HARDWARE[/MODEL]=PATH" in capsys.readouterr().err


def test_deliberate_differences_are_stated_in_the_header(configs: Path) -> None:
    dp = import_config(configs / "single_node_dp_instance.json").text.split("\nname:")[0]
    assert "Deliberately unlike LLMServingSim" in dp and "lock-step" in dp
    pd = import_config(configs / "single_node_pd_instance.json").text.split("\nname:")[0]
    assert "'sender' NPUs" in pd
    single = import_config(configs / "single_node_single_instance.json").text
    assert "Deliberately unlike" not in single


def test_llmservingsim_defaults_fill_only_what_the_json_leaves_out(configs: Path) -> None:
    for name in NAMES:
        raw = _json(configs, name)
        exp = import_config(configs / f"{name}.json", cli_defaults=True).experiment
        for g in exp["instance_groups"]:  # named n<node>i<k>[-dp-<group>]
            node, k = g["name"][1:].split("-")[0].split("i")
            inst = raw["nodes"][int(node)]["instances"][int(k)]
            engine = _eff(exp, g, "engine")
            assert engine["max_num_seqs"] == inst.get("max_num_seqs", 128), name
            assert engine["block_size"] == inst.get("block_size", 16), name
            assert engine["num_gpu_blocks_override"] >= 2, name


def _leaf_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, item in items:
        out.append((*prefix, key))
        out += _leaf_paths(item, (*prefix, key))
    return out


@pytest.mark.parametrize("name", ["single_node_pd_per_instance_config",
                                  "single_node_power_instance", "single_node_cxl_instance",
                                  "dual_node_moe_dp_ep_intra_inter_instance"])
def test_any_field_given_a_wrong_value_is_a_located_error_never_a_crash(name: str,
                                                                        configs: Path,
                                                                        tmp_path: Path) -> None:
    raw = _json(configs, name)
    path = tmp_path / "c.json"
    for where in _leaf_paths(raw):
        for value in (None, "x", -1, [], {}, True, 10**30):
            edited = json.loads(json.dumps(raw))
            node = edited
            for key in where[:-1]:
                node = node[key]
            node[where[-1]] = value
            path.write_text(json.dumps(edited, indent=2))
            try:
                import_config(path)
            except ConfigError as exc:
                assert exc.path == str(path) and exc.field, (where, value, exc)


def test_cli_options_reach_the_yaml(configs: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.yaml"
    trace = "llmservingsim/workloads/example_trace.jsonl"
    assert main(["cluster", "import", "llmservingsim",
                 str(configs / "single_node_multi_instance.json"), "--out", str(out),
                 "--llmservingsim-defaults", "--router", "least_loaded", "--trace", trace]) == 0
    exp = yaml.safe_load(out.read_text())
    assert exp["engine"]["max_num_seqs"] == 128 and exp["router"] == "least_loaded"
    assert exp["trace"]["path"] == trace
    assert "least_loaded" in str(load_experiment(out).router)
