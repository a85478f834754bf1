"""ML.ENERGY v3 validation: simulated vs measured H100 power (Llama-3.1-8B / 70B-Instruct, Qwen3-8B).

One command (from the repository root, with LLMSIM_DATA_DIR set)::

    python benchmarks/power/mlenergy_h100.py [--model llama-3.1-8b|llama-3.1-70b|qwen3-8b|all]
        [--input-tokens 512] [--sensitivity 128,2048] [--markdown FILE]

Setting reproduced (ML.ENERGY ``configs/lm-arena-chat``, ml-energy/benchmark @ c1d6557):
``num_requests`` (1024) x ``num_request_repeats`` requests all sent at t = 0,
``max_num_seqs`` from the sweep, ``max-num-batched-tokens 8192``, async scheduling, bf16,
TP = the published GPU count (``num_gpus.txt``: 1 for 8B, 4 for 70B), output lengths drawn
(seeded) from the published histogram (uniform within a bin).

Measured figures and their definitions (ml-energy/benchmark
``mlenergy/benchmark/llm/benchmark.py`` ``RequestTracker``; ml-energy/data
``mlenergy_data/records/runs.py``):

* steady-state window: from the moment ``max_num_seqs`` requests have received their first
  token to the moment ``N - max_num_seqs - 1`` requests have finished (``N`` requests);
* average power = GPU energy in the window / its duration; J/token = that energy / output
  tokens generated in the window; output throughput = those tokens / the duration;
* ITL p50: client inter-token latencies of every successful request, whole run;
* average batch size: ``vllm:num_requests_running`` averaged over the window.

The simulated side takes the same window and definitions on the replay: the GPU energy is
the replay's own (per-step ``energy_j`` of the online accumulator, docs/power.md) plus idle
power over the window's uncovered time. Input lengths are not published: the run assumes
``--input-tokens`` for every request and reports the sensitivity. H100 idle power is the power
file's (``llmsim/power/data/h100.yaml``: 121.7 W with a CUDA context, arXiv:2605.23918);
``--idle-w`` replaces it with a stated ASSUMPTION, set as the experiment's
``power.gpu.H100.idle_w``. The profile is built from the AIConfigurator H100
database (``llmsim profile import aiconfigurator``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmsim.experiment import (
    EngineConfig,
    Experiment,
    GpuPowerConfig,
    HardwareConfig,
    PowerConfig,
    TraceConfig,
)
from llmsim.power.spec import find_power_spec
from llmsim.replay import run
from llmsim.trace.record import Request, Trace

DATA = Path(os.environ.get("LLMSIM_DATA_DIR", "/work/shared/data"))
MLE = DATA / "ml-energy"
H100_MEMORY_BYTES = 85899345920  # aiconfigurator systems/h100_sxm.yaml gpu.mem_capacity
NUM_REQUESTS = 1024  # configs/lm-arena-chat/benchmark.yaml workload_defaults.num_requests
REPO = Path(__file__).resolve().parents[2]
MODELS = {  # name -> (llmsim model config, ML.ENERGY model id)
    "llama-3.1-8b": (DATA / "llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json",
                     "meta-llama/Llama-3.1-8B-Instruct"),
    "llama-3.1-70b": (DATA / "llmservingsim/configs/model/meta-llama/Llama-3.1-70B.json",
                      "meta-llama/Llama-3.1-70B-Instruct"),
    # not in the data directory: the architecture facts of the HF config.json, with their
    # source, in examples/models/ (README there)
    "qwen3-8b": (REPO / "examples/models/Qwen/Qwen3-8B.json", "Qwen/Qwen3-8B"),
}


def model_path(name: str) -> Path:
    return MODELS[name][0]


def num_gpus(name: str) -> int:
    """The published GPU count of the model's H100 runs (``num_gpus.txt``)."""
    return int((MLE / "configs/lm-arena-chat" / MODELS[name][1] / "H100/num_gpus.txt")
               .read_text().split()[0])


def measured(name: str) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """The model's H100 configurations of the published file and its output histogram."""
    d = json.loads((MLE / "models" / (MODELS[name][1].replace("/", "__")
                                      + "__lm-arena-chat.json")).read_text())
    rows = [c for c in d["configurations"]
            if c["gpu_model"] == "H100" and c["num_gpus"] == num_gpus(name)]
    return rows, rows[0]["output_length_distribution"]


