"""Import LLMServingSim 2.0 cluster configs (``configs/cluster/*.json``) as llmsim experiments.

``llmsim cluster import llmservingsim CONFIG.json`` writes the experiment YAML of one config;
given a directory it converts every ``*.json`` in it. Every field of the JSON is in
:data:`FIELDS`: mapped onto an llmsim key, checked against another field, or knowingly
ignored with the reason. A field that is not in the table is refused with the file, the
line and the dotted field, so nothing is dropped silently.

What a config says that llmsim does not model yet (prefill/decode roles, pipeline
parallelism, CXL memory and weight placement, PIM, power blocks, data parallel groups across
nodes, expert-parallel layouts vLLM has no equivalent of) is written to YAML keys all the
same; loading or replaying the experiment then stops with a located ``"not supported yet:
..."`` error naming the feature (the config layer, :mod:`llmsim.experiment`, and
:func:`llmsim.replay.check_parallel_supported` refuse them). The keys are listed in
``docs/cluster-semantics.md`` ("Importing LLMServingSim configs").

Facts about LLMServingSim used here (casys-kaist/LLMServingSim @ 5daddb2, the commit the
shared data was taken from):

- sizes in GB are binary: ``GB_TO_BYTE = 1024**3`` (``serving/core/memory_model.py``);
  bandwidths in GB/s go to ASTRA-Sim, whose analytical backend converts a GB/s as
  ``2**30`` bytes per second (astra-network-analytical ``bw_GBps_to_Bpns``); latencies are ns;
- ``num_npus = tp_size x pp_size``; a missing ``pp_size`` is 1, a missing one of
  ``num_npus`` / ``tp_size`` is inferred from the other; ``ep_size`` defaults to ``tp_size``
  for a MoE model and 1 for a dense one; in a ``dp_group`` ``ep_size`` is the EP degree of the
  whole group (``serving/core/config_builder.py``, ``_resolve_parallelism``,
  ``_resolve_dp_groups``);
- instances sharing a ``dp_group`` string form one data-parallel group;
- ``max_num_seqs: 0`` means unlimited; ``max_num_batched_tokens: 0`` means the model's
  ``max_position_embeddings``; per-instance engine fields override LLMServingSim's
  command-line flags (``configs/cluster/README.md``, ``serving/__main__.py``);
- ``npu_mem.mem_util`` (default 0.9) sizes the KV cache as ``(mem_size x mem_util - weights)
  // block bytes``, weights and KV only (``serving/core/memory_model.py``): a calibration of
  that formula, not vLLM's ``gpu_memory_utilization`` although LLMServingSim calls it so; the
  importer writes the block count it gives (:func:`_llmservingsim_blocks`);
- ``dtype`` picks the profile variant folder (``bfloat16`` -> ``bf16``), falling back to the
  model config's ``torch_dtype``, then bfloat16.

Engine settings LLMServingSim takes from its command line (``--max-num-seqs`` 128,
``--max-num-batched-tokens`` 2048, ...) are not in the JSON: where the JSON does not set
one, the experiment keeps llmsim's default, which is vLLM 0.19's (``max_num_seqs`` 256).
No workload is in the JSON either: the trace is the ShareGPT workload of the served model
in the data (Llama-3.1-70B uses the Llama-3.1-8B one: the Llama 3.1 models share one
tokenizer), or the one given with ``--trace``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from llmsim.cluster.parallel import ParallelConfig, check_supported
from llmsim.data.paths import dataset_path
from llmsim.errors import ConfigError, DataNotFoundError
from llmsim.experiment import MAX_GPUS_PER_NODE, MAX_INSTANCES
from llmsim.safeio import read_text

__all__ = [
    "FIELDS",
    "GIB_BYTES",
    "LLMSERVINGSIM_CLI_DEFAULTS",
    "FieldRule",
    "ImportedConfig",
    "import_config",
    "import_directory",
    "write_imported",
]

GIB_BYTES = 2**30
"""LLMServingSim's GB (``GB_TO_BYTE = 1024 * 1024 * 1024``, ``serving/core/memory_model.py``),
also ASTRA-Sim's GB in GB/s (astra-network-analytical ``bw_GBps_to_Bpns``)."""

MAX_CONFIG_BYTES = 4 * 2**20
"""Ceiling on one config file, bytes: the largest of the 27 shipped configs is 3.7 KB."""

_DATA_PREFIX = "llmservingsim"
"""Where the data holds LLMServingSim's files (``$LLMSIM_DATA_DIR/llmservingsim/...``)."""

_DTYPE_VARIANTS = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "fp8": "fp8",
                   "int8": "int8"}
"""LLMServingSim ``--dtype`` choices -> profile variant folder (``serving/__main__.py``:
``--dtype`` choices; the profiles in the data are ``bf16``)."""

_TRACES = {
    "meta-llama/Llama-3.1-8B": "sharegpt-llama-3.1-8b-300-sps10.jsonl",
    "meta-llama/Llama-3.1-70B": "sharegpt-llama-3.1-8b-300-sps10.jsonl",
    "Qwen/Qwen3-32B": "sharegpt-qwen3-32b-300-sps10.jsonl",
    "Qwen/Qwen3-30B-A3B-Instruct-2507": "sharegpt-qwen3-30b-a3b-300-sps10.jsonl",
}
"""Model -> ShareGPT workload of the data tokenized for it (``llmservingsim/workloads/``)."""

LLMSERVINGSIM_CLI_DEFAULTS: Mapping[str, Any] = {
    "max_num_seqs": 128, "max_num_batched_tokens": 2048, "block_size": 16,
    "long_prefill_token_threshold": 0, "enable_prefix_caching": True,
    "enable_chunked_prefill": True, "scheduler_reserve_full_isl": True,
    "gpu_memory_utilization": 0.9,
}
"""LLMServingSim's command-line defaults of the engine settings a config may override
(``serving/__main__.py`` argparse: ``--max-num-seqs 128``, ``--max-num-batched-tokens 2048``,
``--block-size 16``, ``--long-prefill-token-threshold 0``, ``--enable-prefix-caching``,
``--enable-chunked-prefill``, ``--reserve-full-isl``, ``--npu-memory-utilization 0.9``), in
vLLM's names. Written where the JSON sets none only with ``cli_defaults=True``; otherwise
llmsim's (vLLM 0.19's) defaults apply, which differ in ``max_num_seqs`` (256)."""

_LAYER_NAMES = ("embedding", "final_layernorm", "lm_head")
"""Named layers a ``placement.layers`` entry may address (LLMServingSim configs)."""


@dataclasses.dataclass(frozen=True, slots=True)
class FieldRule:
    """What the importer does with one LLMServingSim field.

    Attributes:
        pattern: dotted field, ``[]`` for any list item, ``*`` for a name chosen by the
            user (the hardware name under ``power.npu``, a layer name under
            ``placement.layers``).
        action: ``"mapped"`` (written to ``target``), ``"checked"`` (validated against
            other fields, nothing of its own to write), ``"ignored"`` (knowingly not used)
            or ``"section"`` (a container whose fields have their own rules).
        target: the llmsim key (dotted, ``instance_groups[i]`` for the instance's group).
        note: unit conversion, reason for ignoring, or the feature that is not modelled yet.
        ignored: for a field used only in some configs, why it is not used in the others
            (written into the YAML's header next to the value).
    """

    pattern: str
    action: str
    target: str
    note: str
    ignored: str = ""


_UNMODELLED = "not modelled yet: the run stops with 'not supported yet'"
_LINK_WHY = ("no traffic crosses nodes; collectives (and P/D KV transfers) inside a node are "
             "priced from llmsim's link description of the GPU (measured tables, cited "
             "sources), not from this uncited ASTRA-Sim figure")
_CPU_WHY = ("LLMServingSim uses host memory only with its --prefix-storage CPU, "
            "--enable-local-offloading or --enable-attn-offloading command-line flags, which "
            "are not in the JSON")

