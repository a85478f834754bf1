"""Serve an llmsim operator profile over the bridge, answering exactly as in-process.

The answers come from the same code as :class:`llmsim.costmodel.profile_model.ProfileCostModel`
(``profile_model.rows_ns`` for per-token and per-sequence tables, ``tp_tables`` for its
per-TP attention, MoE and all-reduce lookups), applied the same way:

* dense / per-sequence ops: the table is weighted by the query's ``repetitions`` *before*
  interpolation, as the profile model weights by ``count x layers``;
* attention: one layer's time for the batch times ``repetitions``; the profile model's
  attention depends on the decodes only through their count, sum, max and min, so the
  summary attention query suffices (the server rebuilds a KV-length tuple with exactly
  those four statistics);
* all_reduce: the profile's collective table or link model at the query's bytes;
* MoE: the expected active experts ``E (1 - (1 - k/E)^T)`` capped at ``T k``.

``tests/bridge/test_bridge_profile.py`` checks step costs against the in-process model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from adapters.common.coster import OpFailure, PerQueryCoster, ServerInfo, check_common
from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel import profile_model as pm
from llmsim.costmodel.base import PrefillChunk
from llmsim.costmodel.collectives import Collective, table_values
from llmsim.errors import ProfileRangeError
from llmsim.model.config import ModelConfig
from llmsim.v1 import cost_model_pb2 as pb
from llmsim.v1 import profile_pb2

VERSION = "0.1.0"

KINDS = (pb.OPERATOR_KIND_GEMM, pb.OPERATOR_KIND_ATTENTION, pb.OPERATOR_KIND_ELEMENTWISE,
         pb.OPERATOR_KIND_COLLECTIVE, pb.OPERATOR_KIND_MOE)


def decode_lens_with(n: int, kv_sum: int, kv_max: int, kv_min: int) -> tuple[int, ...]:
    """``n`` integers in ``[kv_min, kv_max]`` with that sum, max and min (ascending).

    Raises:
        OpFailure: no such tuple exists (inconsistent summary).
    """
    if n == 0:
        return ()
    if n == 1:
        if not kv_sum == kv_max == kv_min:
            raise OpFailure(pb.OP_ERROR_CODE_INVALID, "one decode needs sum == max == min")
        return (kv_sum,)
    rest = kv_sum - kv_max - kv_min
    k = n - 2
    if kv_min > kv_max or rest < k * kv_min or rest > k * kv_max:
        raise OpFailure(pb.OP_ERROR_CODE_INVALID,
                        f"no {n} decode KV lengths have sum {kv_sum}, max {kv_max}, "
                        f"min {kv_min}")
    if k == 0:
        return (kv_min, kv_max)
    base, extra = divmod(rest, k)
    # kv_min <= base and (extra > 0 implies base < kv_max): already ascending
    return (kv_min,) + (base,) * (k - extra) + (base + 1,) * extra + (kv_max,)


class ProfileCoster(PerQueryCoster):
    """Prices queries from one profile.

    Args:
        profile: the operator profile.
        model: the served model (defaults to the profile's architecture).
        source: where the profile came from (messages, fingerprint).
    """

    def __init__(self, profile: profile_pb2.Profile, *, model: ModelConfig | None = None,
                 source: str | Path | None = None) -> None:
        tps = sorted(t.tp_degree for t in profile.tp)
        layout = ParallelConfig(tensor_parallel_size=tps[0] if tps else 1)
        self.cost_model = pm.ProfileCostModel(profile, model=model, parallel=layout,
                                              source=source)
        self.profile = profile
        self._tables = {t.tp_degree: {op.op: op for op in t.ops} for t in profile.tp}
        self._weighted: dict[tuple[int, str, int], tuple[list[float], list[float], bool]] = {}
        digest = hashlib.sha256(profile.SerializeToString(deterministic=True)).hexdigest()
        prov = profile.provenance
        self._info = ServerInfo(
            server_name="llmsim-profile",
            server_version=VERSION,
            hardware=prov.hardware or prov.device_name,
            hardware_description=prov.device_name,
            operator_kinds=KINDS,
            provides_energy=False,
            attention_detail=pb.ATTENTION_DETAIL_SUMMARY,
            dtypes=(profile.dtype,) if profile.dtype else (),
            model_name=profile.model.name,
            tp_degrees=tuple(tps),
            fingerprint=f"profile-{VERSION}-{digest[:16]}",
            attributes={"source": str(source or prov.source.path)},
        )

    @classmethod
    def from_path(cls, path: str | Path, *, model: ModelConfig | None = None) -> ProfileCoster:
        """Load a ``.pb`` file or an LLMServingSim bundle directory."""
        from llmsim.profile import load_profile

        return cls(load_profile(path), model=model, source=path)

    def info(self) -> ServerInfo:
        return self._info

    def _tp(self, tp: int):
        try:
            return self.cost_model.tp_tables(ParallelConfig(tensor_parallel_size=tp))
        except ProfileRangeError as exc:
            raise OpFailure(pb.OP_ERROR_CODE_OUT_OF_RANGE, str(exc)) from exc

    def _table(self, tp: int, name: str, reps: int) -> tuple[list[float], list[float], bool]:
        key = (tp, name, reps)
        hit = self._weighted.get(key)
        if hit is None:
            table = self._tables.get(tp, {}).get(name)
            if table is None or table.kind not in (profile_pb2.OP_KIND_DENSE,
                                                   profile_pb2.OP_KIND_PER_SEQUENCE):
                raise OpFailure(pb.OP_ERROR_CODE_UNSUPPORTED,
                                f"operator {name!r} has no per-token / per-sequence table "
                                f"at TP {tp}")
            pairs = sorted(zip(table.axes[0].values, table_values(table), strict=True))
            xs = [float(x) for x, _ in pairs]
            ys = [reps * y for _, y in pairs]
            hit = self._weighted[key] = (xs, ys, table.kind == profile_pb2.OP_KIND_DENSE)
        return hit

    def cost_one(self, query: pb.OpQuery) -> tuple[float, float | None]:
        check_common(query, self._info)
        tp, reps, name = query.tp_degree or 1, query.repetitions or 1, query.op_name
        kind = query.WhichOneof("shape")
        if kind in ("gemm", "elementwise"):
            rows = query.gemm.m if kind == "gemm" else query.elementwise.rows
            xs, ys, proportional = self._table(tp, name, reps)
            return pm.rows_ns(xs, ys, rows, proportional), None
        tpc = self._tp(tp)
        if kind == "attention":
            a = query.attention
            prefills = tuple(PrefillChunk(num_new_tokens=p.new_tokens,
                                          num_cached_tokens=p.cached_tokens)
                             for p in a.prefills)
            decodes = tuple(a.decode_kv_lens) or decode_lens_with(
                a.num_decodes, a.decode_kv_sum, a.decode_kv_max, a.decode_kv_min)
            return tpc.attention(prefills, decodes)[0] * reps, None
        if kind == "collective":
            c = query.collective
            try:
                coll = Collective(c.collective)
            except ValueError:
                raise OpFailure(pb.OP_ERROR_CODE_UNSUPPORTED,
                                f"collective {c.collective!r}") from None
            # the logits all-gather runs outside the CUDA graph (its table rows: eager)
            priced = tpc.comm.price(coll, c.bytes, cuda_graph=coll is not Collective.ALL_GATHER)
            return priced.duration_ns * reps, None
        if kind == "moe":
            if tpc.moe is None:
                raise OpFailure(pb.OP_ERROR_CODE_UNSUPPORTED, "profile has no moe table")
            m = query.moe
            active = pm.expected_active_experts(m.num_experts, m.experts_per_token, m.tokens)
            return tpc.moe(m.tokens, active)[0] * reps, None
        raise OpFailure(pb.OP_ERROR_CODE_UNSUPPORTED, f"operator kind {kind!r}")
