"""Wrapping an experiment's cost models for PIM attention offload (used by
:func:`llmsim.replay.run`; :mod:`llmsim.pim.model`, a model without a measured
validation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from llmsim.costmodel.base import CostModel
from llmsim.errors import ConfigError
from llmsim.model.config import ModelConfig
from llmsim.pim.model import PIM_DEVICES, PimCostModel

if TYPE_CHECKING:
    from llmsim.experiment import Experiment, PimConfig

__all__ = ["wrap_pim"]


def wrap_pim(experiment: Experiment, models: Sequence[ModelConfig],
             costs: Sequence[CostModel]) -> list[CostModel]:
    """Per group, its cost model, wrapped in a :class:`PimCostModel` where the group's node
    has a ``pim`` entry (a group without a node takes the only entry there is).

    Raises:
        ConfigError: an entry naming no cluster node, two entries for one node, several
            entries without a cluster, or PIM with TP or PP > 1 ("not supported yet").
    """
    entries = experiment.pim
    out = list(costs)
    if not entries:
        return out
    where = experiment.source
    nodes = {n.name for n in experiment.cluster.nodes} if experiment.cluster else None
    by_node: dict[str, PimConfig] = {}
    for i, entry in enumerate(entries):
        if nodes is not None and entry.node not in nodes:
            raise ConfigError(f"PIM node {entry.node!r} is not a cluster node", path=where,
                              field=f"pim.{i}.node")
        if entry.node in by_node:
            raise ConfigError(f"two PIM memories for node {entry.node!r}", path=where,
                              field=f"pim.{i}.node")
        by_node[entry.node] = entry
    for k, (g, m) in enumerate(zip(experiment.groups(), models, strict=True)):
        e: PimConfig | None
        if g.node is not None:
            e = by_node.get(g.node)
        elif len(by_node) == 1:
            e = next(iter(by_node.values()))
        else:
            raise ConfigError("PIM entries for several nodes need a cluster placement",
                              path=where, field="pim")
        if e is None:
            continue
        p = g.parallel
        if p.tensor_parallel_size > 1 or p.pipeline_parallel_size > 1:
            raise ConfigError("not supported yet: PIM attention offload with TP or PP > 1",
                              path=where, field="pim")
        dev = PIM_DEVICES[e.device]
        out[k] = PimCostModel(costs[k], dev, num_channels=dev.num_channels(e.capacity_bytes),
                              heads=m.num_attention_heads, kv_heads=m.num_key_value_heads,
                              head_dim=m.head_dim, num_layers=m.num_hidden_layers,
                              sub_batch_interleaving=e.sub_batch_interleaving)
    return out