FIELDS: tuple[FieldRule, ...] = (
    # ------------------------------------------------------------------ top level
    FieldRule("num_nodes", "checked", "cluster.nodes",
              "must equal the number of `nodes` entries"),
    FieldRule("link_bw", "mapped", "cluster.nodes[n].network.bandwidth_bytes_per_s",
              "GB/s (2^30 B/s) per ASTRA-Sim topology dimension (a scalar: every dimension); "
              "the outermost dimension becomes the inter-node network (per GPU, one "
              "direction) where a DP group spans nodes; otherwise ignored", _LINK_WHY),
    FieldRule("link_latency", "mapped", "cluster.nodes[n].network.latency_ns",
              "ns, per topology dimension; used as `link_bw` is", _LINK_WHY),
    FieldRule("nodes", "section", "cluster.nodes", "one llmsim node per entry, named n<i>"),
    FieldRule("cxl_mem", "section", "memory_tiers[cxl]",
              "CXL memory pool shared by the nodes: a memory tier {name: cxl, kind: cxl, "
              "shared: cluster}, written where a weight placement uses it (weights in CXL: "
              + _UNMODELLED + ")", "no weight placement of this config uses CXL memory"),
    FieldRule("cxl_mem.mem_size", "mapped", "memory_tiers[cxl].capacity_bytes",
              "GB x 2^30, the pool's total (LLMServingSim sizes its CXL prefix pool with it), "
              "divided by num_devices: capacity_bytes is per device"),
    FieldRule("cxl_mem.mem_bw", "mapped", "memory_tiers[cxl].bandwidth_bytes_per_s",
              "GB/s x 2^30, per device (ASTRA-Sim's memory-pool device bandwidth)"),
    FieldRule("cxl_mem.mem_latency", "mapped", "memory_tiers[cxl].latency_ns", "ns"),
    FieldRule("cxl_mem.num_devices", "mapped", "memory_tiers[cxl].num_devices",
              "devices (LLMServingSim default 1)"),
    # ------------------------------------------------------------------- per node
    FieldRule("nodes[]", "section", "cluster.nodes[n]", ""),
    FieldRule("nodes[].num_instances", "checked", "instance_groups",
              "must equal the number of the node's `instances`"),
    FieldRule("nodes[].instances", "section", "instance_groups",
              "one instance group per instance (count 1, named n<node>i<k>); the members of "
              "a dp_group form one group with engine.data_parallel_size"),
    FieldRule("nodes[].cpu_mem", "section", "memory_tiers[cpu], pim",
              "host DRAM of the node: a memory tier {name: cpu, kind: dram, shared: node} where "
              "a weight placement uses it; its size feeds the power block's DIMM count and "
              "the PIM capacity", _CPU_WHY),
    FieldRule("nodes[].cpu_mem.mem_size", "mapped", "memory_tiers[cpu].capacity_bytes",
              "GB x 2^30; also pim[].capacity_bytes and power.dram.num_dimms", _CPU_WHY),
    FieldRule("nodes[].cpu_mem.mem_bw", "mapped", "memory_tiers[cpu].bandwidth_bytes_per_s",
              "GB/s x 2^30", _CPU_WHY),
    FieldRule("nodes[].cpu_mem.mem_latency", "mapped", "memory_tiers[cpu].latency_ns", "ns",
              _CPU_WHY),
    FieldRule("nodes[].cpu_mem.pim_config", "mapped", "pim[].device",
              "PIM device config name (LLMServingSim configs/pim/<name>.ini; LLMServingSim "
              "runs decode attention on it with --enable-attn-offloading): " + _UNMODELLED),
    FieldRule("nodes[].power", "section", "cluster.nodes[n].power",
              "LLMServingSim's per-component power model of the node -> llmsim's PowerConfig "
              "(docs/power.md)"),
    FieldRule("nodes[].power.base_node_power", "mapped", "cluster.nodes[n].power.base_node_w",
              "W"),
    FieldRule("nodes[].power.npu", "section", "cluster.nodes[n].power.gpu", "per GPU type"),
    FieldRule("nodes[].power.npu.*", "section", "cluster.nodes[n].power.gpu.<hardware>", ""),
    FieldRule("nodes[].power.npu.*.idle_power", "mapped",
              "cluster.nodes[n].power.gpu.<hardware>.idle_w", "W"),
    FieldRule("nodes[].power.npu.*.standby_power", "mapped",
              "cluster.nodes[n].power.gpu.<hardware>.standby_w", "W"),
    FieldRule("nodes[].power.npu.*.active_power", "mapped",
              "cluster.nodes[n].power.gpu.<hardware>.active_w", "W"),
    FieldRule("nodes[].power.npu.*.standby_duration", "mapped",
              "cluster.nodes[n].power.gpu.<hardware>.standby_s",
              "s (serving/core/power_model.py reads it as standby_duration_s)"),
    FieldRule("nodes[].power.cpu", "section", "cluster.nodes[n].power.cpu", ""),
    FieldRule("nodes[].power.cpu.idle_power", "mapped", "cluster.nodes[n].power.cpu.idle_w", "W"),
    FieldRule("nodes[].power.cpu.active_power", "mapped", "cluster.nodes[n].power.cpu.active_w",
              "W"),
    FieldRule("nodes[].power.cpu.util", "mapped", "cluster.nodes[n].power.cpu.utilization",
              "fraction"),
    FieldRule("nodes[].power.dram", "section", "cluster.nodes[n].power.dram", ""),
    FieldRule("nodes[].power.dram.dimm_size", "mapped", "cluster.nodes[n].power.dram.num_dimms",
              "num_dimms = cpu_mem.mem_size // dimm_size (GB), as serving/core/power_model.py "
              "counts DIMMs"),
    FieldRule("nodes[].power.dram.idle_power", "mapped",
              "cluster.nodes[n].power.dram.idle_w_per_dimm", "W per DIMM"),
    FieldRule("nodes[].power.dram.energy_per_bit", "mapped",
              "cluster.nodes[n].power.dram.energy_pj_per_bit", "pJ/bit"),
    FieldRule("nodes[].power.link", "section", "cluster.nodes[n].power.link", ""),
    FieldRule("nodes[].power.link.num_links", "mapped", "cluster.nodes[n].power.link.count",
              "links"),
    FieldRule("nodes[].power.link.idle_power", "mapped", "cluster.nodes[n].power.link.idle_w",
              "W per link"),
    FieldRule("nodes[].power.link.energy_per_bit", "mapped",
              "cluster.nodes[n].power.link.energy_pj_per_bit", "pJ/bit"),
    FieldRule("nodes[].power.nic", "section", "cluster.nodes[n].power.nic", ""),
    FieldRule("nodes[].power.nic.num_nics", "mapped", "cluster.nodes[n].power.nic.count", "NICs"),
    FieldRule("nodes[].power.nic.idle_power", "mapped", "cluster.nodes[n].power.nic.idle_w",
              "W per NIC"),
    FieldRule("nodes[].power.storage", "section", "cluster.nodes[n].power.storage", ""),
    FieldRule("nodes[].power.storage.num_devices", "mapped",
              "cluster.nodes[n].power.storage.count", "devices"),
    FieldRule("nodes[].power.storage.idle_power", "mapped",
              "cluster.nodes[n].power.storage.idle_w", "W per device"),
    # --------------------------------------------------------------- per instance
    FieldRule("nodes[].instances[]", "section", "instance_groups[i]", ""),
    FieldRule("nodes[].instances[].model_name", "mapped", "instance_groups[i].model",
              "llmservingsim/configs/model/<model_name>.json"),
    FieldRule("nodes[].instances[].hardware", "mapped",
              "instance_groups[i].hardware.name, cluster.nodes[n].gpus.hardware, "
              "cluster.nodes[n].link, instance_groups[i].profile",
              "the link description llmsim/hardware/data/ of that name prices the node's "
              "collectives; the profile is llmservingsim/profiles/<hardware>/<model_name>/"
              "<dtype variant>"),
    FieldRule("nodes[].instances[].npu_mem", "section", "instance_groups[i].hardware", ""),
    FieldRule("nodes[].instances[].npu_mem.mem_size", "mapped",
              "instance_groups[i].hardware.gpu_memory_bytes, cluster.nodes[n].gpus.gpu_memory_bytes",
              "GB x 2^30"),
    FieldRule("nodes[].instances[].npu_mem.mem_bw", "ignored", "",
              "ASTRA-Sim's local memory bandwidth, used by LLMServingSim only for memory "
              "transfers it models (weight offload, --enable-local-offloading); llmsim's "
              "operator times come from the measured profile, which includes the GPU's "
              "memory bandwidth"),
    FieldRule("nodes[].instances[].npu_mem.mem_latency", "ignored", "",
              "ASTRA-Sim's local memory latency, ignored as npu_mem.mem_bw"),
    FieldRule("nodes[].instances[].npu_mem.mem_util", "mapped",
              "instance_groups[i].engine.num_gpu_blocks_override, gpu_memory_utilization",
              "fraction; a calibration of LLMServingSim's KV sizing (weights and KV only: "
              "(mem_size x mem_util - weights) // block bytes), so the importer writes the block "
              "count that formula gives (RTX 4090: 2,588 = the measured run's) as "
              "num_gpu_blocks_override, and the fraction as gpu_memory_utilization"),
    FieldRule("nodes[].instances[].num_npus", "checked", "instance_groups[i].placement.gpus",
              "must equal tp_size x pp_size; the instance takes num_npus GPUs of its node, "
              "numbered in instance order (a prefill instance's extra 'sender' NPUs of "
              "LLMServingSim are a simulator artifact and take no GPU)"),
    FieldRule("nodes[].instances[].tp_size", "mapped",
              "instance_groups[i].engine.tensor_parallel_size",
              "inferred from num_npus // pp_size when missing, else 1"),
    FieldRule("nodes[].instances[].pp_size", "mapped",
              "instance_groups[i].engine.pipeline_parallel_size",
              "default 1; > 1: vLLM 0.19's async PP, with MoE DP and EP too"),
    FieldRule("nodes[].instances[].ep_size", "mapped",
              "instance_groups[i].engine.enable_expert_parallel",
              "MoE: true when ep_size = dp x tp (vLLM's EP group: every DP x TP rank of a "
              "pipeline stage), false at 1; any other degree has no vLLM counterpart: "
              "imported as vLLM's EP over dp x tp (enable_expert_parallel true) with a "
              "WARNING in the header and on the command line naming the difference; "
              "dense: > 1 is written as enable_expert_parallel true"),
    FieldRule("nodes[].instances[].dp_group", "mapped",
              "instance_groups[i].engine.data_parallel_size",
              "members of one dp_group: one group of data_parallel_size = their number; "
              "members on other nodes go to instance_groups[i].placement.spans (their "
              "collectives cross the nodes' network). LLMServingSim runs a dense DP group in "
              "lock-step; "
              "vLLM (and llmsim) run dense DP ranks as independent engines"),
    FieldRule("nodes[].instances[].pd_type", "mapped", "instance_groups[i].role",
              "prefill | decode (" + _UNMODELLED + "); null: no key (the instance does both)"),
    FieldRule("nodes[].instances[].max_num_seqs", "mapped",
              "instance_groups[i].engine.max_num_seqs",
              "0 (LLMServingSim: unlimited) has no vLLM counterpart and is refused"),
    FieldRule("nodes[].instances[].max_num_batched_tokens", "mapped",
              "instance_groups[i].engine.max_num_batched_tokens",
              "0: the model's max_position_embeddings, as LLMServingSim resolves it"),
    FieldRule("nodes[].instances[].long_prefill_token_threshold", "mapped",
              "instance_groups[i].engine.long_prefill_token_threshold", "tokens (0: none)"),
    FieldRule("nodes[].instances[].block_size", "mapped", "instance_groups[i].engine.block_size",
              "tokens"),
    FieldRule("nodes[].instances[].dtype", "mapped", "instance_groups[i].profile",
              "picks the profile variant folder (bfloat16 -> bf16)"),
    FieldRule("nodes[].instances[].kv_cache_dtype", "checked", "",
              "auto (the model's dtype, what llmsim sizes the KV cache with); fp8 is refused "
              "(not supported yet)"),
    FieldRule("nodes[].instances[].enable_chunked_prefill", "mapped",
              "instance_groups[i].engine.enable_chunked_prefill",
              "vLLM's name; true is vLLM V1's default; false: a waiting request is admitted "
              "whole or admission stops for the step, as vLLM's scheduler does"),
    FieldRule("nodes[].instances[].enable_prefix_caching", "mapped",
              "instance_groups[i].engine.enable_prefix_caching",
              "LLMServingSim's and vLLM's default: true"),
    FieldRule("nodes[].instances[].reserve_full_isl", "mapped",
              "instance_groups[i].engine.scheduler_reserve_full_isl",
              "LLMServingSim's --reserve-full-isl mirrors vLLM's scheduler_reserve_full_isl"),
    FieldRule("nodes[].instances[].enable_local_offloading", "checked", "",
              "false: nothing to write; true (weights streamed from memory) is refused, not "
              "supported yet"),
    FieldRule("nodes[].instances[].enable_attn_offloading", "checked", "",
              "false: nothing to write; true (attention on PIM) is refused, not supported yet"),
    FieldRule("nodes[].instances[].enable_sub_batch_interleaving", "checked", "",
              "false: nothing to write; true (NPU/PIM sub-batch overlap) is refused, not "
              "supported yet"),
    FieldRule("nodes[].instances[].enable_block_copy", "ignored", "",
              "simulator-internal: LLMServingSim replays one transformer block's trace for "
              "every layer; no vLLM counterpart, no effect on llmsim's layer pricing"),
    FieldRule("nodes[].instances[].placement", "section", "instance_groups[i].weight_offload",
              "where weights and KV live, per layer. Weights outside GPU memory: "
              "weight_offload (" + _UNMODELLED + "); an all-GPU placement is llmsim's (and "
              "vLLM's) layout and writes nothing"),
    FieldRule("nodes[].instances[].placement.default", "section",
              "instance_groups[i].weight_offload.default", ""),
    FieldRule("nodes[].instances[].placement.blocks", "section",
              "instance_groups[i].weight_offload.layers", ""),
    FieldRule("nodes[].instances[].placement.blocks[]", "section",
              "instance_groups[i].weight_offload.layers", ""),
    FieldRule("nodes[].instances[].placement.blocks[].blocks", "mapped",
              "instance_groups[i].weight_offload.layers (keys)",
              "'0-3' / '8,9,10' -> decoder-layer ranges '0-3', '8-10'"),
    FieldRule("nodes[].instances[].placement.layers", "section",
              "instance_groups[i].weight_offload.<layer>",
              "named layers: " + ", ".join(_LAYER_NAMES)),
    FieldRule("nodes[].instances[].placement.layers.*", "section",
              "instance_groups[i].weight_offload.<layer>", ""),
) + tuple(
    FieldRule(f"nodes[].instances[].placement.{where}.{key}", *rule)
    for where, at in (("default", "default"), ("blocks[]", "layers.<range>"),
                      ("layers.*", "<layer>"))
    for key, rule in (
        ("weights", ("mapped", f"instance_groups[i].weight_offload.{at}",
                     "npu -> gpu; cpu; cxl:<device>")),
        ("kv_loc", ("checked", "", "npu (the KV cache in GPU memory, llmsim's layout); "
                    "another location is refused (not supported yet)")),
        ("kv_evict_loc", ("ignored", "", "where LLMServingSim swaps evicted KV blocks: vLLM "
                          "V1 preempts by recomputation (no swap), which llmsim mirrors; "
                          "'cpu' is LLMServingSim's default for every config")))
)
"""Every LLMServingSim cluster-config field the importer knows (any other is refused)."""

