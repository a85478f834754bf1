"""Experiment configuration: what to replay, on what, with which engine settings.

One config layer serves YAML files and Python code alike: every section is a frozen, slotted,
keyword-only dataclass validated by pydantic v2 (unknown keys refused, strict types: no
``true`` for a number, no ``"8"`` for an integer, no NaN/infinity), and every default is
written once, on the dataclass field. ``EngineConfig()`` built in Python therefore gets
exactly what an empty ``engine:`` section gets, including vLLM's default CUDA-graph capture
sizes for its ``max_num_seqs``. A violation raises :class:`~llmsim.errors.ConfigError`
naming the file, the line of the offending key and the dotted field; from Python code, the
dotted field (no file). No pydantic exception escapes.

Schema (engine keys are vLLM's argument names)::

    name: rtxpro6000-llama-3.1-8b
    model: llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json   # HF config.json
    profile: llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16
    cost_model: profile            # or grpc://127.0.0.1:50051
    hardware: {name: RTXPRO6000, gpu_memory_bytes: 102642302976}
    engine:
      tensor_parallel_size: 1
      pipeline_parallel_size: 1      # layers split over stages (vLLM get_pp_indices)
      data_parallel_size: 1          # dense DP: independent engines (vLLM's DP balancer)
      enable_expert_parallel: false
      expert_placement_strategy: linear   # or round_robin (EP; vLLM's names)
      all2all_backend: allgather_reducescatter   # vLLM 0.19's default, the one modelled
      max_num_seqs: 128
      max_num_batched_tokens: 2048
      block_size: 16
      enable_prefix_caching: true
      gpu_memory_utilization: 0.9
      num_gpu_blocks_override: null
      cudagraph_capture_sizes: [1, 2, 4, 8, ...]   # null: vLLM's default for max_num_seqs
      async_scheduling: true
      scheduler_reserve_full_isl: true
      long_prefill_token_threshold: 0
    overheads: {cpu_step_ns: 1000000, cpu_per_seq_ns: 5000, cudagraph_padding: true}
    trace: {format: llmservingsim, path: llmservingsim/workloads/...jsonl,
            options: {}, transforms: []}
    instances: 1                   # identical instances (shorthand for one group)
    instance_groups:               # optional: heterogeneous instances behind one router
      - {name: big, count: 1, hardware: {...}, profile: ..., engine: {...},
         placement: {node: n0, gpus: [0]}}     # omitted sections: the top-level ones
    cluster:                       # optional: where groups are placed
      nodes:
        - {name: n0, gpus: [{hardware: RTXPRO6000, count: 2, gpu_memory_bytes: ...}],
           link: RTXPRO6000}       # a llmsim/hardware/data/ link description
    power:                         # optional: node component power (docs/power.md); null = no source
      base_node_w: 60
      gpu: {RTXPRO6000: {idle_w: 35, active_w: 600, standby_w: 300, standby_s: 18}}
      cpu: {idle_w: 10, active_w: 200, utilization: 0.15}
      dram: {num_dimms: 16, idle_w_per_dimm: 2.0, energy_pj_per_bit: 6.0}
      link: {count: 1, idle_w: 5, energy_pj_per_bit: 4.0}
      nic: {count: 1, idle_w: 20}
      storage: {count: 2, idle_w: 5}
    moe_routing:                   # optional: how MoE tokens pick experts (llmsim.cluster.routing)
      policy: balanced             # or random, zipf (zipf_exponent), table (popularity_path)
      seed: 0
    router: round_robin            # or least_loaded, vllm_dp (vLLM DP balancer over all), llm_d,
                                   # session, prefix_aware, kv_aware; or a mapping:
    # router: {policy: llm_d, scrape_interval_ns: 50000000, queue_weight: 2,
    #          kv_cache_utilization_weight: 2, prefix_cache_weight: 3, load_aware_weight: 0,
    #          pd_decider: {non_cached_tokens: 16}}     # (RouterConfig; docs/cluster-semantics.md)
    check_invariants: counters     # off | counters | full
    output_dir: out/rtxpro6000-llama-3.1-8b
    measured: llmservingsim/measured/RTXPRO6000/Llama-3.1-8B   # optional, for validation
    description: free text         # optional

In Python the fields carry their attribute names (``model_path``, ``profile_path``,
``num_instances``, ``check``, ``measured_path``); the YAML names are accepted as well. A trace
may be given in memory (``Experiment(trace=some_trace)``, a :class:`~llmsim.trace.Trace` or
:class:`~llmsim.trace.TraceFrame`).

Relative paths resolve against the experiment file's directory first, then the current
directory, then the data dirs (``LLMSIM_DATA_DIR``, user cache). ``output_dir`` resolves
against the current directory.

Bounds: every number has a physical or resource bound, given with its reason on the field
(``Field(description=...)``) and quoted in the error when it is exceeded; the module-level
``MAX_*`` constants hold the figures.

Adding a section (e.g. a cluster description): write a pydantic dataclass like
:class:`HardwareConfig` (``@_config_errors("<key>")``, ``config=_CONFIG``, bounded fields
with their reasons) and add a field of that type (or a tuple of them) to :class:`Experiment`.
YAML key, unknown-key messages, bound reasons and line numbers follow from the field types;
checks across sections go in ``Experiment._check`` and raise ``_FieldError(dotted field,
message)``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import numbers
import re
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar

import numpy as np
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    InstanceOf,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from llmsim.cluster.moe_dp import All2AllBackend, ExpertPlacement
from llmsim.cluster.parallel import ParallelConfig
from llmsim.cluster.routing import RoutingPolicy
from llmsim.costmodel.base import MAX_STEP_COST_NS
from llmsim.data.paths import dataset_path
from llmsim.errors import ConfigError, DataNotFoundError, MissingDataError
from llmsim.instance.instance import CheckLevel
from llmsim.instance.step_time import StepOverheads
from llmsim.kvcache.offload import OffloadBackend
from llmsim.kvcache.tiers import PoolScope, TierKind, TierSpec
from llmsim.pd.config import KVConnectorKind, LinkSharing, PdRole
from llmsim.router import llmd as _llmd
from llmsim.router import pstack as _pstack
from llmsim.router.base import RouterPolicy
from llmsim.scheduler.config import SchedulerConfig
from llmsim.trace.frame import TraceFrame
from llmsim.trace.record import Trace
from llmsim.yamlfile import load_yaml_document, loads_yaml

__all__ = [
    "MAX_BLOCK_SIZE",
    "MAX_CAPTURE_SIZES",
    "MAX_GPU_MEMORY_BYTES",
    "MAX_INSTANCES",
    "MAX_NUM_BATCHED_TOKENS",
    "MAX_NUM_GPU_BLOCKS",
    "MAX_NUM_SEQS",
    "MAX_TENSOR_PARALLEL_SIZE",
    "MAX_TOTAL_GPU_BLOCKS",
    "ClusterConfig",
    "EngineConfig",
    "Experiment",
    "GpuConfig",
    "HardwareConfig",
    "InstanceGroupConfig",
    "MoeRoutingConfig",
    "NodeConfig",
    "PlacementConfig",
    "PowerConfig",
    "ResolvedGroup",
    "TraceConfig",
    "default_cudagraph_capture_sizes",
    "experiment_from_dict",
    "load_experiment",
    "parse_override",
]

# ----------------------------------------------------------------------------- bounds
MAX_TENSOR_PARALLEL_SIZE = 128
"""Largest ``tensor_parallel_size``: TP runs inside one scale-up (NVLink) domain, and the
largest shipped is 72 GPUs (GB200 NVL72)."""

MAX_NUM_SEQS = 2**20
"""Largest ``max_num_seqs``: every running sequence holds >= 1 KV block plus scheduler state
(~1 KiB of host memory), so 2^20 sequences is ~1 GiB; vLLM's largest default is 1,024."""

MAX_NUM_BATCHED_TOKENS = 2**24
"""Largest ``max_num_batched_tokens`` (and ``long_prefill_token_threshold``): 16.8 M tokens
per step, above the longest context window of any open model (10 M, Llama 4 Scout); per-step
token arrays scale with it."""

MAX_BLOCK_SIZE = 4096
"""Largest ``block_size``, tokens: vLLM's attention backends use 1-256; hybrid
(attention + mamba) models raise it to a few thousand to match the mamba state size."""

MAX_NUM_GPU_BLOCKS = 2**24
"""Largest ``num_gpu_blocks_override``: the block pool holds ~64 bytes of host memory per
block (measured: 64 MB and 0.9 s for 10^6 blocks), so 2^24 blocks is ~1 GiB and ~15 s to
build; a 288 GB GPU holds ~1.5 M 16-token blocks of even a 0.5 B-parameter model."""

MAX_TOTAL_GPU_BLOCKS = 2**26
"""Largest ``instances x num_gpu_blocks_override``: ~4.3 GiB of block pools in host memory."""

MAX_CAPTURE_SIZES = 4096
"""Most entries of ``cudagraph_capture_sizes``: one captured graph each; vLLM's default list
has at most 67."""

MAX_GPU_MEMORY_BYTES = 2**42
"""Largest ``gpu_memory_bytes`` (4 TiB): 14x the largest single accelerator (288 GB, B300)."""

MAX_INSTANCES = 4096
"""Most ``instances``: each is a full scheduler, block pool and step-time model, and the
router looks at every instance on every arrival; 4,096 instances of a 10^5-block cache is
~26 GB of host memory."""

_MAX_NAME_CHARS = 256
_MAX_TEXT_CHARS = 4096
_MAX_TRANSFORMS = 64

_CONFIG = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True,
                     arbitrary_types_allowed=True)


def _integral(value: Any) -> Any:
    """Integers of other types (``numpy.int64``) as ``int``; bools stay refused."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
        return int(value)
    return value


_Int = Annotated[int, Strict(), BeforeValidator(_integral)]
_Bool = Annotated[bool, Strict()]
_Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]


def _name_str(value: Any) -> Any:
    """Names may be written as YAML numbers (``name: 4090``); keep them as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


_Name = Annotated[str, Strict(), Field(min_length=1, max_length=_MAX_NAME_CHARS),
                  BeforeValidator(_name_str)]
_Text = Annotated[str, Strict(), Field(max_length=_MAX_TEXT_CHARS)]

_NOT_MODELLED = {
    "llmservingsim": "an LLMServingSim layout with no vLLM counterpart",
}
"""Placeholder keys (field name -> feature) that ``llmsim cluster import`` writes for
features not modelled yet: any value but null is refused with "not supported yet:
<feature>" (file, line, field). The helper that builds a feature replaces its key."""


def _refuse_unmodelled(value: Any, info: ValidationInfo) -> Any:
    if value is None:
        return None
    feature = _NOT_MODELLED.get(info.field_name or "", str(info.field_name))
    raise ValueError(f"not supported yet: {feature} ({_short(value)})")


_Unmodelled = Annotated[Any, AfterValidator(_refuse_unmodelled)]


