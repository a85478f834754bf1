"""Loader for the Azure LLM inference traces (2023 one-hour and 2024 one-week files).

Format (CSV, header ``TIMESTAMP,ContextTokens,GeneratedTokens``): ``TIMESTAMP`` is an
absolute wall-clock time (2023: ``2023-11-16 18:17:03.9799600``, naive; 2024 files may carry a
zone offset such as ``+00:00``, read as UTC), ``ContextTokens`` the prompt length and
``GeneratedTokens`` the output length. Arrivals are rebased so the first request arrives at 0.
Request ids are the 0-based data row index in the file (``"0"`` is the row on line 2).

The 2024 week-long files (16.8M / 27.3M rows, ~0.6-1 GB) are streamed: the CSV is read in
bounded blocks (:data:`llmsim.trace.tabular.STREAM_BLOCK_BYTES` of text per batch), each batch
validated and appended to a Parquet cache in the user cache dir
(``<user cache>/../trace-cache/azure/``), keyed by the file's absolute path, size and mtime.
Later loads read the Parquet file (optionally only a time window: ``start_s``/``end_s`` are
pushed down to the Parquet reader), so the CSV is parsed once. Files above
:data:`CACHE_MIN_BYTES` use the cache by default.

Source: Patel et al., "Splitwise", ISCA'24; https://github.com/Azure/AzurePublicDataset.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llmsim.data.atomic import atomic_write_text
from llmsim.data.paths import user_cache_dir
from llmsim.errors import ConfigError, TraceFormatError
from llmsim.trace.frame import (
    DEFAULT_MAX_SPAN_S,
    NS_PER_S,
    TraceFrame,
    apply_row_checks,
    finish_frame,
    standard_checks,
)
from llmsim.trace.inputs import check_trace_file, scan_utf8
from llmsim.trace.tabular import STREAM_BLOCK_BYTES, iter_csv_batches, read_csv_table

logger = logging.getLogger(__name__)

FIELDS = {"arrival_ns": "TIMESTAMP", "input_tokens": "ContextTokens", "output_tokens": "GeneratedTokens"}
#: Files at least this large are converted to a Parquet cache on first load.
CACHE_MIN_BYTES = 64 << 20
_CACHE_VERSION = "1"
_ZONE_RE = re.compile(rb"(Z|[+-]\d\d:?\d\d)\s*,")
_LINE_BYTES = 1 << 16  # header / first row sniffed for the time zone, bytes
#: Bounds on ``block_bytes`` (CSV text per streamed batch).
MIN_BLOCK_BYTES = 4 << 10
MAX_BLOCK_BYTES = 1 << 30


def trace_cache_dir() -> Path:
    """Directory for derived trace caches (Parquet), next to the user data cache."""
    return user_cache_dir().parent / "trace-cache"


def load_azure_frame(
    path: str | Path,
    *,
    skip_bad_rows: bool = False,
    sort: bool = False,
    cache: bool | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    block_bytes: int = STREAM_BLOCK_BYTES,
) -> TraceFrame:
    """Load an Azure LLM inference trace (2023 or 2024) in columnar form.

    Args:
        path: the CSV file.
        skip_bad_rows: skip malformed rows (counted in ``metadata["skipped_rows"]``).
        sort: stable-sort by arrival instead of rejecting an unsorted file.
        cache: stream through a Parquet cache (default: for files >= :data:`CACHE_MIN_BYTES`).
        start_s: keep requests arriving at or after this many seconds from the trace start,
            and rebase them so the first kept second is 0.
        end_s: keep requests arriving before this many seconds from the trace start.
        block_bytes: CSV text per streamed batch (bounds memory while building the cache).

    Raises:
        ConfigError: ``start_s``/``end_s`` not finite, negative or an empty window, or
            ``block_bytes`` outside [:data:`MIN_BLOCK_BYTES`, :data:`MAX_BLOCK_BYTES`].
        TraceFormatError: not a regular UTF-8 file, empty file, bad row (file, line, field),
            unsorted arrivals, or an absurd timestamp (more than 400 days after the first).
    """
    path = check_trace_file(path)
    _check_window(start_s, end_s)
    if type(block_bytes) is not int or not MIN_BLOCK_BYTES <= block_bytes <= MAX_BLOCK_BYTES:
        raise ConfigError(f"must be an integer in [{MIN_BLOCK_BYTES}, {MAX_BLOCK_BYTES}] bytes, got "
                          f"{block_bytes!r}", field="block_bytes")
    if cache is None:
        cache = path.stat().st_size >= CACHE_MIN_BYTES
    if cache:
        parquet = azure_parquet_cache(path, skip_bad_rows=skip_bad_rows, sort=sort, block_bytes=block_bytes)
        try:
            frame = _frame_from_parquet(parquet, path, start_s=start_s, end_s=end_s)
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:  # damaged cache: rebuild once
            logger.warning("%s: unreadable trace cache (%s); rebuilding it", parquet, exc)
            parquet.unlink(missing_ok=True)
            parquet = azure_parquet_cache(path, skip_bad_rows=skip_bad_rows, sort=sort, block_bytes=block_bytes)
            frame = _frame_from_parquet(parquet, path, start_s=start_s, end_s=end_s)
    else:
        frame = _frame_from_csv(path, skip_bad_rows=skip_bad_rows, sort=sort)
        if start_s is not None or end_s is not None:
            from llmsim.trace.transforms import time_window

            frame = time_window(frame, start_s=start_s, end_s=end_s)
    if len(frame) == 0:
        raise TraceFormatError("no requests in the selected time window", path=path)
    return frame


def _check_window(start_s: float | None, end_s: float | None) -> None:
    for name, v in (("start_s", start_s), ("end_s", end_s)):
        if v is not None and (type(v) not in (int, float) or not 0 <= v <= DEFAULT_MAX_SPAN_S):
            raise ConfigError(f"must be a number of seconds in [0, {DEFAULT_MAX_SPAN_S}], got {v!r}",
                              field=name)
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ConfigError(f"empty time window [{start_s}, {end_s}) s", field="end_s")


def _timestamp_type(path: Path) -> pa.DataType:
    """``timestamp[ns, UTC]`` when the first data row's time has a zone offset, else naive."""
    with path.open("rb") as f:
        f.readline(_LINE_BYTES)
        first = f.readline(_LINE_BYTES)
    return pa.timestamp("ns", tz="UTC") if _ZONE_RE.search(first) else pa.timestamp("ns")


