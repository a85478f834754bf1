"""ML.ENERGY v3 validation: simulated vs measured H100 power for Llama-3.1-8B-Instruct.

One command (from the repository root, with LLMSIM_DATA_DIR set)::

    python benchmarks/power/mlenergy_h100.py [--input-tokens 512] [--sensitivity 128,2048]

Setting reproduced (ML.ENERGY ``configs/lm-arena-chat``): ``num_requests`` x
``num_request_repeats`` requests all sent at t = 0, ``max_num_seqs`` from the sweep,
``max-num-batched-tokens 8192``, async scheduling, bf16, TP 1, output lengths drawn (seeded)
from the published histogram (uniform within a bin). The steady-state window is taken as
the span where the waiting queue is non-empty (the batch stays at its cap); power, J/token,
throughput and ITL p50 are measured over it. Input lengths are not published: the run
assumes ``--input-tokens`` for every request and reports the sensitivity.

The H100 power file has no sourced idle power; ``--idle-w`` supplies it as a stated
ASSUMPTION (default 70 W) and it is printed with the table. The profile is built from the
AIConfigurator H100 database (``llmsim profile import aiconfigurator``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from llmsim.cluster.parallel import ParallelConfig
from llmsim.experiment import EngineConfig, Experiment, HardwareConfig, TraceConfig
from llmsim.power import StepShape, find_power_spec, power_trace
from llmsim.power.model import token_times
from llmsim.replay import run
from llmsim.trace.record import Request, Trace

TP1 = ParallelConfig(tensor_parallel_size=1)

DATA = Path(os.environ.get("LLMSIM_DATA_DIR", "/work/shared/data"))
MLE = DATA / "ml-energy"
MODEL = DATA / "llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json"
H100_MEMORY_BYTES = 85899345920  # aiconfigurator systems/h100_sxm.yaml gpu.mem_capacity


def measured() -> tuple[list[dict[str, float]], dict[str, list[float]]]:
    d = json.loads((MLE / "models/meta-llama__Llama-3.1-8B-Instruct__lm-arena-chat.json")
                   .read_text())
    rows = [c for c in d["configurations"] if c["gpu_model"] == "H100" and c["num_gpus"] == 1]
    return rows, rows[0]["output_length_distribution"]


def repeats(max_num_seqs: int) -> int:
    import yaml
    sw = yaml.safe_load((MLE / "configs/lm-arena-chat/meta-llama/Llama-3.1-8B-Instruct/H100/"
                         "sweeps.yaml").read_text())["sweep"]
    for s in sw:
        if max_num_seqs in s["max_num_seqs"]:
            return int(s["num_request_repeats"][0])
    return 1


def build_profile(path: Path) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "llmsim", "profile", "import", "aiconfigurator",
                    str(DATA / "aiconfigurator/systems"), "--system", "h100_sxm",
                    "--model", str(MODEL), "--tp", "1", "-o", str(path)], check=True)


def output_lengths(hist: dict[str, list[float]], n: int, seed: int) -> np.ndarray:
    bins, counts = np.asarray(hist["bins"]), np.asarray(hist["counts"], dtype=float)
    rng = np.random.default_rng(seed)
    k = rng.choice(len(counts), size=n, p=counts / counts.sum())
    return np.maximum(1, np.floor(rng.uniform(bins[k], bins[k + 1]))).astype(int)


def simulate(mns: int, input_tokens: int, out_len: np.ndarray, profile: Path,
             idle_w: float) -> dict[str, float]:
    reqs = tuple(Request(request_id=str(i), arrival_ns=0, input_tokens=input_tokens,
                         output_tokens=int(o)) for i, o in enumerate(out_len))
    trace = Trace(requests=reqs, name="mlenergy")
    exp = Experiment(model=MODEL, profile=profile, name=f"mlenergy-{mns}",
                     hardware=HardwareConfig(name="H100", gpu_memory_bytes=H100_MEMORY_BYTES),
                     engine=EngineConfig(max_num_seqs=mns, max_num_batched_tokens=8192,
                                         async_scheduling=True),
                     trace=TraceConfig(requests=trace))
    res = run(exp, trace=trace)
    assert res.steps is not None
    from llmsim.model.config import load_model_config
    m = load_model_config(MODEL)
    spec = find_power_spec("H100")
    assert spec is not None
    spec = spec.with_assumption("idle_w", idle_w, "benchmarks/power/mlenergy_h100.py --idle-w")
    shape = StepShape(gpus_per_instance=1, flops_per_token=2.0 * m.num_params(),
                      weight_bytes=m.weight_bytes(TP1), kv_bytes_per_token=m.kv_bytes_per_token(TP1),
                      kv_capacity_tokens=float(res.summary["kv_cache"]["num_kv_tokens"]))
    tr = power_trace(res.steps, spec, shape, num_instances=1)
    st = res.steps
    busy = st[st["waiting"] > 0]
    t0, t1 = float(busy["start_s"].min()), float(busy["end_s"].max())
    _, _, tt = token_times(res.requests, res.itls_s)
    n_tok = int(((tt >= t0) & (tt <= t1)).sum())
    e = tr.energy_between(t0, t1)
    itl = []
    for ft, gaps in zip(res.requests["first_token_s"], res.itls_s, strict=True):
        t = ft + np.cumsum(gaps)
        itl.append(np.asarray(gaps)[(t >= t0) & (t <= t1)])
    itl_all = np.concatenate(itl) if itl else np.zeros(0)
    return {"power_w": e / (t1 - t0), "j_per_token": e / n_tok,
            "throughput": n_tok / (t1 - t0), "itl_p50_ms": float(np.median(itl_all)) * 1e3,
            "window_s": t1 - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input-tokens", type=int, default=512)
    ap.add_argument("--sensitivity", default="128,2048",
                    help="other input lengths, run at the --sensitivity-seqs batch caps")
    ap.add_argument("--sensitivity-seqs", default="8,64,512")
    ap.add_argument("--max-num-seqs", default="8,16,32,64,96,128,192,256,384,512")
    ap.add_argument("--idle-w", type=float, default=70.0, help="ASSUMED H100 idle power, W")
    ap.add_argument("--profile", type=Path, default=Path("/tmp/power/h100.pb"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    build_profile(a.profile)
    rows, hist = measured()
    by = {int(r["max_num_seqs"]): r for r in rows}
    num_req = 1024
    print(f"H100 Llama-3.1-8B, ML.ENERGY lm-arena-chat; input tokens ASSUMED {a.input_tokens}; "
          f"idle power ASSUMED {a.idle_w} W")
    hdr = (f"{'seqs':>5} {'in':>5} | {'P sim':>6} {'P meas':>6} {'err%':>6} | {'J/t sim':>7} "
           f"{'J/t meas':>8} {'err%':>6} | {'tok/s sim':>9} {'meas':>7} {'err%':>6} | "
           f"{'ITL sim':>7} {'meas':>6} {'err%':>6}")
    print(hdr)
    print("-" * len(hdr))
    sens = [int(x) for x in a.sensitivity.split(",") if x]
    sens_seqs = {int(x) for x in a.sensitivity_seqs.split(",") if x}
    for mns in (int(x) for x in a.max_num_seqs.split(",")):
        if mns not in by:
            continue
        meas = by[mns]
        out = output_lengths(hist, num_req * repeats(mns), a.seed)
        for isl in [a.input_tokens] + (sens if mns in sens_seqs else []):
            s = simulate(mns, isl, out, a.profile, a.idle_w)

            def err(x: float, y: float) -> str:
                return f"{100 * (x - y) / y:+6.1f}"
            print(f"{mns:5d} {isl:5d} | {s['power_w']:6.0f} {meas['avg_power_watts']:6.0f} "
                  f"{err(s['power_w'], meas['avg_power_watts'])} | {s['j_per_token']:7.3f} "
                  f"{meas['energy_per_token_joules']:8.3f} "
                  f"{err(s['j_per_token'], meas['energy_per_token_joules'])} | "
                  f"{s['throughput']:9.0f} {meas['output_throughput_tokens_per_sec']:7.0f} "
                  f"{err(s['throughput'], meas['output_throughput_tokens_per_sec'])} | "
                  f"{s['itl_p50_ms']:7.2f} {meas['median_itl_ms']:6.2f} "
                  f"{err(s['itl_p50_ms'], meas['median_itl_ms'])}", flush=True)


if __name__ == "__main__":
    main()