class _FieldError(ValueError):
    """Raised inside a validator to blame a field other than the one being validated.

    Attributes:
        field: dotted field, relative to where pydantic reports the error (the section for
            a model validator, the field for a field validator).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def default_cudagraph_capture_sizes(max_num_seqs: int, max_num_batched_tokens: int | None = None
                                    ) -> tuple[int, ...]:
    """vLLM 0.19's default capture sizes.

    Up to ``min(2 x max_num_seqs, 512, max_num_batched_tokens)`` tokens, as ``1, 2, 4``, then
    every 8 below 256, then every 16 from 256 (matches the RTX4090 run's recorded list for
    ``max_num_seqs = 256``; vLLM caps the largest size at the step token budget).
    """
    top = min(2 * max_num_seqs, 512)
    if max_num_batched_tokens is not None:
        top = min(top, max_num_batched_tokens)
    sizes = [s for s in (1, 2, 4) if s <= top]
    sizes += list(range(8, min(top + 1, 256), 8))
    sizes += list(range(256, top + 1, 16))
    return tuple(sizes)


class _DefaultSizes(tuple):  # type: ignore[type-arg]
    """Type of :data:`_VLLM_DEFAULT`: an empty tuple with its own identity."""

    __slots__ = ()


_VLLM_DEFAULT: tuple[int, ...] = _DefaultSizes()
"""Sentinel default of ``cudagraph_capture_sizes``: vLLM's default for the engine's settings."""

_UNSET_PATH = Path("out")
"""Sentinel default of ``output_dir`` (identity-compared): ``out/<name>``."""

_C = TypeVar("_C")


def _config_errors(section: str) -> Callable[[type[_C]], type[_C]]:
    """Make a config dataclass raise :class:`ConfigError` (never pydantic's error) from code.

    ``section`` prefixes the dotted field (``engine`` -> ``engine.max_num_seqs``).
    """

    def wrap(cls: type[_C]) -> type[_C]:
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                init(self, *args, **kwargs)
            except ValidationError as exc:
                raise config_error(exc, prefix=section) from None

        cls.__init__ = __init__  # type: ignore[method-assign]
        return cls

    return wrap


# ---------------------------------------------------------------------------- sections
@_config_errors("hardware")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class HardwareConfig:
    """The accelerator of each instance.

    Attributes:
        name: label (e.g. ``RTXPRO6000``).
        gpu_memory_bytes: device memory per GPU as CUDA reports it, bytes (None: unknown,
            then ``engine.num_gpu_blocks_override`` is required).
    """

    name: _Name = "gpu"
    gpu_memory_bytes: Annotated[_Int | None, Field(
        ge=1, le=MAX_GPU_MEMORY_BYTES,
        description="4 TiB is 14x the largest single accelerator (288 GB, B300)")] = None


def _capture_sizes_in(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """``None`` (YAML ``null``) or the untouched default: vLLM's default list (resolved by
    :class:`EngineConfig` once ``max_num_seqs`` is known); a list: validated as a tuple."""
    if value is None or value is _VLLM_DEFAULT:
        return _VLLM_DEFAULT
    return handler(tuple(value) if isinstance(value, list) else value)


@_config_errors("engine")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class EngineConfig:
    """vLLM engine arguments the simulation honours (vLLM's names and defaults).

    Attributes:
        tensor_parallel_size: GPUs per pipeline stage (TP degree).
        pipeline_parallel_size: pipeline stages (layers split as vLLM's ``get_pp_indices``;
            modelled with ``async_scheduling`` only, checked at replay time).
        data_parallel_size: DP ranks: independent engines behind vLLM's DP load balancer
            for a dense model, lock-step ranks for a MoE model (:mod:`llmsim.sim.lockstep`).
        enable_expert_parallel: vLLM's ``--enable-expert-parallel``: experts placed whole on
            the ``dp x tp`` ranks (:mod:`llmsim.cluster.moe_dp`).
        max_num_seqs: most running requests per step.
        max_num_batched_tokens: token budget of one step.
        block_size: tokens per KV block.
        enable_prefix_caching: reuse KV blocks of equal prompt prefixes.
        gpu_memory_utilization: fraction of GPU memory vLLM may use, in (0, 1].
        num_gpu_blocks_override: KV blocks per instance (None: from the memory model).
        cudagraph_capture_sizes: token counts with a captured CUDA graph, ascending;
            ``()`` for none; omitted or ``None``: vLLM 0.19's default for ``max_num_seqs``
            and ``max_num_batched_tokens`` (:func:`default_cudagraph_capture_sizes`). Note
            that ``dataclasses.replace`` keeps the resolved list.
        async_scheduling: the CPU prepares step n+1 while step n runs.
        scheduler_reserve_full_isl: admit a request only if its whole prompt fits in KV.
        long_prefill_token_threshold: cap on one request's prompt tokens per step (0: none).
        expert_placement_strategy: vLLM's ``--expert-placement-strategy`` with EP:
            ``linear`` (contiguous experts per rank, the default) or ``round_robin``.
        all2all_backend: vLLM's ``--all2all-backend`` (MoE dispatch / combine across DP
            ranks); only the 0.19 default ``allgather_reducescatter`` is modelled, the other
            values vLLM accepts are refused at replay time where they would matter.
        enable_chunked_prefill: split prompts over steps (vLLM V1's default); false: a
            waiting request is admitted whole or admission stops for the step
            (:class:`llmsim.scheduler.config.SchedulerConfig`).
    """

    tensor_parallel_size: Annotated[_Int, Field(
        ge=1, le=MAX_TENSOR_PARALLEL_SIZE,
        description="TP runs inside one scale-up domain; the largest is 72 GPUs (NVL72)")] = 1
    pipeline_parallel_size: Annotated[_Int, Field(
        ge=1, le=MAX_TENSOR_PARALLEL_SIZE,
        description="one stage per GPU at most")] = 1
    data_parallel_size: Annotated[_Int, Field(
        ge=1, le=MAX_INSTANCES,
        description="each DP rank is a full instance (scheduler and block pool)")] = 1
    enable_expert_parallel: _Bool = False
    expert_placement_strategy: Annotated[ExpertPlacement, BeforeValidator(
        lambda v: _enum_in(ExpertPlacement)(v))] = ExpertPlacement.LINEAR
    all2all_backend: Annotated[All2AllBackend, BeforeValidator(
        lambda v: _enum_in(All2AllBackend)(v))] = All2AllBackend.ALLGATHER_REDUCESCATTER
    max_num_seqs: Annotated[_Int, Field(
        ge=1, le=MAX_NUM_SEQS,
        description="~1 KiB of host state per running sequence (2^20 is ~1 GiB)")] = 256
    max_num_batched_tokens: Annotated[_Int, Field(
        ge=1, le=MAX_NUM_BATCHED_TOKENS,
        description="16.8 M tokens per step exceeds any model's context window")] = 2048
    block_size: Annotated[_Int, Field(
        ge=1, le=MAX_BLOCK_SIZE,
        description="vLLM uses 1-256, hybrid models a few thousand")] = 16
    enable_prefix_caching: _Bool = True
    gpu_memory_utilization: Annotated[_Float, Field(gt=0, le=1)] = 0.9
    num_gpu_blocks_override: Annotated[_Int | None, Field(
        ge=2, le=MAX_NUM_GPU_BLOCKS,
        description="~64 bytes of host memory per block (2^24 blocks is ~1 GiB)")] = None
    cudagraph_capture_sizes: Annotated[tuple[Annotated[_Int, Field(ge=1)], ...], Field(
        max_length=MAX_CAPTURE_SIZES, description="one captured graph per size"),
        WrapValidator(_capture_sizes_in)] = _VLLM_DEFAULT
    async_scheduling: _Bool = True
    scheduler_reserve_full_isl: _Bool = True
    long_prefill_token_threshold: Annotated[_Int, Field(
        ge=0, le=MAX_NUM_BATCHED_TOKENS,
        description="no prompt chunk exceeds the step token bound")] = 0
    enable_chunked_prefill: _Bool = True

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        budget = self.max_num_batched_tokens
        if budget < self.block_size:
            raise _FieldError("max_num_batched_tokens",
                              f"{budget} is smaller than one KV block ({self.block_size} tokens)")
        sizes = self.cudagraph_capture_sizes
        if sizes is _VLLM_DEFAULT:
            resolved = default_cudagraph_capture_sizes(self.max_num_seqs, budget)
        else:
            resolved = tuple(sorted(set(sizes)))
            if resolved and resolved[-1] > budget:
                raise _FieldError("cudagraph_capture_sizes",
                                  f"capture size {resolved[-1]} exceeds max_num_batched_tokens "
                                  f"({budget}): vLLM never runs a graph above the step's token "
                                  "budget")
        object.__setattr__(self, "cudagraph_capture_sizes", resolved)
        return self

    def parallel_config(self) -> ParallelConfig:
        """The parallel layout these settings describe."""
        return ParallelConfig(tensor_parallel_size=self.tensor_parallel_size,
                              pipeline_parallel_size=self.pipeline_parallel_size,
                              data_parallel_size=self.data_parallel_size,
                              enable_expert_parallel=self.enable_expert_parallel)

    def scheduler_config(self) -> SchedulerConfig:
        """The scheduler's view of these settings."""
        return SchedulerConfig(
            max_num_seqs=self.max_num_seqs, max_num_batched_tokens=self.max_num_batched_tokens,
            block_size=self.block_size, enable_prefix_caching=self.enable_prefix_caching,
            reserve_full_isl=self.scheduler_reserve_full_isl,
            long_prefill_token_threshold=self.long_prefill_token_threshold,
            enable_chunked_prefill=self.enable_chunked_prefill)


_OVERHEAD_DEFAULTS = StepOverheads()


@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class _OverheadsSchema:
    """Validation schema of :class:`~llmsim.instance.step_time.StepOverheads` (defaults
    taken from it, so they are written once)."""

    cpu_step_ns: Annotated[_Int, Field(
        ge=0, le=MAX_STEP_COST_NS,
        description="a step costs at most llmsim.costmodel.base.MAX_STEP_COST_NS (600 s)"),
    ] = _OVERHEAD_DEFAULTS.cpu_step_ns
    cpu_per_seq_ns: Annotated[_Int, Field(
        ge=0, le=MAX_STEP_COST_NS,
        description="a step costs at most llmsim.costmodel.base.MAX_STEP_COST_NS (600 s)"),
    ] = _OVERHEAD_DEFAULTS.cpu_per_seq_ns
    cudagraph_padding: _Bool = _OVERHEAD_DEFAULTS.cudagraph_padding


_OVERHEADS = TypeAdapter(_OverheadsSchema)


def _overheads_in(value: Any) -> StepOverheads:
    if isinstance(value, StepOverheads):
        value = dataclasses.asdict(value)
    if value is None:
        value = {}
    checked = _OVERHEADS.validate_python(value)
    return StepOverheads(**dataclasses.asdict(checked))


def _resolve_path(value: Any, info: ValidationInfo, *, must_exist: bool = True) -> Path | None:
    """A path field: relative to the experiment file, the working dir, then the data dirs.

    Raises:
        PydanticCustomError: not a string, unusable (a component too long for the file
            system, a NUL byte, an unknown ``~user``), or (``must_exist``) not found.
    """
    if value is None:
        return None
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT_CHARS:
        raise PydanticCustomError("path", "must be a path string, got {value}",
                                  {"value": _short(value)})
    source = (info.context or {}).get("source")
    try:
        return _find(value, source, must_exist=must_exist)
    except PydanticCustomError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise PydanticCustomError("path", "not a usable path {value}: {error}",
                                  {"value": _short(value), "error": reason[:200]}) from None


def _find(value: str, source: Path | None, *, must_exist: bool) -> Path:
    p = Path(value).expanduser()
    if p.is_absolute():
        if must_exist and not p.exists():
            raise PydanticCustomError("path", "file not found: {path}", {"path": _short(str(p))})
        return p
    if source is not None:
        local = Path(source).parent / p
        if local.exists():
            return local
    if Path.cwd().joinpath(p).exists():
        return Path.cwd() / p
    try:
        return dataset_path(p)
    except DataNotFoundError as exc:
        if must_exist:
            raise PydanticCustomError("data_not_found", "{message}", {"message": str(exc)}) from None
        return p


def _transforms_in(value: Any) -> Any:
    if value is None:
        return ()
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple):
        from llmsim.trace.transforms import TransformName

        known = {t.value for t in TransformName}
        for i, spec in enumerate(value):
            if not isinstance(spec, dict) or len(spec) != 1:
                raise _FieldError(str(i), "a transform is a one-key mapping "
                                  f"{{name: parameters}}, got {_short(spec)}")
            name = next(iter(spec))
            if name not in known:
                raise _FieldError(str(i), f"unknown transform {_short(name)} "
                                  f"(known: {', '.join(sorted(known))})")
    return value