def repeats(name: str, max_num_seqs: int) -> int:
    """``num_request_repeats`` of the sweep entry holding ``max_num_seqs``."""
    import yaml
    sw = yaml.safe_load((MLE / "configs/lm-arena-chat" / MODELS[name][1] / "H100/sweeps.yaml")
                        .read_text())["sweep"]
    for s in sw:
        if max_num_seqs in s["max_num_seqs"]:
            return int(s["num_request_repeats"][0])
    return 1


def build_profile(path: Path, name: str, tp: int) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "llmsim", "profile", "import", "aiconfigurator",
                    str(DATA / "aiconfigurator/systems"), "--system", "h100_sxm",
                    "--model", str(model_path(name)), "--tp", str(tp), "-o", str(path)],
                   check=True)


def file_idle_w() -> float:
    """The H100 power file's sourced idle power, W."""
    spec = find_power_spec("H100")
    if spec is None or spec.idle_w.value is None:
        raise SystemExit("llmsim/power/data/h100.yaml has no idle_w: pass --idle-w (an assumption)")
    return float(spec.idle_w.value)


def output_lengths(hist: dict[str, list[float]], n: int, seed: int) -> np.ndarray:
    bins, counts = np.asarray(hist["bins"]), np.asarray(hist["counts"], dtype=float)
    rng = np.random.default_rng(seed)
    k = rng.choice(len(counts), size=n, p=counts / counts.sum())
    return np.maximum(1, np.floor(rng.uniform(bins[k], bins[k + 1]))).astype(int)


def window_energy_j(steps: pd.DataFrame, t0: float, t1: float, idle_w: float) -> float:
    """GPU energy within ``[t0, t1]``: each step's ``energy_j`` (all GPUs of the one
    instance) prorated by its overlap, plus ``idle_w`` (all GPUs) over the time no step
    covers."""
    a = np.clip(steps["start_s"].to_numpy(), t0, t1)
    b = np.clip(steps["end_s"].to_numpy(), t0, t1)
    dur = (steps["end_s"] - steps["start_s"]).to_numpy()
    frac = np.divide(b - a, dur, out=np.zeros_like(dur), where=dur > 0)
    covered = float((b - a).sum())
    return float((steps["energy_j"].to_numpy() * frac).sum()) + idle_w * max(
        0.0, (t1 - t0) - covered)


def simulate(name: str, mns: int, input_tokens: int, out_len: np.ndarray, profile: Path,
             idle_w: float | None) -> dict[str, float]:
    reqs = tuple(Request(request_id=str(i), arrival_ns=0, input_tokens=input_tokens,
                         output_tokens=int(o)) for i, o in enumerate(out_len))
    trace = Trace(requests=reqs, name="mlenergy")
    power = PowerConfig(gpu={"H100": GpuPowerConfig(idle_w=idle_w)}) if idle_w is not None \
        else PowerConfig()
    idle_w = idle_w if idle_w is not None else file_idle_w()
    tp = num_gpus(name)
    exp = Experiment(model=model_path(name), profile=profile, name=f"mlenergy-{mns}",
                     hardware=HardwareConfig(name="H100", gpu_memory_bytes=H100_MEMORY_BYTES),
                     engine=EngineConfig(max_num_seqs=mns, max_num_batched_tokens=8192,
                                         async_scheduling=True, tensor_parallel_size=tp),
                     trace=TraceConfig(requests=trace), power=power)
    keep = {"keep_steps": True} if "keep_steps" in inspect.signature(run).parameters else {}
    res = run(exp, trace=trace, **keep)
    st, rq = res.steps, res.requests
    assert st is not None and res.summary["energy"]["available"]
    n = len(rq)
    # ML.ENERGY RequestTracker: start when max_num_seqs requests have a first token, end
    # when n - max_num_seqs - 1 have finished
    t0 = float(np.sort(rq["first_token_s"].to_numpy())[min(mns, n) - 1])
    t1 = float(np.sort(rq["finish_s"].to_numpy())[max(n - mns - 1, 1) - 1])
    tt = np.concatenate([ft + np.concatenate([[0.0], np.cumsum(g)])
                         for ft, g in zip(rq["first_token_s"], res.itls_s, strict=True)])
    n_tok = int(((tt > t0) & (tt <= t1)).sum())
    e = window_energy_j(st, t0, t1, idle_w * tp)
    # vllm:num_requests_running averaged over the window (time-weighted step gauges)
    a = np.clip(st["start_s"].to_numpy(), t0, t1)
    b = np.clip(st["end_s"].to_numpy(), t0, t1)
    batch = float(((b - a) * st["num_seqs"].to_numpy()).sum() / max((b - a).sum(), 1e-12))
    itl = np.concatenate(res.itls_s)
    return {"power_w": e / (t1 - t0), "j_per_token": e / n_tok,
            "throughput": n_tok / (t1 - t0), "itl_p50_ms": float(np.median(itl)) * 1e3,
            "window_s": t1 - t0, "batch": batch}


