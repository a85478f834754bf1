"""Import NVIDIA AIConfigurator's measured tables (communication tables for now).

Source: ai-dynamo/aiconfigurator, ``systems/data/<system>/comm/vllm/<version>/
custom_allreduce_perf.parquet`` (Apache-2.0), one row per (GPU count, message size, mode)
with columns ``framework, version, device, op_name, kernel_source, allreduce_dtype,
num_gpus, message_size, latency, backend``.

What the rows are (read from AIConfigurator's ``collector/collect_all_reduce.py``, vLLM
branch): the collector calls vLLM's own ``tensor_model_parallel_all_reduce`` on a tensor of
``message_size`` **elements** of ``allreduce_dtype`` (shape ``[1, size]``, or
``[size // 4096, 4096]`` above 4096), inside ``graph_capture`` and a captured CUDA graph
(``backend = vllm_graph``) or eagerly (``vllm_eager``), and reports the **mean** latency in
**milliseconds** over the timed runs (CUDA-event time of ``runs x 5`` calls divided by their
number). AIConfigurator's own query path agrees that the size is an element count
(``query_custom_allreduce(quant_mode, tp_size, size)`` is called with
``tokens x hidden_size``, and its speed-of-light formula multiplies ``size`` by 2 bytes).
So every row went through vLLM's implementation selection on the collection host: custom
all-reduce below its size limit, NCCL (or symmetric memory) above it, despite the
``vLLM_custom_*`` label.

The import gives one collectives :class:`~llmsim.v1.profile_pb2.OpTable` per op
(``all_reduce``) with axes ``bytes`` (``message_size x dtype bytes``), ``ranks``
(``num_gpus``) and ``cuda_graph`` (1 graph, 0 eager), the latency in ``mean_ns`` converted
from ms with decimal arithmetic (``Decimal(repr(ms)).scaleb(6)``), and attributes naming the
system, framework version, device, dtype and source file. The profile has no model and no TP
tables: a hardware-only profile whose collectives a cost model can use.
"""

from __future__ import annotations

import logging
import math
from decimal import Decimal
from pathlib import Path

from llmsim.errors import ProfileError
from llmsim.v1 import profile_pb2 as pb

logger = logging.getLogger(__name__)

SOURCE_NAME = "NVIDIA AIConfigurator perf database"
SOURCE_URI = "https://github.com/ai-dynamo/aiconfigurator"
COMM_FILE = "custom_allreduce_perf.parquet"
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4}
_MODES = {"vllm_graph": 1, "vllm_eager": 0}
_COLUMNS = ("version", "device", "op_name", "allreduce_dtype", "num_gpus", "message_size",
            "latency", "backend")


def ms_to_ns(value_ms: float) -> float:
    """Milliseconds (a parquet double) to ns, exactly as its decimal text scales.

    Raises:
        ValueError: NaN, infinite or negative.
    """
    if not math.isfinite(value_ms) or value_ms < 0:
        raise ValueError(f"not a latency: {value_ms!r}")
    return float(Decimal(repr(float(value_ms))).scaleb(6))


def comm_versions(system_dir: str | Path) -> list[str]:
    """vLLM versions with a comm table under ``<system_dir>/comm/vllm/``, ascending."""
    base = Path(system_dir) / "comm" / "vllm"
    if not base.is_dir():
        return []
    found = [p.name for p in base.iterdir() if (p / COMM_FILE).is_file()]
    return sorted(found, key=lambda v: tuple(int(x) if x.isdigit() else 0
                                             for x in v.split(".")))


def comm_table_path(system_dir: str | Path, version: str | None = None) -> Path:
    """The comm parquet of ``version`` (default: the newest one present).

    Raises:
        ProfileError: no comm table, or none for ``version`` (names what exists).
    """
    versions = comm_versions(system_dir)
    if not versions:
        raise ProfileError(f"no comm/vllm/<version>/{COMM_FILE}", path=system_dir)
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise ProfileError(f"no comm table for vLLM {version} (has: {', '.join(versions)})",
                           path=system_dir, field="version")
    return Path(system_dir) / "comm" / "vllm" / version / COMM_FILE