@_config_errors("trace")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class TraceConfig:
    """Where the requests come from: a trace file, or a trace in memory.

    Attributes:
        format: loader name for :func:`llmsim.trace.load_trace` (normalized).
        path: resolved trace file (None when ``requests`` is given).
        options: keyword options of the loader.
        transforms: for :func:`llmsim.trace.apply_transforms`.
        requests: an in-memory trace (Python only), used instead of ``path``.
    """

    format: Annotated[str, Strict(), Field(max_length=_MAX_NAME_CHARS)] = "llmservingsim"
    path: Path | None = None
    options: dict[Annotated[str, Strict()], Any] = Field(default_factory=dict)
    transforms: Annotated[tuple[dict[str, Any], ...], Field(max_length=_MAX_TRANSFORMS),
                          BeforeValidator(_transforms_in)] = ()
    requests: InstanceOf[Trace] | None = Field(default=None, repr=False)

    @field_validator("format", mode="after")
    @classmethod
    def _format(cls, value: str) -> str:
        from llmsim.trace.registry import TraceFormat

        name = value.strip().lower().replace("-", "_")
        if name not in {f.value for f in TraceFormat}:
            known = ", ".join(f.value for f in TraceFormat)
            raise PydanticCustomError("trace_format", "unknown trace format {fmt} (known: "
                                      "{known})", {"fmt": _short(value), "known": known})
        return name

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: Any, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info)

    @field_validator("requests", mode="before")
    @classmethod
    def _requests(cls, value: Any) -> Any:
        return value.to_trace() if isinstance(value, TraceFrame) else value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.path is None and self.requests is None:
            raise _FieldError("path", "missing (a trace file, or requests in memory)")
        if self.path is not None and self.requests is not None:
            raise _FieldError("requests", "give either path or requests, not both")
        if self.requests is not None and self.options:
            raise _FieldError("options", "loader options apply to a trace file, not to "
                              "requests in memory")
        _check_loader_options(self.format, self.options)
        return self


def _check_loader_options(fmt: str, options: dict[str, Any]) -> None:
    """Refuse options the format's loader does not take (at load time, so with the line)."""
    from llmsim.trace.registry import _loaders, check_options, parse_format

    kind = parse_format(fmt)
    try:
        check_options(kind, _loaders()[kind], options)
    except ConfigError as exc:
        raise _FieldError(exc.field or "options", exc.reason) from None


def _trace_in(value: Any) -> Any:
    if isinstance(value, TraceFrame):
        value = value.to_trace()
    if isinstance(value, Trace):
        return TraceConfig(requests=value)
    return value


def _enum_in(enum: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, enum):
            return value
        try:
            return enum(value)
        except (ValueError, TypeError):
            known = ", ".join(e.value for e in enum)  # type: ignore[attr-defined]
            raise PydanticCustomError("enum", "unknown value {value} (known: {known})",
                                      {"value": _short(value), "known": known}) from None
    return parse


