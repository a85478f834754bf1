"""P/D split vs colocated instances at equal GPU count, on the Azure conv 2023 trace.

One command (``LLMSIM_DATA_DIR`` set; about a minute on the 2-core machine)::

    python3 benchmarks/pd/pd_vs_colocated.py [--out out/pd-vs-colocated]

Cluster: one node of ``--gpus`` RTX PRO 6000 (default 4), Llama-3.1-8B at TP1 with the
LLMServingSim RTX PRO 6000 profile, engine settings of examples/rtxpro6000-llama-3.1-8b.yaml
(max_num_seqs 128, 2,048-token budget, prefix caching, async scheduling). Layouts: every GPU
a colocated instance (round robin, as the toy proxy), and every split ``xPyD`` with
``x + y = gpus`` (NixlConnector over the node's link, llmsim/hardware/data/rtxpro6000.yaml;
round robin per pool); ``--p2p`` adds the P2pNcclConnector split with equal pools.

Workload: the first ``--window-s`` seconds (default 100 s) of the Azure LLM inference trace
2023, conversation (``azure-llm-2023/AzureLLMInferenceTrace_conv.csv``), prompts clipped to
4,096 tokens, then arrivals compressed by each ``--rates`` factor (default 2, 4, 6, 8, 12: the
window's own rate times that). Compressing the trace's arrival rate is this study's load
knob (an assumption: it keeps the trace's length mix and burstiness, not its absolute rate).

SLOs (this study's choices, in DistServe's sense: Zhong et al., OSDI 2024), ``--slos`` as
``name=TTFT_s:TPOT_s`` pairs: ``chatbot`` TTFT <= 0.2 s (the chatbot example of DistServe's
write-up: a fast first response) and TPOT <= 0.1 s (decode at reading speed), and
``fast-decode`` TTFT <= 1 s and TPOT <= 0.025 s (a client that reads the stream fast and
tolerates a slower start). SLO attainment = the share of requests meeting both of a pair;
goodput (DistServe) = the highest offered load of the sweep at which attainment is >= 90%,
requests/s (and per GPU). TTFT is the client's, through the proxy (P/D: arrival at the
proxy -> the decode instance's first token).

Writes ``results.csv``, ``results.md`` (the table) and ``pd_vs_colocated.png`` to ``--out``
and prints the table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmsim.experiment import experiment_from_dict
from llmsim.replay import ReplayResult, run

MODEL = "llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json"
PROFILE = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"
TRACE = "azure-llm-2023/AzureLLMInferenceTrace_conv.csv"
GPU_MEMORY_BYTES = 102_642_302_976  # as examples/rtxpro6000-llama-3.1-8b.yaml
ATTAINMENT_TARGET = 0.9  # DistServe's goodput: the highest rate with >= 90% attainment


def layouts(gpus: int, p2p: bool) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """``(label, connector, instance groups)`` of every layout on ``gpus`` GPUs."""
    place = {"node": "n0"}
    out = [("colocated", "", [{"name": "c", "count": gpus, "placement": place}])]
    for x in range(1, gpus):
        out.append((f"{x}P{gpus - x}D", "NixlConnector", [
            {"name": "p", "role": "prefill", "count": x, "placement": place},
            {"name": "d", "role": "decode", "count": gpus - x, "placement": place}]))
    if p2p and gpus % 2 == 0:
        h = gpus // 2
        out.append((f"{h}P{h}D-p2p", "P2pNcclConnector", [
            {"name": "p", "role": "prefill", "count": h, "placement": place},
            {"name": "d", "role": "decode", "count": h, "placement": place}]))
    return out


def experiment(label: str, connector: str, groups: list[dict[str, Any]], *, gpus: int,
               window_s: float, rate: float) -> Any:
    raw: dict[str, Any] = {
        "name": f"pd-vs-colocated-{label}-x{rate:g}", "model": MODEL, "profile": PROFILE,
        "cluster": {"nodes": [{"name": "n0", "link": "RTXPRO6000", "gpus": [
            {"hardware": "RTXPRO6000", "count": gpus, "gpu_memory_bytes": GPU_MEMORY_BYTES}]}]},
        "engine": {"max_num_seqs": 128, "max_num_batched_tokens": 2048, "block_size": 16,
                   "enable_prefix_caching": True, "async_scheduling": True},
        "instance_groups": groups, "router": "round_robin",
        "trace": {"format": "azure", "path": TRACE, "transforms": [
            {"window": {"start_s": 0, "end_s": window_s}},
            {"truncate": {"max_input_tokens": 4096}},
            {"scale_rate": {"factor": rate}}]},
    }
    if connector:
        raw["kv_transfer_config"] = {"kv_connector": connector}
    return experiment_from_dict(raw)


def row(label: str, rate: float, res: ReplayResult, *, slos: dict[str, tuple[float, float]],
        wall_s: float) -> dict[str, Any]:
    r = res.requests
    ttft, tpot = r["ttft_s"].to_numpy(), r["tpot_s"].to_numpy()
    offered = len(r) / float(r["arrival_s"].max() - r["arrival_s"].min())
    out: dict[str, Any] = {
        "layout": label, "rate_factor": rate, "offered_req_per_s": offered,
        "requests": len(r), "ttft_p50_s": float(np.percentile(ttft, 50)),
        "ttft_p90_s": float(np.percentile(ttft, 90)), "ttft_p99_s": float(np.percentile(ttft, 99)),
        "tpot_p50_s": float(np.nanpercentile(tpot, 50)),
        "tpot_p90_s": float(np.nanpercentile(tpot, 90)),
        "tpot_p99_s": float(np.nanpercentile(tpot, 99)),
        "wall_s": wall_s,
    }
    for name, (ttft_slo, tpot_slo) in slos.items():
        ok = (ttft <= ttft_slo) & (np.isnan(tpot) | (tpot <= tpot_slo))
        out[f"attain_{name}_pct"] = 100.0 * float(ok.mean())
    pd_sum = res.summary.get("pd")
    if pd_sum:
        out["ttft_decode_instance_p50_s"] = pd_sum["ttft_decode_instance_s"]["p50"]
        out["kv_transfer_p50_s"] = pd_sum["kv_transfer_s"]["p50"]
    return out


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A Markdown table of ``frame`` (floats to ``digits`` decimals)."""
    def cell(v: Any) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    sep = "|" + "|".join("---:" if frame[c].dtype.kind in "fiu" else "---"
                         for c in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in rec) + " |"
            for rec in frame.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def goodput(table: pd.DataFrame, gpus: int, slos: dict[str, tuple[float, float]]
            ) -> pd.DataFrame:
    """Per layout and SLO pair: the highest offered rate with attainment >= 90% (NaN:
    none), and per GPU."""
    rows = []
    for label, g in table.groupby("layout", sort=False, observed=True):
        rec: dict[str, Any] = {"layout": label}
        for name in slos:
            ok = g[g[f"attain_{name}_pct"] >= 100 * ATTAINMENT_TARGET]
            best = float(ok["offered_req_per_s"].max()) if len(ok) else float("nan")
            rec[f"goodput_{name}_req_per_s"] = best
            rec[f"goodput_{name}_per_gpu"] = best / gpus
        rows.append(rec)
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, path: Path, *, slos: dict[str, tuple[float, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(slos)
    fig, axes = plt.subplots(1, 2 + len(names), figsize=(5 * (2 + len(names)), 4))
    for label, g in table.groupby("layout", sort=False, observed=True):
        x = g["offered_req_per_s"]
        for k, name in enumerate(names):
            axes[k].plot(x, g[f"attain_{name}_pct"], marker="o", label=label)
        axes[-2].plot(x, g["ttft_p90_s"], marker="o", label=label)
        axes[-1].plot(x, g["tpot_p90_s"] * 1e3, marker="o", label=label)
    for k, name in enumerate(names):
        ttft_slo, tpot_slo = slos[name]
        axes[k].axhline(100 * ATTAINMENT_TARGET, color="grey", ls="--", lw=0.8)
        axes[k].set_ylabel(f"SLO attainment (%), {name}: TTFT<={ttft_slo:g} s, "
                           f"TPOT<={tpot_slo * 1e3:g} ms", fontsize=8)
        axes[-2].axhline(ttft_slo, color="grey", ls=":", lw=0.8)
        axes[-1].axhline(tpot_slo * 1e3, color="grey", ls=":", lw=0.8)
    axes[-2].set_ylabel("TTFT p90 (s, client)")
    axes[-2].set_yscale("log")
    axes[-1].set_ylabel("TPOT p90 (ms)")
    for ax in axes:
        ax.set_xlabel("offered load (requests/s)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("P/D split vs colocated, Llama-3.1-8B on RTX PRO 6000, Azure conv 2023")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--window-s", type=float, default=100.0)
    ap.add_argument("--rates", default="2,4,6,8,12", help="arrival-rate factors")
    ap.add_argument("--slos", default="chatbot=0.2:0.1,fast-decode=1.0:0.025",
                    help="name=TTFT_s:TPOT_s pairs, comma-separated")
    ap.add_argument("--p2p", action="store_true", help="add the P2pNcclConnector split")
    ap.add_argument("--out", default="out/pd-vs-colocated")
    args = ap.parse_args(argv)
    slos = {}
    for item in args.slos.split(","):
        name, _, pair = item.partition("=")
        a, _, b = pair.partition(":")
        slos[name.strip()] = (float(a), float(b))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t_all = time.perf_counter()
    for rate in [float(x) for x in args.rates.split(",")]:
        for label, connector, groups in layouts(args.gpus, args.p2p):
            exp = experiment(label, connector, groups, gpus=args.gpus,
                             window_s=args.window_s, rate=rate)
            t0 = time.perf_counter()
            res = run(exp)
            rows.append(row(label, rate, res, slos=slos, wall_s=time.perf_counter() - t0))
            print(f"  {label:>12} x{rate:g}: {rows[-1]['requests']} requests, "
                  f"{rows[-1]['wall_s']:.1f} s", flush=True)
    table = pd.DataFrame(rows).sort_values(["layout", "rate_factor"], kind="stable")
    order = [lbl for lbl, _c, _g in layouts(args.gpus, args.p2p)]
    table["layout"] = pd.Categorical(table["layout"], categories=order, ordered=True)
    table = table.sort_values(["layout", "rate_factor"]).reset_index(drop=True)
    table.to_csv(out / "results.csv", index=False)
    good = goodput(table, args.gpus, slos)
    cols = ["layout", "offered_req_per_s", "ttft_p50_s", "ttft_p90_s", "tpot_p50_s",
            "tpot_p90_s", *[f"attain_{n}_pct" for n in slos]]
    pairs = "; ".join(f"{n}: TTFT <= {a:g} s, TPOT <= {b:g} s" for n, (a, b) in slos.items())
    md = [f"SLOs ({pairs}); goodput: highest offered rate with >= "
          f"{100 * ATTAINMENT_TARGET:.0f}% attainment ({args.gpus} GPUs, Azure conv 2023 "
          f"window {args.window_s:g} s, rate factors {args.rates})", "",
          markdown(table[cols]), "", markdown(good, 2)]
    (out / "results.md").write_text("\n".join(md) + "\n")
    plot(table, out / "pd_vs_colocated.png", slos=slos)
    print("\n".join(md))
    print(f"\nwrote {out}/results.csv, results.md, pd_vs_colocated.png "
          f"({time.perf_counter() - t_all:.0f} s)")
    return table


if __name__ == "__main__":
    main()
