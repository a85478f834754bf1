"""Choose a cost model from a spec string (experiment file ``cost_model:`` or ``--cost-model``).

One plain mapping from spec scheme to factory; a factory takes the spec and the
experiment context and returns a :class:`~llmsim.costmodel.base.CostModel`.

* ``profile`` (default): the profile cost model over the experiment's ``profile``.
* ``grpc://host:port``: the gRPC cost bridge client.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from llmsim.costmodel.base import CostModel
from llmsim.errors import ConfigError
from llmsim.model.config import ModelConfig

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
        tp: tensor-parallel degree.
        profile_path: operator profile (``.pb`` or bundle dir), when the experiment has one.
        dtype: weight dtype label.
    """

    model: ModelConfig
    tp: int = 1
    profile_path: Path | None = None
    dtype: str = "bf16"


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
    return getattr(importlib.import_module(module), func)(spec, context)
