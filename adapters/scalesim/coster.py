"""The SCALE-Sim server's coster: GEMMs from SCALE-Sim, everything else from the roofline.

GEMM latency ``= cycles / clock_hz`` (s -> ns), times ``repetitions``. Energy, when the
array config has an ``energy_pj`` table: ``sram_reads x sram_read + sram_writes x sram_write
+ dram_reads x dram_read + dram_writes x dram_write`` (pJ per word access); the roofline
fallback charges DRAM bytes at ``dram_read / word_bytes`` pJ per byte.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from adapters.common.coster import (
    OpFailure,
    ServerInfo,
    check_common,
    cost_answer,
    error_answer,
)
from adapters.roofline.coster import ALL_KINDS, RooflineCoster
from adapters.scalesim.config import ArrayConfig
from adapters.scalesim.runner import GemmRunner, GemmSim, ResultTable, Shape
from llmsim.v1 import cost_model_pb2 as pb

log = logging.getLogger(__name__)

VERSION = "0.1.0"


class ScaleSimCoster:
    """Prices GEMMs with SCALE-Sim (via ``runner``) and the rest with the roofline model.

    Args:
        array: the systolic array.
        runner: runs GEMM shapes (``ScaleSimRunner`` or a fake in tests).
        table: persistent results.
    """

    def __init__(self, array: ArrayConfig, runner: GemmRunner, table: ResultTable) -> None:
        self.array = array
        self.runner = runner
        self.table = table
        self.fallback = RooflineCoster(array.roofline_spec())
        self.simulated = 0  # GEMMs actually run through SCALE-Sim by this server
        self._lock = threading.Lock()
        self._info = ServerInfo(
            server_name="llmsim-scalesim",
            server_version=VERSION,
            hardware=array.name,
            hardware_description=array.description,
            operator_kinds=ALL_KINDS,
            provides_energy=array.energy_pj is not None,
            attention_detail=pb.ATTENTION_DETAIL_SUMMARY,
            dtypes=(array.dtype,),
            fingerprint=f"scalesim-{VERSION}-{array.sha256[:16]}",
            attributes={"gemm": "scalesim", "other": "roofline", "dataflow": array.dataflow,
                        "array": f"{array.array_rows}x{array.array_cols}"},
        )

    def info(self) -> ServerInfo:
        return self._info

    def _gemm_answer(self, query: pb.OpQuery, sim: GemmSim) -> pb.OpAnswer:
        reps = query.repetitions or 1
        latency_ns = sim.cycles / self.array.clock_hz * 1e9 * reps
        energy_j = None
        e = self.array.energy_pj
        if e is not None:
            pj = (sim.sram_reads * e["sram_read"] + sim.sram_writes * e["sram_write"]
                  + sim.dram_reads * e["dram_read"] + sim.dram_writes * e["dram_write"])
            energy_j = pj * 1e-12 * reps
        return cost_answer(latency_ns, energy_j)

    def cost_batch(self, queries: Sequence[pb.OpQuery]) -> list[pb.OpAnswer]:
        answers: list[pb.OpAnswer | None] = [None] * len(queries)
        gemms: dict[int, Shape] = {}
        for i, q in enumerate(queries):
            if q.WhichOneof("shape") != "gemm":
                answers[i] = self.fallback.cost_batch([q])[0]
                continue
            try:
                check_common(q, self._info)
            except OpFailure as exc:
                answers[i] = error_answer(exc.code, str(exc))
                continue
            if min(q.gemm.m, q.gemm.n, q.gemm.k) == 0:
                answers[i] = error_answer(pb.OP_ERROR_CODE_INVALID, "GEMM with a zero dimension")
                continue
            gemms[i] = (q.gemm.m, q.gemm.n, q.gemm.k)
        if gemms:
            with self._lock:  # one batch of simulations at a time; the table is shared
                missing = sorted({s for s in gemms.values() if self.table.get(s) is None})
                if missing:
                    log.info("SCALE-Sim: simulating %d GEMM shape(s)", len(missing))
                    try:
                        results = self.runner(missing)
                    except Exception as exc:  # noqa: BLE001 - per-query errors, not a crash
                        log.exception("SCALE-Sim run failed")
                        for i, s in gemms.items():
                            if s in missing:
                                answers[i] = error_answer(pb.OP_ERROR_CODE_INTERNAL,
                                                          f"SCALE-Sim failed: {exc}")
                        results = None
                    if results is not None:
                        self.table.put_many(zip(missing, results, strict=True))
                        self.simulated += len(missing)
            for i, s in gemms.items():
                if answers[i] is None:
                    answers[i] = self._gemm_answer(queries[i], self.table.get(s))
        return answers  # type: ignore[return-value]

    def close(self) -> None:
        """Stop workers and close the table."""
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()
        self.table.close()
