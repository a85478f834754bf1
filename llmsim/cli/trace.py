"""``llmsim trace``: characterize (``stats``), transform (``convert``) and generate
(``generate``, from a workload spec) request traces."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from llmsim.errors import ConfigError
from llmsim.safeio import loads_json
from llmsim.trace.record import Request

if TYPE_CHECKING:
    from llmsim.trace.frame import TraceFrame


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``trace stats`` and ``trace convert``."""
    parser = subparsers.add_parser("trace", help="characterize and transform request traces")
    sub = parser.add_subparsers(dest="trace_command", metavar="ACTION", required=True)

    stats = sub.add_parser("stats", help="request count, rate, burstiness, lengths, prefix reuse")
    _input_args(stats)
    stats.add_argument("--out", type=Path, help="directory for stats.json, rate.csv, trace_stats.png")
    stats.add_argument("--bin-s", type=float, default=1.0, help="arrival-rate bin width, s (default 1)")
    stats.add_argument("--block-size", type=int, default=16,
                       help="block size for token-id prefix reuse, tokens (default 16)")
    stats.set_defaults(func=run_stats)

    conv = sub.add_parser("convert", help="transform a trace and write it as LLMServingSim JSONL")
    _input_args(conv)
    conv.add_argument("--out", type=Path, required=True, help="output .jsonl file")
    conv.set_defaults(func=run_convert)

    gen = sub.add_parser("generate", help="generate a benchmark tool's workload (vLLM bench, "
                         "inference-perf, guidellm) from a spec YAML and write it as JSONL")
    gen.add_argument("spec", help="workload spec YAML (see examples/workloads/)")
    gen.add_argument("-o", "--out", type=Path, required=True, help="output .jsonl file")
    gen.set_defaults(func=run_generate)


def _input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", help="trace file, or a catalog trace name (e.g. azure-conv-2023)")
    p.add_argument("--format", help="trace format (default: detected from the file)")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows and count them")
    p.add_argument("--sort", action="store_true", help="sort by arrival instead of rejecting unsorted files")
    p.add_argument("--transform", action="append", default=[], metavar="JSON",
                   help='transform to apply, repeatable, e.g. \'{"window": {"end_s": 600}}\'')


def _load(args: argparse.Namespace) -> TraceFrame:
    from llmsim.data.catalog import load_catalog, named_trace_path
    from llmsim.trace.registry import (
        detect_format,
        load_trace_frame,
        resolve_trace_path,
    )
    from llmsim.trace.transforms import apply_transforms

    transforms = [loads_json(text, error=ConfigError, what="--transform JSON") for text in args.transform]
    fmt = args.format
    if not _exists(args.trace) and args.trace in load_catalog().traces:
        path, cat_fmt = named_trace_path(args.trace)
        fmt = fmt or cat_fmt
    else:
        path = resolve_trace_path(args.trace)
    fmt = fmt or detect_format(path)
    frame = load_trace_frame(fmt, path, skip_bad_rows=args.skip_bad_rows, sort=args.sort)
    return apply_transforms(frame, transforms)


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):  # e.g. a NUL byte or a name too long for the OS
        return False


def run_stats(args: argparse.Namespace) -> int:
    """Print the summary table; with ``--out`` also write JSON, CSV and PNG."""
    from llmsim.trace.stats import (
        check_stats_options,
        format_table,
        trace_stats,
        write_stats,
    )

    check_stats_options(bin_s=args.bin_s, block_size=args.block_size)
    frame = _load(args)
    stats = trace_stats(frame, bin_s=args.bin_s, block_size=args.block_size)
    print(format_table(stats))
    for key in ("skipped_rows", "dropped_failed", "orphaned_turns"):
        if key in frame.metadata:
            print(f"{key.replace('_', ' ')}: {frame.metadata[key]}")
    if args.out:
        with _output_errors(args.out):
            written = write_stats(frame, stats, args.out)
        for path in written:
            print(f"wrote {path}")
    return 0


