"""Read a Chrome / Perfetto JSON trace back and check it against the rules its importers need.

:func:`check_trace_events` is what the tests use when no trace processor binary is at hand,
and what a user can run on any trace file. Rules (Trace Event Format, plus what Perfetto's
JSON importer does with it):

* the root is ``{"traceEvents": [...]}`` (or a bare list of events); a ``displayTimeUnit``
  other than ``"ms"`` is refused (Perfetto has read ``"ns"`` as the unit of ``ts``);
* every event is an object with a string ``ph`` among ``X B E i I C M``;
* ``pid`` / ``tid`` are integers in ``[0, 2**32)`` (Perfetto coerces them to uint32);
* ``ts`` (microseconds) is a finite number >= 0, required except on ``M``; ``X`` has a
  finite ``dur`` >= 0; ``args``, when present, is an object;
* ``i`` / ``I`` have scope ``s`` in ``t p g`` when given; ``C`` has non-empty numeric
  ``args``; ``M`` is one of ``process_name thread_name process_sort_index
  thread_sort_index`` with a string ``name`` / integer ``sort_index``;
* every process with events has a ``process_name``, every track with slices or instants a
  ``thread_name``; a ``tid`` belongs to one ``pid`` (Perfetto names threads by ``tid``);
* per track (``pid, tid``) timestamps never decrease in file order, ``B``/``E`` pair up,
  and slices nest: two slices on a track are disjoint or one contains the other (times
  compared in integer ns, as Perfetto rounds ``ts * 1000``).
"""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TraceCheck", "check_trace_events", "load_trace_events"]

_PHASES = frozenset("XBEiICM")
_META = {"process_name": "name", "thread_name": "name", "process_sort_index": "sort_index",
         "thread_sort_index": "sort_index"}
_MAX_PROBLEMS = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceCheck:
    """What :func:`check_trace_events` found.

    Attributes:
        problems: rule violations, readable (empty when the trace is valid; at most 50,
            then a count of the rest).
        events: the parsed events, file order.
        process_names: ``pid -> name`` from ``process_name`` metadata.
        thread_names: ``(pid, tid) -> name`` from ``thread_name`` metadata.
    """

    problems: tuple[str, ...]
    events: tuple[dict[str, Any], ...]
    process_names: dict[int, str]
    thread_names: dict[tuple[int, int], str]

    def count(self, cat: str, ph: str | None = None) -> int:
        """Events of category ``cat`` (and phase ``ph`` when given)."""
        return sum(1 for e in self.events
                   if e.get("cat") == cat and (ph is None or e.get("ph") == ph))

    def arg_sum(self, cat: str, key: str) -> float:
        """Sum of ``args[key]`` over the events of category ``cat``."""
        total: float = sum(e["args"][key] for e in self.events
                           if e.get("cat") == cat and key in e.get("args", {}))
        return total

    def counts_by_cat(self) -> dict[str, int]:
        """``cat -> number of events`` (metadata events excluded)."""
        return dict(Counter(e.get("cat", "") for e in self.events if e.get("ph") != "M"))