COLUMNS = [("power_w", "avg_power_watts", "P W", "{:.0f}"),
           ("j_per_token", "energy_per_token_joules", "J/tok", "{:.3f}"),
           ("throughput", "output_throughput_tokens_per_sec", "tok/s", "{:.0f}"),
           ("itl_p50_ms", "median_itl_ms", "ITL p50 ms", "{:.2f}"),
           ("batch", "avg_batch_size", "batch", "{:.1f}")]


def err(x: float, y: float) -> float:
    return 100.0 * (x - y) / y


def table(a: argparse.Namespace, name: str) -> list[str]:
    """Run one model's sweep, print its table; returns the markdown lines."""
    tp = num_gpus(name)
    profile = a.profile or Path(f"/tmp/power/h100-{name}-tp{tp}.pb")
    build_profile(profile, name, tp)
    rows, hist = measured(name)
    by = {int(r["max_num_seqs"]): r for r in rows}
    idle = (f"H100 idle power ASSUMED {a.idle_w} W per GPU" if a.idle_w is not None else
            f"H100 idle power {file_idle_w()} W per GPU (power file: arXiv:2605.23918)")
    head = (f"{tp} x H100 (TP {tp}), {MODELS[name][1]}, ML.ENERGY lm-arena-chat (vLLM "
            f"0.11.1); input tokens ASSUMED {a.input_tokens}; {idle}")
    md = [f"{head}.", "",
          "| max_num_seqs | input tok | " + " | ".join(
              f"{c[2]} sim | {c[2]} meas | err %" for c in COLUMNS) + " |",
          "|---:|---:|" + "---:|---:|---:|" * len(COLUMNS)]
    print(head)
    hdr = f"{'seqs':>5} {'in':>5} |" + "|".join(f" {c[2]:>10} sim/meas/err% " for c in COLUMNS)
    print(hdr)
    print("-" * len(hdr))
    sens = [int(x) for x in a.sensitivity.split(",") if x]
    sens_seqs = {int(x) for x in a.sensitivity_seqs.split(",") if x}
    for mns in (int(x) for x in a.max_num_seqs.split(",")):
        if mns not in by:
            continue
        meas = by[mns]
        out = output_lengths(hist, NUM_REQUESTS * repeats(name, mns), a.seed)
        for isl in [a.input_tokens] + (sens if mns in sens_seqs else []):
            s = simulate(name, mns, isl, out, profile, a.idle_w)
            cells = []
            mcells = []
            for key, mkey, _, fmt in COLUMNS:
                x, y = s[key], float(meas[mkey])
                cells.append(f" {fmt.format(x):>7} {fmt.format(y):>7} {err(x, y):+6.1f} ")
                mcells.append(f"{fmt.format(x)} | {fmt.format(y)} | {err(x, y):+.1f}")
            print(f"{mns:5d} {isl:5d} |" + "|".join(cells), flush=True)
            md.append(f"| {mns} | {isl} | " + " | ".join(mcells) + " |")
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=[*sorted(MODELS), "all"], default="llama-3.1-8b",
                    help="all: every model, one table each")
    ap.add_argument("--input-tokens", type=int, default=512,
                    help="ASSUMED prompt length of every request (not published)")
    ap.add_argument("--sensitivity", default="128,2048",
                    help="other input lengths, run at the --sensitivity-seqs batch caps")
    ap.add_argument("--sensitivity-seqs", default="8,64,512")
    ap.add_argument("--max-num-seqs", default="8,16,32,64,96,128,192,256,384,512,768,1024,"
                    "1536,2048", help="batch caps to run (those the published sweep has)")
    ap.add_argument("--idle-w", type=float, default=None,
                    help="ASSUMED H100 idle power, W (default: the power file's sourced value)")
    ap.add_argument("--profile", type=Path, default=None,
                    help="default /tmp/power/h100-<model>-tp<gpus>.pb (built if absent)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table(s) here")
    a = ap.parse_args()
    if a.model == "all" and a.profile is not None:
        ap.error("--profile names one model's profile; not with --model all")
    md: list[str] = []
    for name in sorted(MODELS) if a.model == "all" else [a.model]:
        md += [*table(a, name), ""]
        print()
    if a.markdown is not None:
        a.markdown.write_text("\n".join(md))


if __name__ == "__main__":
    main()
