"""Experiment files (YAML): what to replay, on what, with which engine settings.

Schema (engine keys are vLLM's argument names)::

    name: rtxpro6000-llama-3.1-8b
    model: llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json   # HF config.json
    profile: llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16
    cost_model: profile            # or grpc://127.0.0.1:50051
    hardware: {name: RTXPRO6000, gpu_memory_bytes: 102642302976}
    engine:
      tensor_parallel_size: 1
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
    instances: 1                   # identical instances
    router: round_robin            # or least_loaded
    check_invariants: counters     # off | counters | full
    output_dir: out/rtxpro6000-llama-3.1-8b
    measured: llmservingsim/measured/RTXPRO6000/Llama-3.1-8B   # optional, for validation

Relative paths resolve against the experiment file's directory first, then the data dirs
(``LLMSIM_DATA_DIR``, user cache). ``output_dir`` resolves against the current directory.
Errors name the file, the line of the offending key and the dotted field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmsim.data.paths import dataset_path
from llmsim.errors import ConfigError, DataNotFoundError
from llmsim.instance.instance import CheckLevel
from llmsim.instance.step_time import StepOverheads
from llmsim.router.base import RouterPolicy
from llmsim.scheduler.config import SchedulerConfig
from llmsim.yamlfile import read_yaml

_TOP_KEYS = {"name", "model", "profile", "cost_model", "hardware", "engine", "overheads",
             "trace", "instances", "router", "check_invariants", "output_dir", "description",
             "measured"}
_ENGINE_KEYS = {"tensor_parallel_size", "max_num_seqs", "max_num_batched_tokens", "block_size",
                "enable_prefix_caching", "gpu_memory_utilization", "num_gpu_blocks_override",
                "cudagraph_capture_sizes", "async_scheduling", "scheduler_reserve_full_isl",
                "long_prefill_token_threshold"}


def default_cudagraph_capture_sizes(max_num_seqs: int) -> tuple[int, ...]:
    """vLLM 0.19's default capture sizes: up to ``min(2 x max_num_seqs, 512)``, as
    ``1, 2, 4``, then every 8 below 256, then every 16 from 256 (matches the RTX4090 run's
    recorded list for ``max_num_seqs = 256``)."""
    top = min(2 * max_num_seqs, 512)
    sizes = [s for s in (1, 2, 4) if s <= top]
    sizes += list(range(8, min(top + 1, 256), 8))
    sizes += list(range(256, top + 1, 16))
    return tuple(sizes)


@dataclass(frozen=True, slots=True, kw_only=True)
class HardwareConfig:
    """The accelerator of each instance.

    Attributes:
        name: label (e.g. ``RTXPRO6000``).
        gpu_memory_bytes: device memory per GPU as CUDA reports it, bytes (None: unknown,
            then ``engine.num_gpu_blocks_override`` is required).
    """

    name: str
    gpu_memory_bytes: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """vLLM engine arguments the simulation honours (see module doc for names)."""

    tensor_parallel_size: int = 1
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    block_size: int = 16
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float = 0.9
    num_gpu_blocks_override: int | None = None
    cudagraph_capture_sizes: tuple[int, ...] = ()
    async_scheduling: bool = True
    scheduler_reserve_full_isl: bool = True
    long_prefill_token_threshold: int = 0

    def scheduler_config(self) -> SchedulerConfig:
        """The scheduler's view of these settings."""
        return SchedulerConfig(
            max_num_seqs=self.max_num_seqs, max_num_batched_tokens=self.max_num_batched_tokens,
            block_size=self.block_size, enable_prefix_caching=self.enable_prefix_caching,
            reserve_full_isl=self.scheduler_reserve_full_isl,
            long_prefill_token_threshold=self.long_prefill_token_threshold)


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceConfig:
    """Where the requests come from.

    Attributes:
        format: loader name for :func:`llmsim.trace.load_trace`.
        path: resolved trace file.
        options: keyword options of the loader.
        transforms: for :func:`llmsim.trace.apply_transforms`.
    """

    format: str
    path: Path
    options: dict[str, Any] = field(default_factory=dict)
    transforms: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Experiment:
    """A validated experiment file.

    Attributes:
        name: experiment name.
        source: the YAML file (None when built in code).
        model_path: HF ``config.json`` of the served model.
        profile_path: operator profile (``.pb`` or bundle dir), if any.
        cost_model: cost-model spec (``profile`` or ``grpc://host:port``).
        hardware: accelerator.
        engine: engine settings.
        overheads: modelled step-time effects.
        trace: the workload.
        num_instances: identical instances behind the router.
        router: routing policy.
        check: invariant checking level.
        output_dir: where ``llmsim replay`` writes (relative to the working directory).
        measured_path: the measured run this experiment reproduces (``measured:``), if any;
            resolved like other paths but not required to exist.
    """

    name: str
    source: Path | None
    model_path: Path
    profile_path: Path | None
    cost_model: str
    hardware: HardwareConfig
    engine: EngineConfig
    overheads: StepOverheads
    trace: TraceConfig
    num_instances: int = 1
    router: RouterPolicy = RouterPolicy.ROUND_ROBIN
    check: CheckLevel = CheckLevel.COUNTERS
    output_dir: Path = Path("out")
    measured_path: Path | None = None


