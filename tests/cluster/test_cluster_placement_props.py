"""Placement properties: groups fit iff their GPUs do; no GPU is given twice."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.errors import ConfigError
from llmsim.experiment import experiment_from_dict

README = Path(__file__).resolve().parents[2] / "README.md"  # any existing file will do


def _raw(node_gpus: list[int], groups: list[tuple[int, int, int, int]]) -> dict:
    return {
        "model": str(README), "cost_model": "grpc://127.0.0.1:1",
        "trace": {"path": str(README)},
        "engine": {"num_gpu_blocks_override": 64},
        "cluster": {"nodes": [
            {"name": f"n{i}", "gpus": [{"hardware": "RTXPRO6000", "count": n}]}
            for i, n in enumerate(node_gpus)]},
        "instance_groups": [
            {"name": f"g{k}", "count": count,
             "engine": {"num_gpu_blocks_override": 64, "tensor_parallel_size": tp,
                        "data_parallel_size": dp},
             "placement": {"node": f"n{node % len(node_gpus)}"}}
            for k, (node, count, tp, dp) in enumerate(groups)],
    }


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 8), min_size=1, max_size=3),
       st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3), st.sampled_from([1, 2, 4]),
                          st.integers(1, 2)), min_size=1, max_size=4))
def test_groups_fit_iff_each_node_has_the_gpus(node_gpus: list[int],
                                               groups: list[tuple[int, int, int, int]]) -> None:
    need = [0] * len(node_gpus)
    for node, count, tp, dp in groups:
        need[node % len(node_gpus)] += count * tp * dp
    fits = all(n <= have for n, have in zip(need, node_gpus, strict=True))
    try:
        exp = experiment_from_dict(_raw(node_gpus, groups))
    except ConfigError as exc:
        assert not fits, exc
        assert exc.field is not None and exc.field.startswith("instance_groups.")
        assert exc.field.endswith(".placement") and "free of" in exc.reason
        return
    assert fits
    used: dict[str, list[int]] = {}
    for g, (_, count, tp, dp) in zip(exp.groups(), groups, strict=True):
        assert len(g.gpus) == count and all(len(d) == dp for d in g.gpus)
        assert all(len(engine) == tp for d in g.gpus for engine in d)
        assert g.num_engines == count * dp
        used.setdefault(g.node or "", []).extend(x for d in g.gpus for e in d for x in e)
    for node, ids in used.items():
        assert len(ids) == len(set(ids))  # never the same GPU twice
        assert max(ids) < node_gpus[int(node[1:])]
