"""Tensor-parallel link descriptions: one YAML file per GPU type, every value with its source.

A link description says what vLLM's all-reduce selection rule needs to know about a group of
GPUs in one node (``llmsim.costmodel.collectives.vllm_all_reduce_impl``) and the constants
of the analytic NCCL-style model used where no measured table covers a collective:

* ``link_kind``: ``pcie`` or ``nvlink``.
* ``p2p``: the driver reports peer-to-peer access (vLLM trusts ``can_device_access_peer``).
* ``fully_nvlink``: every GPU pair is NVLink-connected (vLLM's ``is_fully_connected``).
* ``custom_all_reduce_max_bytes``: per TP world size, the largest message vLLM's custom
  all-reduce takes (it is used iff ``bytes < max``).
* ``symm_mem_max_bytes``: per TP world size, the largest message torch symmetric memory takes
  (empty where vLLM's ``SymmMemCommunicator`` does not support the GPU).
* ``nccl_latency_ns``, ``nccl_bus_bandwidth_bytes_per_s``: ``t = latency + S f / busbw``
  with nccl-tests' bus-bandwidth factor ``f`` (see ``collectives.NcclModel``).
* ``p2p_bandwidth_bytes_per_s``, ``p2p_latency_ns`` (optional): one GPU-to-GPU copy
  between two GPUs of the node (a KV transfer between a prefill and a decode instance,
  :mod:`llmsim.pd`): ``t = latency + bytes / bandwidth`` per direction.
* ``measured``: where measured tables for this GPU live in the data directory
  (``aiconfigurator_system``: ``aiconfigurator/systems/data/<system>/comm/...``;
  ``vidur_network``: ``vidur/network/<dir>``).

Each scalar is written ``{value: ..., source: "..."}``; a value without a source is refused.
Files live in ``llmsim/hardware/data/``; :func:`find_link_spec` matches a hardware name
(the experiment's ``hardware.name`` or a profile's ``provenance.hardware`` / device name)
against each file's ``name`` and ``aliases``, case-insensitively.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from llmsim.errors import ConfigError
from llmsim.yamlfile import read_yaml

LINKS_DIR = Path(__file__).with_name("data")
"""Directory of the shipped link descriptions."""


class LinkKind(StrEnum):
    """Physical interconnect between the GPUs of one TP group."""

    PCIE = "pcie"
    NVLINK = "nvlink"


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSpec:
    """The TP link of one GPU type (see the module docstring for each field).

    Attributes:
        name: short hardware label, e.g. ``"RTXPRO6000"``.
        aliases: other names that select this file (data-set system names, device names).
        link_kind: PCIe or NVLink.
        p2p: peer-to-peer access reported by the driver.
        fully_nvlink: all GPU pairs NVLink-connected.
        custom_all_reduce_max_bytes: TP world size -> largest custom all-reduce message, bytes.
        symm_mem_max_bytes: TP world size -> largest torch symm-mem message, bytes.
        nccl_latency_ns: fixed cost of one NCCL collective, ns.
        nccl_bus_bandwidth_bytes_per_s: NCCL bus bandwidth (nccl-tests' busbw), bytes/s.
        aiconfigurator_system: AIConfigurator system directory with measured comm tables.
        vidur_network: Vidur network directory with measured NCCL tables.
        p2p_bandwidth_bytes_per_s: GPU-to-GPU copy bandwidth per direction, bytes/s (0:
            not described).
        p2p_latency_ns: fixed cost of one GPU-to-GPU transfer, ns.
        sources: field name -> the cited source of its value.
        path: the file it was read from.
    """

    name: str
    aliases: tuple[str, ...] = ()
    link_kind: LinkKind = LinkKind.PCIE
    p2p: bool = False
    fully_nvlink: bool = False
    custom_all_reduce_max_bytes: Mapping[int, int] = field(default_factory=dict)
    symm_mem_max_bytes: Mapping[int, int] = field(default_factory=dict)
    nccl_latency_ns: float = 0.0
    nccl_bus_bandwidth_bytes_per_s: float = 0.0
    aiconfigurator_system: str | None = None
    vidur_network: str | None = None
    p2p_bandwidth_bytes_per_s: float = 0.0
    p2p_latency_ns: float = 0.0
    sources: Mapping[str, str] = field(default_factory=dict)
    path: str = ""

    def matches(self, hardware: str) -> bool:
        """True when ``hardware`` names this GPU (its name or an alias, any case)."""
        key = hardware.strip().lower()
        return key == self.name.lower() or key in (a.lower() for a in self.aliases)


_SOURCED = ("link_kind", "p2p", "fully_nvlink", "custom_all_reduce_max_bytes",
            "symm_mem_max_bytes", "nccl_latency_ns", "nccl_bus_bandwidth_bytes_per_s")


_OPTIONAL_SOURCED = ("p2p_bandwidth_bytes_per_s", "p2p_latency_ns")
"""Keys a link description may leave out; when given, they need a source too."""


def _sourced(raw: dict[str, object], key: str, path: Path) -> tuple[object, str]:
    entry = raw.get(key)
    if not isinstance(entry, dict) or "value" not in entry:
        raise ConfigError("must be {value: ..., source: ...}", path=path, field=key)
    source = entry.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ConfigError("a link value needs a non-empty source", path=path,
                          field=f"{key}.source")
    return entry["value"], source


def _sizes(value: object, path: Path, key: str) -> dict[int, int]:
    if not isinstance(value, dict) or not all(
            isinstance(k, int) and isinstance(v, int) and k > 0 and v > 0
            for k, v in value.items()):
        raise ConfigError("must map TP world sizes to positive byte counts", path=path,
                          field=key)
    return dict(value)


def load_link_spec(path: str | Path) -> LinkSpec:
    """Read one link description.

    Raises:
        ConfigError: unreadable file, a missing or unsourced value, or a value of the wrong
            type (names the file and the field).
    """
    path = Path(path)
    raw, _ = read_yaml(path, what="link description")
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ConfigError("a link description needs a 'name'", path=path, field="name")
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for key in _SOURCED:
        values[key], sources[key] = _sourced(raw, key, path)
    try:
        kind = LinkKind(str(values["link_kind"]))
    except ValueError:
        raise ConfigError(f"must be one of {[k.value for k in LinkKind]}", path=path,
                          field="link_kind") from None
    for key in ("p2p", "fully_nvlink"):
        if not isinstance(values[key], bool):
            raise ConfigError("must be true or false", path=path, field=key)
    for key in ("nccl_latency_ns", "nccl_bus_bandwidth_bytes_per_s"):
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (
                key.endswith("_per_s") and v <= 0):
            raise ConfigError("must be a positive number", path=path, field=key)
    for key in _OPTIONAL_SOURCED:
        if key in raw:
            value, sources[key] = _sourced(raw, key, path)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                    key.endswith("_per_s") and value <= 0):
                raise ConfigError("must be a positive number", path=path, field=key)
            values[key] = float(value)
    measured = raw.get("measured") or {}
    if not isinstance(measured, dict):
        raise ConfigError("must be a mapping", path=path, field="measured")
    aliases = raw.get("aliases") or []
    return LinkSpec(
        name=raw["name"], aliases=tuple(str(a) for a in aliases), link_kind=kind,
        p2p=bool(values["p2p"]), fully_nvlink=bool(values["fully_nvlink"]),
        custom_all_reduce_max_bytes=_sizes(values["custom_all_reduce_max_bytes"], path,
                                           "custom_all_reduce_max_bytes"),
        symm_mem_max_bytes=_sizes(values["symm_mem_max_bytes"], path, "symm_mem_max_bytes"),
        nccl_latency_ns=float(values["nccl_latency_ns"]),  # type: ignore[arg-type]
        nccl_bus_bandwidth_bytes_per_s=float(
            values["nccl_bus_bandwidth_bytes_per_s"]),  # type: ignore[arg-type]
        aiconfigurator_system=measured.get("aiconfigurator_system"),
        vidur_network=measured.get("vidur_network"),
        p2p_bandwidth_bytes_per_s=float(values.get("p2p_bandwidth_bytes_per_s", 0.0)),  # type: ignore[arg-type]
        p2p_latency_ns=float(values.get("p2p_latency_ns", 0.0)),  # type: ignore[arg-type]
        sources=sources, path=str(path),
    )


@functools.cache
def shipped_link_specs() -> tuple[LinkSpec, ...]:
    """Every link description in :data:`LINKS_DIR`, sorted by file name."""
    return tuple(load_link_spec(p) for p in sorted(LINKS_DIR.glob("*.yaml")))


def find_link_spec(*names: str | None) -> LinkSpec | None:
    """The shipped link description of the first of ``names`` that one matches, or None.

    Args:
        names: candidate hardware names in priority order (e.g. the experiment's
            ``hardware.name``, then the profile's ``provenance.hardware`` and device name);
            ``None`` and empty names are skipped.
    """
    specs = shipped_link_specs()
    for name in names:
        if not name:
            continue
        for spec in specs:
            if spec.matches(name):
                return spec
    return None
