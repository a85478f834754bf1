"""``llmsim profile run`` and ``llmsim profile compare``.

Examples::

    llmsim profile run tests/fixtures/profiler/tiny-llama.json --preset ci --out tiny.pb
    llmsim profile run Llama-3.1-8B.json --device cuda --dtype bf16 --preset full \\
        --out llama8b-h200.pb            # Ctrl-C / crash, then the same command + --resume
    llmsim profile run tiny.json --timing hot --out tiny-hot.pb   # or cold / in-context
    llmsim profile compare a.pb b.pb --plot ratios.png

On the CPU the default timing mode is ``in-context`` (:mod:`profiler.in_context`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from llmsim.errors import ConfigError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run`` and ``compare`` to the ``llmsim profile`` sub-commands."""
    run = subparsers.add_parser("run", help="measure an operator profile on this machine")
    run.add_argument("model", help="HF-style config.json of the model")
    run.add_argument("--out", required=True, help="profile to write (.pb)")
    run.add_argument("--preset", default="ci", help="grid preset: ci (seconds) or full")
    run.add_argument("--tp", default="1", help="comma-separated TP degrees (default 1)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--dtype", default=None,
                     help="fp32, bf16 or fp16 (default bf16 on CUDA, fp32 on CPU)")
    run.add_argument("--warmup", type=int, default=None, help="untimed calls per point")
    run.add_argument("--repetitions", type=int, default=None, help="timed calls per point")
    run.add_argument("--threads", type=int, default=1,
                     help="CPU threads (torch.set_num_threads; default 1)")
    run.add_argument("--cuda-graphs", action="store_true", help="time CUDA-graph replays")
    run.add_argument("--no-energy", action="store_true", help="skip energy measurement")
    run.add_argument("--energy-window-s", type=float, default=1.0,
                     help="minimum energy window per point (s, default 1)")
    run.add_argument("--timing", choices=("hot", "cold", "in-context"), default=None,
                     help="hot: op in a tight loop; cold: cache flushed before every call; "
                          "in-context: ops timed inside whole forward passes over distinct "
                          "layer copies (default: in-context on CPU, hot on CUDA)")
    run.add_argument("--flush-cache-mib", type=float, default=None,
                     help="cold timing: MiB overwritten before every timed call (default "
                          "2 x the last-level cache on CPU, 200 MiB = 4 x an H100/H200 L2 on CUDA)")
    run.add_argument("--context-budget-mib", type=float, default=None,
                     help="in-context timing: memory cap of the distinct layer weight copies "
                          "(default 2048; copies = the model's layers, capped by this)")
    run.add_argument("--hardware", default="", help="short hardware label, e.g. H200")
    run.add_argument("--max-tokens", type=int, default=None, help="cap the token axes")
    run.add_argument("--max-seqs", type=int, default=None, help="cap sequence/decode axes")
    run.add_argument("--max-context", type=int, default=None, help="cap KV-length axes")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted sweep from its journal")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    cmp_ = subparsers.add_parser("compare", help="per-op latency ratios of two profiles")
    cmp_.add_argument("a", help="baseline profile (.pb or bundle dir)")
    cmp_.add_argument("b", help="profile compared to the baseline")
    cmp_.add_argument("--stat", default="median", help="median, mean, p90, min or max")
    cmp_.add_argument("--plot", default=None, help="write a PNG plot here")
    cmp_.set_defaults(func=cmd_compare)


def _parse_tp(text: str) -> tuple[int, ...]:
    try:
        tps = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise ConfigError(f"--tp must be comma-separated integers, got {text!r}",
                          field="tp") from None
    if not tps or min(tps) < 1:
        raise ConfigError("--tp needs positive integers", field="tp")
    return tps


def build_config(args: argparse.Namespace):  # -> SweepConfig (torch imported lazily)
    """The :class:`~profiler.sweep.SweepConfig` for parsed ``run`` arguments."""
    import torch

    from llmsim.model.config import load_model_config
    from profiler.grid import get_preset
    from profiler.sweep import SweepConfig

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    is_cuda = device.startswith("cuda")
    preset = get_preset(args.preset)
    grid = preset.capped(max_tokens=args.max_tokens, max_sequences=args.max_seqs,
                         max_context=args.max_context)
    quick = preset.name == "ci"
    if args.threads < 1:
        raise ConfigError("--threads must be >= 1", field="threads")
    from profiler.in_context import DEFAULT_BUDGET_BYTES
    from profiler.timing import TimingMode, llc_bytes

    timing = TimingMode(args.timing) if args.timing else (
        TimingMode.COLD if args.flush_cache_mib else
        TimingMode.HOT if is_cuda else TimingMode.IN_CONTEXT)
    flush = 0
    if timing == TimingMode.COLD:
        if args.flush_cache_mib is not None:
            flush = int(args.flush_cache_mib * 2 ** 20)
        else:
            flush = 200 * 2 ** 20 if is_cuda else 2 * (llc_bytes() or 32 * 2 ** 20)
    elif args.flush_cache_mib:
        raise ConfigError(f"--flush-cache-mib applies to --timing cold only (got {timing})",
                          field="flush_cache_mib")
    budget = (DEFAULT_BUDGET_BYTES if args.context_budget_mib is None
              else int(args.context_budget_mib * 2 ** 20))
    return SweepConfig(
        model=load_model_config(args.model), model_path=str(args.model), grid=grid,
        tp_degrees=_parse_tp(args.tp), device=device,
        dtype=args.dtype or ("bf16" if is_cuda else "fp32"),
        warmup=args.warmup if args.warmup is not None else (2 if quick else 5),
        repetitions=args.repetitions if args.repetitions is not None else (5 if quick else 20),
        num_threads=args.threads, cuda_graphs=args.cuda_graphs, energy=not args.no_energy,
        energy_window_s=args.energy_window_s, hardware=args.hardware, flush_cache_bytes=flush,
        timing=timing, context_budget_bytes=budget)


def _require_torch() -> None:
    """Raise a clear error when the ``profiler`` extra (PyTorch) is not installed.

    Raises:
        ConfigError: PyTorch cannot be imported.
    """
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise ConfigError("the operator profiler needs PyTorch, which a core install does not "
                          "have: pip install -e '.[profiler]'", field="profile run")


def cmd_run(args: argparse.Namespace) -> int:
    """Measure a profile; prints a one-line summary."""
    _require_torch()
    from profiler.sweep import run_sweep

    cfg = build_config(args)
    prof = run_sweep(cfg, Path(args.out), resume=args.resume, progress=not args.no_progress)
    points = sum(len(o.median_ns) for t in prof.tp for o in t.ops)
    print(f"wrote {args.out}: {prof.provenance.device_name} ({cfg.device}, {cfg.dtype}, "
          f"{cfg.num_threads} thread(s), {cfg.timing_mode()} timing), {points} points, energy "
          f"{prof.provenance.attributes['energy_source']}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Print per-op ratios ``b / a`` and optionally plot them."""
    from profiler.compare import compare_profiles, format_table, plot_ratios
    from profiler.store import read_profile

    a, b = read_profile(args.a), read_profile(args.b)
    ratios = compare_profiles(a, b, stat=args.stat)
    if not ratios:
        raise ConfigError("the profiles have no operator point in common", field="b")
    label_a = a.provenance.hardware or Path(args.a).name
    label_b = b.provenance.hardware or Path(args.b).name
    print(format_table(ratios, label_a=label_a, label_b=label_b))
    if args.plot:
        plot_ratios(ratios, Path(args.plot), title=f"{label_b} / {label_a} ({args.stat})")
        print(f"plot: {args.plot}")
    return 0