def _types(path: Path) -> dict[str, pa.DataType]:
    return {"TIMESTAMP": _timestamp_type(path), "ContextTokens": pa.int64(), "GeneratedTokens": pa.int64()}


def _require_columns(table: pa.Table | pa.RecordBatch, path: Path) -> None:
    missing = [c for c in FIELDS.values() if c not in table.schema.names]
    if missing:
        raise TraceFormatError(
            f"missing column(s) {missing}; expected header TIMESTAMP,ContextTokens,GeneratedTokens",
            path=path,
            line=1,
            field=missing[0],
        )


def _epoch_ns(column: pa.Array | pa.ChunkedArray, as_strings: bool) -> tuple[np.ndarray, np.ndarray]:
    """Absolute times as int64 ns since the epoch plus a validity mask (unparsable = False)."""
    if as_strings:
        parsed = pd.to_datetime(
            pd.Series(column.to_pandas(), dtype=object), format="ISO8601", utc=True, errors="coerce"
        )
        index = pd.DatetimeIndex(parsed)
        valid = np.logical_not(index.isna())
        # pandas may pick a coarser unit for far-off dates; times outside the int64-ns range
        # (years before 1678 or after 2261) count as unparsable.
        us = index.as_unit("us").asi8.astype(np.int64)
        valid &= np.abs(us) < np.iinfo(np.int64).max // 1000
        return np.where(valid, us, 0) * 1000, valid
    ints = column.cast(pa.int64())
    valid = pc.is_valid(ints).to_numpy(zero_copy_only=False)
    return pc.fill_null(ints, 0).to_numpy(zero_copy_only=False).astype(np.int64), valid


def _normalize(
    table: pa.Table | pa.RecordBatch,
    lines: np.ndarray,
    *,
    as_strings: bool,
    t0_ns: int | None,
    whole_file: bool = False,
) -> tuple[pd.DataFrame, int | None]:
    """Normalized columns of one batch, and the trace start.

    The trace start is the earliest valid time of the whole file, or (streaming, where the
    rest is unknown) the first valid time of the first batch.
    """
    ts_ns, valid = _epoch_ns(table.column("TIMESTAMP"), as_strings)
    if t0_ns is None and valid.any():
        t0_ns = int(ts_ns[valid].min()) if whole_file else int(ts_ns[np.argmax(valid)])
    rel = ts_ns - (t0_ns or 0)
    if valid.all():
        arrival: np.ndarray = rel
    else:
        arrival = rel.astype(np.float64)
        arrival[~valid] = np.nan
    df = pd.DataFrame(
        {
            "request_id": lines - 2,
            "arrival_ns": arrival,
            "input_tokens": _numbers(table.column("ContextTokens")),
            "output_tokens": _numbers(table.column("GeneratedTokens")),
        }
    )
    return df, t0_ns


