"""Hardware description files for the roofline adapter (YAML).

Format (every quantity's key carries its unit)::

    name: H100-SXM
    description: NVIDIA H100 SXM5 80GB
    sources: [...]                        # where the datasheet figures come from
    peak_flops_per_s: {bf16: 989.4e12, fp16: 989.4e12, fp8: 1978.9e12, fp32: 66.9e12}
    memory_bytes: 80.0e9
    memory_bandwidth_bytes_per_s: 3.35e12
    link_bandwidth_bytes_per_s: 450.0e9   # device-to-device, one direction
    host_link_bandwidth_bytes_per_s: 64.0e9
    link_latency_ns: 2000                 # per collective hop (assumption)
    kernel_launch_overhead_ns: 3000       # per operator (assumption)
    efficiency:                           # achievable fraction of peak (assumptions)
      gemm_compute: 0.7
      attention_compute: 0.5
      memory: 0.8
      link: 0.75
    tier_bandwidth_bytes_per_s: {cxl: 64e9, storage: 7e9}   # optional extra memory tiers
    energy:                                # optional; absent = no energy answers
      pj_per_flop: {bf16: 0.5}
      pj_per_dram_byte: 20.0

Datasheet figures and assumptions are kept apart: the files say which is which.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmsim.errors import ConfigError
from llmsim.yamlfile import read_yaml

_EFFICIENCY_KEYS = ("gemm_compute", "attention_compute", "memory", "link")


@dataclass(frozen=True, slots=True, kw_only=True)
class Efficiency:
    """Achievable fraction of peak, in (0, 1].

    Attributes:
        gemm_compute: of peak FLOP/s in GEMMs and MoE experts.
        attention_compute: of peak FLOP/s in attention.
        memory: of memory bandwidth.
        link: of link bandwidth in collectives and transfers.
    """

    gemm_compute: float = 0.7
    attention_compute: float = 0.5
    memory: float = 0.8
    link: float = 0.75


@dataclass(frozen=True, slots=True, kw_only=True)
class EnergyTable:
    """Per-operation energy for an optional energy estimate.

    Attributes:
        pj_per_flop: picojoules per FLOP, by dtype.
        pj_per_dram_byte: picojoules per byte moved to/from device memory.
    """

    pj_per_flop: Mapping[str, float]
    pj_per_dram_byte: float


@dataclass(frozen=True, slots=True, kw_only=True)
class HardwareSpec:
    """One accelerator, as the roofline model sees it (see the module docstring)."""

    name: str
    description: str
    peak_flops_per_s: Mapping[str, float]
    memory_bytes: float
    memory_bandwidth_bytes_per_s: float
    link_bandwidth_bytes_per_s: float
    host_link_bandwidth_bytes_per_s: float
    link_latency_ns: float = 0.0
    kernel_launch_overhead_ns: float = 0.0
    efficiency: Efficiency = field(default_factory=Efficiency)
    tier_bandwidth_bytes_per_s: Mapping[str, float] = field(default_factory=dict)
    energy: EnergyTable | None = None
    sha256: str = ""


def _positive(raw: Mapping[str, Any], key: str, path: Path, *, required: bool = True,
              default: float = 0.0, allow_zero: bool = False, prefix: str = "") -> float:
    name = prefix + str(key)
    if key not in raw or raw[key] is None:
        if required:
            raise ConfigError("required field missing", path=path, field=name)
        return default
    value = raw[key]
    if isinstance(value, str):  # YAML 1.1 reads 3.35e12 (no exponent sign) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected a number, got {value!r}", path=path, field=name)
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}",
                          path=path, field=name)
    return float(value)


def _number_map(raw: Any, path: Path, key: str) -> dict[str, float]:
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError("expected a non-empty mapping of name -> number", path=path, field=key)
    return {str(k): _positive(raw, k, path, prefix=f"{key}.") for k in raw}


def load_hardware(path: str | Path) -> HardwareSpec:
    """Read and validate a hardware YAML file.

    Raises:
        ConfigError: unreadable file, invalid YAML (with line) or a bad field.
    """
    path = Path(path)
    raw, text = read_yaml(path, what="hardware file")
    if not isinstance(raw, Mapping):
        raise ConfigError("hardware file must be a mapping", path=path)
    if not raw.get("name"):
        raise ConfigError("required field missing", path=path, field="name")
    eff_raw = raw.get("efficiency") or {}
    if not isinstance(eff_raw, Mapping):
        raise ConfigError("expected a mapping", path=path, field="efficiency")
    for key in eff_raw:
        if key not in _EFFICIENCY_KEYS:
            raise ConfigError(f"unknown efficiency factor (have {', '.join(_EFFICIENCY_KEYS)})",
                              path=path, field=f"efficiency.{key}")
        if not 0 < _positive(eff_raw, key, path, prefix="efficiency.") <= 1:
            raise ConfigError("must be in (0, 1]", path=path, field=f"efficiency.{key}")
    energy = None
    if raw.get("energy") is not None:
        e = raw["energy"]
        if not isinstance(e, Mapping):
            raise ConfigError("expected a mapping", path=path, field="energy")
        energy = EnergyTable(
            pj_per_flop=_number_map(e.get("pj_per_flop"), path, "energy.pj_per_flop"),
            pj_per_dram_byte=_positive(e, "pj_per_dram_byte", path, prefix="energy."),
        )
    tiers = raw.get("tier_bandwidth_bytes_per_s") or {}
    return HardwareSpec(
        name=str(raw["name"]),
        description=str(raw.get("description", "")),
        peak_flops_per_s=_number_map(raw.get("peak_flops_per_s"), path, "peak_flops_per_s"),
        memory_bytes=_positive(raw, "memory_bytes", path),
        memory_bandwidth_bytes_per_s=_positive(raw, "memory_bandwidth_bytes_per_s", path),
        link_bandwidth_bytes_per_s=_positive(raw, "link_bandwidth_bytes_per_s", path),
        host_link_bandwidth_bytes_per_s=_positive(raw, "host_link_bandwidth_bytes_per_s", path),
        link_latency_ns=_positive(raw, "link_latency_ns", path, required=False, allow_zero=True),
        kernel_launch_overhead_ns=_positive(raw, "kernel_launch_overhead_ns", path,
                                            required=False, allow_zero=True),
        efficiency=Efficiency(**{k: _positive(eff_raw, k, path) for k in eff_raw}),
        tier_bandwidth_bytes_per_s=_number_map(tiers, path, "tier_bandwidth_bytes_per_s")
        if tiers else {},
        energy=energy,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


HARDWARE_DIR = Path(__file__).parent / "hardware"


def builtin_hardware() -> dict[str, Path]:
    """Shipped hardware files by stem, e.g. ``{"h100-sxm": Path(...)}``."""
    return {p.stem: p for p in sorted(HARDWARE_DIR.glob("*.yaml"))}
