"""Import AIConfigurator-derived llmsim profiles for every (system, model) the issue names,
and replay a short synthetic workload on each.

Usage (from the repository root, LLMSIM_DATA_DIR pointing at the shared data)::

    python benchmarks/profile_sources/build_aic_profiles.py --out /tmp/aic/pb [--no-replay]

Prints one line per (system, model): the TP degrees imported, the ones the database
refused (with the reason), and, with replays, the replay's mean TTFT / TPOT. Nothing in the
output is tuned: every number comes from the importer and the unchanged simulator.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

# AIConfigurator revision whose files are byte-identical (git blob hashes) to the shared data.
AIC_COMMIT = "095f58a51c4ca8e61b66ec108d86f223f8d559ce"
SYSTEMS = ("rtx_pro_6000_server", "h100_sxm", "h200_sxm", "a100_sxm")
CONFIGS = "llmservingsim/configs/model"
MODELS = (  # (name, config path under the data dir, TP degrees tried)
    ("Llama-3.1-8B", f"{CONFIGS}/meta-llama/Llama-3.1-8B.json", (1, 2, 4, 8)),
    ("Llama-3.1-70B", f"{CONFIGS}/meta-llama/Llama-3.1-70B.json", (4, 8)),
    ("Qwen3-32B", f"{CONFIGS}/Qwen/Qwen3-32B.json", (1, 2, 4, 8)),
    ("Qwen3-30B-A3B", f"{CONFIGS}/Qwen/Qwen3-30B-A3B-Instruct-2507.json", (1, 2, 4, 8)),
    ("Mixtral-8x7B", f"{CONFIGS}/mistralai/Mixtral-8x7B-v0.1.json", (1, 2, 4, 8)),
)
# The A100 database (vLLM 0.14.0) has MoE rows only for power-law routing.
MOE_DISTRIBUTION = {"a100_sxm": "power_law_1.01"}


def _import(system: str, cfg: Path, tps: tuple[int, ...]):
    """Import at every TP the database answers; returns (profile or None, refusals)."""
    from llmsim.data.paths import dataset_path
    from llmsim.errors import ProfileRangeError
    from llmsim.profile.importers.aiconfigurator import import_aiconfigurator

    root = dataset_path("aiconfigurator")
    ok, refused = [], []
    for tp in tps:
        try:
            import_aiconfigurator(root, system=system, model_config=cfg, tp_degrees=(tp,),
                                  moe_distribution=MOE_DISTRIBUTION.get(system, "balanced"))
            ok.append(tp)
        except ProfileRangeError as exc:
            refused.append(f"TP{tp}: {exc}")
    if not ok:
        return None, refused
    prof = import_aiconfigurator(root, system=system, model_config=cfg, tp_degrees=tuple(ok),
                                 moe_distribution=MOE_DISTRIBUTION.get(system, "balanced"),
                                 source_commit=AIC_COMMIT)
    return prof, refused


def _replay(pb_path: Path, cfg: Path, tp: int, mem_bytes: int) -> tuple[float, float]:
    import llmsim

    trace = llmsim.generate_trace(n=60, rate_per_s=4.0, lengths={"input": 512, "output": 64})
    exp = llmsim.Experiment(
        model_path=str(cfg), profile_path=str(pb_path),
        hardware=llmsim.HardwareConfig(name="aic", gpu_memory_bytes=mem_bytes),
        engine=llmsim.EngineConfig(tensor_parallel_size=tp), trace=trace)
    res = llmsim.run(exp)
    return float(res.requests["ttft_s"].mean()), float(res.requests["tpot_s"].mean())


def main() -> int:
    from llmsim.data.paths import dataset_path
    from llmsim.profile.io import write_profile
    from llmsim.yamlfile import read_yaml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--no-replay", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    for system in SYSTEMS:
        doc, _ = read_yaml(dataset_path(f"aiconfigurator/systems/{system}.yaml"), what="system")
        mem = int(doc["gpu"]["mem_capacity"])
        for name, rel, tps in MODELS:
            cfg = dataset_path(rel)
            prof, refused = _import(system, cfg, tps)
            line = f"{system:20s} {name:14s} "
            if prof is None:
                print(line + "no TP imported; " + "; ".join(refused))
                continue
            out = write_profile(prof, args.out / f"{system}-{name}.pb")
            got = [t.tp_degree for t in prof.tp]
            line += f"TP {','.join(map(str, got))} ({out.stat().st_size // 1024} KiB)"
            if not args.no_replay:
                ttft, tpot = _replay(out, cfg, got[-1], mem)
                line += f"  replay TP{got[-1]}: TTFT {ttft * 1e3:.1f} ms, TPOT {tpot * 1e3:.2f} ms"
            if prof.provenance.attributes.get("not_imported"):
                line += "  [not imported: moe_gate]"
            print(line)
            for r in refused:
                print(f"{'':36s}refused {r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
