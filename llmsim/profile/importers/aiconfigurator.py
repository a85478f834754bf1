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

Model profiles (:func:`import_aiconfigurator`)
-----------------------------------------------
Builds the tables :class:`~llmsim.costmodel.profile_model.ProfileCostModel` prices (the
same ops, kinds and axes as an LLMServingSim bundle import) for any HF model config from
one system's kernel database, so that the cost model prices them unchanged. Every table
is one rank's work at one TP degree, ``mean_ns`` (AIConfigurator reports means), ms -> ns
by :func:`ms_to_ns`. The operator list and shapes are :func:`llmsim.costmodel.decompose.
step_ops` (``n`` / ``k`` per rank). Rows used: ``gemm_dtype``, ``attn_dtype``,
``kv_cache_dtype`` and ``moe_dtype`` = ``bfloat16`` (the model dtype; both given runs serve
bf16 with ``kv_cache_dtype: auto``), which selects one attention kernel per system
(``vllm_flash_attn`` on all four systems: the RTX PRO 6000 ``vllm_flashinfer`` rows are the
fp8-KV ones).

* **GEMMs** (``qkv_proj``, ``o_proj``, ``gate_up_proj``, ``down_proj``, ``moe_gate``,
  ``lm_head``) from ``gemm_perf.parquet`` (``vllm_default``: vLLM's unquantized linear
  layer, collector ``collector/vllm/collect_gemm.py``). One point per measured ``m``
  (tokens, or sequences for ``lm_head``); between ``m`` points the cost model interpolates
  linearly, above the largest ``m`` (32768; 8192 on A100) it scales proportionally and
  counts the extrapolation (:mod:`llmsim.costmodel.interp`). **Off-grid n/k**: the
  database's ``n`` and ``k`` grids are coarse (22 values, 32 ... 65536, with a gap from
  16384 to 51200), so at each measured ``m`` the value is interpolated *bilinearly in
  (n, k)* between the four bracketing grid points (GEMM time is close to linear in ``n``
  and in ``k`` at fixed ``m``: both the weight bytes and the FLOPs are); on-grid shapes use
  the measured row exactly. ``n`` above the grid (``lm_head`` of a 128k-151k vocabulary at
  TP1) is priced as ``c = ceil(n / n_max)`` column blocks of ``n / c`` columns each:
  ``c x T(m, n / c, k)`` (a column split of the output, recorded in the table attribute
  ``n_split``). ``n`` or ``k`` below the grid or ``k`` above it: the database cannot answer;
  the op is refused (:class:`ProfileRangeError`), except the optional ``moe_gate``
  (router GEMM, ``n`` = experts, 8 for Mixtral), which is then left out and named in the
  provenance attribute ``not_imported``; the cost model prices it at 0 and reports it
  (``missing_optional_ops``). A ``m`` at which a bracketing corner is missing is skipped.
* **Element-wise ops** (``layernorm``, ``final_layernorm``, ``qk_norm``, ``rotary_emb``,
  ``act_fn``, ``embedding``, ``sampler``): the database has no table for them, and
  AIConfigurator itself prices norms and activations with its memory-op rule
  (``aic-core/.../operators/elementwise.rs`` and ``attention.rs::mem_op_latency_ms`` at
  revision 095f58a5): ``t = bytes / (mem_bw x mem_bw_empirical_scaling_factor) +
  mem_empirical_constant_latency`` with ``bytes = tokens x 2 x (dim_in + dim_out)`` (bf16),
  the three constants read from the system's YAML (``systems/<system>.yaml``; AIC labels
  the scaling factor 0.8 and the 3 us constant "nonofficial corrections"; they are used as
  AIC ships them, not tuned here). Dimensions: ``layernorm`` / ``final_layernorm`` as AIC's
  ``add_norm`` (``dim_in = dim_out = 2 h``: vLLM's fused residual-add + RMSNorm reads and
  writes both the hidden state and the residual; one call, ``step_ops`` counts two per
  layer); ``act_fn`` as AIC's ``act_gate`` (``dim_in = 2 I``, ``dim_out = I``, per rank);
  ``rotary_emb`` and ``qk_norm`` (no AIC op; vLLM rotates / normalizes q and k in place):
  ``dim_in = dim_out = (q_heads + kv_heads) x head_dim`` per rank; ``embedding`` (a row
  gather): ``dim_in = dim_out = h``; ``sampler`` (per sequence; no AIC op): one fp32 read
  of the logits, ``4 x vocab`` bytes per sequence, a lower bound of vLLM's sampler. These
  tables use the GEMM table's ``m`` grid as their axis.
