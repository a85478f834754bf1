"""Fake devices whose energy counters behave like the real ones (profiler tests).

* :class:`FakeDevice`: a simulated clock and an exact energy integral; an operator call
  advances the clock at ``busy_w``, sleeping advances it at ``idle_w``.
* The counters only show the energy at their last update instant (every ``update_ns``,
  20-100 ms on real GPUs, with an arbitrary phase), like NVML's total-energy counter.
* :func:`fake_nvml` is a stand-in for the ``pynvml`` module (mJ, 64-bit).
* :func:`make_rapl_tree` writes a powercap tree whose ``energy_uj`` wraps at
  ``max_energy_range_uj``; :meth:`FakeDevice.attach_rapl` keeps it current.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from types import SimpleNamespace


class FakeDevice:
    """Simulated time (ns) and energy (J) with quantized counter updates."""

    def __init__(self, *, busy_w: float, idle_w: float, call_ns: int = 300_000,
                 update_ns: int = 50_000_000, phase_ns: int = 13_000_000) -> None:
        self.busy_w, self.idle_w, self.call_ns = busy_w, idle_w, call_ns
        self.update_ns, self.phase_ns = update_ns, phase_ns
        self.t_ns, self.e_j = 0, 0.0
        self._times, self._energy = [0], [0.0]
        self.calls = 0
        self._rapl: list[tuple[Path, int, float]] = []

    def clock_ns(self) -> int:
        return self.t_ns

    def _advance(self, dt_ns: int, power_w: float) -> None:
        self.t_ns += dt_ns
        self.e_j += power_w * dt_ns * 1e-9
        self._times.append(self.t_ns)
        self._energy.append(self.e_j)
        for path, range_uj, share in self._rapl:
            path.write_text(f"{int(self.counter_j() * share * 1e6) % range_uj}\n")

    def op(self) -> None:
        """One operator call at busy power."""
        self.calls += 1
        self._advance(self.call_ns, self.busy_w)

    def sleep(self, seconds: float) -> None:
        self._advance(int(seconds * 1e9), self.idle_w)

    def energy_at(self, t_ns: int) -> float:
        """Exact energy integral at ``t_ns`` (piecewise-constant power)."""
        i = bisect.bisect_right(self._times, t_ns) - 1
        if i >= len(self._times) - 1:
            return self._energy[-1]
        t0, t1 = self._times[i], self._times[i + 1]
        e0, e1 = self._energy[i], self._energy[i + 1]
        return e0 + (e1 - e0) * (t_ns - t0) / (t1 - t0)

    def counter_j(self) -> float:
        """What the counter shows: the energy at its last update instant."""
        k = (self.t_ns - self.phase_ns) // self.update_ns
        return self.energy_at(max(0, self.phase_ns + k * self.update_ns))

    def attach_rapl(self, root: Path, shares: dict[str, float]) -> None:
        """Drive ``root/<domain>/energy_uj`` with ``share`` of the device's energy each."""
        for name, share in shares.items():
            d = root / name
            self._rapl.append((d / "energy_uj", int((d / "max_energy_range_uj").read_text()),
                               share))
        self._advance(0, 0.0)


def fake_nvml(device: FakeDevice, *, fail_init: bool = False) -> SimpleNamespace:
    """A ``pynvml`` stand-in backed by ``device`` (energy in mJ, integer)."""
    class NVMLError(Exception):
        pass

    def init() -> None:
        if fail_init:
            raise NVMLError("NVML Shared Library Not Found")

    return SimpleNamespace(
        NVMLError=NVMLError, nvmlInit=init,
        nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i),
        nvmlDeviceGetTotalEnergyConsumption=lambda h: int(device.counter_j() * 1e3),
        nvmlSystemGetDriverVersion=lambda: "580.95.05",
        NVML_CLOCK_SM=1, NVML_CLOCK_MEM=2,
        nvmlDeviceGetMaxClockInfo=lambda h, c: 1980 if c == 1 else 2619,
        nvmlDeviceGetClockInfo=lambda h, c: 1755 if c == 1 else 2619,
        nvmlDeviceGetPowerManagementLimit=lambda h: 700_000,
        nvmlDeviceGetUUID=lambda h: "GPU-fake")


def make_rapl_tree(root: Path, *, packages: int = 2, range_uj: int = 2_000_000) -> Path:
    """A powercap tree with ``packages`` package domains (each with a core sub-domain that
    must not be double counted) wrapping at ``range_uj``."""
    for p in range(packages):
        pkg = root / f"intel-rapl:{p}"
        sub = root / f"intel-rapl:{p}:0"
        for d, name in ((pkg, f"package-{p}"), (sub, "core")):
            d.mkdir(parents=True)
            (d / "name").write_text(name + "\n")
            (d / "energy_uj").write_text("0\n")
            (d / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return root