def _read_rows(path: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise ProfileError(f"cannot read parquet: {exc}", path=path) from exc
    missing = [c for c in _COLUMNS if c not in table.column_names]
    if missing:
        raise ProfileError(f"missing columns {missing}", path=path, field=missing[0])
    return {c: table.column(c).to_pylist() for c in _COLUMNS}


def _comm_table(path: Path, system: str) -> pb.OpTable:
    cols = _read_rows(path)
    ops = set(cols["op_name"])
    if ops != {"all_reduce"}:
        raise ProfileError(f"expected only all_reduce rows, found {sorted(map(str, ops))}",
                           path=path, field="op_name")
    out = pb.OpTable(op="all_reduce", kind=pb.OP_KIND_COLLECTIVE)
    nbytes: list[int] = []
    ranks: list[int] = []
    graph: list[int] = []
    for i in range(len(cols["latency"])):
        row = i + 1  # 1-based data row (parquet has no header line)
        dtype = cols["allreduce_dtype"][i]
        mode = cols["backend"][i]
        size, n, lat = cols["message_size"][i], cols["num_gpus"][i], cols["latency"][i]
        if dtype not in DTYPE_BYTES:
            raise ProfileError(f"unknown dtype {dtype!r}", path=path, line=row,
                               field="allreduce_dtype")
        if mode not in _MODES:
            raise ProfileError(f"unknown backend {mode!r} (expected {sorted(_MODES)})",
                               path=path, line=row, field="backend")
        if not isinstance(size, int) or size <= 0 or not isinstance(n, int) or n < 2:
            raise ProfileError("message_size must be > 0 and num_gpus >= 2", path=path,
                               line=row, field="message_size")
        try:
            out.mean_ns.append(ms_to_ns(lat))
        except (TypeError, ValueError) as exc:
            raise ProfileError(str(exc), path=path, line=row, field="latency") from None
        nbytes.append(size * DTYPE_BYTES[dtype])
        ranks.append(n)
        graph.append(_MODES[mode])
    out.axes.add(name="bytes", values=nbytes)
    out.axes.add(name="ranks", values=ranks)
    out.axes.add(name="cuda_graph", values=graph)
    out.attributes["source"] = f"aiconfigurator:{system}"
    out.attributes["source_file"] = str(path)
    out.attributes["framework_version"] = ",".join(sorted(set(map(str, cols["version"]))))
    out.attributes["device"] = ",".join(sorted(set(map(str, cols["device"]))))
    out.attributes["dtype"] = ",".join(sorted(set(map(str, cols["allreduce_dtype"]))))
    out.attributes["statistic"] = "mean"
    out.attributes["selection"] = "vLLM tensor_model_parallel_all_reduce (vLLM's own choice)"
    return out


def import_aiconfigurator_comm(system_dir: str | Path, *, version: str | None = None,
                               source_commit: str = "") -> pb.Profile:
    """Read one system's measured vLLM all-reduce table into a hardware-only Profile.

    Args:
        system_dir: e.g. ``.../aiconfigurator/systems/data/rtx_pro_6000_server``.
        version: vLLM version directory under ``comm/vllm/`` (default: the newest).
        source_commit: revision of the source repository, recorded in the provenance.

    Raises:
        ProfileError: no table, an unreadable file, a missing column or a bad cell (file,
            1-based row, field).
    """
    from llmsim.profile.io import SCHEMA_VERSION

    system_dir = Path(system_dir)
    path = comm_table_path(system_dir, version)
    table = _comm_table(path, system_dir.name)
    prov = pb.Provenance(
        hardware=system_dir.name, device_name=table.attributes["device"],
        framework="vllm", framework_version=path.parent.name, profiler_name="aiconfigurator",
        method=pb.MeasurementMethod(
            timer="cuda_event", statistic="mean", cuda_graphs=True,
            notes="vLLM tensor_model_parallel_all_reduce, CUDA graph and eager rows"),
        source=pb.Source(kind="imported", name=SOURCE_NAME, uri=SOURCE_URI,
                         commit=source_commit, path=str(path), license="Apache-2.0"),
    )
    profile = pb.Profile(schema_version=SCHEMA_VERSION, provenance=prov)
    profile.collectives.append(table)
    logger.info("%s: imported %d all_reduce rows", path, len(table.mean_ns))
    return profile
