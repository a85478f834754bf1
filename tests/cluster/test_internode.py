"""Inter-node networks: a MoE DP / EP group whose DP ranks span two nodes
(``placement.spans``), its collectives priced hierarchically over the nodes' ``network``
(docs/cluster-semantics.md, "Inter-node networks"): bytes and count per step, the model's
times from hand-computed figures, placement and YAML errors with file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llmsim.costmodel.collectives import (
    Collective,
    CollectivesModel,
    HierarchicalCollectives,
    NcclModel,
)
from llmsim.errors import ConfigError
from llmsim.experiment import load_experiment
from llmsim.model.config import load_model_config
from llmsim.replay import build_cost_model, build_moe_pricer, run
from llmsim.trace.record import Request, Trace

MODEL = "llmservingsim/configs/model/Qwen/Qwen3-30B-A3B-Instruct-2507.json"
PROFILE = "llmservingsim/profiles/RTXPRO6000/Qwen/Qwen3-30B-A3B-Instruct-2507/bf16"
TRACE = "llmservingsim/workloads/sharegpt-qwen3-30b-a3b-300-sps10.jsonl"
MIB = 2**20
NET_BW = 16 * 2**30  # 16 GB/s (ASTRA-Sim GB), LLMServingSim's dual-node inter-node figure
NET_NS = 20_000


@pytest.fixture
def qwen_data(data_path) -> None:
    data_path(PROFILE)
    data_path(MODEL)


def _yaml(tmp_path: Path, *, tp: int = 1, spans: str = "[{node: n1, gpus: [0]}]",
          gpus: str = "[0]", n1_network: bool = True) -> Path:
    net = f"network: {{bandwidth_bytes_per_s: {NET_BW}, latency_ns: {NET_NS}, source: test}}"
    body = f"""\
        name: span
        model: {MODEL}
        profile: {PROFILE}
        engine: {{tensor_parallel_size: {tp}, data_parallel_size: 2,
                  enable_expert_parallel: true}}
        cluster:
          nodes:
            - name: n0
              gpus: [{{hardware: RTXPRO6000, count: 2, gpu_memory_bytes: 102642302976}}]
              {net}
            - name: n1
              gpus: [{{hardware: RTXPRO6000, count: 2, gpu_memory_bytes: 102642302976}}]
              {net if n1_network else ""}
        instance_groups:
          - name: g
            placement: {{node: n0, gpus: {gpus}, spans: {spans}}}
        trace: {{format: llmservingsim, path: {TRACE}}}
        """
    p = tmp_path / "span.yaml"
    p.write_text(textwrap.dedent(body))
    return p


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# --------------------------------------------------------------- the model, by hand
def _two_level(ranks_per_node: int) -> HierarchicalCollectives:
    intra = CollectivesModel(ranks=ranks_per_node, link=None,
                             analytic=NcclModel(latency_ns=5_000.0,
                                                bus_bandwidth_bytes_per_s=100e9, label="x"))
    inter = NcclModel(latency_ns=NET_NS, bus_bandwidth_bytes_per_s=NET_BW, label="net")
    return HierarchicalCollectives(intra=intra, inter=inter, nodes=2,
                                   ranks_per_node=ranks_per_node)


def test_hierarchical_collectives_over_two_nodes_of_two_gpus() -> None:
    h = _two_level(2)
    s = 4 * MIB
    assert h.ranks == 4
    # all-gather: inter AG of S/2 over 2 nodes + intra AG of S over 2 GPUs
    inter_ag = NET_NS + (s / 2) * (1 / 2) / NET_BW * 1e9
    intra_ag = 5_000 + s * (1 / 2) / 100e9 * 1e9
    ag = h.price(Collective.ALL_GATHER, s)
    assert ag.duration_ns == pytest.approx(inter_ag + intra_ag, rel=1e-12)
    assert ag.source == "hierarchical[2x2](inter:analytic:nccl(net), intra:analytic:nccl(x))"
    assert ag.impl == "nccl"
    # reduce-scatter: the same stages in reverse
    assert h.price(Collective.REDUCE_SCATTER, s).duration_ns == pytest.approx(
        inter_ag + intra_ag, rel=1e-12)
    # all-reduce: intra RS + inter AR of S/2 (bus factor 2(n-1)/n = 1) + intra AG
    inter_ar = NET_NS + (s / 2) * 1.0 / NET_BW * 1e9
    assert h.price(Collective.ALL_REDUCE, s).duration_ns == pytest.approx(
        2 * intra_ag + inter_ar, rel=1e-12)
    # point to point across nodes: the network alone
    assert h.price(Collective.SEND_RECV, s).duration_ns == pytest.approx(
        NET_NS + s / NET_BW * 1e9, rel=1e-12)
    assert h.price(Collective.ALL_GATHER, 0).duration_ns == 0.0


def test_one_gpu_per_node_leaves_only_the_network() -> None:
    h = _two_level(1)
    s = 3 * MIB
    priced = h.price(Collective.ALL_GATHER, s)
    assert priced.duration_ns == pytest.approx(NET_NS + s * 0.5 / NET_BW * 1e9, rel=1e-12)
    assert priced.source == "hierarchical[2x1](inter:analytic:nccl(net))"


# --------------------------------------------------------------- on real data
def test_ep_dispatch_and_combine_over_two_nodes_bytes_count_and_price(qwen_data,
                                                                      tmp_path: Path) -> None:
    exp = load_experiment(_yaml(tmp_path))
    (g,) = exp.groups()
    assert g.rank_nodes == (("n0", "n1"),) and g.gpus == (((0,), (0,)),)
    assert g.num_nodes == 2 and [g.node_of(e) for e in (0, 1)] == ["n0", "n1"]
    m = load_model_config(exp.model_path)
    pricer = build_moe_pricer(exp, g, m, build_cost_model(exp, m, g))
    assert isinstance(pricer.comm, HierarchicalCollectives)
    cost = pricer.price((8, 8), cuda_graph=True)
    d, c = cost.collectives
    t, h, e, b = 16, m.hidden_size, m.num_experts, m.dtype_bytes
    assert (d.name, d.collective, d.ranks, d.calls) == ("ep_dispatch", Collective.ALL_GATHER,
                                                        2, 48)
    assert (c.name, c.collective, c.ranks, c.calls) == ("ep_combine",
                                                        Collective.REDUCE_SCATTER, 2, 48)
    assert d.nbytes == t * (h + e) * b == 16 * (2048 + 128) * 2
    assert c.nbytes == t * h * b
    # one GPU per node: each layer's dispatch is the network's all-gather alone
    one = NET_NS + d.nbytes * 0.5 / NET_BW * 1e9
    assert d.duration_ns == int(one * 48 + 0.5)
    assert d.source.startswith("hierarchical[2x1](inter:analytic:nccl(network n0: ")
    assert "test" in d.source  # the network's own source travels with the price


def test_dual_node_dp_tp_ep_group_replays_with_the_network_in_the_summary(
        qwen_data, tmp_path: Path) -> None:
    path = _yaml(tmp_path, tp=2, gpus="[0, 1]", spans="[{node: n1}]")
    exp = load_experiment(path)
    (g,) = exp.groups()
    assert g.gpus == (((0, 1), (0, 1)),)
    trace = Trace(requests=tuple(
        Request(request_id=f"r{i}", arrival_ns=i * 50_000_000, input_tokens=200,
                output_tokens=8, input_token_ids=tuple(7_000 * (i + 1) + k for k in range(200)))
        for i in range(8)), source="", name="t")
    result = run(exp, trace=trace)
    assert result.summary["num_finished"] == 8
    sources = result.summary["moe_dp"]["ep_collective_sources"]
    crossing = [k for k in sources if "hierarchical[2x2]" in k]
    assert sorted(k.split(":")[0] for k in crossing) == ["ep_combine reduce_scatter",
                                                         "ep_dispatch all_gather"]
    # the TP all-gather of sequence-parallel MoE stays inside each node
    assert [k for k in sources if k.startswith("ep_tp_gather")] == [
        "ep_tp_gather all_gather: analytic:nccl(RTXPRO6000)"]
    assert result.summary["instance_groups"][0]["rank_nodes"] == [["n0", "n1"]]


def test_a_spanned_node_without_a_network_is_refused_where_it_is(qwen_data,
                                                                 tmp_path: Path) -> None:
    path = _yaml(tmp_path, n1_network=False)
    with pytest.raises(ConfigError) as err:
        run(load_experiment(path), trace=Trace(requests=(), source="", name="t"))
    assert err.value.field == "cluster.nodes.1.network" and err.value.path == str(path)
    assert "needs a network" in err.value.reason and err.value.line == _line(path, "name: n1")


@pytest.mark.parametrize(("spans", "gpus", "field", "says"), [
    ("[{node: n0}]", "[0]", "instance_groups.0.placement.spans", "named twice"),
    ("[{node: nx}]", "[0]", "instance_groups.0.placement.spans.0.node", "unknown node"),
    ("[{node: n1, gpus: [0, 1]}]", "[0]", "instance_groups.0.placement.spans.0.gpus",
     "2 GPUs given"),
    ("[{node: n1, gpus: [5]}]", "[0]", "instance_groups.0.placement.spans.0.gpus",
     "beyond node 'n1'"),
])
def test_bad_spans_are_refused_with_file_line_and_field(qwen_data, tmp_path: Path, spans: str,
                                                        gpus: str, field: str,
                                                        says: str) -> None:
    path = _yaml(tmp_path, spans=spans, gpus=gpus)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert err.value.field == field, err.value
    assert says in err.value.reason, err.value
    assert err.value.path == str(path) and err.value.line is not None


def test_dp_ranks_that_do_not_split_evenly_over_the_nodes_are_refused(qwen_data,
                                                                      tmp_path: Path) -> None:
    path = _yaml(tmp_path, spans="[{node: n1}]")
    text = path.read_text().replace("data_parallel_size: 2", "data_parallel_size: 3")
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert err.value.field == "instance_groups.0.placement.spans"
    assert "does not split evenly over 2 nodes" in err.value.reason


def test_network_values_are_checked(qwen_data, tmp_path: Path) -> None:
    path = _yaml(tmp_path)
    path.write_text(path.read_text().replace(f"bandwidth_bytes_per_s: {NET_BW}",
                                             "bandwidth_bytes_per_s: 0", 1))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert err.value.field == "cluster.nodes.0.network.bandwidth_bytes_per_s"
    assert err.value.line == _line(path, "bandwidth_bytes_per_s: 0")
