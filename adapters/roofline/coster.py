"""The roofline server's coster."""

from __future__ import annotations

from adapters.common.coster import PerQueryCoster, ServerInfo, check_common
from adapters.roofline.hardware import HardwareSpec
from adapters.roofline.model import DTYPE_BYTES, RooflineModel
from llmsim.v1 import cost_model_pb2 as pb

VERSION = "0.1.0"

ALL_KINDS = (pb.OPERATOR_KIND_GEMM, pb.OPERATOR_KIND_ATTENTION, pb.OPERATOR_KIND_ELEMENTWISE,
             pb.OPERATOR_KIND_COLLECTIVE, pb.OPERATOR_KIND_MEMORY_TRANSFER, pb.OPERATOR_KIND_MOE)


class RooflineCoster(PerQueryCoster):
    """Prices every operator kind with :class:`RooflineModel`."""

    def __init__(self, hw: HardwareSpec) -> None:
        self.model = RooflineModel(hw)
        self._info = ServerInfo(
            server_name="llmsim-roofline",
            server_version=VERSION,
            hardware=hw.name,
            hardware_description=hw.description,
            operator_kinds=ALL_KINDS,
            provides_energy=hw.energy is not None,
            attention_detail=pb.ATTENTION_DETAIL_SUMMARY,
            dtypes=tuple(d for d in hw.peak_flops_per_s if d in DTYPE_BYTES),
            fingerprint=f"roofline-{VERSION}-{hw.sha256[:16]}",
            attributes={"model": "roofline"},
        )

    def info(self) -> ServerInfo:
        return self._info

    def cost_one(self, query: pb.OpQuery) -> tuple[float, float | None]:
        check_common(query, self._info)
        work = self.model.work(query)
        reps = query.repetitions or 1
        energy_j = self.model.energy_j(query, work)
        return (reps * self.model.latency_ns(query, work),
                None if energy_j is None else reps * energy_j)
