"""Energy per operator call from hardware energy counters: NVML, Linux RAPL, or nothing.

Counters, and how they behave (the fakes in the tests behave the same way):

* NVML ``nvmlDeviceGetTotalEnergyConsumption``: a device's energy since the driver loaded,
  in mJ (64-bit, does not wrap in practice), refreshed every 20-100 ms depending on the GPU.
* Linux powercap RAPL ``/sys/class/powercap/intel-rapl:N/energy_uj``: a package's energy in
  uJ that wraps to 0 after ``max_energy_range_uj``; it counts the whole package (every
  process on it), so on a shared host it over-states an operator's energy.

Because a counter only moves every few tens of ms, an operator is looped for a window of at
least ``min_window_s`` (default 1 s) whose start and end are aligned to counter updates:
the meter keeps calling the operator until the counter ticks, starts the window there, and
after the window ends keeps calling until the next tick. Energy per call is then
``delta_j / calls`` and average power ``delta_j / window_s``. Deltas are accumulated poll by
poll so a RAPL wrap between two polls is undone with ``max_energy_range_uj``.

When no counter is readable the source is ``"unavailable"`` and no joules are recorded:
energy is never invented.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

NVML = "nvml"
RAPL = "rapl"
UNAVAILABLE = "unavailable"
POWERCAP_ROOT = Path("/sys/class/powercap")
_POLL_NS = 2_000_000  # poll the counter at most every 2 ms while looping an operator


@dataclass(frozen=True, slots=True, kw_only=True)
class EnergyReading:
    """Energy of a window of repeated calls.

    Attributes:
        energy_j: counter delta over the window, J.
        window_ns: window length (aligned to counter updates), ns.
        calls: operator calls inside the window.
    """

    energy_j: float
    window_ns: int
    calls: int

    @property
    def energy_per_call_j(self) -> float:
        """Energy of one call, J."""
        return self.energy_j / self.calls if self.calls else 0.0

    @property
    def avg_power_w(self) -> float:
        """Average power over the window, W."""
        return self.energy_j / (self.window_ns * 1e-9) if self.window_ns else 0.0


class EnergyCounter(Protocol):
    """A monotonically increasing (possibly wrapping) energy counter."""

    source: str

    def read(self) -> Any:
        """Raw reading (opaque; compare with :meth:`delta_j`)."""
        ...

    def delta_j(self, before: Any, after: Any) -> float:
        """Energy between two readings, J (wrap-around undone)."""
        ...

    def describe(self) -> dict[str, str]:
        """Facts for the profile's provenance (device, domains, scope)."""
        ...