_RULES = {r.pattern: r for r in FIELDS}


@dataclasses.dataclass(frozen=True, slots=True)
class ImportedConfig:
    """One converted config.

    Attributes:
        source: the JSON file.
        experiment: the experiment mapping (YAML key names), as written.
        text: the YAML text (a comment header, then the mapping).
        ignored: ``(dotted JSON field, value, reason)`` of every field knowingly not used.
        unsupported: ``(llmsim key, feature)`` of every key written that llmsim refuses
            with "not supported yet" at the time of the import.
        data_gaps: ``(llmsim key, what)`` of inputs the data does not hold (a profile
            bundle, or its table at the instance's TP degree): the run stops there.
        warnings: layouts LLMServingSim describes that vLLM cannot run, imported as the
            closest vLLM layout (each says what differs); also at the top of the YAML and
            printed by the CLI.
    """

    source: Path
    experiment: dict[str, Any]
    text: str
    ignored: tuple[tuple[str, Any, str], ...]
    unsupported: tuple[tuple[str, str], ...]
    data_gaps: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def runnable(self) -> bool:
        """Nothing refused and nothing missing: the experiment should replay."""
        return not self.unsupported and not self.data_gaps


# ------------------------------------------------------------------------- reading
class _Json:
    """A parsed config with the line of every key (for located errors)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        text = read_text(path, what="LLMServingSim cluster config", error=ConfigError,
                         max_bytes=MAX_CONFIG_BYTES)
        try:
            self.data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc.msg} (column {exc.colno})", path=path,
                              line=exc.lineno) from None
        self.lines = _json_lines(text)

    def error(self, field: str, message: str) -> ConfigError:
        """A :class:`ConfigError` located at dotted ``field`` (its line where known)."""
        key = field
        while key and key not in self.lines:
            key = key.rpartition(".")[0]
        return ConfigError(message, path=self.path, line=self.lines.get(key), field=field)


def _json_lines(text: str) -> dict[str, int]:
    """Dotted key path -> 1-based line, from the YAML reader (JSON is a YAML subset).

    Empty when the YAML reader cannot follow the text (errors then name the field only).
    """
    from llmsim.yamlfile import loads_yaml

    try:
        return dict(loads_yaml(text, what="LLMServingSim cluster config").lines)
    except ConfigError:
        return {}


def _pattern(parts: Sequence[str | int]) -> str:
    """The :data:`FIELDS` pattern of a concrete path (indices -> ``[]``, names -> ``*``)."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += "[]"
            continue
        named = out.endswith((".power.npu", ".placement.layers"))
        out = f"{out}.{'*' if named else part}" if out else str(part)
    return out


def _dotted(parts: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in parts)


