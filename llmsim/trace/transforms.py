"""Trace transformations: time window, rate scaling, sampling, truncation, model filter.

Each transform takes a :class:`TraceFrame` and returns a new one; :func:`apply_transforms`
runs a list of them from plain dicts (the experiment file's ``trace.transforms``)::

    [{"window": {"start_s": 0, "end_s": 600}}, {"scale_rate": 2.0},
     {"sample": {"n": 100, "seed": 0}}, {"truncate": {"max_requests": 50}},
     {"filter_model": "GPT-4"}]

Sessions: when rows carry ``parent_id``, sampling keeps or drops whole sessions, and any
transform that drops a parent clears the child's ``parent_id`` (the child is then released at
its own arrival time). The session-aware release itself (a turn starts at max(arrival, parent
finish + think time)) is executed by the serving loop from ``parent_id``/``think_time_ns``.
All randomness comes from ``numpy.random.default_rng(seed)``: same seed, same result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any, overload

import numpy as np
import pandas as pd

from llmsim.errors import ConfigError
from llmsim.safeio import INT64_MAX
from llmsim.trace.frame import DEFAULT_MAX_SPAN_S, NS_PER_S, TraceFrame
from llmsim.trace.record import Trace


class TransformName(StrEnum):
    """Transform names accepted by :func:`apply_transforms`."""

    WINDOW = "window"
    SCALE_RATE = "scale_rate"
    SAMPLE = "sample"
    TRUNCATE = "truncate"
    FILTER_MODEL = "filter_model"


def time_window(frame: TraceFrame, *, start_s: float | None = None, end_s: float | None = None,
                rebase: bool = True) -> TraceFrame:
    """Keep requests arriving in ``[start_s, end_s)`` seconds from the trace start.

    Args:
        frame: the trace.
        start_s: window start, s (default: trace start).
        end_s: window end, s, exclusive (default: no end).
        rebase: shift arrivals so the window start is time 0.

    Raises:
        ConfigError: a bound that is not a finite number in [0, 400 days], ``end_s <=
            start_s``, or a non-bool ``rebase``.
    """
    _seconds(start_s, "window.start_s")
    _seconds(end_s, "window.end_s")
    _flag(rebase, "window.rebase")
    lo = int(round((start_s or 0.0) * NS_PER_S))
    if end_s is not None and end_s * NS_PER_S <= lo:
        raise ConfigError(f"bad time window [{start_s}, {end_s}) s", field="window")
    arrival = frame.data["arrival_ns"].to_numpy()
    keep = arrival >= lo
    if end_s is not None:
        keep &= arrival < int(round(end_s * NS_PER_S))
    df = frame.data.loc[keep].copy()
    if rebase and lo:
        df["arrival_ns"] = df["arrival_ns"] - lo
    return _drop_dangling_parents(frame.with_data(df, window_s=f"[{start_s}, {end_s})"))


def scale_rate(frame: TraceFrame, factor: float) -> TraceFrame:
    """Replay ``factor`` x faster: arrivals and think times divided by ``factor``.

    ``factor = 2`` doubles the arrival rate (halves every inter-arrival gap).

    Raises:
        ConfigError: ``factor`` not a finite number > 0, or so small that the scaled trace
            would span more than 400 days (the loaders' absurd-timestamp limit).
    """
    if not _is_real(factor) or not (math.isfinite(factor) and factor > 0):
        raise ConfigError(f"rate scale factor must be a finite number > 0, got {factor!r}", field="scale_rate")
    df = frame.data.copy()
    limit_ns = DEFAULT_MAX_SPAN_S * NS_PER_S
    for col in ("arrival_ns", "think_time_ns"):
        if col in df.columns and len(df):
            with np.errstate(over="ignore"):
                scaled = df[col].to_numpy() / factor
            if not float(np.abs(scaled).max()) <= limit_ns:
                raise ConfigError(f"rate scale factor {factor!r} stretches {col} beyond "
                                  f"{DEFAULT_MAX_SPAN_S} s", field="scale_rate")
            df[col] = np.round(scaled).astype(np.int64)
    return frame.with_data(df, scale_rate=str(factor))


def sample(frame: TraceFrame, *, n: int | None = None, fraction: float | None = None,
           seed: int = 0) -> TraceFrame:
    """Keep a seeded random subset of requests (whole sessions when rows have parents).

    Args:
        frame: the trace.
        n: number of requests (or sessions) to keep.
        fraction: share of requests (or sessions) to keep, in (0, 1].
        seed: RNG seed.

    Raises:
        ConfigError: neither or both of ``n``/``fraction``; ``n`` or ``seed`` not an
            integer >= 0; ``fraction`` not a number in (0, 1].
    """
    if (n is None) == (fraction is None):
        raise ConfigError("sample needs exactly one of n or fraction", field="sample")
    if n is not None:
        _integer(n, "sample.n", minimum=0)
    if fraction is not None and (not _is_real(fraction) or not 0 < fraction <= 1):
        raise ConfigError(f"sample fraction must be a number in (0, 1], got {fraction!r}", field="sample.fraction")
    _integer(seed, "sample.seed", minimum=0)
    df = frame.data
    groups = _session_keys(df)
    unique = pd.unique(groups)
    total = len(unique)
    k = min(n if n is not None else int(round(fraction * total)), total)  # type: ignore[operator]
    rng = np.random.default_rng(seed)
    chosen = unique[rng.choice(total, size=k, replace=False)] if k < total else unique
    keep = np.isin(groups, chosen)
    return frame.with_data(df.loc[keep], sample=f"{k}/{total} seed={seed}")


def truncate(frame: TraceFrame, *, max_requests: int | None = None, max_input_tokens: int | None = None,
             max_output_tokens: int | None = None) -> TraceFrame:
    """Keep the first ``max_requests`` requests and clip lengths.

    Clipping a prompt also clips its token ids and its block hashes (to
    ``ceil(max_input_tokens / hash_block_size)`` entries), so prefix identity stays consistent.

    Raises:
        ConfigError: a limit < 1.
    """
    for name, v in (("max_requests", max_requests), ("max_input_tokens", max_input_tokens),
                    ("max_output_tokens", max_output_tokens)):
        if v is not None:
            _integer(v, f"truncate.{name}", minimum=1)
    df = frame.data if max_requests is None else frame.data.iloc[:max_requests]
    df = df.copy()
    if max_input_tokens is not None:
        df["input_tokens"] = np.minimum(df["input_tokens"].to_numpy(), max_input_tokens)
        if "input_token_ids" in df.columns:
            df["input_token_ids"] = [None if v is None else v[:max_input_tokens] for v in df["input_token_ids"]]
        if "block_hashes" in df.columns and frame.hash_block_size:
            nb = -(-max_input_tokens // frame.hash_block_size)
            df["block_hashes"] = [None if v is None else v[:nb] for v in df["block_hashes"]]
    if max_output_tokens is not None:
        df["output_tokens"] = np.minimum(df["output_tokens"].to_numpy(), max_output_tokens)
        if "output_token_ids" in df.columns:
            df["output_token_ids"] = [None if v is None else v[:max_output_tokens] for v in df["output_token_ids"]]
    notes = {"truncate": f"requests={max_requests} input={max_input_tokens} output={max_output_tokens}"}
    return _drop_dangling_parents(frame.with_data(df, **notes))


def filter_model(frame: TraceFrame, models: str | Sequence[str]) -> TraceFrame:
    """Keep requests whose ``model`` is one of ``models``.

    Raises:
        ConfigError: ``models`` is not a string or a non-empty list of strings, or the trace
            has no model column.
    """
    wanted = [models] if isinstance(models, str) else models
    if not (isinstance(wanted, (list, tuple)) and wanted and all(isinstance(m, str) for m in wanted)):
        raise ConfigError(f"filter_model takes a model name or a non-empty list of names, got {models!r}"[:300],
                          field="filter_model")
    wanted = list(wanted)
    if "model" not in frame.data.columns:
        raise ConfigError("trace has no model column to filter on", field="filter_model")
    keep = frame.data["model"].isin(wanted).to_numpy()
    return _drop_dangling_parents(frame.with_data(frame.data.loc[keep], filter_model=",".join(wanted)))


def _seconds(value: object, field: str) -> None:
    if value is not None and (not isinstance(value, (int, float, np.integer, np.floating))
                              or isinstance(value, bool) or not 0 <= value <= DEFAULT_MAX_SPAN_S):
        raise ConfigError(f"must be a number of seconds in [0, {DEFAULT_MAX_SPAN_S}], got {value!r}"[:300],
                          field=field)


def _is_real(value: object) -> bool:
    """A real number (Python or NumPy), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _flag(value: object, field: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"must be true or false, got {value!r}"[:300], field=field)


def _integer(value: object, field: str, *, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not minimum <= value <= INT64_MAX:
        raise ConfigError(f"must be an integer in [{minimum}, {INT64_MAX}], got {value!r}"[:300], field=field)


def _session_keys(df: pd.DataFrame) -> np.ndarray:
    """Sampling unit per row: its session when it has one, else the request itself."""
    rid = df["request_id"].astype(str).to_numpy(dtype=object)
    if "session_id" not in df.columns:
        return rid
    sid = df["session_id"].to_numpy(dtype=object)
    has = pd.notna(sid)
    out = rid.copy()
    out[has] = np.array(["s:" + str(s) for s in sid[has]], dtype=object)
    return out


def _drop_dangling_parents(frame: TraceFrame) -> TraceFrame:
    """Clear ``parent_id`` where the parent is no longer in the trace."""
    df = frame.data
    if "parent_id" not in df.columns:
        return frame
    parents = df["parent_id"]
    dangling = parents.notna() & ~parents.astype(str).isin(set(df["request_id"].astype(str)))
    if not dangling.any():
        return frame
    df = df.copy()
    df.loc[dangling, "parent_id"] = None
    return frame.with_data(df, orphaned_turns=str(int(dangling.sum())))


def _call(fn: Callable[..., TraceFrame], frame: TraceFrame, params: Any, name: str) -> TraceFrame:
    try:
        if isinstance(params, dict):
            return fn(frame, **params)
        if isinstance(params, (list, tuple)) and name != TransformName.FILTER_MODEL:
            return fn(frame, *params)
        return fn(frame, params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for transform '{name}': {exc}", field=name) from None


_TRANSFORMS: dict[TransformName, Callable[..., TraceFrame]] = {
    TransformName.WINDOW: time_window,
    TransformName.SCALE_RATE: scale_rate,
    TransformName.SAMPLE: sample,
    TransformName.TRUNCATE: truncate,
    TransformName.FILTER_MODEL: filter_model,
}


@overload
def apply_transforms(trace: Trace, transforms: Sequence[dict[str, Any]]) -> Trace: ...
@overload
def apply_transforms(trace: TraceFrame, transforms: Sequence[dict[str, Any]]) -> TraceFrame: ...
def apply_transforms(trace: Trace | TraceFrame, transforms: Sequence[dict[str, Any]]) -> Trace | TraceFrame:
    """Apply transforms in order; returns the same type it is given.

    Args:
        trace: a :class:`Trace` or :class:`TraceFrame`.
        transforms: one-key dicts ``{name: params}``; params is a dict of keyword arguments,
            or a scalar (``{"scale_rate": 2.0}``, ``{"filter_model": "GPT-4"}``).

    Raises:
        ConfigError: ``transforms`` not a list, unknown transform, bad parameters (wrong
            type, unknown name, out of range), or a transform that leaves no request.
    """
    if not isinstance(transforms, (list, tuple)):
        raise ConfigError(f"transforms must be a list of one-key mappings, got {transforms!r}"[:300],
                          field="transforms")
    frame = TraceFrame.from_trace(trace) if isinstance(trace, Trace) else trace
    for i, spec in enumerate(transforms):
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(f"transform #{i} must be a one-key mapping, got {spec!r}", field="transforms")
        (name, params), = spec.items()
        try:
            kind = TransformName(name)
        except ValueError:
            known = ", ".join(t.value for t in TransformName)
            raise ConfigError(f"unknown transform {name!r} (known: {known})", field="transforms") from None
        frame = _call(_TRANSFORMS[kind], frame, params, kind)
        if len(frame) == 0:
            raise ConfigError(f"transform #{i} ({kind.value}: {params!r}) leaves no requests"[:300],
                              field="transforms")
    return frame.to_trace() if isinstance(trace, Trace) else frame