* **Attention** from ``context_attention_perf.parquet`` (``batch_size = 1`` rows: one
  sequence of ``isl`` new tokens, no cached prefix) and ``generation_attention_perf.parquet``
  (``batch_size`` decodes, ``isl = 1``, each attending to ``step + 1`` KV tokens, the new
  token included: the collector builds ``seq_lens = s``, ``query_lens = 1`` and logs
  ``step = s - 1``; llmsim's ``kv_decode`` counts the new token too), rows at the rank's
  ``num_heads`` / ``num_key_value_heads`` / ``head_dim``. Mapped onto the 4-D grid:
  decode-only ``(0, 0, n, kv)`` = the generation row; prefill-only ``(pc, kp, 0, 0)`` with
  ``s = pc + kp`` a measured ``isl``: ``T_ctx(s) x (s^2 - kp^2) / s^2``, AIConfigurator's own
  prefix correction (``prefix_correction`` in ``aic-core/.../operators/attention.rs``, rev.
  095f58a5: the causal work of the new tokens against the full sequence); ``kp = 0`` is the
  measured row. **Mixed** ``(pc, kp, n, kv)`` = prefill-only + decode-only, the sum of the
  two measured kernels: the database has no mixed measurement. vLLM 0.19's FlashAttention
  backend runs a mixed batch as *one* varlen kernel, so the sum counts two launches where
  there is one, and it does not see the mixed kernel's slower decode handling (the
  LLMServingSim RTX PRO 6000 bundle measures 21.7 ms with one chunk vs 5.65 ms decode-only
  at 128 x KV 16384, see :mod:`llmsim.costmodel.profile_model`): a composition, not a
  measurement. Several chunks in one step are then composed by the cost model as for any
  profile.
* **MoE** (``moe``) from ``moe_perf.parquet`` (``vllm_fused_moe``; the collector times vLLM's
  fused expert kernels with routing ids drawn from ``distribution``, default ``balanced``;
  the router GEMM is the separate ``moe_gate`` op), rows at the model's ``hidden_size``,
  ``moe_intermediate_size`` (full, sharded by ``moe_tp_size`` = TP), ``topk``,
  ``num_experts``, ``moe_ep_size = 1``. The latency at ``num_tokens`` tokens already
  reflects the experts they hit, so the llmsim table (axes ``tokens``, ``active_experts``)
  repeats each value at ``active_experts = 1`` and ``= E``: the cost model's lookup at
  ``(T, E_active(T))`` returns the measured value at ``T`` (interpolated between token
  counts). A missing combination (e.g. Qwen3-30B-A3B at TP8, A100's missing ``balanced``
  rows) is refused, naming what exists. At TP 1 the rows at ``moe_tp_size = 1`` and
  ``moe_ep_size = N > 1`` (one EP rank holding ``E / N`` whole experts) are imported too, as
  tables ``moe_ep<N>`` of the same form (where the database has them for the shape), which
  :mod:`llmsim.cluster.moe_dp` prices EP ranks from (``num_tokens`` read as the tokens the
  rank's kernel sees after dispatch, all ``T`` of the group: our reading [obs], the latency
  drops from EP 1 to EP 2 to EP 4 as a rank's share of the experts does, e.g. Mixtral-8x7B
  on H100 at 16 tokens 0.959 / 0.497 / 0.263 ms).
* **All-reduce**: the comm table above is added to ``profile.collectives`` when a TP > 1 is
  imported.

Refusals (:class:`~llmsim.errors.ProfileRangeError`): a TP degree that does not divide
the attention heads, a missing attention/MoE/GEMM shape, an ``n``/``k`` outside the GEMM
grid (except the optional ``moe_gate``), a system without a kernel table. Beyond that the
only extrapolation is the cost model's own (above the largest measured ``m``, KV or
chunk), which it counts and reports.

Provenance: ``source`` names the database, ``hardware`` the AIConfigurator system,
``framework_version`` the vLLM version directory, ``commit`` the revision passed in (the
git blob hash of every file read is in ``attributes["files"]`` so the revision can be
checked), and ``attributes`` the system constants, row filters and mapping rules.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmsim.errors import ProfileError, ProfileRangeError
from llmsim.v1 import profile_pb2 as pb

if TYPE_CHECKING:
    from llmsim.costmodel.decompose import OpSpec
    from llmsim.model.config import ModelConfig

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


def _read_rows(path: Path) -> dict[str, list[Any]]:  # parquet cells, per column
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