def load_trace_events(source: str | Path | bytes) -> Any:
    """Parse a trace file (or its bytes), gunzipping it when it starts with the gzip magic.

    Raises:
        OSError: the file cannot be read.
        ValueError: not gzip-valid or not JSON (``json.JSONDecodeError`` is a ValueError).
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return json.loads(data.decode("utf-8"))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _ns(us: float) -> int:
    """Microseconds (>= 0) -> ns as Perfetto's importer rounds them (``llround(ts * 1000)``,
    halves away from zero)."""
    return math.floor(us * 1000 + 0.5)


def _check_event(i: int, e: Any, bad: list[str]) -> bool:
    """Field-level rules for event ``i``; False when it cannot be used further."""
    where = f"event {i}"
    if not isinstance(e, dict):
        bad.append(f"{where}: not an object")
        return False
    ph = e.get("ph")
    if not isinstance(ph, str) or ph not in _PHASES:
        bad.append(f"{where}: ph {ph!r} is not one of {''.join(sorted(_PHASES))}")
        return False
    name = e.get("name")
    if not isinstance(name, str) or not name:
        bad.append(f"event {i} ({ph}): name must be a non-empty string, got {name!r}")
        return False
    where = f"event {i} ({ph} {name!r})"
    ok = True
    for key in ("pid", "tid"):
        v = e.get(key)
        if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32):
            bad.append(f"{where}: {key} must be an integer in [0, 2**32), got {v!r}")
            ok = False
    if (ph != "M" or "ts" in e) and (not _is_num(e.get("ts")) or e["ts"] < 0):
        bad.append(f"{where}: ts must be a finite number >= 0 (microseconds), "
                   f"got {e.get('ts')!r}")
        ok = False
    if ph == "X" and (not _is_num(e.get("dur")) or e["dur"] < 0):
        bad.append(f"{where}: dur must be a finite number >= 0, got {e.get('dur')!r}")
        ok = False
    if "args" in e and not isinstance(e["args"], dict):
        bad.append(f"{where}: args must be an object")
        ok = False
    if "cat" in e and not isinstance(e["cat"], str):
        bad.append(f"{where}: cat must be a string")
    if ph in "iI" and e.get("s", "t") not in ("t", "p", "g"):
        bad.append(f"{where}: instant scope s must be t, p or g, got {e.get('s')!r}")
    if ph == "C":
        values = e.get("args")
        if not (isinstance(values, dict) and values and all(map(_is_num, values.values()))):
            bad.append(f"{where}: a counter needs non-empty numeric args")
    if ph == "M":
        meta_key = _META.get(name)
        meta_args: dict[str, Any] = e["args"] if isinstance(e.get("args"), dict) else {}
        if meta_key is None:
            bad.append(f"{where}: unknown metadata event")
        elif meta_key == "name" and not isinstance(meta_args.get("name"), str):
            bad.append(f"{where}: args.name must be a string")
        elif meta_key == "sort_index" and not _is_int(meta_args.get("sort_index")):
            bad.append(f"{where}: args.sort_index must be an integer")
    return ok


def _check_tracks(events: Iterable[tuple[int, dict[str, Any]]], bad: list[str]) -> None:
    """Per-track rules: monotonic ts in file order, B/E pairing, proper nesting."""
    by_track: dict[tuple[int, int], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for i, e in events:
        if e["ph"] != "M":
            by_track[(e["pid"], e["tid"])].append((i, e))
    for track, evs in sorted(by_track.items()):
        last = -1
        spans: list[tuple[int, int, int]] = []  # (start_ns, -dur_ns, event index)
        open_b: list[tuple[int, int, str]] = []
        for i, e in evs:
            ts = _ns(e["ts"])
            if ts < last:
                bad.append(f"track {track}: event {i} at ts {e['ts']} us goes back in time")
            last = max(last, ts)
            if e["ph"] == "X":
                spans.append((ts, -_ns(e["dur"]), i))
            elif e["ph"] in "iI" and e.get("s", "t") == "t":
                spans.append((ts, 0, i))
            elif e["ph"] == "B":
                open_b.append((ts, i, e["name"]))
            elif e["ph"] == "E":
                if not open_b:
                    bad.append(f"track {track}: E event {i} without an open B")
                else:
                    b_ts, b_i, _name = open_b.pop()
                    spans.append((b_ts, -(ts - b_ts), b_i))
        for _ts, b_i, name in open_b:
            bad.append(f"track {track}: B event {b_i} ({name!r}) never ends")
        _check_nesting(track, spans, bad)


def _check_nesting(track: tuple[int, int], spans: list[tuple[int, int, int]],
                   bad: list[str]) -> None:
    stack: list[tuple[int, int]] = []  # (end_ns, event index) of open ancestors
    for start, neg_dur, i in sorted(spans):
        end = start - neg_dur
        while stack and stack[-1][0] <= start:
            stack.pop()
        if stack and end > stack[-1][0]:
            bad.append(f"track {track}: slice {i} [{start}, {end}] ns overlaps slice "
                       f"{stack[-1][1]} (ends {stack[-1][0]} ns) without nesting in it")
            continue
        stack.append((end, i))


def _check_names(events: list[tuple[int, dict[str, Any]]], bad: list[str]
                 ) -> tuple[dict[int, str], dict[tuple[int, int], str]]:
    pnames: dict[int, str] = {}
    tnames: dict[tuple[int, int], str] = {}
    pid_of_tid: dict[int, int] = {}
    for i, e in events:
        if e["ph"] == "M" and isinstance(e.get("args"), dict):
            name = e["args"].get("name")
            if not isinstance(name, str):
                pass
            elif e["name"] == "process_name" and pnames.setdefault(e["pid"], name) != name:
                bad.append(f"event {i}: pid {e['pid']} named twice")
            elif (e["name"] == "thread_name"
                  and tnames.setdefault((e["pid"], e["tid"]), name) != name):
                bad.append(f"event {i}: track {(e['pid'], e['tid'])} named twice")
        if pid_of_tid.setdefault(e["tid"], e["pid"]) != e["pid"]:
            bad.append(f"event {i}: tid {e['tid']} used in pid {e['pid']} and "
                       f"{pid_of_tid[e['tid']]} (Perfetto names threads by tid)")
    for pid in sorted({e["pid"] for _i, e in events if e["ph"] != "M"} - set(pnames)):
        bad.append(f"pid {pid} has events but no process_name")
    needs_name = {(e["pid"], e["tid"]) for _i, e in events if e["ph"] in "XBEiI"}
    for track in sorted(needs_name - set(tnames)):
        bad.append(f"track {track} has slices but no thread_name")
    return pnames, tnames


def check_trace_events(source: str | Path | bytes | Any) -> TraceCheck:
    """Check a trace (path, bytes, or already-parsed JSON) against the rules above.

    Returns:
        The problems found and the parsed events; never raises on a malformed trace.

    Raises:
        OSError: a path that cannot be read.
        ValueError: bytes or a file that are not (gzipped) JSON.
    """
    root = load_trace_events(source) if isinstance(source, (str, Path, bytes)) else source
    bad: list[str] = []
    if isinstance(root, list):
        raw: Any = root
    elif isinstance(root, dict) and isinstance(root.get("traceEvents"), list):
        raw = root["traceEvents"]
        if root.get("displayTimeUnit", "ms") != "ms":
            bad.append(f"displayTimeUnit {root['displayTimeUnit']!r}: Perfetto may read it as "
                       "the unit of ts; leave it out (ts is microseconds)")
    else:
        return TraceCheck(problems=(("root must be a list of events or an object with a "
                                    "traceEvents list"),), events=(), process_names={},
                          thread_names={})
    good = [(i, e) for i, e in enumerate(raw) if _check_event(i, e, bad)]
    pnames, tnames = _check_names(good, bad)
    _check_tracks(good, bad)
    if len(bad) > _MAX_PROBLEMS:
        bad = bad[:_MAX_PROBLEMS] + [f"... and {len(bad) - _MAX_PROBLEMS} more"]
    return TraceCheck(problems=tuple(bad), events=tuple(e for _i, e in good),
                      process_names=pnames, thread_names=tnames)