def _numbers(column: pa.Array | pa.ChunkedArray) -> np.ndarray | pd.Series:
    if pa.types.is_integer(column.type) and column.null_count == 0:
        values: np.ndarray = column.to_numpy(zero_copy_only=False)
        return values
    return pd.to_numeric(pd.Series(column.to_pandas()), errors="coerce")


def _frame_from_csv(path: Path, *, skip_bad_rows: bool, sort: bool) -> TraceFrame:
    table, lines, skipped, as_strings = read_csv_table(path, _types(path), skip_bad_rows=skip_bad_rows)
    if table.num_rows == 0:
        raise TraceFormatError("trace has no requests", path=path)
    _require_columns(table, path)
    df, _ = _normalize(table, lines, as_strings=as_strings, t0_ns=None, whole_file=True)
    meta = {"format": "azure"}
    frame = finish_frame(df, path=path, lines=lines, fields=FIELDS, skip_bad_rows=skip_bad_rows, sort=sort,
                         metadata=meta)
    if skipped:
        total = skipped + int(frame.metadata.get("skipped_rows", "0"))
        frame = frame.with_data(frame.data, skipped_rows=str(total))
    return frame


def _cache_file(path: Path, *, skip_bad_rows: bool, sort: bool) -> Path:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{skip_bad_rows}|{sort}|{_CACHE_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return trace_cache_dir() / "azure" / f"{path.stem}-{digest}.parquet"


def azure_parquet_cache(
    path: str | Path,
    *,
    skip_bad_rows: bool = False,
    sort: bool = False,
    block_bytes: int = STREAM_BLOCK_BYTES,
    memory_pool: pa.MemoryPool | None = None,
) -> Path:
    """Return the Parquet cache of an Azure CSV, building it by streaming if needed.

    Memory while building is bounded by one CSV block (``block_bytes`` of text) and its
    converted columns, whatever the file size. The file is checked to be UTF-8 first (one
    chunked pass, memory bounded the same way). The cache is written to a temporary file and
    renamed into place, so an interrupted build never leaves a cache that looks complete.

    Returns:
        Path of the Parquet file (columns ``request_id``, ``arrival_ns`` (from the first
        request), ``input_tokens``, ``output_tokens``; metadata ``skipped_rows``, ``sorted``).

    Raises:
        TraceFormatError: as :func:`load_azure_frame`.
        ConfigError: the cache directory cannot be written.
    """
    path = check_trace_file(path)
    target = _cache_file(path, skip_bad_rows=skip_bad_rows, sort=sort)
    if target.exists():
        logger.debug("azure cache hit: %s", target)
        return target
    bad = scan_utf8(path)  # before Arrow: its bad-row callback cannot decode such rows
    if bad is not None:
        raise TraceFormatError(f"not UTF-8 text (bad byte at offset {bad[1]})", path=path, line=bad[0])
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.touch()
    except OSError as exc:
        raise ConfigError(f"cannot write the trace cache: {exc.strerror or exc} (pass cache=False to read the "
                          "CSV directly)", path=target.parent, field="cache") from None
    try:
        for as_strings in (False, True):
            try:
                meta = _stream_to_parquet(path, tmp, as_strings=as_strings, skip_bad_rows=skip_bad_rows,
                                          sort=sort, block_bytes=block_bytes, memory_pool=memory_pool)
                break
            except (pa.ArrowException, UnicodeDecodeError) as exc:
                if as_strings or not isinstance(exc, pa.ArrowInvalid) or "conversion error" not in str(exc):
                    raise TraceFormatError(f"not a valid CSV file: {exc}", path=path) from None
                logger.info("%s: a value failed to convert; re-reading as text to locate it", path)
        _write_meta(target, meta)  # sidecar first: the Parquet file appears last
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("azure cache built: %s (%s)", target, meta)
    return target


_CACHE_SCHEMA = pa.schema(
    [("request_id", pa.int64()), ("arrival_ns", pa.int64()), ("input_tokens", pa.int32()),
     ("output_tokens", pa.int32())]
)


def _stream_to_parquet(
    path: Path,
    out: Path,
    *,
    as_strings: bool,
    skip_bad_rows: bool,
    sort: bool,
    block_bytes: int,
    memory_pool: pa.MemoryPool | None,
) -> dict[str, str]:
    t0_ns: int | None = None
    last_ns = -1
    last_line = 0
    rows = skipped = 0
    is_sorted = True
    writer: pq.ParquetWriter | None = None
    try:
        for batch, lines, bad_parse in iter_csv_batches(
            path, _types(path), skip_bad_rows=skip_bad_rows, as_strings=as_strings,
            block_bytes=block_bytes, memory_pool=memory_pool,
        ):
            skipped += bad_parse
            if batch.num_rows == 0:
                continue
            _require_columns(batch, path)
            df, t0_ns = _normalize(batch, lines, as_strings=as_strings, t0_ns=t0_ns)
            checks = standard_checks(df, fields=FIELDS, allow_negative=sort)
            df, kept_lines, bad = apply_row_checks(df, checks, path=path, lines=lines, skip_bad_rows=skip_bad_rows)
            skipped += bad
            if len(df) == 0:
                continue
            arrival = df["arrival_ns"].to_numpy().astype(np.int64)
            if arrival[0] < last_ns or (arrival[1:] < arrival[:-1]).any():
                if not sort:
                    row = 0 if arrival[0] < last_ns else int(np.flatnonzero(arrival[1:] < arrival[:-1])[0]) + 1
                    raise TraceFormatError(
                        "arrivals are not sorted; pass sort=True (--sort) to reorder",
                        path=path, line=int(kept_lines[row]), field=FIELDS["arrival_ns"],
                    )
                is_sorted = False
            last_ns = max(last_ns, int(arrival.max()))
            last_line = int(kept_lines[-1])
            table = pa.Table.from_pandas(df.astype({"arrival_ns": np.int64}), preserve_index=False)
            table = table.cast(_CACHE_SCHEMA)
            if writer is None:
                writer = pq.ParquetWriter(out, _CACHE_SCHEMA, compression="zstd")
            writer.write_table(table)
            rows += len(df)
    finally:
        if writer is not None:
            writer.close()
    if rows == 0:
        raise TraceFormatError("trace has no requests" if not skipped else
                               "trace has no valid requests (all rows skipped)", path=path)
    meta = {"rows": str(rows), "skipped_rows": str(skipped), "sorted": str(is_sorted).lower(),
            "t0_ns": str(t0_ns), "last_line": str(last_line)}
    return meta


def _write_meta(parquet: Path, meta: dict[str, str]) -> None:
    """Store loader notes next to the Parquet file (sidecar JSON, written atomically)."""
    import json

    side = parquet.with_suffix(parquet.suffix + ".json")
    atomic_write_text(side, json.dumps(meta, sort_keys=True), fsync=False)


def _read_meta(parquet: Path) -> dict[str, str]:
    import json

    side = parquet.with_suffix(parquet.suffix + ".json")
    meta = json.loads(side.read_text(encoding="utf-8"))  # missing or damaged: ValueError / OSError
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError(f"{side}: not a cache sidecar")
    return meta


def _frame_from_parquet(parquet: Path, path: Path, *, start_s: float | None, end_s: float | None) -> TraceFrame:
    filters = []
    if start_s is not None:
        filters.append(("arrival_ns", ">=", int(round(start_s * NS_PER_S))))
    if end_s is not None:
        filters.append(("arrival_ns", "<", int(round(end_s * NS_PER_S))))
    table = pq.read_table(parquet, filters=filters or None)
    df = table.to_pandas()
    df = df.astype({"input_tokens": np.int64, "output_tokens": np.int64})
    meta_file = _read_meta(parquet)
    meta = {"format": "azure", "cache": str(parquet)}
    if int(meta_file.get("skipped_rows", "0")):
        meta["skipped_rows"] = meta_file["skipped_rows"]
    if meta_file.get("sorted") == "false":
        df = df.iloc[np.argsort(df["arrival_ns"].to_numpy(), kind="stable")].reset_index(drop=True)
        if len(df) and start_s is None:
            df["arrival_ns"] -= int(df["arrival_ns"].iloc[0])
        meta["sorted"] = "true"
    if start_s is not None and len(df):
        df["arrival_ns"] -= int(round(start_s * NS_PER_S))
    return TraceFrame(data=df, source=str(path), name=path.stem, metadata=meta)
