"""Per-op, per-batch-size comparison of two profile sources for one model on one GPU.

Default: LLMServingSim's RTX PRO 6000 Llama-3.1-8B bundle (``a``) against the profile
imported from AIConfigurator's ``rtx_pro_6000_server`` database (``b``). Both are priced by
the same, unchanged :class:`~llmsim.costmodel.profile_model.ProfileCostModel`, so the
difference per op is the difference between the sources (interpolation rules included).

Usage (repository root, LLMSIM_DATA_DIR set)::

    python benchmarks/profile_sources/compare_sources.py \
        --b /tmp/aic/pb/rtx_pro_6000_server-Llama-3.1-8B.pb [--plot out.png] [--markdown]

Batches (TP1): decode-only steps of ``B`` sequences at KV 1024 for ``B`` in 1..256, and
prefill-only steps of one fresh chunk of ``B`` tokens for ``B`` in 16..2048, plus one mixed
step (a 512-token chunk and 64 decodes at KV 1024). Each cell is the op's total over all
layers of one step (us); ``ratio = b / a``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

LSS = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"
DECODE_KV = 1024
DECODES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CHUNKS = (16, 64, 256, 512, 1024, 2048)


def batches():
    """``(label, StepBatch)`` in print order."""
    from llmsim.costmodel.base import PrefillChunk, StepBatch

    for b in DECODES:
        yield f"decode B={b}", StepBatch(decode_context_lens=(DECODE_KV,) * b)
    for c in CHUNKS:
        yield f"prefill {c}", StepBatch(prefills=(PrefillChunk(num_new_tokens=c),))
    yield "mixed 512+64", StepBatch(prefills=(PrefillChunk(num_new_tokens=512),),
                                    decode_context_lens=(DECODE_KV,) * 64)


def breakdowns(path: str, model) -> dict[str, dict[str, int]]:
    """label -> op -> ns for every batch of :func:`batches`."""
    from llmsim.costmodel.profile_model import ProfileCostModel
    from llmsim.profile.io import load_profile

    cm = ProfileCostModel(load_profile(path), model=model, source=path)
    out = {}
    for label, batch in batches():
        cost = cm.step_cost(batch)
        out[label] = dict(cost.breakdown_ns, total=cost.duration_ns)
    return out


def table(a: dict, b: dict, markdown: bool) -> str:
    ops = sorted({op for bd in a.values() for op in bd} | {op for bd in b.values() for op in bd},
                 key=lambda o: (o == "total", o))
    lines = []
    sep = " | " if markdown else "  "
    head = ["batch", "op", "a us", "b us", "b/a"]
    lines.append(("| " + sep.join(head) + " |") if markdown else sep.join(
        f"{h:>14s}" for h in head))
    if markdown:
        lines.append("|" + "---|" * len(head))
    for label, bd_a in a.items():
        for op in ops:
            x, y = bd_a.get(op, 0), b[label].get(op, 0)
            ratio = f"{y / x:.2f}" if x else "-"
            cells = [label, op, f"{x / 1e3:.1f}", f"{y / 1e3:.1f}", ratio]
            lines.append(("| " + sep.join(cells) + " |") if markdown else sep.join(
                f"{c:>14s}" for c in cells))
    return "\n".join(lines)


def plot(a: dict, b: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = sorted({op for bd in a.values() for op in bd if op != "total"})
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, labels, xs, title in (
            (axes[0], [f"decode B={n}" for n in DECODES], DECODES, f"decode, KV {DECODE_KV}"),
            (axes[1], [f"prefill {c}" for c in CHUNKS], CHUNKS, "prefill, one fresh chunk")):
        colors = plt.get_cmap("tab20").colors
        for i, op in enumerate(ops + ["total"]):
            rs = [b[lab].get(op, 0) / a[lab][op] if a[lab].get(op) else float("nan")
                  for lab in labels]
            ax.plot(xs, rs, marker="os^D"[i % 4], label=op, color="k" if op == "total" else
                    colors[i % len(colors)], lw=2.5 if op == "total" else 1.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.axhline(1.0, color="k", lw=0.6)
        ax.set_xlabel("batch size (sequences)" if "decode" in title else "chunk tokens")
        ax.set_title(title)
    axes[0].set_ylabel("AIConfigurator-derived / LLMServingSim (per step)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    from llmsim.model.config import load_model_config
    from llmsim.profile.cli import resolve_input

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", default=LSS, help="baseline profile (bundle dir or .pb)")
    ap.add_argument("--b", required=True, help="compared profile (.pb)")
    ap.add_argument("--model", default="llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    model = load_model_config(resolve_input(args.model), name="meta-llama/Llama-3.1-8B")
    a = breakdowns(str(resolve_input(args.a)), model)
    b = breakdowns(str(resolve_input(args.b)), model)
    print(table(a, b, args.markdown))
    if args.plot:
        plot(a, b, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
