"""Attribute the difference between two profile sources to op families (a diagnostic).

Writes two hybrid profiles of the RTX PRO 6000 Llama-3.1-8B TP1 case:

* ``lss+aic-attention.pb``: LLMServingSim's bundle with its ``attention`` table replaced by
  the AIConfigurator-derived one (and the bundle's skew tables dropped, since they belong
  to the replaced attention kernel measurements);
* ``lss+aic-other.pb``: the bundle with every other op (GEMMs, element-wise, lm_head,
  sampler) replaced by the AIConfigurator-derived one (attention and skew kept).

Validate each with ``llmsim validate examples/rtxpro6000-llama-3.1-8b.yaml --set
profile=<file>``; nothing else changes. These are for attribution only, not profiles to
use.

Usage::

    python benchmarks/profile_sources/hybrid_profiles.py \
        --aic /tmp/aic/pb/rtx_pro_6000_server-Llama-3.1-8B.pb --out /tmp/aic/hybrid
"""

from __future__ import annotations

import argparse
from pathlib import Path

LSS = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"


def hybrid(lss, aic, *, attention_from_aic: bool):
    """A copy of ``lss`` (TP1 only) with one op family taken from ``aic``."""
    from llmsim.v1 import profile_pb2 as pb

    out = pb.Profile()
    out.CopyFrom(lss)
    del out.tp[:]
    src = next(t for t in lss.tp if t.tp_degree == 1)
    other = {o.op: o for o in next(t for t in aic.tp if t.tp_degree == 1).ops}
    tpp = out.tp.add(tp_degree=1)
    for op in src.ops:
        from_aic = (op.op == "attention") == attention_from_aic
        tpp.ops.append(other[op.op] if from_aic else op)
    if not attention_from_aic:
        tpp.skew.CopyFrom(src.skew)
        tpp.skew_fit.CopyFrom(src.skew_fit)
    out.provenance.attributes["hybrid"] = (
        "attention from AIConfigurator, the rest from LLMServingSim" if attention_from_aic
        else "attention (and skew) from LLMServingSim, the rest from AIConfigurator")
    return out


def main() -> int:
    from llmsim.profile.cli import resolve_input
    from llmsim.profile.io import load_profile, write_profile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aic", required=True)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lss = load_profile(resolve_input(LSS))
    aic = load_profile(args.aic)
    for name, flag in (("lss+aic-attention.pb", True), ("lss+aic-other.pb", False)):
        print(write_profile(hybrid(lss, aic, attention_from_aic=flag), args.out / name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