def _walk(value: Any, parts: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...],
                                                                           Any]]:
    """Every (path, value) below ``value`` (mapping keys, structured list items), depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*parts, key), item
            yield from _walk(item, (*parts, key))
    elif isinstance(value, list):  # scalar items are the list field's own value
        for i, item in enumerate(value):
            if isinstance(item, dict | list):
                yield (*parts, i), item
                yield from _walk(item, (*parts, i))


def _check_fields(doc: _Json) -> None:
    """Refuse a field the table does not know (file, line, dotted field)."""
    if not isinstance(doc.data, dict):
        raise ConfigError("a cluster config is a JSON object", path=doc.path)
    for parts, _ in _walk(doc.data):
        pattern = _pattern(parts)
        if pattern not in _RULES:
            parent = pattern.rpartition(".")[0]
            known = sorted({p.rpartition(".")[2] for p in _RULES
                            if p.rpartition(".")[0] == parent and not p.endswith("[]")})
            raise doc.error(_dotted(parts), "unknown LLMServingSim field (known here: "
                            f"{', '.join(known)}); refused rather than dropped")


# ----------------------------------------------------------------------- values
_NULLABLE = ("pd_type", "dp_group")
"""Fields LLMServingSim reads ``null`` in as "none" (``configs/cluster/README.md``: String/null);
any other ``null`` is refused (LLMServingSim would use it as a value and fail later)."""

MAX_INT = 2**40
"""Largest integer any field may hold (1 Ti: above any GPU count, token count or GB size in
a cluster; keeps arithmetic on GPU numbers bounded)."""


def _get(doc: _Json, obj: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...],
         default: Any = None, *, required: bool = False) -> Any:
    """``obj[key]`` checked to be of ``kind`` (bool is never a number; ``null`` only for
    :data:`_NULLABLE` fields); ``default`` if absent."""
    field = f"{where}.{key}" if where else key
    if key not in obj:
        if required:
            raise doc.error(where or key, f"missing required field {key!r}")
        return default
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    bad_bool = isinstance(value, bool) and bool not in kinds
    if value is None and key not in _NULLABLE:
        names = " or ".join(k.__name__ for k in kinds)
        raise doc.error(field, f"must be {names}, got null")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise doc.error(field, f"{value} exceeds {MAX_INT}")
    if value is not None and (bad_bool or not isinstance(value, kinds)):
        names = " or ".join(k.__name__ for k in kinds)
        raise doc.error(field, f"must be {names}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise doc.error(field, f"must be finite, got {value!r}")
    return value


def _positive_int(doc: _Json, obj: Mapping[str, Any], key: str, where: str,
                  default: int | None = None, *, minimum: int = 1,
                  maximum: int = MAX_INT) -> int | None:
    value = _get(doc, obj, key, where, int, default)
    field = f"{where}.{key}" if where else key
    if value is not None and value < minimum:
        raise doc.error(field, f"must be >= {minimum}, got {value}")
    if value is not None and value > maximum:
        raise doc.error(field, f"must be <= {maximum}, got {value}")
    return value  # type: ignore[no-any-return]


def _number(doc: _Json, obj: Mapping[str, Any], key: str, where: str, *,
            required: bool = True, minimum: float = 0.0) -> float | None:
    value = _get(doc, obj, key, where, (int, float), required=required)
    if value is not None and value < minimum:
        raise doc.error(f"{where}.{key}", f"must be >= {minimum:g}, got {value}")
    return value  # type: ignore[no-any-return]


def _whole(value: float | None) -> float | int | None:
    """``value`` as an int when it is a whole number (``20000``, not ``20000.0``)."""
    return int(value) if value is not None and float(value).is_integer() else value


def _bytes(gib: float) -> int:
    """LLMServingSim GB (``2**30`` bytes) -> bytes."""
    return int(round(gib * GIB_BYTES))


def _per_dim(doc: _Json, key: str) -> list[float]:
    raw = doc.data.get(key)
    if raw is None:
        raise doc.error(key, f"missing required field {key!r} (LLMServingSim requires it)")
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise doc.error(key, "an empty list")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise doc.error(f"{key}.{i}" if isinstance(raw, list) else key,
                            f"must be a number >= 0, got {v!r}")
    return [float(v) for v in values]


def _layers(doc: _Json, expr: Any, field: str, num_layers: int) -> list[int]:
    """LLMServingSim's block expression (``"0-3"``, ``"8,9,10"``) -> layer numbers."""
    if not isinstance(expr, str):
        raise doc.error(field, f"must be a string like '0-3' or '8,9,10', got {expr!r}")
    out: list[int] = []
    for piece in (p.strip() for p in expr.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", piece)
        if m is None:
            raise doc.error(field, f"{piece!r} is not a layer number or range")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi < lo or hi >= num_layers:
            raise doc.error(field, f"layers {piece} outside 0-{num_layers - 1} (the model's "
                            "decoder layers)")
        out.extend(range(lo, hi + 1))
    return out


# ------------------------------------------------------------------ model facts
@dataclasses.dataclass(frozen=True, slots=True)
class _Model:
    name: str
    path: str
    is_moe: bool
    num_experts: int
    num_layers: int
    max_position_embeddings: int
    torch_dtype: str | None


def _model(doc: _Json, name: str, field: str, cache: dict[str, _Model]) -> _Model:
    if name in cache:
        return cache[name]
    rel = f"{_DATA_PREFIX}/configs/model/{name}.json"
    try:
        path = dataset_path(rel)
    except DataNotFoundError as exc:
        raise doc.error(field, f"no model config for {name!r}: {exc}") from None
    try:
        cfg = json.loads(read_text(path, what="model config", error=ConfigError))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from None
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 0)
    found = _Model(name=name, path=rel, is_moe="num_local_experts" in cfg or "num_experts" in cfg,
                   num_experts=experts, num_layers=int(cfg.get("num_hidden_layers", 0)),
                   max_position_embeddings=int(cfg.get("max_position_embeddings", 0)),
                   torch_dtype=cfg.get("torch_dtype") or cfg.get("dtype"))
    cache[name] = found
    return found


def _exists(rel: str) -> bool:
    try:
        dataset_path(rel)
    except DataNotFoundError:
        return False
    return True


# --------------------------------------------------------------------- converting
@dataclasses.dataclass
class _Instance:
    """One JSON instance, resolved."""

    node: int
    index: int
    where: str
    model: _Model
    hardware: str
    gpu_memory_bytes: int
    tp: int
    pp: int
    ep: int
    dp_group: str | None
    role: str | None
    engine: dict[str, Any]
    profile: str
    placement: dict[str, Any] | None
    gpus: list[int] = dataclasses.field(default_factory=list)

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp


