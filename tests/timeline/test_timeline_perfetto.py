"""Load a replay's timeline into Perfetto's own trace processor and count what it imported.

Needs the ``trace_processor_shell`` binary, which the ``perfetto`` Python package does not
ship (it downloads it on first use, and this test never downloads). The binary is taken from
``LLMSIM_TRACE_PROCESSOR=/path/to/trace_processor_shell`` or from the package's own cache
(``~/.local/share/perfetto/prebuilts/trace_processor_shell-<sha>``, filled by any earlier
``perfetto`` use on a networked machine); otherwise the test skips and says so. Without it,
``test_timeline_replay.py`` checks the same counts on the JSON read back by
:func:`llmsim.timeline.check_trace_events`.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest
from timeline_factories import TokenCost, make_experiment

from llmsim.experiment import load_experiment
from llmsim.replay import run
from llmsim.timeline import check_trace_events, timeline_from_replay, write_trace_events
from llmsim.timeline.from_replay import seconds_to_ns


def trace_processor_binary() -> str | None:
    """The trace processor to use, or None (never downloads).

    Raises:
        pytest.fail: ``LLMSIM_TRACE_PROCESSOR`` names a file that does not exist.
    """
    env = os.environ.get("LLMSIM_TRACE_PROCESSOR")
    if env:
        if not Path(env).is_file():
            pytest.fail(f"LLMSIM_TRACE_PROCESSOR={env} is not a file")
        return env
    try:
        from perfetto.prebuilts.manifests.trace_processor_shell import (
            TRACE_PROCESSOR_SHELL_MANIFEST,
        )
    except ImportError:
        return None
    machine = platform.machine().lower()
    for entry in TRACE_PROCESSOR_SHELL_MANIFEST:
        if entry.get("platform") == sys.platform and machine in entry.get("machine", []):
            # the cache layout of perfetto.prebuilts.perfetto_prebuilts.download_or_get_cached
            root, ext = os.path.splitext(entry["file_name"])
            cached = (Path.home() / ".local" / "share" / "perfetto" / "prebuilts"
                      / f"{root}-{entry['sha256'][:16]}{ext}")
            return str(cached) if cached.is_file() else None
    return None


def _rows(tp, sql: str) -> list:
    return list(tp.query(sql))


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_trace_processor_imports_every_event(tmp_path, suffix):
    pytest.importorskip("perfetto.trace_processor")
    binary = trace_processor_binary()
    if binary is None:
        pytest.skip("no trace_processor_shell binary: the perfetto package downloads it on "
                    "first use and this machine has no network; set "
                    "LLMSIM_TRACE_PROCESSOR=/path/to/trace_processor_shell to run this test "
                    "(test_timeline_replay.py checks the same counts on the JSON)")
    from perfetto.trace_processor import TraceProcessor, TraceProcessorConfig

    result = run(load_experiment(make_experiment(tmp_path / "exp", instances=2, blocks=12,
                                                 gap_ms=1)), cost_model=TokenCost(),
                 keep_steps=True)
    assert result.summary["num_preemptions"] > 0
    path = write_trace_events(timeline_from_replay(result), tmp_path / f"t{suffix}")
    expected = check_trace_events(path)
    assert expected.problems == ()
    want = {cat: n for cat, n in expected.counts_by_cat().items() if cat != "counter"}

    with TraceProcessor(trace=str(path), config=TraceProcessorConfig(bin_path=binary)) as tp:
        got = {r.category: r.n for r in _rows(
            tp, "select category, count(*) as n from slice group by category")}
        assert got == want
        assert got["step"] == result.num_steps
        assert got["preemption"] == result.summary["num_preemptions"]
        # slices at the step log's integer ns, exactly
        steps = result.steps
        ts_dur = sorted((r.ts, r.dur) for r in _rows(
            tp, "select ts, dur from slice where category = 'step'"))
        start, end = seconds_to_ns(steps["start_s"]), seconds_to_ns(steps["end_s"])
        assert ts_dur == sorted(zip(start.tolist(), (end - start).tolist(), strict=True))
        # one thread per request and three per instance, named; processes named
        threads = [r.name for r in _rows(tp, "select name from thread where name is not null")]
        assert sorted(t for t in threads if t.startswith("req ")) == \
            sorted(f"req {i}" for i in result.requests["request_id"])
        assert threads.count("GPU steps") == 2
        procs = {r.name for r in _rows(tp, "select name from process where name is not null")}
        assert {"requests", "instance 0: fake", "instance 1: fake"} <= procs
        # counters: one sample per step per gauge
        counters = {r.name: r.n for r in _rows(
            tp, "select t.name as name, count(*) as n from counter c "
                "join counter_track t on c.track_id = t.id group by t.name")}
        assert counters == {"queue running": result.num_steps, "queue waiting": result.num_steps,
                            "kv_cache pct": result.num_steps}
        # the importer reported nothing dropped or malformed
        errors = [(r.name, r.value) for r in _rows(
            tp, "select name, value from stats where value > 0 "
                "and severity in ('error', 'data_loss')")]
        assert errors == []