# ------------------------------------------------------------------------- MoE routing
@_config_errors("moe_routing")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class MoeRoutingConfig:
    """How a MoE step's tokens pick their experts (:mod:`llmsim.cluster.routing`); read
    where experts are spread over ranks (expert parallelism, MoE data parallelism).

    Attributes:
        policy: ``balanced`` (expected active experts under uniform top-k, no draw),
            ``random`` (uniform draw per token), ``zipf`` (popularity ``(e + 1)^-s``) or
            ``table`` (popularity from ``popularity_path``).
        seed: seed of the per-step draws.
        zipf_exponent: ``s`` of the ``zipf`` policy (required by it).
        popularity_path: CSV ``expert,popularity`` of the ``table`` policy (required by it).
    """

    policy: Annotated[RoutingPolicy, BeforeValidator(_enum_in(RoutingPolicy))] = \
        RoutingPolicy.BALANCED
    seed: Annotated[_Int, Field(ge=0, le=2**63 - 1,
                                description="numpy seeds are non-negative 64-bit integers")] = 0
    zipf_exponent: Annotated[_Float | None, Field(
        gt=0, le=100, description="at s = 100 expert 2 is 2^-100 as popular as expert 1")] = None
    popularity_path: Path | None = None

    @field_validator("popularity_path", mode="before")
    @classmethod
    def _popularity(cls, value: Any, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.policy is RoutingPolicy.ZIPF and self.zipf_exponent is None:
            raise _FieldError("zipf_exponent", "the zipf policy needs zipf_exponent")
        if self.policy is RoutingPolicy.TABLE and self.popularity_path is None:
            raise _FieldError("popularity_path", "the table policy needs popularity_path")
        return self


# ----------------------------------------------------------------- cluster and groups
MAX_GPUS_PER_NODE = 1024
"""Most GPUs one node entry may hold: the largest scale-up domain shipped is 72 GPUs
(GB200 NVL72); 1,024 leaves room for future racks while bounding the placement tables."""

MAX_NODES = 4096
"""Most nodes of a cluster: one per instance at most (:data:`MAX_INSTANCES`)."""


def _link_name(value: str) -> str:
    """A shipped link description's ``name`` for ``value`` (a name or alias, any case)."""
    from llmsim.hardware.links import find_link_spec, shipped_link_specs

    spec = find_link_spec(value)
    if spec is None:
        known = ", ".join(sorted(s.name for s in shipped_link_specs()))
        raise PydanticCustomError("path", "no link description named {value} in "
                                  "llmsim/hardware/data/ (known: {known})",
                                  {"value": _short(value), "known": known})
    return spec.name


# ------------------------------------------------------------------------------- power
MAX_POWER_W = 200_000.0
"""Largest power figure of one component, W: a GB200 NVL72 rack, the largest single system
shipped, draws ~120 kW."""

MAX_ENERGY_PJ_PER_BIT = 1000.0
"""Largest energy per bit moved, pJ/bit: 1 nJ/bit, two orders of magnitude above DRAM
access (6 pJ/bit in LLMServingSim's ``single_node_power_instance.json``)."""

MAX_POWER_DEVICES = 4096
"""Most devices of one kind (DIMMs, links, NICs, disks, CXL devices) in one node."""

_Watts = Annotated[_Float | None, Field(ge=0, le=MAX_POWER_W,
                                        description="a GB200 NVL72 rack draws ~120 kW")]
_PjPerBit = Annotated[_Float | None, Field(ge=0, le=MAX_ENERGY_PJ_PER_BIT,
                                           description="1 nJ/bit, 100x DRAM access")]
_Devices = Annotated[_Int, Field(ge=0, le=MAX_POWER_DEVICES,
                                 description="devices of one kind in one node")]
_Fraction = Annotated[_Float | None, Field(ge=0, le=1, description="a utilisation")]


@_config_errors("power.gpu")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class GpuPowerConfig:
    """Overrides of one GPU type's power file (``llmsim/power/data``); None keeps the file's.

    Attributes:
        idle_w: power with no kernel running, W (LLMServingSim ``npu.<hw>.idle_power``).
        active_w: constant power while kernels run, W (LLMServingSim ``active_power``);
            None: the power-state law (idle to ``power_limit_w`` by roofline share,
            :mod:`llmsim.power.accumulator`).
        standby_w: power after a kernel ends, for ``standby_s``, W (``standby_power``);
            None: the GPU drops to ``idle_w`` at once.
        standby_s: how long the standby power lasts after a kernel, s
            (``standby_duration``, which LLMServingSim's ``PowerModel`` reads as seconds).
        power_limit_w: board power limit: cap of the active power, W.
    """

    idle_w: _Watts = None
    active_w: _Watts = None
    standby_w: _Watts = None
    standby_s: Annotated[_Float | None, Field(ge=0, le=3600.0,
                                              description="an hour of standby")] = None
    power_limit_w: _Watts = None


@_config_errors("power.cpu")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class CpuPowerConfig:
    """Host CPU power (LLMServingSim ``cpu``): ``idle_w + (active_w - idle_w) x
    utilization`` always, plus ``(active_w - idle_w) x max(busy_utilization -
    utilization, 0)`` while an instance's kernels run.

    Attributes:
        idle_w: CPU package power at idle, W.
        active_w: CPU package power at full load, W.
        utilization: background utilisation, fraction.
        busy_utilization: utilisation while the GPUs of an instance run kernels, fraction
            (0.7: LLMServingSim ``serving/core/power_model.py``
            ``add_npu_active_energy_consumption``, "assume max CPU utilization during NPU
            active time").
    """

    idle_w: _Watts = None
    active_w: _Watts = None
    utilization: _Fraction = None
    busy_utilization: _Fraction = 0.7


@_config_errors("power.dram")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class DramPowerConfig:
    """Host memory power (LLMServingSim ``dram``).

    Attributes:
        num_dimms: DIMMs of the node (LLMServingSim: ``cpu_mem.mem_size // dimm_size``);
            None: unknown.
        idle_w_per_dimm: background power of one DIMM, W (``idle_power``).
        energy_pj_per_bit: energy per bit read or written in host memory, pJ/bit
            (``energy_per_bit``); charged for bytes moved through host memory (and CXL
            memory without its own figure, as LLMServingSim does).
        pim_active_w: memory power while PIM units compute, W (LLMServingSim: the PIM
            ``.ini`` ``peak_power``); the extra over the DIMMs' idle is charged during PIM
            busy time.
    """

    num_dimms: _Devices | None = None
    idle_w_per_dimm: _Watts = None
    energy_pj_per_bit: _PjPerBit = None
    pim_active_w: _Watts = None


@_config_errors("power.device")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class DevicePowerConfig:
    """Devices of one kind in a node: links, NICs, storage, CXL memory devices.

    Attributes:
        count: devices (LLMServingSim ``num_links`` / ``num_nics`` / ``num_devices``);
            None: unknown (for ``cxl``: no CXL memory).
        idle_w: background power of one device, W (``idle_power``).
        energy_pj_per_bit: energy per bit moved through them, pJ/bit (``energy_per_bit``;
            links: every TP collective and PP transfer, ring-counted as LLMServingSim's
            ``total_ring_data``).
    """

    count: _Devices | None = None
    idle_w: _Watts = None
    energy_pj_per_bit: _PjPerBit = None


@_config_errors("power")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class PowerConfig:
    """Power of one node's components (LLMServingSim's per-node ``power`` block).

    A value left ``null`` has no source: that component is reported "unavailable" (the
    energy totals say which components they cover), never given an invented figure.

    Attributes:
        base_node_w: platform power drawn always (``base_node_power``), W.
        gpu: per GPU type (hardware name, any case), overrides of its power file.
        cpu, dram: host CPU and memory.
        link: intra-node links (``link``).
        nic: network interfaces (``nic``).
        storage: disks (``storage``).
        cxl: CXL memory devices (LLMServingSim has no power term of its own for them).
    """

    base_node_w: _Watts = None
    gpu: dict[_Name, GpuPowerConfig] = Field(default_factory=dict)
    cpu: CpuPowerConfig = Field(default_factory=CpuPowerConfig)
    dram: DramPowerConfig = Field(default_factory=DramPowerConfig)
    link: DevicePowerConfig = Field(default_factory=DevicePowerConfig)
    nic: DevicePowerConfig = Field(default_factory=DevicePowerConfig)
    storage: DevicePowerConfig = Field(default_factory=DevicePowerConfig)
    cxl: DevicePowerConfig = Field(default_factory=DevicePowerConfig)

    def gpu_overrides(self, hardware: str) -> GpuPowerConfig | None:
        """The ``gpu`` entry for ``hardware`` (case-insensitive), or None."""
        key = hardware.lower()
        return next((v for k, v in self.gpu.items() if k.lower() == key), None)


@_config_errors("cluster.nodes.gpus")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class GpuConfig:
    """GPUs of one type in a node.

    Attributes:
        hardware: GPU label; instances placed on these GPUs run on this hardware.
        count: how many such GPUs the node has.
        gpu_memory_bytes: device memory per GPU as CUDA reports it, bytes (None: unknown).
    """

    hardware: _Name
    count: Annotated[_Int, Field(
        ge=1, le=MAX_GPUS_PER_NODE,
        description="the largest scale-up domain shipped is 72 GPUs (NVL72)")] = 1
    gpu_memory_bytes: Annotated[_Int | None, Field(
        ge=1, le=MAX_GPU_MEMORY_BYTES,
        description="4 TiB is 14x the largest single accelerator (288 GB, B300)")] = None


MAX_NETWORK_BANDWIDTH_BYTES_PER_S = 10**13
"""Largest inter-node bandwidth per GPU, bytes/s (10 TB/s): 50x one 800 Gb/s NIC
(1e11 B/s), the fastest shipped; above every scale-out fabric."""


@_config_errors("cluster.nodes.network")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class NetworkConfig:
    """A node's inter-node network (scale-out NICs), as one GPU sees it.

    Prices the collectives of a group whose ranks sit on several nodes
    (:class:`llmsim.costmodel.collectives.HierarchicalCollectives`).

    Attributes:
        bandwidth_bytes_per_s: inter-node bandwidth of one GPU, one direction, bytes/s
            (AIConfigurator systems ``inter_node_bw``, "Byte/s per GPU, single direction";
            an ASTRA-Sim / LLMServingSim ``link_bw`` of the outer topology dimension is per
            NPU too).
        latency_ns: fixed cost of one inter-node collective step, ns.
        source: where the two figures come from (file, datasheet); reported with every
            collective they price.
    """

    bandwidth_bytes_per_s: Annotated[_Float, Field(
        gt=0, le=MAX_NETWORK_BANDWIDTH_BYTES_PER_S,
        description="10 TB/s per GPU is 50x the fastest shipped NIC")]
    latency_ns: Annotated[_Float, Field(
        ge=0, le=MAX_STEP_COST_NS,
        description="a step costs at most llmsim.costmodel.base.MAX_STEP_COST_NS")] = 0.0
    source: _Text | None = None


@_config_errors("cluster.nodes")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class NodeConfig:
    """One host: its GPUs and the link between them.

    Attributes:
        name: node label (unique in the cluster).
        gpus: the node's GPUs, numbered 0, 1, ... in the order listed (a ``count: 2``
            entry takes two numbers). One GPU type per node (mixed nodes are refused).
        link: intra-node link description: the ``name`` (or an alias) of a file of
            ``llmsim/hardware/data/`` (bandwidth, latency, P2P, measured tables; each value
            with its source). Default: the file named by the GPUs' hardware. The TP
            collectives of instances on this node are priced with it.
        network: inter-node network of this node's GPUs (:class:`NetworkConfig`); needed
            where a group's ranks on this node communicate with ranks on another node
            (MoE DP / EP groups placed with ``placement.spans``). None: none described.
        power: this node's component power (replaces the experiment's ``power`` whole);
            None: the experiment's.
    """

    name: _Name
    gpus: Annotated[tuple[GpuConfig, ...], Field(max_length=MAX_GPUS_PER_NODE,
                                                 description="one entry per GPU type")]
    link: _Name | None = None
    network: NetworkConfig | None = None
    power: PowerConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        # emptiness checked here, not by min_length: pydantic would also report a list
        # whose only item is invalid as too short, and blame the list before the item
        if not self.gpus:
            raise _FieldError("gpus", "a node needs at least one GPU")
        kinds = {g.hardware.lower() for g in self.gpus}
        if len(kinds) > 1:
            raise _FieldError("gpus", "not supported yet: GPUs of different types in one "
                              f"node ({', '.join(g.hardware for g in self.gpus)})")
        if self.num_gpus > MAX_GPUS_PER_NODE:
            raise _FieldError("gpus", f"{self.num_gpus} GPUs in one node exceeds "
                              f"{MAX_GPUS_PER_NODE}")
        try:
            link = _link_name(self.link or self.gpus[0].hardware)
        except PydanticCustomError as exc:
            raise _FieldError("link", str(exc)) from None
        object.__setattr__(self, "link", link)
        return self

    @property
    def num_gpus(self) -> int:
        """GPUs in the node."""
        return sum(g.count for g in self.gpus)


@_config_errors("cluster")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class ClusterConfig:
    """Nodes -> GPUs -> links that instance groups are placed on.

    Attributes:
        nodes: the hosts (names unique).
    """

    nodes: Annotated[tuple[NodeConfig, ...], Field(
        max_length=MAX_NODES, description="one node per instance at most")]

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.nodes:
            raise _FieldError("nodes", "a cluster needs at least one node")
        seen: set[str] = set()
        for i, node in enumerate(self.nodes):
            if node.name in seen:
                raise _FieldError(f"nodes.{i}.name", f"node {node.name!r} named twice")
            seen.add(node.name)
        return self

    def node(self, name: str) -> NodeConfig | None:
        """The node called ``name``, or None."""
        return next((n for n in self.nodes if n.name == name), None)


@_config_errors("kv_transfer_config")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class KVTransferConfig:
    """How prefill and decode instances move KV (vLLM's ``--kv-transfer-config`` keys).

    Read only when some instance group has ``role: prefill`` or ``decode``
    (:mod:`llmsim.pd`).

    Attributes:
        kv_connector: ``NixlConnector`` (decode pulls after the prefill, the default) or
            ``P2pNcclConnector`` (prefill pushes layer by layer during its forward).
        link: link description (a ``llmsim/hardware/data/`` name) whose sourced
            ``p2p_bandwidth_bytes_per_s`` / ``p2p_latency_ns`` price the transfers;
            default: the node's link, else the prefill group's hardware.
        link_sharing: how concurrent transfers share an instance's ports: ``serialize``
            (first come first served, the default) or ``fair_share`` (NIXL only).
    """

    kv_connector: Annotated[KVConnectorKind, BeforeValidator(_enum_in(KVConnectorKind))] = \
        KVConnectorKind.NIXL
    link: _Name | None = None
    link_sharing: Annotated[LinkSharing, BeforeValidator(_enum_in(LinkSharing))] = \
        LinkSharing.SERIALIZE

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.link is not None:
            try:
                object.__setattr__(self, "link", _link_name(self.link))
            except PydanticCustomError as exc:
                raise _FieldError("link", str(exc)) from None
        if (self.link_sharing is LinkSharing.FAIR_SHARE
                and self.kv_connector is not KVConnectorKind.NIXL):
            raise _FieldError("link_sharing", "not supported yet: fair_share with "
                              f"{self.kv_connector.value} (layer-wise pushes are serialized)")
        return self


# ------------------------------------------------------------------ memory tiers (KV, weights)
MAX_TIER_BYTES = 2**50
"""Largest ``capacity_bytes`` of one tier device (1 PiB): LLMServingSim's largest CXL pool
is 1 TB a device; a disk tier may be larger, and entries are only bookkeeping."""

MAX_BANDWIDTH_BYTES_PER_S = 10**13
"""Largest tier or link bandwidth, bytes/s (10 TB/s): above the HBM of any shipped GPU
(B300: 8 TB/s); host memory and PCIe are 1-2 orders of magnitude below."""


@_config_errors("memory_tiers")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class MemoryTierConfig:
    """A memory tier below the GPUs (LLMServingSim's ``cpu_mem`` / ``cxl_mem``).

    Attributes:
        name: label that ``kv_offload.tiers`` and ``weight_offload`` locations use.
        kind: ``dram`` (host memory), ``cxl`` or ``disk`` (reports only).
        capacity_bytes: bytes of one device.
        bandwidth_bytes_per_s: copy bandwidth of one device, bytes/s.
        latency_ns: fixed cost of one copy, ns.
        num_devices: devices (``cxl:0`` .. ``cxl:N-1``); KV is striped over them.
        shared: ``instance`` (a pool per engine), ``node`` (per cluster node; all engines
            without a cluster) or ``cluster`` (one pool for all).
    """

    name: _Name
    capacity_bytes: Annotated[_Int, Field(
        ge=0, le=MAX_TIER_BYTES, description="1 PiB a device exceeds any shipped memory tier")]
    bandwidth_bytes_per_s: Annotated[_Int, Field(
        ge=1, le=MAX_BANDWIDTH_BYTES_PER_S,
        description="10 TB/s is above the HBM of any shipped GPU")]
    latency_ns: Annotated[_Int, Field(
        ge=0, le=MAX_STEP_COST_NS,
        description="a step costs at most llmsim.costmodel.base.MAX_STEP_COST_NS")] = 0
    kind: Annotated[TierKind, BeforeValidator(_enum_in(TierKind))] = TierKind.DRAM
    num_devices: Annotated[_Int, Field(
        ge=1, le=MAX_GPUS_PER_NODE, description="devices attached to one host")] = 1
    shared: Annotated[PoolScope, BeforeValidator(_enum_in(PoolScope))] = PoolScope.NODE

    def spec(self) -> TierSpec:
        """The :class:`llmsim.kvcache.tiers.TierSpec` of this tier."""
        return TierSpec(name=self.name, kind=self.kind, capacity_bytes=self.capacity_bytes,
                        bandwidth_bytes_per_s=self.bandwidth_bytes_per_s,
                        latency_ns=self.latency_ns, num_devices=self.num_devices,
                        shared=self.shared)


@_config_errors("kv_offload")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class KVOffloadConfig:
    """KV offload to lower tiers (vLLM ``--kv-offloading-backend``; docs/cluster-semantics.md).

    Attributes:
        backend: ``native`` (vLLM's OffloadingConnector: 16-token blocks, asynchronous
            loads, deferred stores of every full block) or ``lmcache`` (256-token chunks,
            blocking load before the forward, prompt-only stores at step end).
        tiers: ``memory_tiers`` names in spill order (stores go to the first; evictions
            move down).
        host_link_bandwidth_bytes_per_s: cap of every GPU<->tier copy, bytes/s (the GPU's
            PCIe link, one direction); None: the tier's own bandwidth.
        block_size: offloaded block (native) or chunk (LMCache) in tokens, a multiple of
            ``engine.block_size``; None: the engine block size (native, vLLM's
            ``block_size_factor`` 1) or 256 (LMCache's ``chunk_size``).
    """

    tiers: Annotated[tuple[_Name, ...], Field(max_length=16, description="tiers below a GPU")]
    backend: Annotated[OffloadBackend, BeforeValidator(_enum_in(OffloadBackend))] = \
        OffloadBackend.NATIVE
    host_link_bandwidth_bytes_per_s: Annotated[_Int | None, Field(
        ge=1, le=MAX_BANDWIDTH_BYTES_PER_S,
        description="10 TB/s is above any host link")] = None
    block_size: Annotated[_Int | None, Field(
        ge=1, le=2**20, description="1 Mi tokens exceeds any context window")] = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.tiers:
            raise _FieldError("tiers", "name at least one memory tier")
        if len(set(self.tiers)) != len(self.tiers):
            raise _FieldError("tiers", "a tier is named twice")
        return self


@_config_errors("weight_offload")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class WeightOffloadConfig:
    """Where weights live (LLMServingSim's ``placement``, weights only); the layers outside
    GPU memory are streamed every step (:mod:`llmsim.memory.weights`).

    Attributes:
        default: location of every layer without a rule: ``gpu``, a ``memory_tiers``
            name, or ``name:device`` (``cxl:2``).
        layers: decoder-layer ranges (``"0-3,8"``) -> location (LLMServingSim ``blocks``).
        embedding, final_layernorm, lm_head: location of these layers (None: default).
        host_link_bandwidth_bytes_per_s: cap of every weight read, bytes/s (None: the
            ``kv_offload`` cap when given, else the tier's bandwidth).
    """

    default: _Name = "gpu"
    layers: Annotated[dict[Annotated[str, Strict()], _Name], Field(
        max_length=4096, description="one rule per decoder-layer range"),
        BeforeValidator(lambda v: {str(k): x for k, x in v.items()} if isinstance(v, dict)
                        else v)] = Field(default_factory=dict)
    embedding: _Name | None = None
    final_layernorm: _Name | None = None
    lm_head: _Name | None = None
    host_link_bandwidth_bytes_per_s: Annotated[_Int | None, Field(
        ge=1, le=MAX_BANDWIDTH_BYTES_PER_S,
        description="10 TB/s is above any host link")] = None

    def locations(self) -> list[tuple[str, str]]:
        """``(dotted field, location)`` of every rule."""
        out = [("default", self.default)]
        out += [(f"layers.{k}", v) for k, v in self.layers.items()]
        out += [(n, getattr(self, n)) for n in ("embedding", "final_layernorm", "lm_head")
                if getattr(self, n) is not None]
        return out


@_config_errors("instance_groups.placement.spans")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class SpanConfig:
    """DP ranks of a group on a further node.

    Attributes:
        node: the node's name.
        gpus: GPU numbers on that node, a whole number of DP ranks' ``tp x pp`` GPUs each,
            in order; None: as many as the group's other nodes hold, the first free ones.
    """

    node: _Name
    gpus: Annotated[tuple[Annotated[_Int, Field(ge=0)], ...] | None, Field(
        max_length=MAX_GPUS_PER_NODE, description="a node holds at most this many GPUs"),
        BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)] = None


