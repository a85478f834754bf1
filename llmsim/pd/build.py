"""Building a :class:`~llmsim.pd.flow.PdFlow` from an experiment (used by :func:`llmsim.replay.run`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from llmsim.cluster.parallel import ParallelConfig
from llmsim.errors import ConfigError
from llmsim.hardware.links import find_link_spec
from llmsim.instance.instance import Instance
from llmsim.model.config import ModelConfig
from llmsim.pd.config import PdRole
from llmsim.pd.flow import PdFlow
from llmsim.pd.links import KVLink
from llmsim.router.base import make_router
from llmsim.router.views import ReadOnlyRouter

if TYPE_CHECKING:
    from llmsim.experiment import Experiment

__all__ = ["add_pd_columns", "build_pd_flow"]


def build_pd_flow(experiment: Experiment, models: Sequence[ModelConfig],
                  instances: Sequence[Instance], num_requests: int, *,
                  keep_log: bool = False) -> PdFlow | None:
    """The P/D flow of ``experiment``, or None when no group has a prefill/decode role.

    Sets every instance's ``kv_bytes_per_token`` (its own TP) for hand-off descriptors.

    Raises:
        ConfigError: no link description with sourced P2P figures for the transfers
            ("not supported yet", naming the experiment file and field).
    """
    groups = experiment.groups()
    if all(g.role is PdRole.BOTH for g in groups):
        return None
    roles: list[PdRole] = []
    tps: list[int] = []
    model = models[0]
    for g in groups:
        for _ in range(g.num_engines):
            roles.append(g.role)
            tps.append(g.parallel.tensor_parallel_size)
    for inst, tp in zip(instances, tps, strict=True):
        inst.kv_bytes_per_token = model.kv_bytes_per_token(
            ParallelConfig(tensor_parallel_size=tp))
    cfg = experiment.kv_transfer_config
    from llmsim.experiment import KVTransferConfig

    cfg = cfg or KVTransferConfig()
    prefill = next(g for g in groups if g.role is PdRole.PREFILL)
    name = cfg.link or prefill.link or prefill.hardware.name
    spec = find_link_spec(name)
    field = "kv_transfer_config.link"
    if spec is None:
        raise ConfigError(f"not supported yet: a KV transfer on {name!r}: no link description "
                          "in llmsim/hardware/data/ matches it", path=experiment.source,
                          field=field)
    try:
        link = KVLink.from_spec(spec)
    except ConfigError as exc:
        raise ConfigError(exc.reason, path=experiment.source, field=field) from None
    per_token: dict[int, int] = {}

    def kv_bytes_per_token(src: int, dst: int) -> int:
        tp = min(tps[src], tps[dst])
        if tp not in per_token:
            per_token[tp] = model.kv_bytes_per_token(ParallelConfig(tensor_parallel_size=tp))
        return per_token[tp]

    return PdFlow(instances, roles, connector=cfg.kv_connector, link=link,
                  kv_bytes_per_token=kv_bytes_per_token, num_layers=model.num_hidden_layers,
                  prefill_router=ReadOnlyRouter(make_router(experiment.router)),
                  decode_router=ReadOnlyRouter(make_router(experiment.router)),
                  num_requests=num_requests, keep_log=keep_log,
                  link_sharing=cfg.link_sharing)


def add_pd_columns(requests: pd.DataFrame, flow: PdFlow, first_token_ns: Sequence[int]
                   ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``requests`` with the P/D columns appended (:meth:`PdFlow.columns`), and the
    summary's ``pd`` section."""
    cols = flow.columns(first_token_ns)
    out = requests.copy()
    for name, values in cols.items():
        out[name] = values
    return out, flow.summary(cols)