# ---------------------------------------------------------------------------- model profiles

MODEL_DTYPE = "bfloat16"
_GEMM_FILE = ("gemm", "gemm_perf.parquet")
_CTX_FILE = ("attention", "context_attention_perf.parquet")
_GEN_FILE = ("attention", "generation_attention_perf.parquet")
_MOE_FILE = ("moe", "moe_perf.parquet")
_ELEMENTWISE = ("layernorm", "final_layernorm", "qk_norm", "rotary_emb", "act_fn",
                "embedding")


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemSpec:
    """The memory constants of one AIConfigurator system YAML (``systems/<name>.yaml``).

    Attributes:
        name: system name, e.g. ``h100_sxm``.
        mem_bw_bytes_per_s: ``gpu.mem_bw``.
        mem_bw_scaling: ``gpu.mem_bw_empirical_scaling_factor`` (dimensionless).
        mem_constant_latency_s: ``gpu.mem_empirical_constant_latency``.
        path: the YAML file.
    """

    name: str
    mem_bw_bytes_per_s: float
    mem_bw_scaling: float
    mem_constant_latency_s: float
    path: str

    def mem_op_ns(self, nbytes: float) -> float:
        """AIConfigurator's memory-op latency of ``nbytes`` bytes, in ns (module docstring)."""
        return (nbytes / (self.mem_bw_bytes_per_s * self.mem_bw_scaling)
                + self.mem_constant_latency_s) * 1e9


def load_system_spec(path: str | Path) -> SystemSpec:
    """Read the ``gpu`` memory constants of a system YAML.

    Raises:
        ProfileError: unreadable file, missing field or a non-positive value.
    """
    from llmsim.yamlfile import read_yaml

    path = Path(path)
    doc, _ = read_yaml(path, what="AIConfigurator system YAML", error=ProfileError)
    gpu = doc.get("gpu") if isinstance(doc, dict) else None
    if not isinstance(gpu, dict):
        raise ProfileError("no 'gpu' mapping", path=path, field="gpu")
    vals = {}
    for key in ("mem_bw", "mem_bw_empirical_scaling_factor", "mem_empirical_constant_latency"):
        v = gpu.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (
                v < 0 or (v == 0 and key != "mem_empirical_constant_latency")):
            raise ProfileError(f"expected a positive number, got {v!r}", path=path,
                               field=f"gpu.{key}")
        vals[key] = float(v)
    return SystemSpec(name=path.stem, mem_bw_bytes_per_s=vals["mem_bw"],
                      mem_bw_scaling=vals["mem_bw_empirical_scaling_factor"],
                      mem_constant_latency_s=vals["mem_empirical_constant_latency"],
                      path=str(path))


def resolve_system(directory: str | Path, system: str | None = None) -> tuple[Path, Path]:
    """``(system data dir, system YAML)`` from an AIConfigurator tree.

    ``directory`` is the database root (holding ``systems/``), its ``systems/`` folder
    (with ``system`` given), or a system data dir ``.../systems/data/<system>`` itself.

    Raises:
        ProfileError: neither layout matches (names what was looked for).
    """
    d = Path(directory)
    if system is None:
        system = d.name
        data_dir, yaml = d, d.parent.parent / f"{system}.yaml"
    else:
        base = d / "systems" if (d / "systems").is_dir() else d
        data_dir, yaml = base / "data" / system, base / f"{system}.yaml"
    if not data_dir.is_dir():
        raise ProfileError(f"no system data directory {data_dir}", path=d, field="system")
    if not yaml.is_file():
        raise ProfileError(f"no system YAML {yaml}", path=d, field="system")
    return data_dir, yaml


def _kernel_file(system_dir: Path, kind: tuple[str, str], version: str) -> Path:
    path = system_dir / kind[0] / "vllm" / version / kind[1]
    if not path.is_file():
        base = system_dir / kind[0] / "vllm"
        have = sorted(p.name for p in base.iterdir()) if base.is_dir() else []
        raise ProfileRangeError(f"no {kind[0]}/vllm/{version}/{kind[1]} (vLLM versions with "
                                f"{kind[0]} tables: {', '.join(have) or 'none'})",
                                path=system_dir, field="version")
    return path