# --------------------------------------------------------------------- parsing helpers
def _line_map(text: str) -> dict[str, int]:
    """Dotted key -> 1-based line of the key in the YAML text (best effort)."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}{k.value}"
                lines[key] = k.start_mark.line + 1
                walk(v, key + ".")

    walk(root, "")
    return lines


class _Ctx:
    """Carries the file and line map for error messages."""

    def __init__(self, path: Path | None, lines: dict[str, int]) -> None:
        self.path = path
        self.lines = lines

    def error(self, key: str, message: str) -> ConfigError:
        line = self.lines.get(key)
        if line is None and "." in key:
            line = self.lines.get(key.rsplit(".", 1)[0])
        return ConfigError(message, path=self.path, line=line, field=key)

    def int_(self, raw: dict, key: str, prefix: str, default: Any, *, minimum: int = 1,
             nullable: bool = False) -> Any:
        value = raw.get(key, default)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(prefix + key, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def bool_(self, raw: dict, key: str, prefix: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise self.error(prefix + key, f"must be true or false, got {value!r}")
        return value

    def mapping(self, raw: Any, key: str) -> dict:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.error(key, f"must be a mapping, got {type(raw).__name__}")
        return raw

    def resolve(self, value: Any, key: str, *, must_exist: bool = True) -> Path:
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a path string, got {value!r}")
        p = Path(value).expanduser()
        if p.is_absolute():
            if must_exist and not p.exists():
                raise self.error(key, f"file not found: {p}")
            return p
        if self.path is not None:
            local = self.path.parent / p
            if local.exists():
                return local
        if Path.cwd().joinpath(p).exists():
            return Path.cwd() / p
        try:
            return dataset_path(p)
        except DataNotFoundError as exc:
            if must_exist:
                raise self.error(key, str(exc)) from None
            return p


def _apply_overrides(raw: dict, overrides: dict[str, Any], ctx: _Ctx) -> None:
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = raw
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"cannot override inside a non-mapping ({part})",
                                  path=ctx.path, field=dotted)
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
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


# ------------------------------------------------------------------------ sections
def _engine(raw: dict, ctx: _Ctx) -> EngineConfig:
    p = "engine."
    unknown = set(raw) - _ENGINE_KEYS
    if unknown:
        k = min(unknown)
        raise ctx.error(p + k, f"unknown engine setting (known: {', '.join(sorted(_ENGINE_KEYS))})")
    max_seqs = ctx.int_(raw, "max_num_seqs", p, 256)
    block_size = ctx.int_(raw, "block_size", p, 16)
    budget = ctx.int_(raw, "max_num_batched_tokens", p, 2048)
    if budget < block_size:
        raise ctx.error(p + "max_num_batched_tokens",
                        f"{budget} is smaller than one KV block ({block_size} tokens)")
    util = raw.get("gpu_memory_utilization", 0.9)
    if isinstance(util, bool) or not isinstance(util, (int, float)) or not 0 < util <= 1:
        raise ctx.error(p + "gpu_memory_utilization", f"must be in (0, 1], got {util!r}")
    sizes = raw.get("cudagraph_capture_sizes")
    if sizes is None:
        sizes_t = default_cudagraph_capture_sizes(max_seqs)
    else:
        if not isinstance(sizes, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ctx.error(p + "cudagraph_capture_sizes", "must be a list of positive integers")
        sizes_t = tuple(sorted(set(sizes)))
    return EngineConfig(
        tensor_parallel_size=ctx.int_(raw, "tensor_parallel_size", p, 1),
        max_num_seqs=max_seqs, max_num_batched_tokens=budget, block_size=block_size,
        enable_prefix_caching=ctx.bool_(raw, "enable_prefix_caching", p, True),
        gpu_memory_utilization=float(util),
        num_gpu_blocks_override=ctx.int_(raw, "num_gpu_blocks_override", p, None, minimum=2,
                                         nullable=True),
        cudagraph_capture_sizes=sizes_t,
        async_scheduling=ctx.bool_(raw, "async_scheduling", p, True),
        scheduler_reserve_full_isl=ctx.bool_(raw, "scheduler_reserve_full_isl", p, True),
        long_prefill_token_threshold=ctx.int_(raw, "long_prefill_token_threshold", p, 0,
                                              minimum=0),
    )


def _overheads(raw: dict, ctx: _Ctx) -> StepOverheads:
    p = "overheads."
    known = {"cpu_step_ns", "cpu_per_seq_ns", "cudagraph_padding"}
    unknown = set(raw) - known
    if unknown:
        raise ctx.error(p + min(unknown),
                        f"unknown overhead (known: {', '.join(sorted(known))})")
    d = StepOverheads()
    return StepOverheads(
        cpu_step_ns=ctx.int_(raw, "cpu_step_ns", p, d.cpu_step_ns, minimum=0),
        cpu_per_seq_ns=ctx.int_(raw, "cpu_per_seq_ns", p, d.cpu_per_seq_ns, minimum=0),
        cudagraph_padding=ctx.bool_(raw, "cudagraph_padding", p, d.cudagraph_padding),
    )


def _trace(raw: dict, ctx: _Ctx) -> TraceConfig:
    if "path" not in raw:
        raise ctx.error("trace.path", "missing")
    fmt = raw.get("format", "llmservingsim")
    if not isinstance(fmt, str):
        raise ctx.error("trace.format", f"must be a string, got {fmt!r}")
    options = ctx.mapping(raw.get("options"), "trace.options")
    transforms = raw.get("transforms") or []
    if not isinstance(transforms, list):
        raise ctx.error("trace.transforms", "must be a list")
    return TraceConfig(format=fmt, path=ctx.resolve(raw["path"], "trace.path"),
                       options=dict(options), transforms=tuple(transforms))


def _enum(value: Any, enum: type, key: str, ctx: _Ctx) -> Any:
    try:
        return enum(str(value))
    except ValueError:
        known = ", ".join(e.value for e in enum)
        raise ctx.error(key, f"unknown value {value!r} (known: {known})") from None


def experiment_from_dict(raw: dict, *, source: Path | None = None,
                         lines: dict[str, int] | None = None) -> Experiment:
    """Validate a parsed experiment mapping (see the module doc for the schema).

    Raises:
        ConfigError: a missing, unknown or invalid field (file, line, field).
    """
    ctx = _Ctx(source, lines or {})
    if not isinstance(raw, dict):
        raise ConfigError("experiment file must be a YAML mapping", path=source)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        k = min(unknown)
        raise ctx.error(k, f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    for key in ("model", "trace"):
        if key not in raw:
            raise ctx.error(key, "missing")
    hw_raw = ctx.mapping(raw.get("hardware"), "hardware")
    mem = hw_raw.get("gpu_memory_bytes")
    if mem is not None and (isinstance(mem, bool) or not isinstance(mem, int) or mem <= 0):
        raise ctx.error("hardware.gpu_memory_bytes", f"must be a positive integer, got {mem!r}")
    hardware = HardwareConfig(name=str(hw_raw.get("name", "gpu")), gpu_memory_bytes=mem)
    engine = _engine(ctx.mapping(raw.get("engine"), "engine"), ctx)
    if engine.num_gpu_blocks_override is None and hardware.gpu_memory_bytes is None:
        raise ctx.error("hardware.gpu_memory_bytes",
                        "needed to size the KV cache unless engine.num_gpu_blocks_override is set")
    cost_model = raw.get("cost_model", "profile")
    if not isinstance(cost_model, str):
        raise ctx.error("cost_model", f"must be a string, got {cost_model!r}")
    profile = raw.get("profile")
    profile_path = ctx.resolve(profile, "profile") if profile is not None else None
    if cost_model == "profile" and profile_path is None:
        raise ctx.error("profile", "the profile cost model needs a profile")
    name = raw.get("name") or (source.stem if source else "experiment")
    return Experiment(
        name=str(name), source=source,
        model_path=ctx.resolve(raw["model"], "model"),
        profile_path=profile_path, cost_model=cost_model, hardware=hardware, engine=engine,
        overheads=_overheads(ctx.mapping(raw.get("overheads"), "overheads"), ctx),
        trace=_trace(ctx.mapping(raw.get("trace"), "trace"), ctx),
        num_instances=ctx.int_(raw, "instances", "", 1),
        router=_enum(raw.get("router", "round_robin"), RouterPolicy, "router", ctx),
        check=_enum(raw.get("check_invariants", "counters"), CheckLevel, "check_invariants", ctx),
        output_dir=Path(str(raw.get("output_dir") or f"out/{name}")),
        measured_path=(ctx.resolve(raw["measured"], "measured", must_exist=False)
                       if raw.get("measured") else None),
    )


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> Experiment:
    """Read and validate an experiment YAML file.

    Args:
        path: the YAML file.
        overrides: dotted key -> value (e.g. ``{"engine.max_num_seqs": 64}``), applied
            before validation.

    Raises:
        ConfigError: unreadable file, invalid YAML (with line) or an invalid field.
    """
    path = Path(path)
    raw, text = read_yaml(path, what="experiment file")
    ctx = _Ctx(path, _line_map(text))
    if isinstance(raw, dict) and overrides:
        _apply_overrides(raw, overrides, ctx)
    return experiment_from_dict(raw, source=path, lines=ctx.lines)

