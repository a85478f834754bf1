"""The parallel layout of one vLLM deployment: TP x PP GPUs per engine, DP engines, EP.

vLLM's names (``vllm/config/parallel.py`` ``ParallelConfig``, docs/cluster-semantics.md):
``tensor_parallel_size`` GPUs share every layer; ``pipeline_parallel_size`` stages split the
layers; ``data_parallel_size`` replicas serve disjoint requests; ``enable_expert_parallel``
places whole experts on ranks instead of sharding each expert over TP.

What llmsim models today (anything else is refused with "not supported yet: ..." by
:func:`check_supported`, before a replay starts):

* TP of any size inside one node;
* PP of any size with vLLM 0.19's default asynchronous scheduling (docs/cluster-semantics.md,
  "Pipeline parallelism"): the layers are split by :func:`pp_layer_split` (vLLM's
  ``get_pp_indices``); every stage needs at least one layer, and the cost model must be the
  profile one; PP without async scheduling is refused. PP composes with MoE DP and EP
  (vLLM 0.19 has no restriction there): each stage's MoE layers run over that stage's
  ``dp x tp`` ranks (``initialize_model_parallel``: EP groups per PP stage); the stages run
  one after the other, so a step's MoE cost is every stage's together (all layers);
* dense DP: ``data_parallel_size`` independent engines behind vLLM's DP load balancer
  (:class:`llmsim.router.dp.DPLoadBalancer`);
* MoE DP: lock-step ranks (:mod:`llmsim.sim.lockstep`) at any TP, experts split over the
  ``dp x tp`` ranks with ``enable_expert_parallel`` or TP-sharded over them without it; EP
  over the TP ranks of one engine (DP 1); :mod:`llmsim.cluster.moe_dp` (and its
  ``check_moe_layout`` for the all-to-all backend and architecture); with PP > 1 too.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.errors import ConfigError

__all__ = ["SINGLE_GPU", "ParallelConfig", "check_supported", "pp_layer_split"]


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


def pp_layer_split(num_layers: int, pp: int) -> tuple[tuple[int, int], ...]:
    """The decoder layers of each pipeline stage, ``(start, end)`` (end exclusive).

    vLLM 0.19 ``vllm/distributed/utils.py`` ``get_pp_indices`` without
    ``VLLM_PP_LAYER_PARTITION``: ``num_layers // pp`` layers per stage, the remainder ``r``
    added one each to the stages before the last, walking backwards (stages ``pp-2``,
    ``pp-3``, ..., ``pp-1-r``). The first stage also holds the embedding, the last the final
    norm and ``lm_head``.

    Raises:
        ConfigError: ``pp < 1`` or ``num_layers < pp`` (a stage without a layer; field
            ``engine.pipeline_parallel_size``).
    """
    if isinstance(pp, bool) or not isinstance(pp, int) or pp < 1:
        raise ConfigError(f"must be an integer >= 1, got {pp!r}",
                          field="engine.pipeline_parallel_size")
    if num_layers < pp:
        raise ConfigError(f"{pp} pipeline stages for a model of {num_layers} decoder layers: "
                          "every stage needs at least one layer",
                          field="engine.pipeline_parallel_size")
    sizes = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        sizes[-i] += 1
    out = []
    start = 0
    for n in sizes:
        out.append((start, start + n))
        start += n
    return tuple(out)


def check_supported(parallel: ParallelConfig, *, is_moe: bool, where: str = "engine",
                    num_layers: int | None = None, async_scheduling: bool = True,
                    cost_model: str = "profile") -> tuple[str, str] | None:
    """The first layout feature llmsim does not model yet, as ``(field, message)``.

    Args:
        parallel: the layout.
        is_moe: the served model has routed experts.
        where: dotted section the engine keys sit under (for the field name).
        num_layers: decoder layers of the served model (checks the PP split), if known.
        async_scheduling: the engine's ``async_scheduling`` (PP is modelled with it only).
        cost_model: the cost-model spec (PP is priced by the ``profile`` one only).

    Returns:
        None when the layout is modelled; else the dotted field to blame and a message
        (``"not supported yet: "`` for unmodelled features).
    """
    pp = parallel.pipeline_parallel_size
    if pp != 1:
        if num_layers is not None and num_layers < pp:
            return (f"{where}.pipeline_parallel_size",
                    f"{pp} pipeline stages for a model of {num_layers} decoder layers: every "
                    "stage needs at least one layer (vLLM get_pp_indices)")
        if not async_scheduling:
            return (f"{where}.pipeline_parallel_size",
                    "not supported yet: pipeline parallelism without async scheduling "
                    "(vLLM's classic PP with disjoint in-flight batches, "
                    "docs/cluster-semantics.md, Pipeline parallelism)")
        if cost_model != "profile":
            return (f"{where}.pipeline_parallel_size",
                    f"not supported yet: pipeline parallelism with cost model {cost_model!r} "
                    "(the bridge protocol has no PP send/recv)")
    if parallel.enable_expert_parallel and not is_moe:
        return (f"{where}.enable_expert_parallel",
                "not supported yet: expert parallelism on a dense model (it has no experts)")
    # MoE DP (with or without EP) and EP over TP ranks, with or without PP (each stage's
    # EP group is its dp x tp ranks, vLLM initialize_model_parallel): llmsim.cluster.moe_dp
    # (check_moe_layout refuses the all2all backends and architectures it does not model)
    return None