def _git_blob_sha1(path: Path) -> str:
    """Git's blob hash of a file (``git hash-object``), to identify the source revision."""
    import hashlib

    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _columns(path: Path, names: tuple[str, ...], where: Mapping[str, object]
             ) -> list[tuple[Any, ...]]:
    """Rows (tuples of ``names``) of a parquet file whose columns equal ``where``."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise ProfileError(f"cannot read parquet: {exc}", path=path) from exc
    missing = [c for c in (*names, *where) if c not in table.column_names]
    if missing:
        raise ProfileError(f"missing columns {missing}", path=path, field=missing[0])
    cols = {c: table.column(c).to_pylist() for c in {*names, *where}}
    keep: list[int] = list(range(table.num_rows))
    for col, value in where.items():
        vals = cols[col]
        keep = [i for i in keep if vals[i] == value]
    out = []
    for i in keep:
        row = tuple(cols[c][i] for c in names)
        lat = row[-1]
        if not isinstance(lat, (int, float)) or not math.isfinite(lat) or lat < 0:
            raise ProfileError(f"not a latency: {lat!r}", path=path, line=i + 1,
                               field="latency")
        out.append(row)
    return out


def _by_key(rows: list[tuple[Any, ...]], path: Path) -> dict[tuple[int, ...], float]:
    """Latency (ms) per key (all columns but the last); repeated keys are averaged (logged).

    Repeated keys are repeated measurements of one point (e.g. 49 h200_sxm context rows,
    ``perf_database/op-kernel-sources.md``); their mean is the mean of all the samples.
    """
    acc: dict[tuple[int, ...], list[float]] = {}
    for row in rows:
        acc.setdefault(tuple(row[:-1]), []).append(float(row[-1]))
    rep = sum(len(v) - 1 for v in acc.values())
    if rep:
        logger.warning("%s: %d repeated measurement(s) averaged", path, rep)
    return {k: (v[0] if len(v) == 1 else math.fsum(v) / len(v)) for k, v in acc.items()}


class GemmTable:
    """The bf16 GEMM latencies of one system: ``T(m, n, k)`` in ms (module docstring).

    Args:
        points: ``(m, n, k) -> ms``.
        path: source file, for messages.
    """

    def __init__(self, points: dict[tuple[int, ...], float], path: Path | str = "<gemm>") -> None:
        if not points:
            raise ProfileRangeError("no bfloat16 GEMM rows", path=path, field="gemm_dtype")
        self.points = points
        self.path = path
        self.ms = sorted({m for m, _, _ in points})
        self.ns = sorted({n for _, n, _ in points})
        self.ks = sorted({k for _, _, k in points})

    @staticmethod
    def _bracket(grid: list[int], x: float) -> tuple[int, int, float]:
        from bisect import bisect_left

        i = bisect_left(grid, x)
        if grid[i] == x:
            return grid[i], grid[i], 0.0
        lo, hi = grid[i - 1], grid[i]
        return lo, hi, (x - lo) / (hi - lo)

    def splits(self, n: int) -> int:
        """Column blocks used for ``n`` (1 inside the grid)."""
        return max(1, math.ceil(n / self.ns[-1]))

    def check(self, op: str, n: int, k: int) -> None:
        """Refuse an ``(n, k)`` the grid cannot answer.

        Raises:
            ProfileRangeError: ``n`` below the grid, or ``k`` outside it.
        """
        if n < self.ns[0] or not self.ks[0] <= k <= self.ks[-1]:
            raise ProfileRangeError(
                f"GEMM {op} (n={n}, k={k}) is outside the database's grid (n >= "
                f"{self.ns[0]}, {self.ks[0]} <= k <= {self.ks[-1]})", path=self.path,
                field=op)

    def at(self, m: int, n: int, k: int) -> float | None:
        """``T(m, n, k)`` in ms at a measured ``m`` (None when a corner is missing)."""
        c = self.splits(n)
        n0, n1, fn = self._bracket(self.ns, n / c)
        k0, k1, fk = self._bracket(self.ks, k)
        p = self.points
        try:
            a, b = p[(m, n0, k0)], p[(m, n1, k0)]
            cc, d = p[(m, n0, k1)], p[(m, n1, k1)]
        except KeyError:
            return None
        lo = a + (b - a) * fn
        hi = cc + (d - cc) * fn
        return c * (lo + (hi - lo) * fk)

    def exact(self, n: int, k: int) -> bool:
        """Whether ``(n, k)`` is a grid point (values are the measured rows)."""
        return n in self.ns and k in self.ks


def _ms_to_ns_value(ms: float, exact: bool) -> float:
    return ms_to_ns(ms) if exact else ms * 1e6


def _gemm_table(gemm: GemmTable, op: OpSpec, kind: pb.OpKind) -> pb.OpTable:
    gemm.check(op.name, op.n, op.k)
    exact = gemm.exact(op.n, op.k)
    out = pb.OpTable(op=op.name, kind=kind)
    xs: list[int] = []
    skipped = []
    for m in gemm.ms:
        v = gemm.at(m, op.n, op.k)
        if v is None:
            skipped.append(m)
            continue
        xs.append(m)
        out.mean_ns.append(_ms_to_ns_value(v, exact))
    if not xs:
        raise ProfileRangeError(f"GEMM {op.name} (n={op.n}, k={op.k}): no m with all "
                                "bracketing rows", path=gemm.path, field=op.name)
    out.axes.add(name="sequences" if kind == pb.OP_KIND_PER_SEQUENCE else "tokens", values=xs)
    out.attributes["source"] = "gemm_perf.parquet"
    out.attributes["shape"] = f"n={op.n},k={op.k}"
    out.attributes["n_k_lookup"] = "measured rows" if exact else "bilinear in (n, k)"
    out.attributes["n_split"] = str(gemm.splits(op.n))
    if skipped:
        out.attributes["m_skipped"] = ",".join(map(str, skipped))
    return out


def _elementwise_bytes_per_row(op: OpSpec, model: ModelConfig) -> float:
    """Bytes one row (token / sequence) moves in ``op`` (module docstring)."""
    h = model.hidden_size
    if op.name in ("layernorm", "final_layernorm"):
        return 2 * (2 * h + 2 * h)
    if op.name == "act_fn":
        return 2 * (2 * op.n + op.n)
    if op.name in ("rotary_emb", "qk_norm"):
        return 2 * (op.n + op.n)
    if op.name == "embedding":
        return 2 * (h + h)
    if op.name == "sampler":
        return 4 * model.vocab_size
    raise ProfileRangeError(f"no element-wise rule for op {op.name!r}", field=op.name)


def _elementwise_table(op: OpSpec, model: ModelConfig, spec: SystemSpec, rows: list[int],
                       kind: pb.OpKind) -> pb.OpTable:
    per_row = _elementwise_bytes_per_row(op, model)
    out = pb.OpTable(op=op.name, kind=kind)
    out.axes.add(name="sequences" if kind == pb.OP_KIND_PER_SEQUENCE else "tokens",
                 values=rows)
    out.mean_ns.extend(spec.mem_op_ns(r * per_row) for r in rows)
    out.attributes["source"] = (f"estimate:aiconfigurator mem-op rule ({spec.name}.yaml: "
                                f"mem_bw={spec.mem_bw_bytes_per_s:g} B/s x "
                                f"{spec.mem_bw_scaling:g} + {spec.mem_constant_latency_s:g} s)")
    out.attributes["bytes_per_row"] = f"{per_row:g}"
    return out


def _attention_table(ctx: dict[int, float], gen: dict[tuple[int, int], float], where: str
                     ) -> pb.OpTable:
    """The 4-D attention grid from context (isl -> ms) and generation ((n, kv) -> ms) rows."""
    if not ctx or not gen:
        raise ProfileRangeError("no context or generation attention rows for this shape",
                                field=where)
    pre: dict[tuple[int, int], float] = {}
    lens = sorted(ctx)
    for s in lens:
        for pc in lens:
            if pc > s:
                break
            kp = s - pc
            pre[(pc, kp)] = ms_to_ns(ctx[s]) * ((s * s - kp * kp) / (s * s)) if kp else (
                ms_to_ns(ctx[s]))
    dec = {key: ms_to_ns(v) for key, v in gen.items()}
    out = pb.OpTable(op="attention", kind=pb.OP_KIND_ATTENTION)
    cols: list[list[int]] = [[], [], [], []]
    for (n, kv), t in sorted(dec.items()):
        for c, v in zip(cols, (0, 0, n, kv), strict=True):
            c.append(v)
        out.mean_ns.append(t)
    for (pc, kp), t in sorted(pre.items()):
        for c, v in zip(cols, (pc, kp, 0, 0), strict=True):
            c.append(v)
        out.mean_ns.append(t)
    for (pc, kp), tp_ in sorted(pre.items()):
        for (n, kv), td in sorted(dec.items()):
            for c, v in zip(cols, (pc, kp, n, kv), strict=True):
                c.append(v)
            out.mean_ns.append(tp_ + td)
    for name, c in zip(("prefill_chunk", "kv_prefill", "n_decode", "kv_decode"), cols, strict=True):
        out.axes.add(name=name, values=c)
    out.attributes["source"] = ("context_attention_perf.parquet (batch_size=1), "
                                "generation_attention_perf.parquet")
    out.attributes["prefill_with_prefix"] = "T_ctx(pc+kp) x ((pc+kp)^2 - kp^2) / (pc+kp)^2"
    out.attributes["mixed"] = "prefill-only + decode-only (sum of two measured kernels)"
    return out


def _moe_table(points: dict[int, float], experts: int) -> pb.OpTable:
    out = pb.OpTable(op="moe", kind=pb.OP_KIND_MOE)
    toks: list[int] = []
    active: list[int] = []
    for t, ms in sorted(points.items()):
        for a in sorted({1, experts}):
            toks.append(t)
            active.append(a)
            out.mean_ns.append(ms_to_ns(ms))
    out.axes.add(name="tokens", values=toks)
    out.axes.add(name="active_experts", values=active)
    out.attributes["source"] = "moe_perf.parquet"
    out.attributes["active_experts"] = ("not measured: each token count's value repeated at "
                                        f"active_experts = 1 and {experts}")
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class _Tables:
    """The parsed kernel tables of one system (only the rows an import can use)."""

    gemm: GemmTable
    ctx: dict[tuple[int, ...], float]   # (num_heads, kv_heads, head_dim, isl) -> ms, batch_size 1
    gen: dict[tuple[int, ...], float]   # (num_heads, kv_heads, head_dim, batch, kv) -> ms
    moe: dict[tuple[int, ...], float] | None  # (hidden, inter, topk, E, tp, tokens) -> ms
    # (hidden, inter, topk, E, ep, tokens) -> ms, moe_tp = 1 and moe_ep > 1 (EP ranks)
    moe_ep: dict[tuple[int, ...], float] | None = None
    files: dict[str, str]
    paths: dict[str, Path]


def _read_tables(system_dir: Path, version: str, moe: bool, distribution: str) -> _Tables:
    paths = {"gemm": _kernel_file(system_dir, _GEMM_FILE, version),
             "context": _kernel_file(system_dir, _CTX_FILE, version),
             "generation": _kernel_file(system_dir, _GEN_FILE, version)}
    if moe:
        paths["moe"] = _kernel_file(system_dir, _MOE_FILE, version)
    rows = _columns(paths["gemm"], ("m", "n", "k", "latency"), {"gemm_dtype": MODEL_DTYPE})
    gemm = GemmTable(_by_key(rows, paths["gemm"]), paths["gemm"])
    attn_where = {"attn_dtype": MODEL_DTYPE, "kv_cache_dtype": MODEL_DTYPE}
    rows = _columns(paths["context"], ("num_heads", "num_key_value_heads", "head_dim", "isl",
                                       "latency"), {**attn_where, "batch_size": 1})
    ctx = _by_key(rows, paths["context"])
    rows = _columns(paths["generation"], ("num_heads", "num_key_value_heads", "head_dim",
                                          "batch_size", "step", "latency"), attn_where)
    gen = {(*key[:4], key[4] + 1): v for key, v in _by_key(rows, paths["generation"]).items()}
    moe_pts = None
    if moe:
        where = {"moe_dtype": MODEL_DTYPE, "moe_ep_size": 1, "kernel_source": "vllm_fused_moe"}
        all_rows = _columns(paths["moe"], ("distribution", "latency"), where)
        have = sorted({r[0] for r in all_rows})
        if distribution not in have:
            raise ProfileRangeError(f"no {distribution!r} MoE rows (distributions present: "
                                    f"{', '.join(have) or 'none'})", path=paths["moe"],
                                    field="distribution")
        rows = _columns(paths["moe"], ("hidden_size", "inter_size", "topk", "num_experts",
                                       "moe_tp_size", "num_tokens", "latency"),
                        {**where, "distribution": distribution})
        moe_pts = _by_key(rows, paths["moe"])
        ep_where = {k: v for k, v in where.items() if k != "moe_ep_size"}
        rows = _columns(paths["moe"], ("hidden_size", "inter_size", "topk", "num_experts",
                                       "moe_ep_size", "num_tokens", "latency"),
                        {**ep_where, "distribution": distribution, "moe_tp_size": 1})
        moe_ep_pts = _by_key([r for r in rows if r[4] > 1], paths["moe"])
    files = {p.name: _git_blob_sha1(p) for p in paths.values()}
    return _Tables(gemm=gemm, ctx=ctx, gen=gen, moe=moe_pts, files=files, paths=paths,
                   moe_ep=moe_ep_pts if moe else None)


def _tp_profile_aic(tables: _Tables, model: ModelConfig, tp: int, spec: SystemSpec,
                    not_imported: list[str]) -> pb.TpProfile:
    from llmsim.cluster.parallel import ParallelConfig
    from llmsim.costmodel.decompose import OpClass, Rows, step_ops

    where = f"tp{tp}"
    if model.num_attention_heads % tp:
        raise ProfileRangeError(f"TP {tp} does not divide {model.num_attention_heads} "
                                "attention heads", field=where)
    tpp = pb.TpProfile(tp_degree=tp)
    rows = list(tables.gemm.ms)
    for op in step_ops(model, ParallelConfig(tensor_parallel_size=tp)):
        kind = pb.OP_KIND_PER_SEQUENCE if op.rows is Rows.SEQUENCES else pb.OP_KIND_DENSE
        if op.op_class is OpClass.GEMM:
            try:
                tpp.ops.append(_gemm_table(tables.gemm, op, kind))
            except ProfileRangeError as exc:
                if op.name != "moe_gate":
                    raise
                not_imported.append(f"{where}/moe_gate: {exc.args[0] if exc.args else exc}")
        elif op.op_class in (OpClass.ELEMENTWISE, OpClass.EMBEDDING, OpClass.SAMPLER):
            if any(t.op == op.name for t in tpp.ops):
                continue  # listed twice (layernorm x 2 is one op with count 2)
            tpp.ops.append(_elementwise_table(op, model, spec, rows, kind))
        elif op.op_class is OpClass.ATTENTION:
            q = op.n // model.head_dim
            kv = op.k // model.head_dim
            d = model.head_dim
            ctx = {s: v for (n, k, hd, s), v in tables.ctx.items() if (n, k, hd) == (q, kv, d)}
            gen = {(b, s): v for (n, k, hd, b, s), v in tables.gen.items()
                   if (n, k, hd) == (q, kv, d)}
            if not ctx or not gen:
                raise ProfileRangeError(
                    f"no bf16 attention rows for num_heads={q}, num_key_value_heads={kv}, "
                    f"head_dim={d} (context: {len(ctx)}, generation: {len(gen)})",
                    path=tables.paths["context"], field=f"{where}/attention")
            tpp.ops.append(_attention_table(ctx, gen, f"{where}/attention"))
        elif op.op_class is OpClass.MOE:
            key = (model.hidden_size, model.moe_intermediate_size,
                   model.num_experts_per_token, model.num_experts, tp)
            pts = {k[5]: v for k, v in (tables.moe or {}).items() if k[:5] == key}
            if not pts:
                have = sorted({k[4] for k in (tables.moe or {}) if k[:4] == key[:4]})
                raise ProfileRangeError(
                    f"no MoE rows for hidden={key[0]}, inter={key[1]}, topk={key[2]}, "
                    f"experts={key[3]}, moe_tp={tp}, ep=1 (moe_tp present for this shape: "
                    f"{have or 'none'})", path=tables.paths.get("moe"), field=f"{where}/moe")
            tpp.ops.append(_moe_table(pts, model.num_experts))
            if tp == 1:
                tpp.ops.extend(_moe_ep_tables(tables, key[:4], model.num_experts))
    return tpp


def _moe_ep_tables(tables: _Tables, shape: tuple[int, ...], experts: int
                   ) -> list[pb.OpTable]:
    """``moe_ep<N>`` tables of one MoE shape: one EP rank's fused-MoE time at ``moe_tp = 1``,
    ``moe_ep = N`` (module docstring, MoE)."""
    out = []
    found = tables.moe_ep or {}
    for ep in sorted({k[4] for k in found if k[:4] == shape}):
        pts = {k[5]: v for k, v in found.items() if k[:4] == shape and k[4] == ep}
        table = _moe_table(pts, experts)
        table.op = f"moe_ep{ep}"
        table.attributes["expert_parallel_size"] = str(ep)
        out.append(table)
    return out


def import_aiconfigurator(directory: str | Path, *, model_config: str | Path,
                          tp_degrees: tuple[int, ...] = (1,), system: str | None = None,
                          version: str | None = None, moe_distribution: str = "balanced",
                          source_commit: str = "") -> pb.Profile:
    """Build a model profile from one system's AIConfigurator kernel database.

    Args:
        directory: the database root (with ``system``), or ``.../systems/data/<system>``.
        model_config: HF ``config.json`` of the model.
        tp_degrees: TP degrees to build (each must be answerable, else refused).
        system: AIConfigurator system name, e.g. ``h100_sxm``.
        version: vLLM version directory (default: the newest one with a GEMM table).
        moe_distribution: routing distribution of the MoE rows (``balanced``,
            ``power_law_1.01``, ``power_law_1.2``).
        source_commit: AIConfigurator revision the files come from (recorded).

    Returns:
        A validated Profile: per TP the dense, per-sequence, attention (and MoE) tables,
        the all-reduce table in ``collectives`` when a TP > 1 is built.

    Raises:
        ProfileRangeError: a shape the database cannot answer (module docstring).
        ProfileError: unreadable or malformed files.
        ConfigError: a malformed model config.
    """
    from llmsim.model.config import load_model_config
    from llmsim.profile.importers.llmservingsim import architecture_from_config
    from llmsim.profile.io import SCHEMA_VERSION, validate_profile

    system_dir, yaml = resolve_system(directory, system)
    spec = load_system_spec(yaml)
    if version is None:
        base = system_dir / _GEMM_FILE[0] / "vllm"
        found = sorted((p.name for p in base.iterdir() if (p / _GEMM_FILE[1]).is_file()),
                       key=lambda v: tuple(int(x) if x.isdigit() else 0 for x in v.split(".")),
                       ) if base.is_dir() else []
        if not found:
            raise ProfileRangeError("no gemm/vllm/<version>/gemm_perf.parquet",
                                    path=system_dir, field="version")
        version = found[-1]
    cfg_path = Path(model_config)
    model = load_model_config(cfg_path)
    tps = sorted(set(tp_degrees))
    if not tps or any(t <= 0 for t in tps):
        raise ProfileError(f"TP degrees must be positive, got {tp_degrees}", field="tp")
    tables = _read_tables(system_dir, version, model.is_moe, moe_distribution)
    not_imported: list[str] = []
    profile = pb.Profile(schema_version=SCHEMA_VERSION, dtype="bf16")
    profile.model.CopyFrom(architecture_from_config(model))
    for tp in tps:
        profile.tp.append(_tp_profile_aic(tables, model, tp, spec, not_imported))
    files = dict(tables.files)
    if tps[-1] > 1:
        comm = comm_table_path(system_dir, version)
        profile.collectives.append(_comm_table(comm, system_dir.name))
        files[comm.name] = _git_blob_sha1(comm)
    device = _device_name(tables.paths["gemm"])
    prov = profile.provenance
    prov.CopyFrom(pb.Provenance(
        hardware=system_dir.name, device_name=device, framework="vllm",
        framework_version=version, profiler_name="aiconfigurator",
        method=pb.MeasurementMethod(
            timer="cuda_event", statistic="mean",
            notes="per-kernel latencies measured by AIConfigurator's collectors inside vLLM "
                  "(GEMM, attention, fused MoE, all-reduce); element-wise ops from AIC's "
                  "memory-op rule; mixed attention steps composed (see the importer)"),
        source=pb.Source(kind="imported", name=SOURCE_NAME, uri=SOURCE_URI,
                         commit=source_commit, path=str(system_dir), license="Apache-2.0"),
    ))
    import json

    prov.attributes["files"] = json.dumps(files, sort_keys=True)
    prov.attributes["system_yaml"] = spec.path
    prov.attributes["mem_op_rule"] = json.dumps({
        "mem_bw_bytes_per_s": spec.mem_bw_bytes_per_s, "scaling": spec.mem_bw_scaling,
        "constant_latency_s": spec.mem_constant_latency_s})
    prov.attributes["row_filters"] = json.dumps({
        "gemm_dtype": MODEL_DTYPE, "attn_dtype": MODEL_DTYPE, "kv_cache_dtype": MODEL_DTYPE,
        "moe_dtype": MODEL_DTYPE, "moe_ep_size": "1 (moe); N (moe_ep<N> at TP 1)",
        "moe_kernel_source": "vllm_fused_moe",
        "moe_distribution": moe_distribution if model.is_moe else None})
    prov.attributes["model_config"] = str(cfg_path)
    if not_imported:
        prov.attributes["not_imported"] = "; ".join(not_imported)
        for line in not_imported:
            logger.warning("not imported: %s", line)
    validate_profile(profile, system_dir)
    return profile


def _device_name(path: Path) -> str:
    import pyarrow.parquet as pq

    col = pq.read_table(path, columns=["device"]).column("device")
    return ",".join(sorted({str(v) for v in col.to_pylist()}))