class _Converter:
    def __init__(self, doc: _Json) -> None:
        self.doc = doc
        self.models: dict[str, _Model] = {}
        self.ignored: list[tuple[str, Any, str]] = []
        self.unsupported: list[tuple[str, str]] = []
        self.data_gaps: list[tuple[str, str]] = []
        self.profiles: dict[str, str] = {}
        self.cli_defaults = False
        self.differences: list[str] = []
        self.warnings: list[str] = []

    def ignore(self, field: str, value: Any) -> None:
        rule = _RULES[_pattern(_parts(field))]
        self.ignored.append((field, value, rule.ignored or rule.note))

    # ---------------------------------------------------------------- instances
    def instance(self, raw: Any, node: int, k: int) -> _Instance:
        doc = self.doc
        where = f"nodes.{node}.instances.{k}"
        if not isinstance(raw, dict):
            raise doc.error(where, "an instance is a JSON object")
        for key in ("model_name", "hardware", "npu_mem", "pd_type"):
            if key not in raw:
                raise doc.error(where, f"missing required field {key!r} (LLMServingSim "
                                "requires it)")
        name = _get(doc, raw, "model_name", where, str)
        hardware = _get(doc, raw, "hardware", where, str)
        if not name or not hardware:
            raise doc.error(f"{where}.{'model_name' if not name else 'hardware'}", "empty")
        model = _model(doc, name, f"{where}.model_name", self.models)
        npu = _get(doc, raw, "npu_mem", where, dict)
        mem = f"{where}.npu_mem"
        size = _number(doc, npu, "mem_size", mem, minimum=1e-9)
        _number(doc, npu, "mem_bw", mem)
        _number(doc, npu, "mem_latency", mem)
        for key in ("mem_bw", "mem_latency"):
            self.ignore(f"{mem}.{key}", npu[key])
        engine: dict[str, Any] = {}
        util = _number(doc, npu, "mem_util", mem, required=False, minimum=1e-9)
        if util is not None:
            if util > 1:
                raise doc.error(f"{mem}.mem_util", f"a fraction in (0, 1], got {util}")
            engine["gpu_memory_utilization"] = float(util)
        tp, pp, ep = self.parallel(raw, where, model)
        engine["tensor_parallel_size"] = tp
        engine["pipeline_parallel_size"] = pp
        role = _get(doc, raw, "pd_type", where, str)
        if role not in (None, "prefill", "decode"):
            raise doc.error(f"{where}.pd_type", f"must be 'prefill', 'decode' or null, got "
                            f"{role!r}")
        dp_group = _get(doc, raw, "dp_group", where, str)
        self.engine_fields(raw, where, model, engine)
        if self.cli_defaults:
            for key, value in LLMSERVINGSIM_CLI_DEFAULTS.items():
                engine.setdefault(key, value)
        dtype = _get(doc, raw, "dtype", where, str) or model.torch_dtype or "bfloat16"
        if dtype not in _DTYPE_VARIANTS:
            raise doc.error(f"{where}.dtype", f"unknown dtype {dtype!r} (LLMServingSim's: "
                            f"{', '.join(_DTYPE_VARIANTS)})")
        kv_dtype = _get(doc, raw, "kv_cache_dtype", where, str, "auto")
        if kv_dtype != "auto":
            raise doc.error(f"{where}.kv_cache_dtype", f"not supported yet: kv_cache_dtype "
                            f"{kv_dtype!r} (llmsim sizes and prices the KV cache in the "
                            "model's dtype, 'auto')")
        for key in ("enable_local_offloading", "enable_attn_offloading",
                    "enable_sub_batch_interleaving"):
            if _get(doc, raw, key, where, bool, False):
                raise doc.error(f"{where}.{key}", f"not supported yet: {key} true "
                                "(weight offload / PIM attention of LLMServingSim)")
        if "enable_block_copy" in raw:
            _get(doc, raw, "enable_block_copy", where, bool)
            self.ignore(f"{where}.enable_block_copy", raw["enable_block_copy"])
        profile = (f"{_DATA_PREFIX}/profiles/{hardware}/{name}/{_DTYPE_VARIANTS[dtype]}")
        placement = self.placement(raw, where, model)
        return _Instance(node=node, index=k, where=where, model=model, hardware=hardware,
                         gpu_memory_bytes=_bytes(float(size or 0)), tp=tp, pp=pp, ep=ep,
                         dp_group=dp_group, role=role, engine=engine, profile=profile,
                         placement=placement)

    def parallel(self, raw: Mapping[str, Any], where: str, model: _Model
                 ) -> tuple[int, int, int]:
        """(tp, pp, ep) as LLMServingSim resolves them (``_resolve_parallelism``)."""
        doc = self.doc
        most = MAX_GPUS_PER_NODE  # an instance's GPUs are on one node
        npus = _positive_int(doc, raw, "num_npus", where, maximum=most)
        tp = _positive_int(doc, raw, "tp_size", where, maximum=most)
        pp = _positive_int(doc, raw, "pp_size", where, maximum=most) or 1
        given_pp = "pp_size" in raw
        if npus is not None and tp is not None:
            if npus != tp * pp:
                if npus % tp or (given_pp and pp != npus // tp):
                    raise doc.error(f"{where}.num_npus", f"num_npus {npus} != tp_size {tp} x "
                                    f"pp_size {pp}")
                pp = npus // tp
        elif npus is not None:
            if npus % pp:
                raise doc.error(f"{where}.num_npus", f"num_npus {npus} not divisible by "
                                f"pp_size {pp}")
            tp = npus // pp
        elif tp is None:
            tp = 1
        assert tp is not None
        ep = _positive_int(doc, raw, "ep_size", where, maximum=MAX_INSTANCES) or (
            tp if model.is_moe else 1)
        if model.is_moe and model.num_experts % ep:
            raise doc.error(f"{where}.ep_size", f"ep_size {ep} does not divide the model's "
                            f"{model.num_experts} experts")
        if model.num_layers and pp > model.num_layers:
            raise doc.error(f"{where}.pp_size", f"pp_size {pp} exceeds the model's "
                            f"{model.num_layers} layers")
        return tp, pp, ep

    def engine_fields(self, raw: Mapping[str, Any], where: str, model: _Model,
                      engine: dict[str, Any]) -> None:
        doc = self.doc
        seqs = _positive_int(doc, raw, "max_num_seqs", where, minimum=0)
        if seqs == 0:
            raise doc.error(f"{where}.max_num_seqs", "0 (LLMServingSim: unlimited) has no "
                            "vLLM counterpart; give a number of sequences")
        if seqs is not None:
            engine["max_num_seqs"] = seqs
        tokens = _positive_int(doc, raw, "max_num_batched_tokens", where, minimum=0)
        if tokens == 0:
            tokens = model.max_position_embeddings
        if tokens is not None:
            engine["max_num_batched_tokens"] = tokens
        threshold = _positive_int(doc, raw, "long_prefill_token_threshold", where, minimum=0)
        if threshold is not None:
            engine["long_prefill_token_threshold"] = threshold
        block = _positive_int(doc, raw, "block_size", where)
        if block is not None:
            engine["block_size"] = block
        for key, to in (("enable_prefix_caching", "enable_prefix_caching"),
                        ("reserve_full_isl", "scheduler_reserve_full_isl"),
                        ("enable_chunked_prefill", "enable_chunked_prefill")):
            value = _get(doc, raw, key, where, bool)
            if value is not None:
                engine[to] = value

    def placement(self, raw: Mapping[str, Any], where: str, model: _Model
                  ) -> dict[str, Any] | None:
        """H8's ``weight_offload`` of the instance (None: no placement block, or every
        weight in GPU memory, llmsim's layout). KV outside GPU memory is refused."""
        doc = self.doc
        block = _get(doc, raw, "placement", where, dict)
        if block is None:
            return None
        here = f"{where}.placement"

        def weights(rule: Any, field: str) -> str | None:
            if not isinstance(rule, dict):
                raise doc.error(field, "must be a JSON object")
            if "kv_loc" in rule and self.location(rule["kv_loc"], f"{field}.kv_loc") != "gpu":
                raise doc.error(f"{field}.kv_loc", "not supported yet: a KV cache outside GPU "
                                f"memory ({rule['kv_loc']!r})")
            if "kv_evict_loc" in rule:
                value = rule["kv_evict_loc"]
                self.location(value, f"{field}.kv_evict_loc")
                self.ignore(f"{field}.kv_evict_loc", value)
            if "weights" not in rule:
                return None
            return self.location(rule["weights"], f"{field}.weights")

        out: dict[str, Any] = {}
        if "default" in block:
            found = weights(block["default"], f"{here}.default")
            if found is not None:
                out["default"] = found
        blocks = _get(doc, block, "blocks", here, list) or []
        layers: dict[str, str] = {}
        for i, rule in enumerate(blocks):
            field = f"{here}.blocks.{i}"
            ids = _layers(doc, rule.get("blocks") if isinstance(rule, dict) else None,
                          f"{field}.blocks", model.num_layers)
            found = weights(rule, field)
            if found is not None:
                for text in _ranges(ids):
                    layers[text] = found
        if layers:
            out["layers"] = layers
        named = _get(doc, block, "layers", here, dict) or {}
        for lname, rule in named.items():
            if lname not in _LAYER_NAMES:
                raise doc.error(f"{here}.layers.{lname}", "unknown layer name (known: "
                                f"{', '.join(_LAYER_NAMES)})")
            found = weights(rule, f"{here}.layers.{lname}")
            if found is not None:
                out[lname] = found
        places = [out.get("default", "gpu"), *layers.values(),
                  *(out[n] for n in _LAYER_NAMES if n in out)]
        return None if all(p == "gpu" for p in places) else out

    def location(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"npu|cpu|cxl(:\d+)?", value):
            raise self.doc.error(field, f"must be 'npu', 'cpu' or 'cxl:<device>', got {value!r}")
        return "gpu" if value == "npu" else value


def _ranges(ids: Sequence[int]) -> list[str]:
    """Layer numbers as contiguous ranges (``[8, 9, 10, 12]`` -> ``["8-10", "12"]``)."""
    runs: list[list[int]] = []
    for x in sorted(set(ids)):
        if runs and x == runs[-1][1] + 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return [f"{lo}-{hi}" if hi != lo else str(lo) for lo, hi in runs]


def _parts(dotted: str) -> tuple[str | int, ...]:
    return tuple(int(p) if p.isdigit() else p for p in dotted.split("."))


def import_config(path: str | Path, *, trace: str | None = None, router: str | None = None,
                  name: str | None = None, profiles: Mapping[str, str] | None = None,
                  cli_defaults: bool = False) -> ImportedConfig:
    """Convert one LLMServingSim cluster config.

    Args:
        path: the JSON file.
        trace: trace path for the experiment (``format: llmservingsim``); default: the
            ShareGPT workload of the first instance's model in the data.
        router: llmsim routing policy (default: llmsim's, round robin). LLMServingSim's
            routing policy is a command-line flag (``--request-routing-policy``, default
            ``LOAD``: fewest ``4 x waiting + running`` on live state), not in the JSON.
        name: experiment name (default: the file's stem).
        profiles: cost source per hardware (``"H100"``, any case) or per hardware and model
            (``"H100/meta-llama/Llama-3.1-70B"``) -> profile path, used instead of the
            LLMServingSim bundle of the data (e.g. a ``.pb`` built by ``llmsim profile import
            aiconfigurator`` for hardware the bundles do not cover).
        cli_defaults: write LLMServingSim's command-line defaults
            (:data:`LLMSERVINGSIM_CLI_DEFAULTS`) for engine settings the JSON leaves out, to
            replay what ``python -m serving --cluster-config CONFIG`` would simulate;
            default: leave them out (llmsim's defaults, vLLM 0.19's).

    Returns:
        the converted experiment (see :class:`ImportedConfig`).

    Raises:
        ConfigError: unreadable or invalid JSON; an unknown field; a missing required field
            or a value LLMServingSim itself refuses; a value with no llmsim/vLLM
            counterpart that is not a feature (``max_num_seqs: 0``, ``kv_cache_dtype: fp8``,
            offloading flags, KV outside GPU memory) — each naming the file, line and
            dotted field.
    """
    doc = _Json(Path(path))
    _check_fields(doc)
    conv = _Converter(doc)
    conv.profiles = {k.lower(): v for k, v in (profiles or {}).items()}
    conv.cli_defaults = cli_defaults
    data = doc.data
    nodes_raw = _get(doc, data, "nodes", "", list, required=True)
    num_nodes = _positive_int(doc, data, "num_nodes", "")
    if num_nodes is None:
        raise doc.error("num_nodes", "missing required field 'num_nodes'")
    if num_nodes != len(nodes_raw):
        raise doc.error("num_nodes", f"{num_nodes} but {len(nodes_raw)} nodes are listed")
    link = (_per_dim(doc, "link_bw"), _per_dim(doc, "link_latency"))
    instances: list[_Instance] = []
    node_cpu: list[dict[str, Any]] = []
    for n, node in enumerate(nodes_raw):
        where = f"nodes.{n}"
        if not isinstance(node, dict):
            raise doc.error(where, "a node is a JSON object")
        insts = _get(doc, node, "instances", where, list, required=True)
        count = _positive_int(doc, node, "num_instances", where)
        if count is None:
            raise doc.error(where, "missing required field 'num_instances'")
        if count != len(insts):
            raise doc.error(f"{where}.num_instances", f"{count} but {len(insts)} instances "
                            "are listed")
        cpu = _get(doc, node, "cpu_mem", where, dict, required=True)
        cpu_where = f"{where}.cpu_mem"
        pim = _get(doc, cpu, "pim_config", cpu_where, str)
        node_cpu.append({
            "capacity_bytes": _bytes(float(_number(doc, cpu, "mem_size", cpu_where) or 0)),
            "bandwidth_bytes_per_s": _bytes(float(_number(doc, cpu, "mem_bw", cpu_where,
                                                          required=pim is None) or 0)),
            "latency_ns": _whole(_number(doc, cpu, "mem_latency", cpu_where,
                                         required=pim is None)),
            "pim_device": pim, "raw": cpu})
        first_gpu = 0
        for k, raw in enumerate(insts):
            inst = conv.instance(raw, n, k)
            inst.gpus = list(range(first_gpu, first_gpu + inst.num_gpus))
            first_gpu += inst.num_gpus
            instances.append(inst)
    if not instances:
        raise doc.error("nodes", "no instances")
    exp = _experiment(doc, conv, instances, node_cpu, link, trace=trace, router=router,
                      name=name or doc.path.stem)
    return ImportedConfig(source=doc.path, experiment=exp,
                          text=_render(doc.path, exp, conv),
                          ignored=tuple(conv.ignored), unsupported=tuple(conv.unsupported),
                          data_gaps=tuple(conv.data_gaps), warnings=tuple(conv.warnings))


def _dp_groups(doc: _Json, instances: Sequence[_Instance]) -> list[list[_Instance]]:
    """Instances grouped by ``dp_group`` (JSON order; one list per instance without one).

    Raises:
        ConfigError: members that disagree on tp / pp / ep / hardware / model / engine
            (LLMServingSim's rule for tp/pp/ep; llmsim runs one engine config per group).
    """
    groups: list[list[_Instance]] = []
    by_dp: dict[str, list[_Instance]] = {}
    for inst in instances:
        if inst.dp_group is None:
            groups.append([inst])
            continue
        members = by_dp.get(inst.dp_group)
        if members is None:
            members = by_dp[inst.dp_group] = []
            groups.append(members)
        if members:
            first = members[0]
            for attr, key in (("tp", "tp_size"), ("pp", "pp_size"), ("ep", "ep_size"),
                              ("hardware", "hardware"), ("role", "pd_type")):
                if getattr(inst, attr) != getattr(first, attr):
                    raise doc.error(f"{inst.where}.{key}", f"dp_group {inst.dp_group!r}: "
                                    f"{getattr(inst, attr)} but {first.where} has "
                                    f"{getattr(first, attr)} (a DP group's members agree)")
            if inst.model.name != first.model.name:
                raise doc.error(f"{inst.where}.model_name", f"dp_group {inst.dp_group!r} "
                                "serves one model")
            if inst.engine != first.engine or inst.placement != first.placement:
                raise doc.error(inst.where, f"dp_group {inst.dp_group!r}: engine settings "
                                f"differ from {first.where}'s (a DP group runs one engine "
                                "configuration, as vLLM's does)")
        members.append(inst)
    return groups


def _experiment(doc: _Json, conv: _Converter, instances: list[_Instance],
                node_cpu: list[dict[str, Any]], link: tuple[list[float], list[float]],
                *, trace: str | None, router: str | None, name: str) -> dict[str, Any]:
    data = doc.data
    groups = _dp_groups(doc, instances)
    spans_nodes = any(len({m.node for m in g}) > 1 for g in groups)
    tiers_used = {loc.split(":")[0] for i in instances if i.placement
                  for loc in _locations(i.placement)} - {"gpu"}

    nodes: list[dict[str, Any]] = []
    pim: list[dict[str, Any]] = []
    for n, node_raw in enumerate(data["nodes"]):
        kinds: dict[str, int] = {}
        memory: dict[str, int] = {}
        for inst in (i for i in instances if i.node == n):
            kinds[inst.hardware] = kinds.get(inst.hardware, 0) + inst.num_gpus
            memory.setdefault(inst.hardware, inst.gpu_memory_bytes)
        node: dict[str, Any] = {"name": f"n{n}", "gpus": [
            {"hardware": hw, "count": c, "gpu_memory_bytes": memory[hw]}
            for hw, c in kinds.items()]}
        if len(kinds) == 1:
            node["link"] = next(iter(kinds))
        if spans_nodes:
            node["network"] = {
                "bandwidth_bytes_per_s": _bytes(link[0][-1]),
                "latency_ns": _whole(link[1][-1]),
                "source": (f"LLMServingSim {doc.path.name}: link_bw[{len(link[0]) - 1}] = "
                           f"{link[0][-1]:g} GB/s (2^30 B/s, ASTRA-Sim), link_latency"
                           f"[{len(link[1]) - 1}] = {link[1][-1]:g} ns, the outer topology "
                           "dimension (between nodes), per NPU")}
        cpu = node_cpu[n]
        if cpu["pim_device"] is not None:
            pim.append({"node": f"n{n}", "device": cpu["pim_device"],
                        "capacity_bytes": cpu["capacity_bytes"]})
        if "cpu" not in tiers_used:
            size_used = cpu["pim_device"] is not None or "power" in node_raw
            for key in ("mem_size", "mem_bw", "mem_latency"):
                if key in cpu["raw"] and not (key == "mem_size" and size_used):
                    conv.ignore(f"nodes.{n}.cpu_mem.{key}", cpu["raw"][key])
        if "power" in node_raw:
            node["power"] = _power(doc, node_raw["power"], f"nodes.{n}.power",
                                   cpu["raw"]["mem_size"], kinds)
        nodes.append(node)
    if not spans_nodes:
        for key in ("link_bw", "link_latency"):
            conv.ignore(key, data[key])

    tiers: list[dict[str, Any]] = []
    if "cpu" in tiers_used:
        cpu = node_cpu[0]
        tiers.append({"name": "cpu", "kind": "dram", "capacity_bytes": cpu["capacity_bytes"],
                      "bandwidth_bytes_per_s": cpu["bandwidth_bytes_per_s"],
                      "latency_ns": cpu["latency_ns"], "shared": "node"})
    if "cxl_mem" in data:
        cxl = data["cxl_mem"]
        if not isinstance(cxl, dict):
            raise doc.error("cxl_mem", "must be a JSON object")
        devices = _positive_int(doc, cxl, "num_devices", "cxl_mem", 1) or 1
        total = _bytes(float(_number(doc, cxl, "mem_size", "cxl_mem") or 0))
        entry = {"name": "cxl", "kind": "cxl", "capacity_bytes": total // devices,
                 "bandwidth_bytes_per_s": _bytes(float(_number(doc, cxl, "mem_bw", "cxl_mem")
                                                       or 0)),
                 "latency_ns": _whole(_number(doc, cxl, "mem_latency", "cxl_mem")),
                 "shared": "cluster", "num_devices": devices}
        if "cxl" in tiers_used:
            tiers.append(entry)
        else:
            conv.ignore("cxl_mem", cxl)
    elif "cxl" in tiers_used:
        raise doc.error("nodes", "a placement uses 'cxl' but the config has no cxl_mem")

    out_groups = [_group(doc, conv, members, gi) for gi, members in enumerate(groups)]
    first_model = instances[0].model.name
    trace_path = trace or (f"{_DATA_PREFIX}/workloads/{_TRACES[first_model]}"
                           if first_model in _TRACES else None)
    if trace_path is None:
        raise doc.error("nodes.0.instances.0.model_name", "no workload for this model in the "
                        "data: give one with --trace")
    top = out_groups[0]
    exp: dict[str, Any] = {
        "name": name,
        "description": f"Imported from LLMServingSim cluster config {doc.path.name} by "
                       "`llmsim cluster import llmservingsim`.",
        "model": top["model"],
        "profile": top["profile"],
        "cost_model": "profile",
        "hardware": top["hardware"],
        "engine": top["engine"],
        "cluster": {"nodes": nodes},
    }
    _inherit(out_groups, exp, nodes)
    if tiers:
        exp["memory_tiers"] = tiers
    if pim:  # decode attention on the PIM channels (llmsim.pim)
        exp["pim"] = pim
    if any("role" in g for g in out_groups):
        # LLMServingSim moves the prompt's KV from the prefill to the decode instance once
        # the prefill ends; vLLM's NixlConnector (the decode side pulls after the prefill)
        # is the vLLM counterpart (docs/cluster-semantics.md, P/D)
        exp["kv_transfer_config"] = {"kv_connector": "NixlConnector"}
    exp["instance_groups"] = out_groups
    if router is not None:
        exp["router"] = router
    exp["trace"] = {"format": "llmservingsim", "path": trace_path}
    exp["output_dir"] = f"out/{name}"
    return exp


def _build_hint(inst: _Instance) -> str:
    """How to build a profile for ``inst`` from AIConfigurator's database, where the data
    holds a system of its hardware ("" otherwise)."""
    from llmsim.hardware.links import find_link_spec

    spec = find_link_spec(inst.hardware)
    names = (spec.name, *spec.aliases) if spec is not None else (inst.hardware,)
    system = next((n for n in names if _exists(f"aiconfigurator/systems/{n}.yaml")), None)
    if system is None:
        return ""
    out = f"{inst.hardware.lower()}-{inst.model.name.split('/')[-1].lower()}-tp{inst.tp}.pb"
    return (f"; build one with `llmsim profile import aiconfigurator "
            f"$LLMSIM_DATA_DIR/aiconfigurator/systems "
            f"--system {system} --model {inst.model.path} --tp {inst.tp} -o {out}` and "
            f"import with --profile {inst.hardware}={out}")


def _inherit(groups: list[dict[str, Any]], top: Mapping[str, Any],
             nodes: Sequence[Mapping[str, Any]]) -> None:
    """Leave out of each group what it would inherit anyway (the config layer's rules:
    a group's missing ``engine`` / ``model`` is the top-level one, ``profile`` too when the
    model is; a placed group's missing ``hardware`` is its node's GPUs), so that
    ``llmsim replay --set engine.max_num_seqs=...`` reaches every group that shares it."""
    for g in groups:
        if g["engine"] == top["engine"]:
            del g["engine"]
        if g["model"] == top["model"]:
            del g["model"]
            if g["profile"] == top["profile"]:
                del g["profile"]
        node = next(n for n in nodes if n["name"] == g["placement"]["node"])
        gpu = next(x for x in node["gpus"] if x["hardware"] == g["hardware"]["name"])
        if len(node["gpus"]) == 1 and g["hardware"] == {
                "name": gpu["hardware"], "gpu_memory_bytes": gpu["gpu_memory_bytes"]}:
            del g["hardware"]


def _locations(placement: Mapping[str, Any]) -> list[str]:
    """Every memory location a ``weight_offload`` mapping names."""
    out = [placement.get("default", "gpu"), *placement.get("layers", {}).values()]
    return out + [placement[n] for n in _LAYER_NAMES if n in placement]


def _group(doc: _Json, conv: _Converter, members: Sequence[_Instance], gi: int
           ) -> dict[str, Any]:
    """The instance group of one JSON instance, or of one dp_group's members."""
    first = members[0]
    dp = len(members)
    engine = dict(first.engine)
    if first.dp_group is not None:
        engine["data_parallel_size"] = dp
        if not first.model.is_moe:
            conv.differences.append(
                f"dp_group {first.dp_group!r} (dense {first.model.name}): LLMServingSim steps "
                "its members in lock-step; vLLM runs dense DP ranks as independent engines "
                "behind its DP balancer, and so does llmsim")
    if first.role == "prefill":
        conv.differences.append(
            f"{first.where} (prefill): LLMServingSim adds as many 'sender' NPUs as the "
            "instance has (a simulator artifact); llmsim places it on its own GPUs only")
    ranks = dp * first.tp
    extra: dict[str, Any] = {}
    if first.model.is_moe:
        if first.ep == ranks and ranks > 1:
            engine["enable_expert_parallel"] = True
        elif first.ep != 1:
            # no vLLM layout: the closest one vLLM runs, loudly (docs/cluster-semantics.md,
            # "Importing LLMServingSim configs")
            engine["enable_expert_parallel"] = True
            experts = first.model.num_experts
            conv.warnings.append(
                f"{first.where}.ep_size: ep_size {first.ep} over dp x tp = {ranks} ranks has "
                "no vLLM layout (vLLM's expert-parallel group is every DP x TP rank of a "
                f"pipeline stage, EP = dp x tp; it has no EP-degree setting). Imported as "
                f"the closest layout vLLM runs: enable_expert_parallel true, EP {ranks}: "
                f"each GPU holds {experts // ranks} whole experts ({experts}/{ranks}) and "
                f"the MoE dispatch/combine run over all {ranks} ranks, where LLMServingSim "
                f"splits the {experts} experts over {first.ep} EP ranks. Expert bytes per "
                "GPU are the same when ep_size x expert-TP = dp x tp; the per-rank expert "
                "kernels and the collectives' group size differ")
    elif first.ep > 1:
        engine["enable_expert_parallel"] = True
    given = conv.profiles.get(f"{first.hardware}/{first.model.name}".lower(),
                              conv.profiles.get(first.hardware.lower()))
    group: dict[str, Any] = {
        "name": f"n{first.node}i{first.index}" + (
            f"-dp-{first.dp_group}" if first.dp_group is not None else ""),
        "count": 1,
        "model": first.model.path,
        "profile": given or first.profile,
        "hardware": {"name": first.hardware, "gpu_memory_bytes": first.gpu_memory_bytes},
        "engine": engine,
    }
    if given is None and not _exists(first.profile):
        conv.data_gaps.append((f"instance_groups.{gi}.profile", (
            f"no {first.hardware} {first.model.name} profile bundle in the data "
            f"({first.profile})" + _build_hint(first))))
    elif given is None and not _exists(f"{first.profile}/tp{first.tp}"):
        conv.data_gaps.append((f"instance_groups.{gi}.profile", (
            f"the {first.hardware} {first.model.name} bundle has no tp{first.tp} tables")))
    here = [m for m in members if m.node == first.node]
    placement: dict[str, Any] = {"node": f"n{first.node}",
                                 "gpus": [g for m in here for g in m.gpus]}
    away = [m for m in members if m.node != first.node]
    if away:
        placement["spans"] = [{"node": f"n{m.node}", "gpus": m.gpus} for m in away]
    group["placement"] = placement
    if first.role is not None:
        group["role"] = first.role
    if first.placement is not None:
        group["weight_offload"] = first.placement
    if extra:
        group["llmservingsim"] = extra
    layout = ParallelConfig(
        tensor_parallel_size=first.tp, pipeline_parallel_size=first.pp,
        data_parallel_size=dp, enable_expert_parallel=bool(
            engine.get("enable_expert_parallel", False)))
    util = engine.get("gpu_memory_utilization")
    if util is not None:  # LLMServingSim's own KV sizing (see _llmservingsim_blocks)
        engine["num_gpu_blocks_override"] = _llmservingsim_blocks(
            doc, first, float(util), int(engine.get("block_size", 16)), layout)
    found = check_supported(layout, is_moe=first.model.is_moe,
                            where=f"instance_groups.{gi}.engine")
    if found is not None:
        conv.unsupported.append((found[0], found[1].removeprefix("not supported yet: ")))
    return group


def _llmservingsim_blocks(doc: _Json, inst: _Instance, util: float, block_size: int,
                          layout: ParallelConfig) -> int:
    """KV blocks per GPU as LLMServingSim sizes its cache, which ``mem_util`` calibrates.

    LLMServingSim (``serving/core/memory_model.py``): ``(int(mem_size x 2^30 x mem_util) -
    weights per rank) // (KV bytes per token per rank x block_size)``; it counts weights and
    KV only (no activation peak, no CUDA context), so its ``mem_util`` is a calibration of
    that formula (its ``configs/cluster/README.md`` picks 0.833919 on the RTX 4090 so that
    the count equals the measured run's 2,588 blocks) and is not vLLM's
    ``gpu_memory_utilization``, which llmsim's memory model applies to vLLM's accounting (1,967
    blocks there). Weight and KV bytes are llmsim's (:class:`llmsim.model.config.ModelConfig`;
    2,588 on that run too); with PP the smallest stage count (vLLM takes the minimum over
    workers); with expert parallelism a rank holds ``num_experts / (dp x tp)`` experts whole
    (an assumption: llmsim's ``weight_bytes`` splits experts over TP only).

    Raises:
        ConfigError: the weights leave no room for one block (at the instance's npu_mem).
    """
    from llmsim.model.config import load_model_config

    model = load_model_config(dataset_path(inst.model.path))
    budget = int(inst.gpu_memory_bytes * util)
    counts = []
    for stage in range(layout.pipeline_parallel_size):
        weights = model.weight_bytes(layout, stage)
        if layout.enable_expert_parallel and model.is_moe:
            experts = (model.stage_layers(layout, stage) * model.num_experts * 3 *
                       model.hidden_size * model.moe_intermediate_size * model.dtype_bytes)
            weights -= experts // layout.tensor_parallel_size
            weights += experts // layout.expert_parallel_size
        per_block = model.kv_bytes_per_token(layout, stage) * block_size
        counts.append((budget - weights) // per_block)
    blocks = min(counts)
    if blocks < 2:
        raise doc.error(f"{inst.where}.npu_mem", f"mem_size x mem_util ({budget} bytes) leaves "
                        f"room for {blocks} KV blocks of {block_size} tokens after the weights")
    return int(blocks)


def _power(doc: _Json, raw: Any, where: str, dram_gib: Any, kinds: Mapping[str, int]
           ) -> dict[str, Any]:
    """The node's power block as llmsim's ``PowerConfig`` mapping (see :data:`FIELDS`)."""
    if not isinstance(raw, dict):
        raise doc.error(where, "must be a JSON object")
    for key in ("base_node_power", "npu", "cpu", "dram", "link", "nic", "storage"):
        if key not in raw:
            raise doc.error(where, f"missing required field {key!r} (LLMServingSim requires "
                            "it in a power block)")

    def num(obj: Any, key: str, field: str) -> float | int:
        if not isinstance(obj, dict):
            raise doc.error(field, "must be a JSON object")
        value = _whole(_number(doc, obj, key, field))
        assert value is not None
        return value

    def watts(obj: Any, key: str, field: str) -> float:
        return float(num(obj, key, field))

    gpu: dict[str, Any] = {}
    if not isinstance(raw["npu"], dict):
        raise doc.error(f"{where}.npu", "must be a JSON object")
    for hw, spec in raw["npu"].items():
        f = f"{where}.npu.{hw}"
        gpu[hw] = {"idle_w": watts(spec, "idle_power", f),
                   "active_w": watts(spec, "active_power", f),
                   "standby_w": watts(spec, "standby_power", f),
                   "standby_s": watts(spec, "standby_duration", f)}
    for hw in kinds:
        if hw not in gpu:
            raise doc.error(f"{where}.npu", f"no power figures for the node's {hw!r} GPUs "
                            "(LLMServingSim requires them)")
    dram, dimm = raw["dram"], num(raw["dram"], "dimm_size", f"{where}.dram")
    if dimm <= 0:
        raise doc.error(f"{where}.dram.dimm_size", f"must be > 0, got {dimm}")
    return {
        "base_node_w": watts(raw, "base_node_power", where),
        "gpu": gpu,
        "cpu": {"idle_w": watts(raw["cpu"], "idle_power", f"{where}.cpu"),
                "active_w": watts(raw["cpu"], "active_power", f"{where}.cpu"),
                "utilization": watts(raw["cpu"], "util", f"{where}.cpu")},
        "dram": {"num_dimms": int(float(dram_gib) // float(dimm)),
                 "idle_w_per_dimm": watts(dram, "idle_power", f"{where}.dram"),
                 "energy_pj_per_bit": watts(dram, "energy_per_bit", f"{where}.dram")},
        "link": {"count": int(num(raw["link"], "num_links", f"{where}.link")),
                 "idle_w": watts(raw["link"], "idle_power", f"{where}.link"),
                 "energy_pj_per_bit": watts(raw["link"], "energy_per_bit", f"{where}.link")},
        "nic": {"count": int(num(raw["nic"], "num_nics", f"{where}.nic")),
                "idle_w": watts(raw["nic"], "idle_power", f"{where}.nic")},
        "storage": {"count": int(num(raw["storage"], "num_devices", f"{where}.storage")),
                    "idle_w": watts(raw["storage"], "idle_power", f"{where}.storage")},
    }


class _Dumper(yaml.SafeDumper):
    """Short lists of scalars in flow style (``gpus: [0, 1]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = len(data) <= 64 and all(not isinstance(x, dict | list) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def _render(source: Path, exp: Mapping[str, Any], conv: _Converter) -> str:
    ignored, unsupported = conv.ignored, conv.unsupported
    lines = [f"# Imported from LLMServingSim cluster config {source.name} by",
             "# `llmsim cluster import llmservingsim` (field table: docs/cluster-semantics.md,",
             "# 'Importing LLMServingSim configs')."]
    lines += (["# Engine settings the JSON leaves out: LLMServingSim's command-line defaults."]
              if conv.cli_defaults else
              ["# Engine settings the JSON leaves out keep llmsim's defaults, which are vLLM",
               "# 0.19's (LLMServingSim takes them from its command line;",
               "# --llmservingsim-defaults writes those)."])
    for text in conv.warnings:
        lines.append("# WARNING: not LLMServingSim's layout (vLLM cannot run it):")
        lines += [f"#   {part}" for part in textwrap.wrap(text, 86, break_on_hyphens=False)]
    if unsupported:
        lines.append("# Not modelled yet (the run stops with 'not supported yet'):")
        lines += [f"#   {key}: {what}" for key, what in unsupported]
    if conv.differences:
        lines.append("# Deliberately unlike LLMServingSim (as vLLM does it):")
        for text in conv.differences:
            lines += [f"#   {part}" if i == 0 else f"#     {part}"
                      for i, part in enumerate(textwrap.wrap(text, 86,
                                                             break_on_hyphens=False))]
    if conv.data_gaps:
        lines.append("# Not in the data (the run stops there):")
        lines += [f"#   {key}: {what}" for key, what in conv.data_gaps]
    if ignored:
        lines.append("# LLMServingSim fields knowingly not used:")
        seen: dict[str, list[str]] = {}
        reasons: dict[str, str] = {}
        for field, value, reason in ignored:
            pattern = _pattern(_parts(field))
            seen.setdefault(pattern, []).append(f"{field} = {json.dumps(value)}")
            reasons[pattern] = reason
        for pattern, values in seen.items():
            lines += [f"#   {v}" for v in values]
            lines += [f"#     {part}" for part in textwrap.wrap(
                reasons[pattern], 86, break_on_hyphens=False)]
    body = yaml.dump(dict(exp), Dumper=_Dumper, sort_keys=False, width=100,
                     default_flow_style=False, allow_unicode=False)
    return "\n".join(lines) + "\n" + body


def write_imported(imported: ImportedConfig, out: str | Path) -> Path:
    """Write the YAML text to ``out`` (parent directories created).

    Raises:
        OSError: the file cannot be written.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(imported.text, encoding="utf-8")
    tmp.replace(out)
    return out


def import_directory(directory: str | Path, **options: Any) -> list[ImportedConfig]:
    """Convert every ``*.json`` of ``directory`` (sorted by name).

    Raises:
        ConfigError: the directory holds no ``.json`` file, or a config fails as in
            :func:`import_config`.
    """
    directory = Path(directory)
    files = sorted(p for p in directory.glob("*.json") if p.is_file())
    if not files:
        raise ConfigError("no .json cluster config in the directory", path=directory)
    return [import_config(p, **options) for p in files]