class NvmlCounter:
    """NVML total-energy counter of one GPU (mJ).

    Args:
        nvml: the ``pynvml`` module (or a fake with the same functions).
        index: GPU index.

    Raises:
        Exception: whatever NVML raises when it cannot initialise or lacks the counter
            (callers use :func:`open_counter`, which turns that into "unavailable").
    """

    source = NVML

    def __init__(self, nvml: Any, index: int = 0) -> None:
        self._nvml = nvml
        nvml.nvmlInit()
        self._handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.read()  # fails early on GPUs without the counter (pre-Volta)
        self.index = index

    def read(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def delta_j(self, before: int, after: int) -> float:
        if after < before:
            raise RuntimeError("NVML energy counter went backwards (driver reloaded?)")
        return (after - before) / 1e3

    def describe(self) -> dict[str, str]:
        return {"energy_counter": "nvmlDeviceGetTotalEnergyConsumption",
                "energy_scope": f"GPU {self.index} (whole device)"}


class RaplCounter:
    """Sum of the package-level Linux powercap RAPL domains (uJ, wrapping).

    Args:
        root: the powercap directory (``/sys/class/powercap``; tests pass a fake tree).

    Raises:
        OSError: no readable package domain.
    """

    source = RAPL

    def __init__(self, root: Path = POWERCAP_ROOT) -> None:
        domains = sorted(p for p in Path(root).glob("intel-rapl:*")
                         if p.name.count(":") == 1 and (p / "energy_uj").exists())
        if not domains:
            raise OSError(f"no RAPL package domain under {root}")
        self._files = [d / "energy_uj" for d in domains]
        self._ranges_uj = [int((d / "max_energy_range_uj").read_text()) for d in domains]
        self._names = [(d / "name").read_text().strip() if (d / "name").exists() else d.name
                       for d in domains]
        self.read()  # energy_uj is root-only on kernels >= 5.10: fail here, not mid-sweep

    def read(self) -> tuple[int, ...]:
        return tuple(int(f.read_text()) for f in self._files)

    def delta_j(self, before: tuple[int, ...], after: tuple[int, ...]) -> float:
        total_uj = 0
        for b, a, rng in zip(before, after, self._ranges_uj, strict=True):
            d = a - b
            total_uj += d + rng if d < 0 else d
        return total_uj / 1e6

    def describe(self) -> dict[str, str]:
        return {"energy_counter": "powercap intel-rapl energy_uj",
                "energy_scope": "CPU package(s) " + ",".join(self._names)
                                + " (includes every process on the package)"}


def open_counter(device: str, *, nvml: Any = None, powercap_root: Path = POWERCAP_ROOT,
                 gpu_index: int = 0) -> tuple[EnergyCounter | None, str]:
    """The energy counter for ``device``, or ``(None, reason)`` when none is readable.

    CUDA devices use NVML, the CPU uses RAPL.
    """
    if device.startswith("cuda"):
        try:
            if nvml is None:
                import pynvml as nvml  # nvidia-ml-py
            return NvmlCounter(nvml, gpu_index), ""
        except Exception as exc:  # NVML raises its own NVMLError family
            return None, f"NVML energy counter unavailable: {exc}"
    try:
        return RaplCounter(powercap_root), ""
    except (OSError, ValueError) as exc:
        return None, f"RAPL energy counter unavailable: {exc}"


class EnergyMeter:
    """Measures energy of repeated operator calls over update-aligned windows.

    Args:
        counter: the energy counter.
        clock_ns: monotonic clock (ns).
        sleep: ``time.sleep``-like function (idle power).
        synchronize: waits for queued device work before a window edge is read.
    """

    def __init__(self, counter: EnergyCounter, *, clock_ns: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], None] = time.sleep,
                 synchronize: Callable[[], None] = lambda: None) -> None:
        self.counter = counter
        self.source = counter.source
        self._clock_ns = clock_ns
        self._sleep = sleep
        self._sync = synchronize

    def _until_tick(self, step: Callable[[], None], last: Any) -> tuple[Any, int, float, int]:
        """Call ``step`` until the counter changes; returns (reading, time, J since, steps)."""
        steps, next_poll = 0, 0
        while True:
            step()
            steps += 1
            now = self._clock_ns()
            if now >= next_poll:
                self._sync()
                cur = self.counter.read()
                if cur != last:
                    return cur, self._clock_ns(), self.counter.delta_j(last, cur), steps
                next_poll = now + _POLL_NS

    def _window(self, step: Callable[[], None], min_window_s: float) -> EnergyReading:
        first = self.counter.read()
        start, t0, _, _ = self._until_tick(step, first)
        last, energy_j, calls = start, 0.0, 0
        deadline = t0 + int(min_window_s * 1e9)
        next_poll = 0
        while True:
            step()
            calls += 1
            now = self._clock_ns()
            if now >= next_poll:  # accumulate per poll so a RAPL wrap is seen
                self._sync()
                cur = self.counter.read()
                energy_j += self.counter.delta_j(last, cur)
                last = cur
                next_poll = now + _POLL_NS
                if now >= deadline:
                    break
        cur, t1, tail_j, tail_calls = self._until_tick(step, last)
        return EnergyReading(energy_j=energy_j + tail_j, window_ns=t1 - t0,
                             calls=calls + tail_calls)

    def measure(self, fn: Callable[[], Any], *, min_window_s: float = 1.0) -> EnergyReading:
        """Loop ``fn`` over an update-aligned window of at least ``min_window_s``."""
        return self._window(fn, min_window_s)

    def idle_power_w(self, *, window_s: float = 1.0) -> float:
        """Average power while idle (sleeping) over an update-aligned window, W."""
        reading = self._window(lambda: self._sleep(0.005), window_s)
        return reading.avg_power_w
