"""GPU power specifications: sourced constants read from ``llmsim/power/data/*.yaml``.

Each file holds, for one GPU, ``power_limit_w``, ``idle_w``, ``peak_bf16_flops_per_s`` and
``memory_bandwidth_bytes_per_s``, each as ``{value, source}``. A ``null`` value means no
source states it; the power-state model then reports energy "unavailable" rather than
inventing a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmsim.errors import ConfigError

DATA_DIR = Path(__file__).parent / "data"
"""Folder of the shipped hardware power files."""

_FIELDS = ("power_limit_w", "idle_w", "peak_bf16_flops_per_s", "memory_bandwidth_bytes_per_s")


@dataclass(frozen=True, slots=True, kw_only=True)
class SourcedValue:
    """One constant and where it comes from.

    Attributes:
        value: the figure in the unit its field name carries, ``None`` when unsourced.
        source: citation (datasheet, dataset file and field), or why it is unset.
    """

    value: float | None
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuPowerSpec:
    """Power-relevant constants of one GPU model.

    Attributes:
        name: canonical GPU name (``H100``).
        aliases: other names the hardware is known by (case-insensitive match).
        power_limit_w: board power limit / TDP, W.
        idle_w: power drawn with no kernel running, W.
        peak_bf16_flops_per_s: dense BF16 tensor-core peak, FLOP/s.
        memory_bandwidth_bytes_per_s: device memory bandwidth, bytes/s.
        path: file the spec was read from ("" when built in code).
    """

    name: str
    aliases: tuple[str, ...] = ()
    power_limit_w: SourcedValue
    idle_w: SourcedValue
    peak_bf16_flops_per_s: SourcedValue
    memory_bandwidth_bytes_per_s: SourcedValue
    path: str = ""

    def missing(self) -> tuple[str, ...]:
        """Names of the fields without a sourced value (empty when the spec is complete)."""
        return tuple(f for f in _FIELDS if getattr(self, f).value is None)

    def with_assumption(self, field: str, value: float, note: str) -> GpuPowerSpec:
        """A copy with ``field`` set to a caller-stated assumption (its source says so).

        Raises:
            ConfigError: ``field`` is not a power-spec field or ``value`` is not positive.
        """
        if field not in _FIELDS:
            raise ConfigError(f"not a power-spec field (one of {', '.join(_FIELDS)})",
                              field=field)
        if not value > 0:
            raise ConfigError(f"must be > 0, got {value!r}", field=field)
        vals = {f: getattr(self, f) for f in _FIELDS}
        vals[field] = SourcedValue(value=float(value), source=f"ASSUMPTION: {note}")
        return GpuPowerSpec(name=self.name, aliases=self.aliases, path=self.path, **vals)


def _value(raw: dict[str, Any], key: str, path: Path) -> SourcedValue:
    entry = raw.get(key)
    if not isinstance(entry, dict) or "source" not in entry or "value" not in entry:
        raise ConfigError("expected a mapping with 'value' and 'source'", path=path, field=key)
    v, src = entry["value"], entry["source"]
    if not isinstance(src, str) or not src.strip():
        raise ConfigError("'source' must be a non-empty string", path=path, field=key)
    if v is None:
        return SourcedValue(value=None, source=src)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ConfigError(f"'value' must be a positive number or null, got {v!r}", path=path,
                          field=key)
    return SourcedValue(value=float(v), source=src)


def load_power_spec_file(path: str | Path) -> GpuPowerSpec:
    """Read one hardware power file.

    Raises:
        ConfigError: unreadable file, missing field, value without a source, or a
            non-positive value; names the file and field.
    """
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read power spec: {exc}", path=p) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ConfigError("expected a mapping with a string 'name'", path=p, field="name")
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ConfigError("expected a list of strings", path=p, field="aliases")
    return GpuPowerSpec(name=raw["name"], aliases=tuple(aliases), path=str(p),
                        **{f: _value(raw, f, p) for f in _FIELDS})


def find_power_spec(hardware: str, data_dir: str | Path = DATA_DIR) -> GpuPowerSpec | None:
    """The shipped spec whose name or alias matches ``hardware`` (case-insensitive).

    Returns:
        the spec, or ``None`` when no file describes that GPU (energy is then unavailable).
    """
    key = hardware.strip().lower()
    for f in sorted(Path(data_dir).glob("*.yaml")):
        spec = load_power_spec_file(f)
        if key in {spec.name.lower(), *(a.lower() for a in spec.aliases)}:
            return spec
    return None
