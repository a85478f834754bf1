"""Systolic-array description for the SCALE-Sim adapter (YAML).

Format::

    name: SA-32x32
    description: 32x32 weight-stationary systolic array
    clock_hz: 1.0e+9                 # cycles -> ns
    array_rows: 32
    array_cols: 32
    dataflow: ws                     # os | ws | is (SCALE-Sim dataflows)
    ifmap_sram_kb: 256
    filter_sram_kb: 256
    ofmap_sram_kb: 128
    dram_bandwidth_words_per_cycle: 16
    word_bytes: 2                    # bytes per element (bf16)
    link_bandwidth_bytes_per_s: 64.0e+9   # for collectives (roofline fallback)
    energy_pj:                       # optional: per access / per MAC
      sram_read: 1.0
      sram_write: 1.0
      dram_read: 20.0
      dram_write: 20.0

Operators other than GEMM are priced by the roofline model of the same array: peak
``2 x rows x cols x clock`` FLOP/s, memory ``dram_bandwidth x word_bytes x clock`` bytes/s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from adapters.roofline.hardware import Efficiency, EnergyTable, HardwareSpec
from llmsim.errors import ConfigError
from llmsim.yamlfile import read_yaml

DATAFLOWS = ("os", "ws", "is")
_ENERGY_KEYS = ("sram_read", "sram_write", "dram_read", "dram_write")
_DTYPE_OF_WORD = {1: "fp8", 2: "bf16", 4: "fp32"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ArrayConfig:
    """One systolic array (see the module docstring)."""

    name: str
    description: str
    clock_hz: float
    array_rows: int
    array_cols: int
    dataflow: str
    ifmap_sram_kb: int
    filter_sram_kb: int
    ofmap_sram_kb: int
    dram_bandwidth_words_per_cycle: int
    word_bytes: int
    link_bandwidth_bytes_per_s: float
    energy_pj: Mapping[str, float] | None = None
    sha256: str = ""

    @property
    def dtype(self) -> str:
        """Dtype label of the array's word."""
        return _DTYPE_OF_WORD[self.word_bytes]

    def roofline_spec(self) -> HardwareSpec:
        """The roofline description of this array, for non-GEMM operators."""
        mem_bw = self.dram_bandwidth_words_per_cycle * self.word_bytes * self.clock_hz
        energy = None
        if self.energy_pj is not None:
            energy = EnergyTable(pj_per_flop={self.dtype: 0.0},
                                 pj_per_dram_byte=self.energy_pj["dram_read"] / self.word_bytes)
        return HardwareSpec(
            name=self.name, description=self.description,
            peak_flops_per_s={self.dtype: 2.0 * self.array_rows * self.array_cols
                              * self.clock_hz},
            memory_bytes=1.0, memory_bandwidth_bytes_per_s=mem_bw,
            link_bandwidth_bytes_per_s=self.link_bandwidth_bytes_per_s,
            host_link_bandwidth_bytes_per_s=self.link_bandwidth_bytes_per_s,
            efficiency=Efficiency(gemm_compute=1.0, attention_compute=1.0, memory=1.0,
                                  link=1.0),
            energy=energy, sha256=self.sha256)

    def scalesim_cfg(self) -> str:
        """The SCALE-Sim ``.cfg`` text of this array (user-bandwidth mode, no sparsity)."""
        return "\n".join([
            "[general]", "run_name = llmsim", "",
            "[architecture_presets]",
            f"ArrayHeight: {self.array_rows}", f"ArrayWidth: {self.array_cols}",
            f"IfmapSramSzkB: {self.ifmap_sram_kb}", f"FilterSramSzkB: {self.filter_sram_kb}",
            f"OfmapSramSzkB: {self.ofmap_sram_kb}",
            "IfmapOffset: 0", "FilterOffset: 10000000", "OfmapOffset: 20000000",
            f"Bandwidth: {self.dram_bandwidth_words_per_cycle}",
            f"Dataflow: {self.dataflow}", "MemoryBanks: 1",
            "ReadRequestBuffer: 32", "WriteRequestBuffer: 32", "",
            "[layout]", "IfmapCustomLayout: False", "IfmapSRAMBankBandwidth: 10",
            "IfmapSRAMBankNum: 10", "IfmapSRAMBankPort: 2", "FilterCustomLayout: False",
            "FilterSRAMBankBandwidth: 10", "FilterSRAMBankNum: 10", "FilterSRAMBankPort: 2", "",
            "[sparsity]", "SparsitySupport: false", "SparseRep: ellpack_block",
            "OptimizedMapping: false", "BlockSize: 8", "RandomNumberGeneratorSeed: 40", "",
            "[run_presets]", "InterfaceBandwidth: USER", "UseRamulatorTrace: False", "",
        ])


def _int(raw: Mapping, key: str, path: Path) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"expected a positive integer, got {value!r}", path=path, field=key)
    return value


def _float(raw: Mapping, key: str, path: Path, *, field: str | None = None) -> float:
    value = raw.get(key)
    try:
        value = float(value) if isinstance(value, (int, float, str)) and not isinstance(
            value, bool) else None
    except ValueError:
        value = None
    if value is None or value <= 0:
        raise ConfigError(f"expected a positive number, got {raw.get(key)!r}", path=path,
                          field=field or key)
    return value


def load_array_config(path: str | Path) -> ArrayConfig:
    """Read and validate an array YAML file.

    Raises:
        ConfigError: unreadable file, invalid YAML or a bad field (file and field named).
    """
    path = Path(path)
    raw, text = read_yaml(path, what="array config")
    if not isinstance(raw, Mapping):
        raise ConfigError("array config must be a mapping", path=path)
    dataflow = raw.get("dataflow", "ws")
    if dataflow not in DATAFLOWS:
        raise ConfigError(f"must be one of {', '.join(DATAFLOWS)}", path=path, field="dataflow")
    word_bytes = _int(raw, "word_bytes", path)
    if word_bytes not in _DTYPE_OF_WORD:
        raise ConfigError("must be 1, 2 or 4", path=path, field="word_bytes")
    energy = None
    if raw.get("energy_pj") is not None:
        e = raw["energy_pj"]
        if not isinstance(e, Mapping):
            raise ConfigError("expected a mapping", path=path, field="energy_pj")
        energy = {k: _float(e, k, path, field=f"energy_pj.{k}") for k in _ENERGY_KEYS}
    return ArrayConfig(
        name=str(raw.get("name") or path.stem),
        description=str(raw.get("description", "")),
        clock_hz=_float(raw, "clock_hz", path),
        array_rows=_int(raw, "array_rows", path),
        array_cols=_int(raw, "array_cols", path),
        dataflow=dataflow,
        ifmap_sram_kb=_int(raw, "ifmap_sram_kb", path),
        filter_sram_kb=_int(raw, "filter_sram_kb", path),
        ofmap_sram_kb=_int(raw, "ofmap_sram_kb", path),
        dram_bandwidth_words_per_cycle=_int(raw, "dram_bandwidth_words_per_cycle", path),
        word_bytes=word_bytes,
        link_bandwidth_bytes_per_s=_float(raw, "link_bandwidth_bytes_per_s", path),
        energy_pj=energy,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


CONFIG_DIR = Path(__file__).parent / "configs"