@_config_errors("instance_groups.placement")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class PlacementConfig:
    """Where a group's instances run.

    Attributes:
        node: the node's name.
        gpus: GPU numbers on that node, ``count x data_parallel_size x
            tensor_parallel_size`` of them, taken in order (instance 0's DP rank 0 first);
            None: the node's first free GPUs, in order.
        spans: further nodes the group's DP ranks continue on (:class:`SpanConfig`, in
            rank order after those on ``node``); each DP rank's ``tp x pp`` GPUs stay on
            one node. Collectives across the ranks then cross nodes and are priced with the
            nodes' ``network`` (docs/cluster-semantics.md, "Inter-node networks").
    """

    node: _Name
    gpus: Annotated[tuple[Annotated[_Int, Field(ge=0)], ...] | None, Field(
        max_length=MAX_GPUS_PER_NODE, description="a node holds at most this many GPUs"),
        BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)] = None
    spans: Annotated[tuple[SpanConfig, ...], Field(
        max_length=MAX_NODES, description="a cluster holds at most this many nodes"),
        BeforeValidator(lambda v: () if v is None else tuple(v) if isinstance(v, list)
                        else v)] = ()


@_config_errors("instance_groups")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class InstanceGroupConfig:
    """Identical instances of one kind; several groups make a heterogeneous cluster.

    A section a group leaves out (None) is the experiment's top-level one; a section the
    group gives replaces the top-level one whole (no key-by-key merge), the same from YAML
    and from code. With a placement, ``hardware`` defaults to the placed GPUs' hardware and
    memory. ``profile`` defaults to the top-level profile only when the group keeps the
    top-level model (a profile is measured for one model).

    Attributes:
        name: group label (unique).
        count: instances (deployments) in the group; each runs ``data_parallel_size``
            engines.
        hardware, model_path (YAML ``model``), profile_path (YAML ``profile``),
        cost_model, engine, overheads: as on :class:`Experiment`.
        placement: where the instances run (needs a ``cluster``).
        kv_offload, weight_offload: as on :class:`Experiment` (None: the top-level ones).
        role: ``prefill``, ``decode`` or ``both`` (colocated, the default): prefill/decode
            disaggregation (:mod:`llmsim.pd`; vLLM's ``kv_role`` kv_producer /
            kv_consumer / kv_both).
        llmservingsim: placeholder (``_NOT_MODELLED``): refused unless null.
    """

    name: _Name
    count: Annotated[_Int, Field(
        ge=1, le=MAX_INSTANCES,
        description="each instance is a full scheduler and block pool in host memory")] = 1
    hardware: HardwareConfig | None = None
    model_path: Path | None = Field(default=None, validation_alias="model")
    profile_path: Path | None = Field(default=None, validation_alias="profile")
    cost_model: Annotated[str | None, Strict(), Field(min_length=1,
                                                      max_length=_MAX_TEXT_CHARS)] = None
    engine: EngineConfig | None = None
    overheads: Annotated[InstanceOf[StepOverheads] | None,
                         BeforeValidator(lambda v: v if v is None else _overheads_in(v))] = None
    placement: PlacementConfig | None = None
    kv_offload: KVOffloadConfig | None = None
    weight_offload: WeightOffloadConfig | None = None
    role: Annotated[PdRole, BeforeValidator(_enum_in(PdRole))] = PdRole.BOTH
    llmservingsim: _Unmodelled = None

    @field_validator("model_path", "profile_path", mode="before")
    @classmethod
    def _input_path(cls, value: Any, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedGroup:
    """An instance group with every section resolved (see :meth:`Experiment.groups`).

    Attributes:
        name: group label.
        field: dotted config prefix to blame for this group's settings (``""`` for the
            top-level shorthand, ``instance_groups.<i>.`` otherwise).
        count: deployments in the group.
        hardware, model_path, profile_path, cost_model, engine, overheads: resolved.
        parallel: the engine's parallel layout.
        node: the node it is placed on (None: no cluster).
        link: link description name its TP collectives use (None: by ``hardware.name``).
        gpus: per deployment, per DP rank, the GPU numbers on ``node`` (empty: unplaced);
            on the rank's node of ``rank_nodes`` where the group spans nodes.
        rank_nodes: per deployment, per DP rank, the node it runs on, where the placement
            ``spans`` further nodes (empty: every rank on ``node``).
        networks: per node of ``rank_nodes`` (in order of first use), its ``network``
            (None: not described); empty without spans.
        kv_offload, weight_offload: the group's tier settings (None: none).
        role: prefill / decode / both (:mod:`llmsim.pd`).
    """

    name: str
    field: str
    count: int
    hardware: HardwareConfig
    model_path: Path
    profile_path: Path | None
    cost_model: str
    engine: EngineConfig
    overheads: StepOverheads
    parallel: ParallelConfig
    node: str | None = None
    link: str | None = None
    gpus: tuple[tuple[tuple[int, ...], ...], ...] = ()
    kv_offload: KVOffloadConfig | None = None
    weight_offload: WeightOffloadConfig | None = None
    role: PdRole = PdRole.BOTH
    rank_nodes: tuple[tuple[str, ...], ...] = ()
    networks: tuple[tuple[str, NetworkConfig | None], ...] = ()

    @property
    def num_nodes(self) -> int:
        """Nodes one deployment's DP ranks run on (1 without spans)."""
        return max(1, len(self.networks))

    def node_of(self, engine: int) -> str | None:
        """The node engine ``engine`` (``count x dp`` order) runs on."""
        if not self.rank_nodes:
            return self.node
        dp = self.parallel.data_parallel_size
        return self.rank_nodes[engine // dp][engine % dp]

    @property
    def num_engines(self) -> int:
        """Engines (simulated instances) of the group: ``count x data_parallel_size``."""
        return self.count * self.parallel.data_parallel_size


# --------------------------------------------------------------------------------- PIM
def _pim_device_in(value: Any) -> Any:
    from llmsim.pim.model import PIM_DEVICES

    if isinstance(value, str) and value not in PIM_DEVICES:
        raise PydanticCustomError("pim", "unknown PIM device {value} (known: {known})",
                                  {"value": _short(value), "known": ", ".join(PIM_DEVICES)})
    return value


@_config_errors("pim")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class PimConfig:
    """A node's PIM memory (LLMServingSim ``cpu_mem.pim_config``; :mod:`llmsim.pim.model`,
    a model without a measured validation): the decode attention of the groups on
    ``node`` runs on its channels.

    Attributes:
        node: the cluster node (``cluster.nodes[i].name``; any node without a cluster).
        device: the device config (LLMServingSim ``configs/pim/<device>.ini``:
            DDR4_8GB_3200_pim, HBM2_1GB_2000_pim, LPDDR4X_2GB_4266_pim,
            LPDDR5_2GB_6400_pim).
        capacity_bytes: the PIM memory's size (LLMServingSim ``cpu_mem.mem_size``); one
            channel per device channel capacity (one DIMM).
        sub_batch_interleaving: overlap two sub-batches' GPU work and PIM attention
            (LLMServingSim ``--enable-sub-batch-interleaving``, off by default).
    """

    node: _Name
    device: Annotated[_Name, AfterValidator(_pim_device_in)]
    capacity_bytes: Annotated[_Int, Field(ge=1, le=2**50, description="a petabyte")]
    sub_batch_interleaving: _Bool = False


# ------------------------------------------------------------------------------ router
@_config_errors("router.pd_decider")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class PdDeciderConfig:
    """llm-d's prefix-based P/D decider (:class:`llmsim.router.llmd.PrefixPdDecider`).

    Attributes:
        non_cached_tokens: disaggregate only when the prompt and its part not matched on
            the chosen decode instance are both at least this long, tokens (llm-d
            ``nonCachedTokens``; 16 in its shipped P/D config; 0: never disaggregate).
    """

    non_cached_tokens: Annotated[_Int, Field(
        ge=0, le=2**31, description="a prompt length in tokens")] = _llmd.PD_NON_CACHED_TOKENS


_LLMD_FIELDS = ("queue_weight", "kv_cache_utilization_weight", "prefix_cache_weight",
                "load_aware_weight", "load_aware_threshold", "prefix_block_size",
                "prefix_max_blocks", "prefix_lru_capacity_per_pod", "pd_decider")
_PSTACK_FIELDS = {"qps_window_ns": (RouterPolicy.SESSION, RouterPolicy.PREFIX_AWARE,
                                    RouterPolicy.KV_AWARE),
                  "prefix_chunk_tokens": (RouterPolicy.PREFIX_AWARE,),
                  "prefix_min_match_tokens": (RouterPolicy.PREFIX_AWARE,),
                  "kv_aware_threshold_tokens": (RouterPolicy.KV_AWARE,)}
_Weight = Annotated[_Float, Field(ge=0, le=1e6, description="a scorer weight")]
_Tokens = Annotated[_Int, Field(ge=0, le=2**31, description="a prompt length in tokens")]


def _router_in(value: Any) -> Any:
    """``router: <policy>`` is ``router: {policy: <policy>}``."""
    if isinstance(value, str | RouterPolicy):
        return {"policy": _enum_in(RouterPolicy)(value)}
    return value


@_config_errors("router")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class RouterConfig:
    """The cluster router (:mod:`llmsim.router`; docs/cluster-semantics.md, "Routing
    across instances"). Each figure's default is the real system's (sources in
    :mod:`llmsim.router.llmd`, :mod:`llmsim.router.pstack`, :mod:`llmsim.router.scrape`).

    Attributes:
        policy: ``round_robin``, ``least_loaded``, ``vllm_dp``, ``llm_d`` (weighted
            scorers + max-score picker), ``session``, ``prefix_aware``, ``kv_aware``
            (production-stack).
        scrape_interval_ns: the router reads instance metrics as last scraped this often,
            ns; 0: live; None: the policy's default (llm_d: 50 ms; others: live, as
            round robin and production-stack's routers read no engine metrics).
        queue_weight, kv_cache_utilization_weight, prefix_cache_weight,
            load_aware_weight: llm-d scorer weights (default: llm-d without a config
            file, 2 / 2 / 3 / 0).
        load_aware_threshold: waiting requests at which the load-aware score is 0 (128).
        prefix_block_size: tokens per block of llm-d's approximate prefix index (16).
        prefix_max_blocks: prompt blocks it hashes at most (256).
        prefix_lru_capacity_per_pod: blocks it remembers per instance (31,250).
        pd_decider: llm-d's prefix-based P/D decider (P/D roles only); None: every
            request is disaggregated (llm-d's always-disaggregate decider).
        seed: seed of the random tie-breaks (llm-d picker, prefix-aware choice).
        qps_window_ns: production-stack request-stats window, ns (60 s).
        prefix_chunk_tokens: prefix-aware chunk, tokens (32: 128 characters at 4 per
            token).
        prefix_min_match_tokens: prefix-aware minimum match, tokens (0).
        kv_aware_threshold_tokens: kv-aware threshold, tokens (2000).

    Raises:
        ConfigError: a figure out of bounds, or one the policy does not read.
    """

    policy: Annotated[RouterPolicy, BeforeValidator(_enum_in(RouterPolicy))] = \
        RouterPolicy.ROUND_ROBIN
    scrape_interval_ns: Annotated[_Int | None, Field(
        ge=0, le=3_600_000_000_000, description="an hour between scrapes")] = None
    queue_weight: _Weight = _llmd.DEFAULT_SCORER_WEIGHTS.get(_llmd.Scorer.QUEUE, 0.0)
    kv_cache_utilization_weight: _Weight = _llmd.DEFAULT_SCORER_WEIGHTS.get(
        _llmd.Scorer.KV_CACHE_UTILIZATION, 0.0)
    prefix_cache_weight: _Weight = _llmd.DEFAULT_SCORER_WEIGHTS.get(
        _llmd.Scorer.PREFIX_CACHE, 0.0)
    load_aware_weight: _Weight = _llmd.DEFAULT_SCORER_WEIGHTS.get(_llmd.Scorer.LOAD_AWARE, 0.0)
    load_aware_threshold: Annotated[_Int, Field(
        ge=1, le=2**31, description="a queue length")] = _llmd.LOAD_AWARE_QUEUE_THRESHOLD
    prefix_block_size: Annotated[_Int, Field(
        ge=1, le=2**20, description="tokens per block")] = _llmd.PREFIX_BLOCK_SIZE_TOKENS
    prefix_max_blocks: Annotated[_Int, Field(
        ge=1, le=2**24, description="blocks hashed per request")] = _llmd.PREFIX_MAX_BLOCKS
    prefix_lru_capacity_per_pod: Annotated[_Int, Field(
        ge=1, le=2**26, description="router-side blocks in host memory")] = \
        _llmd.PREFIX_LRU_CAPACITY_PER_POD
    pd_decider: PdDeciderConfig | None = None
    seed: Annotated[_Int, Field(ge=0, le=2**63 - 1, description="a 64-bit seed")] = 0
    qps_window_ns: Annotated[_Int, Field(
        ge=1, le=86_400_000_000_000, description="a day")] = _pstack.QPS_WINDOW_NS
    prefix_chunk_tokens: Annotated[_Int, Field(
        ge=1, le=2**20, description="tokens per chunk")] = _pstack.PREFIX_CHUNK_TOKENS
    prefix_min_match_tokens: _Tokens = 0
    kv_aware_threshold_tokens: _Tokens = _pstack.KV_AWARE_THRESHOLD_TOKENS

    @model_validator(mode="after")
    def _check(self) -> Self:
        defaults = RouterConfig.__dataclass_fields__
        for name in _LLMD_FIELDS:
            if self.policy is not RouterPolicy.LLM_D and \
                    getattr(self, name) != defaults[name].default:
                raise _FieldError(name, f"only the llm_d policy reads {name} (policy is "
                                        f"{self.policy.value})")
        for name, policies in _PSTACK_FIELDS.items():
            if self.policy not in policies and getattr(self, name) != defaults[name].default:
                raise _FieldError(name, f"only the {'/'.join(p.value for p in policies)} "
                                        f"policies read {name}")
        return self


# -------------------------------------------------------------------------- experiment
@_config_errors("")
@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class Experiment:
    """A validated experiment (from a YAML file or built in code).

    Attributes:
        name: experiment name (YAML default: the file's stem).
        source: the YAML file (None when built in code).
        model_path: HF ``config.json`` of the served model (YAML ``model``).
        profile_path: operator profile (``.pb`` or bundle dir), if any (YAML ``profile``).
        cost_model: cost-model spec (``profile`` or ``grpc://host:port``).
        hardware: accelerator.
        engine: engine settings.
        overheads: modelled step-time effects.
        trace: the workload (a ``Trace`` or ``TraceFrame`` is accepted and wrapped).
        num_instances: identical instances behind the router (YAML ``instances``); the
            shorthand for one group (must stay 1 when ``instance_groups`` is given).
        instance_groups: groups of instances with their own hardware, model, profile,
            cost model, engine and overheads, all behind the one router (see
            :class:`InstanceGroupConfig`; :meth:`groups` resolves them).
        cluster: nodes, their GPUs and links that the groups are placed on (optional).
        power: component power of every node (a node's own ``power`` replaces it);
            energy is reported from it and the GPUs' power files (docs/power.md).
        moe_routing: how MoE tokens pick experts where experts span ranks.
        router: the cluster router (:class:`RouterConfig`; YAML: a policy name or a
            mapping).
        check: invariant checking level (YAML ``check_invariants``).
        exact_steps: simulate every engine step one by one (no decode fast-forward,
            :mod:`llmsim.instance.fastforward`; the outputs are the same either way).
        output_dir: where ``llmsim replay`` writes (relative to the working directory;
            default ``out/<name>``).
        measured_path: the measured run this experiment reproduces (YAML ``measured``), if
            any; resolved like other paths but not required to exist.
        description: free text.
        kv_transfer_config: how P/D instances move KV (None: NixlConnector over the
            node's link, when some group has a prefill or decode role).
        pim: PIM devices whose channels run decode attention (:class:`PimConfig`;
            :mod:`llmsim.pim.model`, a model without a measured validation).

    Raises:
        ConfigError: on construction, a missing, unknown or invalid field (dotted name).
    """

    model_path: Path = Field(validation_alias="model")
    trace: Annotated[TraceConfig, BeforeValidator(_trace_in)]
    name: _Name = "experiment"
    source: Path | None = None
    profile_path: Path | None = Field(default=None, validation_alias="profile")
    cost_model: Annotated[str, Strict(), Field(min_length=1, max_length=_MAX_TEXT_CHARS)] = \
        "profile"
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    overheads: Annotated[InstanceOf[StepOverheads], BeforeValidator(_overheads_in)] = Field(
        default_factory=StepOverheads)
    num_instances: Annotated[_Int, Field(
        ge=1, le=MAX_INSTANCES, validation_alias="instances",
        description="each instance is a full scheduler and block pool in host memory")] = 1
    instance_groups: Annotated[tuple[InstanceGroupConfig, ...], Field(
        max_length=MAX_INSTANCES, description="each group holds at least one instance")] = ()
    cluster: ClusterConfig | None = None
    power: PowerConfig = Field(default_factory=PowerConfig)
    moe_routing: MoeRoutingConfig = Field(default_factory=MoeRoutingConfig)
    router: Annotated[RouterConfig, BeforeValidator(_router_in)] = Field(
        default_factory=RouterConfig)
    check: Annotated[CheckLevel, BeforeValidator(_enum_in(CheckLevel))] = Field(
        default=CheckLevel.COUNTERS, validation_alias="check_invariants")
    exact_steps: _Bool = False
    output_dir: Path = _UNSET_PATH
    measured_path: Path | None = Field(default=None, validation_alias="measured")
    description: _Text = ""
    memory_tiers: Annotated[tuple[MemoryTierConfig, ...], Field(
        max_length=64, description="memory kinds below a GPU")] = ()
    kv_offload: KVOffloadConfig | None = None
    weight_offload: WeightOffloadConfig | None = None
    kv_transfer_config: KVTransferConfig | None = None
    pim: Annotated[tuple[PimConfig, ...], Field(
        max_length=64, description="one PIM memory per node")] = ()

    @field_validator("model_path", "profile_path", mode="before")
    @classmethod
    def _input_path(cls, value: Any, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info)

    @field_validator("measured_path", mode="before")
    @classmethod
    def _measured_path(cls, value: Any, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info, must_exist=False) if value else None

    @field_validator("output_dir", mode="before")
    @classmethod
    def _output_dir(cls, value: Any) -> Any:
        if value is None or value is _UNSET_PATH:
            return _UNSET_PATH
        if isinstance(value, str) and value and len(value) <= _MAX_TEXT_CHARS:
            return Path(value)
        if isinstance(value, Path):
            return value
        raise PydanticCustomError("path", "must be a path string, got {value}",
                                  {"value": _short(value)})

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.instance_groups and self.num_instances != 1:
            raise _FieldError("instances", "instances is the shorthand for one group; with "
                              "instance_groups give each group's count")
        if self.instance_groups and self.cluster is None:
            for i, g in enumerate(self.instance_groups):
                if g.placement is not None:
                    raise _FieldError(f"instance_groups.{i}.placement",
                                      "a placement needs a cluster section")
        if self.cluster is not None:
            if not self.instance_groups:
                raise _FieldError("cluster", "a cluster needs instance_groups placed on it")
            for i, g in enumerate(self.instance_groups):
                if g.placement is None:
                    raise _FieldError(f"instance_groups.{i}.placement",
                                      "missing (with a cluster every group is placed)")
        groups = self.groups()
        names: set[str] = set()
        total_engines = total_blocks = 0
        for grp in groups:
            e, o, f = grp.engine, grp.overheads, grp.field
            if grp.name in names:
                raise _FieldError(f"{f}name", f"group {grp.name!r} named twice")
            names.add(grp.name)
            if e.num_gpu_blocks_override is None and grp.hardware.gpu_memory_bytes is None:
                raise _FieldError(f"{f}hardware.gpu_memory_bytes", "needed to size the KV cache "
                                  "unless engine.num_gpu_blocks_override is set")
            if grp.cost_model == "profile" and grp.profile_path is None:
                raise _FieldError(f"{f}profile", "the profile cost model needs a profile")
            if o.cpu_step_ns + o.cpu_per_seq_ns * e.max_num_seqs > MAX_STEP_COST_NS:
                raise _FieldError(f"{f}overheads.cpu_per_seq_ns", (
                    f"cpu_step_ns + cpu_per_seq_ns x max_num_seqs ({e.max_num_seqs}) exceeds "
                    f"the step-cost ceiling MAX_STEP_COST_NS ({MAX_STEP_COST_NS} ns)"))
            total_engines += grp.num_engines
            if e.num_gpu_blocks_override is not None:
                total_blocks += e.num_gpu_blocks_override * grp.num_engines
            where = f"{f}count" if f else "instances"
            if total_engines > MAX_INSTANCES:
                raise _FieldError(where, f"{total_engines} engines (instances x "
                                  f"data_parallel_size) exceeds {MAX_INSTANCES} in all")
            if total_blocks > MAX_TOTAL_GPU_BLOCKS:
                blocks = e.num_gpu_blocks_override
                raise _FieldError(where, (
                    f"{grp.num_engines} instances x {blocks} KV blocks exceeds "
                    f"{MAX_TOTAL_GPU_BLOCKS} blocks in all (~64 bytes of host memory each)"))
        _check_tiers(self, groups)
        _check_pd(self, groups)
        if self.output_dir is _UNSET_PATH:
            object.__setattr__(self, "output_dir", Path(f"out/{self.name}"))
        return self

    def groups(self) -> tuple[ResolvedGroup, ...]:
        """The instance groups with every section resolved, placed on the cluster.

        Without ``instance_groups``: one group named after the experiment, of
        ``num_instances`` instances with the top-level sections.

        Raises:
            _FieldError: a placement that does not fit (unknown node, a GPU number beyond
                the node's GPUs, a GPU taken twice, too few free GPUs, another hardware).
        """
        if not self.instance_groups:
            return (ResolvedGroup(
                name=self.name, field="", count=self.num_instances, hardware=self.hardware,
                model_path=self.model_path, profile_path=self.profile_path,
                cost_model=self.cost_model, engine=self.engine, overheads=self.overheads,
                kv_offload=self.kv_offload, weight_offload=self.weight_offload,
                parallel=self.engine.parallel_config()),)
        taken: dict[str, set[int]] = {}
        out = []
        for i, g in enumerate(self.instance_groups):
            f = f"instance_groups.{i}."
            engine = g.engine or self.engine
            parallel = engine.parallel_config()
            hardware = g.hardware
            node = link = None
            gpus: tuple[tuple[tuple[int, ...], ...], ...] = ()
            rank_nodes: tuple[tuple[str, ...], ...] = ()
            networks: tuple[tuple[str, NetworkConfig | None], ...] = ()
            if g.placement is not None and self.cluster is not None and g.placement.spans:
                node_cfg, gpus, rank_nodes = _place_spanning(self.cluster, g, parallel,
                                                             taken, f)
                networks = tuple((n, _network_of(self.cluster, n))
                                 for n in dict.fromkeys(rank_nodes[0]))
                node, link = node_cfg.name, node_cfg.link
                gpu = node_cfg.gpus[0]
                if hardware is None:
                    hardware = HardwareConfig(name=gpu.hardware,
                                              gpu_memory_bytes=gpu.gpu_memory_bytes)
                elif hardware.name.lower() != gpu.hardware.lower():
                    raise _FieldError(f"{f}hardware.name", (
                        f"{hardware.name!r} but node {node!r} has {gpu.hardware!r} GPUs"))
            elif g.placement is not None and self.cluster is not None:
                node_cfg, gpus = _place(self.cluster, g, parallel, taken, f)
                node, link = node_cfg.name, node_cfg.link
                gpu = node_cfg.gpus[0]
                if hardware is None:
                    hardware = HardwareConfig(name=gpu.hardware,
                                              gpu_memory_bytes=gpu.gpu_memory_bytes)
                elif hardware.name.lower() != gpu.hardware.lower():
                    raise _FieldError(f"{f}hardware.name", (
                        f"{hardware.name!r} but node {node!r} has {gpu.hardware!r} GPUs"))
            profile = g.profile_path if g.profile_path is not None else (
                self.profile_path if g.model_path is None else None)
            out.append(ResolvedGroup(
                name=g.name, field=f, count=g.count, hardware=hardware or self.hardware,
                model_path=g.model_path or self.model_path, profile_path=profile,
                cost_model=g.cost_model or self.cost_model, engine=engine,
                overheads=g.overheads or self.overheads, parallel=parallel, node=node,
                link=link, gpus=gpus, kv_offload=g.kv_offload or self.kv_offload,
                weight_offload=g.weight_offload or self.weight_offload, role=g.role,
                rank_nodes=rank_nodes, networks=networks))
        return tuple(out)


def _check_pd(exp: Experiment, groups: tuple[ResolvedGroup, ...]) -> None:
    """Refuse a P/D layout llmsim does not model (:mod:`llmsim.pd`).

    Raises:
        _FieldError: roles without both a prefill and a decode group, colocated groups
            mixed in, DP > 1, another model or block size than the first P/D group, P
            and D on different nodes, or a ``kv_transfer_config`` without P/D roles.
    """
    pd = [g for g in groups if g.role is not PdRole.BOTH]
    if not pd:
        if exp.kv_transfer_config is not None:
            raise _FieldError("kv_transfer_config", "needs instance groups with role "
                              "prefill and role decode")
        return
    roles = {g.role for g in pd}
    if roles != {PdRole.PREFILL, PdRole.DECODE}:
        missing = "decode" if PdRole.DECODE not in roles else "prefill"
        raise _FieldError(f"{pd[0].field}role", f"a prefill/decode split needs a group with "
                          f"role {missing} too")
    first = pd[0]
    for g in groups:
        if g.role is PdRole.BOTH:
            raise _FieldError(f"{g.field}role", "not supported yet: colocated (role both) "
                              "groups next to prefill/decode groups")
        if g.parallel.data_parallel_size != 1:
            raise _FieldError(f"{g.field}engine.data_parallel_size", "not supported yet: "
                              "data parallelism in a prefill/decode split")
        if g.model_path != first.model_path:
            raise _FieldError(f"{g.field}model", "prefill and decode groups must serve the "
                              f"same model ({first.model_path.name})")
        if g.engine.block_size != first.engine.block_size:
            raise _FieldError(f"{g.field}engine.block_size", "not supported yet: prefill and "
                              "decode groups with different block sizes")
        if g.node != first.node:
            raise _FieldError(f"{g.field}placement.node", "not supported yet: a KV transfer "
                              "across nodes (no inter-node network is modelled)")


def _check_tiers(exp: Experiment, groups: tuple[ResolvedGroup, ...]) -> None:
    """Tier names unique; ``kv_offload`` / ``weight_offload`` name known tiers and devices;
    offloading needs prefix caching and is not modelled with MoE lock-step DP.

    Raises:
        _FieldError: naming the offending field.
    """
    tiers: dict[str, MemoryTierConfig] = {}
    for i, t in enumerate(exp.memory_tiers):
        if t.name in tiers or t.name.lower() == "gpu":
            raise _FieldError(f"memory_tiers.{i}.name", f"tier {t.name!r} named twice (or "
                              "'gpu', the GPU's own memory)")
        tiers[t.name] = t
    known = ", ".join(tiers) or "none defined in memory_tiers"
    for k, grp in enumerate(groups):
        own = exp.instance_groups[k] if exp.instance_groups else None
        kv, w = grp.kv_offload, grp.weight_offload
        kvf = f"{grp.field}kv_offload" if own and own.kv_offload else "kv_offload"
        wf = f"{grp.field}weight_offload" if own and own.weight_offload else "weight_offload"
        if (kv is not None or w is not None) and grp.parallel.data_parallel_size > 1 and \
                grp.parallel.enable_expert_parallel:
            raise _FieldError(kvf if kv is not None else wf, "not supported yet: KV or weight "
                              "offload with MoE lock-step data parallelism")
        if (kv is not None or w is not None) and grp.parallel.pipeline_parallel_size > 1:
            raise _FieldError(kvf if kv is not None else wf, "not supported yet: KV or weight "
                              "offload with pipeline parallelism (per-stage layers and bytes)")
        if kv is not None:
            for j, name in enumerate(kv.tiers):
                if name not in tiers:
                    raise _FieldError(f"{kvf}.tiers.{j}", f"unknown tier {name!r} (known: "
                                      f"{known})")
            if not grp.engine.enable_prefix_caching:
                raise _FieldError(kvf, "KV offload needs engine.enable_prefix_caching (blocks "
                                  "are found by their prefix hashes)")
            size = kv.block_size
            if size is not None and size % grp.engine.block_size:
                raise _FieldError(f"{kvf}.block_size", f"{size} tokens is not a multiple of "
                                  f"engine.block_size ({grp.engine.block_size})")
        if w is not None:
            for sub, loc in w.locations():
                name, _sep, dev = loc.partition(":")
                if name.lower() == "gpu" and not dev:
                    continue
                if name not in tiers:
                    raise _FieldError(f"{wf}.{sub}", f"unknown location {loc!r} (known: gpu, "
                                      f"{known})")
                if dev and not (dev.isdigit() and int(dev) < tiers[name].num_devices):
                    raise _FieldError(f"{wf}.{sub}", f"{loc!r}: tier {name!r} has devices "
                                      f"0-{tiers[name].num_devices - 1}")


def _place(cluster: ClusterConfig, group: InstanceGroupConfig, parallel: ParallelConfig,
           taken: dict[str, set[int]], f: str
           ) -> tuple[NodeConfig, tuple[tuple[tuple[int, ...], ...], ...]]:
    """GPU numbers of every engine of ``group`` on its node (updates ``taken``).

    Each engine's ``tp x pp`` GPUs are on the group's one node (nothing crosses nodes).
    """
    placement = group.placement or PlacementConfig(node=cluster.nodes[0].name)
    node = cluster.node(placement.node)
    if node is None:
        known = ", ".join(n.name for n in cluster.nodes)
        raise _FieldError(f"{f}placement.node", f"unknown node {placement.node!r} "
                          f"(known: {known})")
    used = taken.setdefault(node.name, set())
    per_engine = parallel.gpus_per_engine
    need = group.count * parallel.data_parallel_size * per_engine
    if placement.gpus is not None:
        ids = list(placement.gpus)
        for gpu in ids:
            if gpu >= node.num_gpus:
                raise _FieldError(f"{f}placement.gpus", (
                    f"GPU {gpu} is beyond node {node.name!r}'s {node.num_gpus} GPUs "
                    f"(numbered 0-{node.num_gpus - 1})"))
        if len(ids) != need:
            raise _FieldError(f"{f}placement.gpus", (
                f"{len(ids)} GPUs given; {group.count} instances x data_parallel_size "
                f"{parallel.data_parallel_size} x tensor_parallel_size "
                f"{parallel.tensor_parallel_size} x pipeline_parallel_size "
                f"{parallel.pipeline_parallel_size} need {need}"))
        twice = sorted({g for g in ids if ids.count(g) > 1} | (set(ids) & used))
        if twice:
            raise _FieldError(f"{f}placement.gpus", f"GPU {twice[0]} of node {node.name!r} "
                              "is taken twice")
    else:
        free = [g for g in range(node.num_gpus) if g not in used]
        if len(free) < need:
            raise _FieldError(f"{f}placement", (
                f"{group.count} instances x data_parallel_size {parallel.data_parallel_size}"
                f" x tensor_parallel_size {parallel.tensor_parallel_size} x "
                f"pipeline_parallel_size {parallel.pipeline_parallel_size} need {need} GPUs; "
                f"node {node.name!r} has {len(free)} free of {node.num_gpus}"))
        ids = free[:need]
    used.update(ids)
    engines = [tuple(ids[k:k + per_engine]) for k in range(0, need, per_engine)]
    dp = parallel.data_parallel_size
    return node, tuple(tuple(engines[k:k + dp]) for k in range(0, len(engines), dp))


def _network_of(cluster: ClusterConfig, name: str) -> NetworkConfig | None:
    node = cluster.node(name)
    return None if node is None else node.network


def _place_spanning(cluster: ClusterConfig, group: InstanceGroupConfig,
                    parallel: ParallelConfig, taken: dict[str, set[int]], f: str
                    ) -> tuple[NodeConfig, tuple[tuple[tuple[int, ...], ...], ...],
                               tuple[tuple[str, ...], ...]]:
    """GPU numbers and nodes of the DP ranks of a group whose placement ``spans`` further
    nodes (updates ``taken``): the ranks split evenly over the nodes, in order (``node``
    first, then ``spans``), each rank's ``tp x pp`` GPUs on one node, one GPU type.

    Raises:
        _FieldError: ``count`` > 1, DP ranks that do not split evenly over the nodes, a node
            named twice or unknown, GPUs that do not fit (as :func:`_place`), another GPU
            type than the group's first node.
    """
    placement = group.placement
    assert placement is not None
    if group.count != 1:
        raise _FieldError(f"{f}count", "not supported yet: placement.spans with count > 1 "
                          "(give each deployment its own group)")
    wanted = [(placement.node, placement.gpus, f"{f}placement")] + [
        (sp.node, sp.gpus, f"{f}placement.spans.{i}") for i, sp in enumerate(placement.spans)]
    names = [w[0] for w in wanted]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _FieldError(f"{f}placement.spans", f"node {twice[0]!r} named twice")
    dp = parallel.data_parallel_size
    if dp % len(wanted):
        raise _FieldError(f"{f}placement.spans", (
            f"data_parallel_size {dp} does not split evenly over {len(wanted)} nodes (the "
            "DP ranks are spread evenly, in order)"))
    per_node = dp // len(wanted)
    first: NodeConfig | None = None
    ranks: list[tuple[int, ...]] = []
    rank_nodes: list[str] = []
    for name, gpus, where in wanted:
        sub = InstanceGroupConfig(
            name=group.name, count=1, engine=group.engine,
            placement=PlacementConfig(node=name, gpus=gpus))
        layout = ParallelConfig(
            tensor_parallel_size=parallel.tensor_parallel_size,
            pipeline_parallel_size=parallel.pipeline_parallel_size,
            data_parallel_size=per_node,
            enable_expert_parallel=parallel.enable_expert_parallel)
        try:
            node, engines = _place(cluster, sub, layout, taken, "")
        except _FieldError as exc:  # blame the span's own keys
            raise _FieldError(where + exc.field.removeprefix("placement"),
                              f"{exc} (its share: {per_node} of the {dp} DP ranks)") from None
        if first is None:
            first = node
        elif node.gpus[0].hardware.lower() != first.gpus[0].hardware.lower():
            raise _FieldError(f"{where}.node", (
                f"node {node.name!r} has {node.gpus[0].hardware!r} GPUs, node "
                f"{first.name!r} {first.gpus[0].hardware!r}: one group runs one GPU type"))
        ranks.extend(engines[0])
        rank_nodes.extend([node.name] * per_node)
    assert first is not None
    return first, (tuple(ranks),), (tuple(rank_nodes),)


_EXPERIMENT = TypeAdapter(Experiment)

_SCHEMAS: dict[type, type] = {StepOverheads: _OverheadsSchema}
"""Validation schema of a section whose value type is not itself a pydantic dataclass."""

_CODE_ONLY: dict[type, set[str]] = {Experiment: {"source"}, TraceConfig: {"requests"}}
"""Fields a YAML file may not set."""


def _field(cls: type | None, key: str) -> Any:
    """The pydantic ``FieldInfo`` of ``cls`` for a YAML key or attribute name, or None."""
    fields = getattr(cls, "__pydantic_fields__", {})
    return fields.get(key) or next((f for f in fields.values() if _yaml_name("", f) == key),
                                   None)


def _yaml_name(name: str, info: Any) -> str:
    """A field's YAML key: its validation alias, else its name."""
    alias = info.validation_alias
    return alias if isinstance(alias, str) else name


def _config_class(annotation: Any) -> type | None:
    """The config dataclass inside a field's type (through ``X | None``, tuples, Annotated)."""
    if isinstance(annotation, type):
        if annotation in _SCHEMAS:
            return _SCHEMAS[annotation]
        if hasattr(annotation, "__pydantic_fields__"):
            return annotation
    for arg in typing.get_args(annotation):
        found = _config_class(arg)
        if found is not None:
            return found
    return None


def _section_class(parts: list[str]) -> type | None:
    """The config class holding the keys under dotted ``parts`` (``[]``: the experiment).

    Walks the field types, so a new section (or a list of sections, ``cluster.pools.0``)
    needs no registration here.
    """
    cls: type | None = Experiment
    for part in parts:
        if part.isdigit():  # an item of a sequence of sections
            continue
        info = _field(cls, part)
        cls = _config_class(info.annotation) if info is not None else None
        if cls is None:
            return None
    return cls


def _yaml_keys(cls: type) -> list[str]:
    """The keys a YAML section accepts (aliases where a field has one)."""
    hidden = _CODE_ONLY.get(cls, set())
    return sorted(_yaml_name(name, info)
                  for name, info in getattr(cls, "__pydantic_fields__", {}).items()
                  if name not in hidden)


# ------------------------------------------------------------------------ error mapping
def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (never the whole of a huge input)."""
    if isinstance(value, dict | list | tuple) and len(value) > 20:
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bound_reason(field: str) -> str | None:
    """The documented reason of a field's bound (its ``Field(description=...)``)."""
    parts = field.split(".")
    info = _field(_section_class(parts[:-1]), parts[-1])
    return info.description if info is not None else None


_BOUND_SIGNS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"),
                "less_than_equal": ("le", "<="), "less_than": ("lt", "<")}


def _one_error(err: Any, prefix: str) -> tuple[str, str]:
    """(dotted field, message) of one pydantic error entry."""
    loc = [str(p) for p in err["loc"] if "[" not in str(p)]
    parts = [prefix] if prefix else []
    parts += loc
    kind = err["type"]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        return ".".join(parts + [cause.field]), str(cause)
    field = ".".join(parts)
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        cls = _section_class(parts[:-1])
        if cls is not None:
            return field, f"unknown key (known: {', '.join(_yaml_keys(cls))})"
        return field, "unknown key"
    if kind.startswith("missing"):
        return field, "missing"
    if kind in ("dataclass_type", "dataclass_exact_type", "model_type"):
        return field, f"must be a mapping, got {_short(err.get('input'))}"
    ctx = err.get("ctx") or {}
    message = str(cause) if isinstance(cause, Exception) else err["msg"]
    if kind in _BOUND_SIGNS and _BOUND_SIGNS[kind][0] in ctx:
        name, sign = _BOUND_SIGNS[kind]
        message = f"must be {sign} {ctx[name]}"
    message = re.sub(r"^Input should be ", "must be ", message)
    message = message[0].lower() + message[1:] if message else message
    if kind not in ("path", "data_not_found", "enum", "trace_format", "value_error"):
        message += f", got {_short(err.get('input'))}"
    if kind in ("less_than_equal", "less_than", "too_long"):
        reason = _bound_reason(field)
        if reason:
            message += f" (bound: {reason})"
    return field, message


def config_error(exc: ValidationError, *, prefix: str = "", source: Path | None = None,
                 lines: Mapping[str, int] | None = None) -> ConfigError:
    """The :class:`ConfigError` for a pydantic validation error.

    Names the first failing field in file order (line map), its line and dotted name, and
    how many more fields failed.

    Args:
        exc: the pydantic error.
        prefix: dotted section the validated value sits at (``"engine"``).
        source: the experiment file, if any.
        lines: dotted key -> 1-based line (from :func:`llmsim.yamlfile.load_yaml_document`).
    """
    lines = lines or {}
    found = []
    errors = exc.errors()
    for i, err in enumerate(errors):
        field, message = _one_error(err, prefix)
        found.append((line_of(field, lines) or 10**9, i, field, message))
    line, first, field, message = min(found)
    more = len(found) - 1
    if more:
        message += f" (and {more} more invalid field{'s' if more > 1 else ''})"
    cls = MissingDataError if errors[first]["type"] == "data_not_found" else ConfigError
    return cls(message, path=source, line=line if line < 10**9 else None, field=field)


def line_of(field: str, lines: Mapping[str, int]) -> int | None:
    """The line of dotted ``field`` in a YAML line map, or of its nearest enclosing key."""
    key = field
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None


# ----------------------------------------------------------------------------- loading
def _apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any], source: Path | None) -> None:
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = raw
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"cannot override inside a non-mapping ({part})",
                                  path=source, field=dotted)
            node = nxt
        node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key.path=value`` (value in YAML syntax) from the command line.

    Raises:
        ConfigError: no ``=``.
    """
    if "=" not in text:
        raise ConfigError(f"expected KEY=VALUE, got {text!r}", field="--set")
    key, value = text.split("=", 1)
    try:
        parsed = loads_yaml(value, what="--set value").data if value.strip() else None
    except ConfigError:
        parsed = value
    return key.strip(), parsed


def experiment_from_dict(raw: Any, *, source: Path | None = None,
                         lines: Mapping[str, int] | None = None) -> Experiment:
    """Validate a parsed experiment mapping (see the module doc for the schema).

    Args:
        raw: the mapping, with YAML key names.
        source: the file it came from (relative paths resolve against its directory).
        lines: dotted key -> 1-based line, for messages.

    Raises:
        ConfigError: a missing, unknown or invalid field (file, line, field).
    """
    lines = lines or {}
    if not isinstance(raw, dict):
        raise ConfigError("experiment file must be a YAML mapping", path=source)
    for key in raw:
        if not isinstance(key, str) or key in _CODE_ONLY[Experiment]:
            raise ConfigError(f"unknown key (known: {', '.join(_yaml_keys(Experiment))})", path=source,
                              line=lines.get(str(key)), field=str(key))
    trace = raw.get("trace")
    if isinstance(trace, dict) and "requests" in trace:
        raise ConfigError(f"unknown key (known: {', '.join(_yaml_keys(TraceConfig))})",
                          path=source, line=lines.get("trace.requests"), field="trace.requests")
    data = dict(raw)
    data["source"] = source
    if not data.get("name"):
        data["name"] = source.stem if source is not None else "experiment"
    try:
        return _EXPERIMENT.validate_python(data, context={"source": source}, by_alias=True,
                                           by_name=False)
    except ValidationError as exc:
        raise config_error(exc, source=source, lines=lines) from None


def load_experiment(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Experiment:
    """Read and validate an experiment YAML file.

    Args:
        path: the YAML file.
        overrides: dotted key -> value (e.g. ``{"engine.max_num_seqs": 64}``), applied
            before validation.

    Raises:
        ConfigError: unreadable or non-UTF-8 file, invalid YAML (with line), an alias bomb,
            or an invalid field (file, line, dotted field).
    """
    path = Path(path)
    doc = load_yaml_document(path, what="experiment file")
    raw = doc.data
    if isinstance(raw, dict) and overrides:
        raw = copy.deepcopy(raw)
        _apply_overrides(raw, overrides, path)
    return experiment_from_dict(raw, source=path, lines=doc.lines)