@contextlib.contextmanager
def _output_errors(out: Path) -> Iterator[None]:
    """Turn an ``OSError`` (or a path with a NUL byte) while writing ``--out`` into a
    ``ConfigError`` (exit 2, no traceback)."""
    try:
        yield
    except (OSError, ValueError) as exc:  # ValueError: a path the OS cannot take (NUL byte)
        raise ConfigError(f"cannot write: {exc}", path=out, field="--out") from exc


def run_convert(args: argparse.Namespace) -> int:
    """Write the (transformed) trace as LLMServingSim JSONL, plus llmsim's extra fields.

    The whole file is built in memory and written atomically (temp file + rename).
    """
    from llmsim.data.atomic import atomic_write_text

    frame = _load(args)
    lines = [json.dumps(_jsonl_record(r)) + "\n" for r in frame.to_trace().requests]
    with _output_errors(args.out):
        atomic_write_text(args.out, "".join(lines))
    print(f"wrote {len(frame)} requests to {args.out}")
    return 0


def _jsonl_record(r: Request) -> dict[str, object]:
    """One request as an LLMServingSim JSONL object (llmsim's optional fields when set)."""
    obj: dict[str, object] = {"arrival_time_ns": r.arrival_ns, "input_toks": r.input_tokens,
                              "output_toks": r.output_tokens}
    if r.input_token_ids is not None:
        obj["input_tok_ids"] = list(r.input_token_ids)
    if r.output_token_ids is not None:
        obj["output_tok_ids"] = list(r.output_token_ids)
    if r.block_hashes is not None:
        obj["block_hashes"] = list(r.block_hashes)
        obj["hash_block_size"] = r.hash_block_size
    for key in ("session_id", "parent_id", "model"):
        if getattr(r, key) is not None:
            obj[key] = getattr(r, key)
    if r.think_time_ns:
        obj["think_time_ns"] = r.think_time_ns
    return obj


def run_generate(args: argparse.Namespace) -> int:
    """Generate the spec's trace and write it as LLMServingSim JSONL (atomically).

    Closed-loop lanes and multi-turn sessions become ``sub_requests`` lines (a chain released
    turn by turn); a chain whose requests arrive at different times has no JSONL form, which is
    a ConfigError pointing at ``trace: {format: workload, path: SPEC}`` instead.
    """
    from llmsim.data.atomic import atomic_write_text
    from llmsim.workloads import load_workload_spec

    frame = load_workload_spec(args.spec)
    lines = [json.dumps(obj) + "\n" for obj in _generated_lines(frame.to_trace().requests, args.spec)]
    with _output_errors(args.out):
        atomic_write_text(args.out, "".join(lines))
    print(f"wrote {len(frame)} requests ({len(lines)} lines) to {args.out}")
    return 0


def _generated_lines(requests: tuple[Request, ...], spec: str) -> list[dict[str, object]]:
    """JSONL objects: a plain line per request without parent or child, a ``sub_requests``
    line per chain (in order of the chain's first request)."""
    children: dict[str, list[Request]] = {}
    for r in requests:
        if r.parent_id is not None:
            children.setdefault(r.parent_id, []).append(r)
    out: list[dict[str, object]] = []
    for r in requests:
        if r.parent_id is not None:
            continue
        if r.request_id not in children:
            out.append(_jsonl_record(r))
            continue
        chain = [r]
        while chain[-1].request_id in children:
            nxt = children[chain[-1].request_id]
            if len(nxt) != 1 or nxt[0].arrival_ns != r.arrival_ns or nxt[0].think_time_ns:
                raise ConfigError("this workload releases requests both on time and after a previous "
                                  "one, which LLMServingSim JSONL cannot express; use the spec "
                                  "itself as the experiment trace (trace: {format: workload, path: "
                                  f"{spec}}})", path=spec, field="-o")
            chain.append(nxt[0])
        subs = []
        for c in chain:
            sub = _jsonl_record(c)
            for key in ("arrival_time_ns", "session_id", "parent_id"):
                sub.pop(key, None)
            subs.append(sub)
        out.append({"arrival_time_ns": r.arrival_ns, "sub_requests": subs})
    return out
