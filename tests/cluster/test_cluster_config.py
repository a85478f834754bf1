"""Cluster YAML: instance groups, nodes/GPUs/links, placement, parallel layout refusals."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llmsim.cluster import ParallelConfig, check_supported
from llmsim.errors import ConfigError
from llmsim.experiment import EngineConfig, load_experiment

MODEL = "llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json"
PROFILE_4090 = "llmservingsim/profiles/RTX4090/meta-llama/Llama-3.1-8B/bf16"
PROFILE_PRO = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"
TRACE = "llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"


@pytest.fixture(autouse=True)
def _data(data_path) -> None:
    data_path(MODEL)
    data_path(TRACE)


def _write(tmp_path: Path, body: str) -> Path:
    head = f"""\
        name: c
        model: {MODEL}
        profile: {PROFILE_PRO}
        hardware: {{name: RTXPRO6000, gpu_memory_bytes: 102642302976}}
        trace: {{format: llmservingsim, path: {TRACE}}}
        """
    p = tmp_path / "exp.yaml"
    p.write_text(textwrap.dedent(head) + textwrap.dedent(body))
    return p


def _error(tmp_path: Path, body: str) -> ConfigError:
    p = _write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_experiment(p)
    assert str(err.value.path) == str(p)
    return err.value


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


NODES = """\
cluster:
  nodes:
    - name: n0
      gpus:
        - {hardware: RTXPRO6000, count: 2, gpu_memory_bytes: 102642302976}
"""


def test_groups_resolve_with_top_level_defaults_and_placement(tmp_path: Path) -> None:
    p = _write(tmp_path, NODES + """\
instance_groups:
  - name: a
    placement: {node: n0, gpus: [1]}
  - name: b
    engine: {max_num_seqs: 64}
    placement: {node: n0}
""")
    exp = load_experiment(p)
    a, b = exp.groups()
    assert (a.name, a.node, a.gpus, a.link) == ("a", "n0", (((1,),),), "RTXPRO6000")
    assert b.gpus == (((0,),),)  # the first free GPU
    assert a.engine == exp.engine and b.engine.max_num_seqs == 64
    assert a.hardware.name == "RTXPRO6000" and a.profile_path == exp.profile_path
    assert b.overheads == exp.overheads


def test_shorthand_is_one_group(tmp_path: Path) -> None:
    exp = load_experiment(_write(tmp_path, "instances: 3\n"))
    (g,) = exp.groups()
    assert (g.count, g.field, g.num_engines, g.node) == (3, "", 3, None)


@pytest.mark.parametrize(("body", "field", "key", "words"), [
    (NODES.replace("name: n0", "name: n0\n      bogus: 1"), "cluster.nodes.0.bogus",
     "bogus: 1", "unknown key"),
    (NODES + "instance_groups:\n  - name: a\n    count: 3\n    placement: {node: n0}\n",
     "instance_groups.0.placement", "placement: {node: n0}", "need 3 GPUs"),
    (NODES + "instance_groups:\n  - name: a\n    placement: {node: n0, gpus: [2]}\n",
     "instance_groups.0.placement.gpus", "gpus: [2]", "GPU 2 is beyond node 'n0'"),
    (NODES + "instance_groups:\n  - {name: a, placement: {node: n0, gpus: [0]}}\n"
     "  - {name: b, placement: {node: n0, gpus: [0]}}\n",
     "instance_groups.1.placement.gpus", "name: b", "taken twice"),
    (NODES + "instance_groups:\n  - name: a\n    placement: {node: n9}\n",
     "instance_groups.0.placement.node", "node: n9", "unknown node"),
    (NODES + "instance_groups:\n  - name: a\n    engine: {tensor_parallel_size: 4}\n"
     "    placement: {node: n0}\n", "instance_groups.0.placement", "placement: {node: n0}",
     "need 4 GPUs"),
    (NODES + "instance_groups:\n  - name: a\n    hardware: {name: RTX4090, gpu_memory_bytes: 1}\n"
     "    placement: {node: n0}\n", "instance_groups.0.hardware.name", "hardware: {name: RTX4090",
     "has 'RTXPRO6000' GPUs"),
    (NODES + "instance_groups:\n  - name: a\n", "instance_groups.0.placement", "- name: a",
     "every group is placed"),
    ("instance_groups:\n  - name: a\n    placement: {node: n0}\n",
     "instance_groups.0.placement", "placement:", "needs a cluster"),
    ("instances: 2\ninstance_groups:\n  - name: a\n", "instances", "instances: 2",
     "shorthand"),
    ("instance_groups:\n  - name: a\n  - name: a  # again\n", "instance_groups.1.name",
     "# again", "named twice"),
    (NODES.replace("count: 2,", "count: 1,") + "        - {hardware: RTX4090}\n"
     + "instance_groups:\n  - {name: a, placement: {node: n0}}\n", "cluster.nodes.0.gpus",
     "gpus:", "not supported yet: GPUs of different types"),
    (NODES + "      network: {nic: cx7}\ninstance_groups:\n  - {name: a, placement: {node: n0}}\n",
     "cluster.nodes.0.network.bandwidth_bytes_per_s", "network:", "missing"),
    (NODES + "      link: NoSuchLink\ninstance_groups:\n  - {name: a, placement: {node: n0}}\n",
     "cluster.nodes.0.link", "link: NoSuchLink", "no link description"),
])
def test_cluster_yaml_errors_name_file_line_and_field(tmp_path: Path, body: str, field: str,
                                                       key: str, words: str) -> None:
    err = _error(tmp_path, body)
    assert err.field == field, err
    assert words in str(err), err
    assert err.line == _line(tmp_path / "exp.yaml", key), err


def test_parallel_config_sizes_and_refusals() -> None:
    p = ParallelConfig(tensor_parallel_size=2, data_parallel_size=3)
    assert (p.gpus_per_engine, p.world_size, p.expert_parallel_size) == (2, 6, 1)
    ep = ParallelConfig(tensor_parallel_size=2, data_parallel_size=2, enable_expert_parallel=True)
    assert ep.expert_parallel_size == 4
    assert check_supported(p, is_moe=False) is None
    assert check_supported(ParallelConfig(enable_expert_parallel=True), is_moe=True) is None
    for layout in (ParallelConfig(data_parallel_size=2), ep,
                   ParallelConfig(tensor_parallel_size=2, enable_expert_parallel=True)):
        assert check_supported(layout, is_moe=True) is None  # llmsim.cluster.moe_dp
    assert check_supported(ParallelConfig(tensor_parallel_size=2, pipeline_parallel_size=2,
                                          enable_expert_parallel=True), is_moe=True) is None
    for layout, moe, field in [
        (ParallelConfig(enable_expert_parallel=True), False, "engine.enable_expert_parallel"),
    ]:
        found = check_supported(layout, is_moe=moe)
        assert found is not None and found[0] == field
        assert found[1].startswith("not supported yet: ")
    with pytest.raises(ConfigError) as err:
        ParallelConfig(data_parallel_size=0)
    assert err.value.field == "engine.data_parallel_size"
    assert EngineConfig(data_parallel_size=4).parallel_config().world_size == 4
