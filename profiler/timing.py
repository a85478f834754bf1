"""Timers: CPU wall time with ``perf_counter_ns``, CUDA with events (optionally graphs).

Timing modes (:class:`TimingMode`): hot loop, cold cache (flush before every call) and
in-context (ops timed inside whole forward passes, :mod:`profiler.in_context`).

Every timer returns one duration per timed call, in ns; :func:`summarize` reduces them to
the statistics a profile keeps (median, mean, p90, min, max, std).

CPU timing runs on a fixed number of threads (``torch.set_num_threads``, recorded in the
profile): multi-threaded timings on a small shared machine snap to scheduler quanta.
CUDA timing records an event pair around each call and synchronizes once at the end; with
``cuda_graphs`` the call is captured once into a CUDA graph and the replays are timed (as
the serving engine does for decode-only batches).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from llmsim.errors import ConfigError


class TimingMode(StrEnum):
    """How an operator's calls are timed.

    * ``hot``: the op called in a tight loop (its weights stay in the caches);
    * ``cold``: a buffer of ``flush_cache_bytes`` overwritten before every timed call;
    * ``in-context``: every op timed inside whole forward passes over distinct layer copies
      (:mod:`profiler.in_context`; CPU only), the default on the CPU.
    """

    HOT = "hot"
    COLD = "cold"
    IN_CONTEXT = "in-context"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimingStats:
    """Statistics of one measured point, ns."""

    median_ns: float
    mean_ns: float
    p90_ns: float
    min_ns: float
    max_ns: float
    std_ns: float
    num_samples: int


def percentile(sorted_vals: list[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 100] of already sorted values."""
    if not sorted_vals:
        raise ValueError("no samples")
    pos = (len(sorted_vals) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def summarize(samples_ns: list[float]) -> TimingStats:
    """Reduce per-call durations (ns) to :class:`TimingStats`.

    Raises:
        ValueError: no samples.
    """
    vals = sorted(float(s) for s in samples_ns)
    if not vals:
        raise ValueError("no samples")
    return TimingStats(
        median_ns=statistics.median(vals), mean_ns=statistics.fmean(vals),
        p90_ns=percentile(vals, 90.0), min_ns=vals[0], max_ns=vals[-1],
        std_ns=statistics.pstdev(vals) if len(vals) > 1 else 0.0, num_samples=len(vals))


class Timer(Protocol):
    """Times a zero-argument callable."""

    name: str
    cuda_graphs: bool

    def time(self, fn: Callable[[], Any], *, warmup: int, repetitions: int) -> list[float]:
        """Run ``fn`` ``warmup`` times untimed, then ``repetitions`` times; ns per call."""
        ...

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""
        ...


def cache_flusher(num_bytes: int, device: str = "cpu") -> Callable[[], None] | None:
    """A call that overwrites a ``num_bytes`` buffer (evicting caches), None for 0 bytes.

    Timing each call after a flush gives cold-cache times, as in a real forward pass whose
    layers' weights do not all fit in the cache; hot-loop times of a single layer can be
    several times lower for memory-bound shapes (Triton's ``do_bench`` flushes the GPU L2
    the same way before every repetition).
    """
    if num_bytes <= 0:
        return None
    import torch

    buf = torch.empty(num_bytes // 4, dtype=torch.float32, device=device)
    return buf.zero_


def llc_bytes(sysfs: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """Size of the CPU's largest cache level in bytes (0 when unreadable)."""
    import glob

    best = 0
    for d in glob.glob(f"{sysfs}/index*"):
        try:
            text = open(f"{d}/size").read().strip().upper()
        except OSError:
            continue
        mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            best = max(best, int(digits) * mult)
    return best


class CpuTimer:
    """Wall time per call with ``time.perf_counter_ns`` (CPU ops run synchronously).

    Args:
        clock_ns: the clock.
        flush: called (untimed) before every timed call, e.g. :func:`cache_flusher`.
    """

    name = "perf_counter_ns"
    cuda_graphs = False

    def __init__(self, clock_ns: Callable[[], int] = time.perf_counter_ns,
                 flush: Callable[[], Any] | None = None) -> None:
        self._clock_ns = clock_ns
        self._flush = flush

    def time(self, fn: Callable[[], Any], *, warmup: int, repetitions: int) -> list[float]:
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(repetitions):
            if self._flush is not None:
                self._flush()
            t0 = self._clock_ns()
            fn()
            out.append(float(self._clock_ns() - t0))
        return out

    def synchronize(self) -> None:
        return None


class CudaEventTimer:
    """Device time per call from CUDA event pairs (``elapsed_time`` is in ms).

    Args:
        cuda: the ``torch.cuda`` module (tests pass a fake with ``Event``,
            ``synchronize``, ``CUDAGraph``, ``graph`` and ``Stream``/``stream``).
        cuda_graphs: capture the call into a CUDA graph and time its replays.
    """

    name = "cuda_event"

    def __init__(self, cuda: Any = None, *, cuda_graphs: bool = False,
                 flush: Callable[[], Any] | None = None) -> None:
        if cuda is None:
            import torch
            cuda = torch.cuda
        self._cuda = cuda
        self.cuda_graphs = cuda_graphs
        self._flush = flush

    def _graphed(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        cuda = self._cuda
        side = cuda.Stream()
        with cuda.stream(side):  # warm up on a side stream before capture (PyTorch docs)
            fn()
        cuda.synchronize()
        graph = cuda.CUDAGraph()
        with cuda.graph(graph):
            fn()
        return graph.replay

    def time(self, fn: Callable[[], Any], *, warmup: int, repetitions: int) -> list[float]:
        cuda = self._cuda
        call = self._graphed(fn) if self.cuda_graphs else fn
        for _ in range(warmup):
            call()
        pairs = []
        for _ in range(repetitions):
            start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
            if self._flush is not None:
                self._flush()  # queued before the start event: not timed
            start.record()
            call()
            end.record()
            pairs.append((start, end))
        cuda.synchronize()
        return [float(s.elapsed_time(e)) * 1e6 for s, e in pairs]

    def synchronize(self) -> None:
        self._cuda.synchronize()


def make_timer(device: str, *, cuda_graphs: bool = False, flush_bytes: int = 0) -> Timer:
    """The timer for ``device`` ("cpu" or "cuda[:i]"), flushing ``flush_bytes`` of cache
    before every timed call (0 = hot-loop timing).

    Raises:
        ConfigError: CUDA graphs asked for on the CPU.
    """
    flush = cache_flusher(flush_bytes, device)
    if device.startswith("cuda"):
        return CudaEventTimer(cuda_graphs=cuda_graphs, flush=flush)
    if cuda_graphs:
        raise ConfigError("CUDA graphs need a CUDA device", field="cuda_graphs")
    return CpuTimer(flush=flush)
