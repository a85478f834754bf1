"""Choose a cost model from a spec string (experiment file ``cost_model:`` or ``--cost-model``).

One plain mapping from spec scheme to factory; a factory takes the spec and the
experiment context and returns a :class:`~llmsim.costmodel.base.CostModel`.

* ``profile`` (default): the profile cost model over the experiment's ``profile``.
* ``grpc://host:port``: the gRPC cost bridge client.

**Measured collectives lookup** (:func:`find_link_spec_for`, :func:`find_collective_tables`),
used by the profile cost model at TP > 1:

1. The hardware's link description: the first of the experiment's ``hardware.name``
   (``CostModelContext.hardware``), the profile's ``provenance.hardware`` and its
   ``provenance.device_name`` that names a file of ``llmsim/hardware/data/`` (its ``name``
   or an alias, any case).
2. Its measured tables in the data directories (``LLMSIM_DATA_DIR``, then the user cache):
   ``aiconfigurator/systems/data/<aiconfigurator_system>/comm/vllm/<version>/
   custom_allreduce_perf.parquet`` (the version equal to the profile's vLLM version when
   present, else the newest, with a warning) and ``vidur/network/<vidur_network>/``, in this
   order (AIConfigurator measured through vLLM's own all-reduce first); the profile's own
   ``collectives`` come before both.
3. Anything missing (no link description, no table in the data directories) is a logged
   warning, and the cost model's :meth:`~llmsim.costmodel.profile_model.ProfileCostModel.
   collectives_report` names the analytic model that priced those collectives instead.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmsim.cluster.parallel import SINGLE_GPU, ParallelConfig
from llmsim.costmodel.base import CostModel
from llmsim.errors import ConfigError, DataNotFoundError
from llmsim.hardware.links import LinkSpec, find_link_spec
from llmsim.model.config import ModelConfig
from llmsim.v1 import profile_pb2 as pb

logger = logging.getLogger(__name__)

# scheme -> "module:function"; the function is called as f(spec, context) -> CostModel
FACTORIES: dict[str, str] = {
    "profile": "llmsim.costmodel.profile_model:from_context",
    "grpc": "llmsim.bridge.client:from_context",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CostModelContext:
    """What a cost-model factory may need.

    Attributes:
        model: the served model's architecture.
        parallel: the instance's parallel layout (TP, PP, ...).
        profile_path: operator profile (``.pb`` or bundle dir), when the experiment has one.
        dtype: weight dtype label.
        hardware: the experiment's ``hardware.name`` (selects the link description).
        cudagraph_max_tokens: largest CUDA-graph capture size, tokens (0: no graphs; None:
            unknown).
    """

    model: ModelConfig
    parallel: ParallelConfig = SINGLE_GPU
    profile_path: Path | None = None
    dtype: str = "bf16"
    hardware: str | None = None
    cudagraph_max_tokens: int | None = None

    @property
    def tp(self) -> int:
        """Tensor-parallel degree (``parallel.tensor_parallel_size``)."""
        return self.parallel.tensor_parallel_size


def find_link_spec_for(hardware: str | None, profile: pb.Profile | None) -> LinkSpec | None:
    """The link description of the experiment's hardware, else of the profile's (step 1)."""
    prov = profile.provenance if profile is not None else None
    spec = find_link_spec(hardware, prov.hardware if prov else None,
                          prov.device_name if prov else None)
    if spec is None:
        logger.warning("no TP link description in llmsim/hardware/data/ for hardware %r "
                       "(profile: %r, %r)", hardware, prov.hardware if prov else None,
                       prov.device_name if prov else None)
    return spec


@functools.lru_cache(maxsize=16)
def _aiconfigurator_tables(directory: str, version: str | None) -> tuple[pb.OpTable, ...]:
    from llmsim.profile.importers.aiconfigurator import import_aiconfigurator_comm

    return tuple(import_aiconfigurator_comm(directory, version=version).collectives)


@functools.lru_cache(maxsize=16)
def _vidur_tables(directory: str) -> tuple[pb.OpTable, ...]:
    from llmsim.profile.importers.vidur import import_vidur

    tables = []
    for table in import_vidur(directory).collectives:
        table.attributes.setdefault("source", f"vidur:{Path(directory).name}")
        tables.append(table)
    return tuple(tables)


def find_collective_tables(link: LinkSpec | None, *, framework_version: str = ""
                           ) -> list[pb.OpTable]:
    """Measured collective tables of ``link``'s hardware in the data directories (step 2).

    Missing data is logged as a warning and gives fewer (or no) tables, never an error.
    """
    from llmsim.data.paths import dataset_path
    from llmsim.profile.importers.aiconfigurator import comm_versions

    if link is None:
        return []
    tables: list[pb.OpTable] = []
    if link.aiconfigurator_system:
        rel = f"aiconfigurator/systems/data/{link.aiconfigurator_system}"
        try:
            directory = dataset_path(rel)
        except DataNotFoundError:
            logger.warning("%s: measured collectives %s not in the data directories; "
                           "analytic model instead", link.name, rel)
        else:
            versions = comm_versions(directory)
            version = framework_version if framework_version in versions else None
            if not versions:
                logger.warning("%s: no comm table under %s", link.name, directory)
            else:
                if version is None:
                    logger.warning("%s: no comm table for vLLM %r in %s; using vLLM %s",
                                   link.name, framework_version, rel, versions[-1])
                tables += _aiconfigurator_tables(str(directory), version)
    if link.vidur_network:
        rel = f"vidur/network/{link.vidur_network}"
        try:
            tables += _vidur_tables(str(dataset_path(rel)))
        except DataNotFoundError:
            logger.warning("%s: measured collectives %s not in the data directories",
                           link.name, rel)
    return tables


def build_cost_model(spec: str, context: CostModelContext) -> CostModel:
    """Build the cost model named by ``spec``.

    Raises:
        ConfigError: unknown scheme.
    """
    scheme = spec.split("://", 1)[0] if "://" in spec else spec
    target = FACTORIES.get(scheme)
    if target is None:
        raise ConfigError(
            f"unknown cost model {spec!r}; choose one of: profile, grpc://HOST:PORT",
            field="cost_model",
        )
    module, func = target.split(":")
    factory: Callable[[str, CostModelContext], CostModel] = getattr(
        importlib.import_module(module), func)
    return factory(spec, context)
