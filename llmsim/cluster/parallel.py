"""The parallel layout of one vLLM deployment: TP x PP GPUs per engine, DP engines, EP.

vLLM's names (``vllm/config/parallel.py`` ``ParallelConfig``, docs/cluster-semantics.md):
``tensor_parallel_size`` GPUs share every layer; ``pipeline_parallel_size`` stages split the
layers; ``data_parallel_size`` replicas serve disjoint requests; ``enable_expert_parallel``
places whole experts on ranks instead of sharding each expert over TP.

What llmsim models today (anything else is refused with "not supported yet: ..." by
:func:`check_supported`, before a replay starts):

* TP of any size inside one node;
* PP = 1 only;
* dense DP: ``data_parallel_size`` independent engines behind vLLM's DP load balancer
  (:class:`llmsim.router.dp.DPLoadBalancer`);
* MoE DP: lock-step ranks (:mod:`llmsim.sim.lockstep`) at any TP, experts split over the
  ``dp x tp`` ranks with ``enable_expert_parallel`` or TP-sharded over them without it; EP
  over the TP ranks of one engine (DP 1); :mod:`llmsim.cluster.moe_dp` (and its
  ``check_moe_layout`` for the all-to-all backend and architecture); EP with PP > 1 is
  refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.errors import ConfigError

__all__ = ["SINGLE_GPU", "ParallelConfig", "check_supported"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParallelConfig:
    """Parallel degrees of one deployment (vLLM's ``ParallelConfig`` fields).

    Attributes:
        tensor_parallel_size: GPUs per pipeline stage (TP degree).
        pipeline_parallel_size: pipeline stages per engine.
        data_parallel_size: engines (DP ranks) of the deployment.
        enable_expert_parallel: experts placed whole on the ``dp x tp`` ranks.

    Raises:
        ConfigError: a degree below 1 (field named).
    """

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    enable_expert_parallel: bool = False

    def __post_init__(self) -> None:
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"must be an integer >= 1, got {value!r}",
                                  field=f"engine.{name}")

    @property
    def tp(self) -> int:
        """Shorthand for :attr:`tensor_parallel_size`."""
        return self.tensor_parallel_size

    @property
    def pp(self) -> int:
        """Shorthand for :attr:`pipeline_parallel_size`."""
        return self.pipeline_parallel_size

    @property
    def gpus_per_engine(self) -> int:
        """GPUs of one DP rank: ``tp x pp`` (vLLM's ``world_size`` of one engine)."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def world_size(self) -> int:
        """GPUs of the whole deployment: ``tp x pp x dp`` (vLLM's
        ``world_size_across_dp``)."""
        return self.gpus_per_engine * self.data_parallel_size

    @property
    def expert_parallel_size(self) -> int:
        """Ranks experts are spread over: ``dp x tp`` with EP on (vLLM
        ``FusedMoEParallelConfig``), else 1."""
        if not self.enable_expert_parallel:
            return 1
        return self.data_parallel_size * self.tensor_parallel_size


SINGLE_GPU = ParallelConfig()
"""One GPU: TP 1, PP 1, DP 1, no EP (the default layout of a batch, a scheduler, a model's
sizes)."""


def check_supported(parallel: ParallelConfig, *, is_moe: bool, where: str = "engine"
                    ) -> tuple[str, str] | None:
    """The first layout feature llmsim does not model yet, as ``(field, message)``.

    Args:
        parallel: the layout.
        is_moe: the served model has routed experts.
        where: dotted section the engine keys sit under (for the field name).

    Returns:
        None when the layout is modelled; else the dotted field to blame and a message
        starting with ``"not supported yet: "``.
    """
    if parallel.pipeline_parallel_size != 1:
        return (f"{where}.pipeline_parallel_size",
                "not supported yet: pipeline parallelism (pipeline_parallel_size > 1)")
    if parallel.enable_expert_parallel and not is_moe:
        return (f"{where}.enable_expert_parallel",
                "not supported yet: expert parallelism on a dense model (it has no experts)")
    if (parallel.enable_expert_parallel and parallel.expert_parallel_size > 1
            and parallel.pipeline_parallel_size > 1):
        return (f"{where}.pipeline_parallel_size",
                "not supported yet: pipeline parallelism with expert parallelism")
    # MoE DP (with or without EP) and EP over TP ranks: llmsim.cluster.moe_dp
    # (check_moe_layout refuses the all2all backends and architectures it does not model)
    return None
