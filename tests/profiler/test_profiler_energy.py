"""Energy meters against fake counters that behave like NVML and RAPL (update granularity,
wrap-around), and "unavailable" recorded honestly."""

from __future__ import annotations

from pathlib import Path

import pytest
from profiler_fakes import FakeDevice, fake_nvml, make_rapl_tree

from profiler import energy


@pytest.mark.parametrize("update_ms", [20, 50, 100])
@pytest.mark.parametrize("phase_ms", [0, 7, 19])
def test_nvml_energy_per_call_within_half_percent(update_ms: int, phase_ms: int) -> None:
    dev = FakeDevice(busy_w=412.0, idle_w=87.0, update_ns=update_ms * 1_000_000,
                     phase_ns=phase_ms * 1_000_000)
    dev.sleep(0.123)  # the counter has history before the window
    meter = energy.EnergyMeter(energy.NvmlCounter(fake_nvml(dev)), clock_ns=dev.clock_ns,
                               sleep=dev.sleep)
    r = meter.measure(dev.op, min_window_s=1.0)
    assert r.window_ns >= 1_000_000_000
    assert r.avg_power_w == pytest.approx(412.0, rel=5e-3)
    assert r.energy_per_call_j == pytest.approx(412.0 * 300e-6, rel=5e-3)


def test_nvml_idle_power() -> None:
    dev = FakeDevice(busy_w=300.0, idle_w=61.5, update_ns=100_000_000, phase_ns=31_000_000)
    meter = energy.EnergyMeter(energy.NvmlCounter(fake_nvml(dev)), clock_ns=dev.clock_ns,
                               sleep=dev.sleep)
    assert meter.idle_power_w(window_s=1.0) == pytest.approx(61.5, rel=5e-3)
    assert dev.calls == 0


def test_unaligned_reads_would_be_wrong() -> None:
    """Why the meter aligns windows: a plain start/end read over 1 s misses up to one update
    interval of energy (here 10 %); the aligned meter does not."""
    dev = FakeDevice(busy_w=400.0, idle_w=50.0, update_ns=100_000_000, phase_ns=1_000_000)
    nvml = fake_nvml(dev)
    e0, t0 = nvml.nvmlDeviceGetTotalEnergyConsumption(None), dev.clock_ns()
    while dev.clock_ns() - t0 < 1_000_000_000:
        dev.op()
    naive_w = (nvml.nvmlDeviceGetTotalEnergyConsumption(None) - e0) / 1e3 / 1.0
    assert abs(naive_w - 400.0) / 400.0 > 0.05
    meter = energy.EnergyMeter(energy.NvmlCounter(nvml), clock_ns=dev.clock_ns, sleep=dev.sleep)
    assert meter.measure(dev.op).avg_power_w == pytest.approx(400.0, rel=5e-3)


def test_rapl_wraps_and_ignores_subdomains(tmp_path: Path) -> None:
    root = make_rapl_tree(tmp_path, packages=2, range_uj=2_000_000)  # wraps every 2 J
    dev = FakeDevice(busy_w=35.0, idle_w=9.0, update_ns=20_000_000, phase_ns=3_000_000,
                     call_ns=2_000_000)
    dev.sleep(0.5)
    # two packages share the energy 60/40; the core sub-domains must not be added
    dev.attach_rapl(root, {"intel-rapl:0": 0.6, "intel-rapl:1": 0.4,
                           "intel-rapl:0:0": 0.5, "intel-rapl:1:0": 0.3})
    counter = energy.RaplCounter(root)
    meter = energy.EnergyMeter(counter, clock_ns=dev.clock_ns, sleep=dev.sleep)
    r = meter.measure(dev.op, min_window_s=1.0)
    assert r.energy_j > 2 * 2.0 * 0.6  # package 0 wrapped more than once
    assert r.avg_power_w == pytest.approx(35.0, rel=5e-3)
    assert r.energy_per_call_j == pytest.approx(35.0 * 2e-3, rel=5e-3)
    assert counter.describe()["energy_scope"].startswith("CPU package(s) package-0,package-1")


def test_rapl_delta_wrap_arithmetic(tmp_path: Path) -> None:
    root = make_rapl_tree(tmp_path, packages=1, range_uj=1_000)
    counter = energy.RaplCounter(root)
    assert counter.delta_j((990,), (5,)) == pytest.approx(15e-6)
    assert counter.delta_j((5,), (990,)) == pytest.approx(985e-6)


def test_unavailable_without_counters(tmp_path: Path) -> None:
    counter, reason = energy.open_counter("cpu", powercap_root=tmp_path / "no-powercap")
    assert counter is None and "RAPL" in reason
    dev = FakeDevice(busy_w=1.0, idle_w=1.0)
    counter, reason = energy.open_counter("cuda", nvml=fake_nvml(dev, fail_init=True))
    assert counter is None and "NVML" in reason


def test_this_machine_is_honest() -> None:
    """On this machine: RAPL only if its files are really readable, else unavailable."""
    counter, reason = energy.open_counter("cpu")
    readable = any(p.name.count(":") == 1 and _readable(p / "energy_uj")
                   for p in energy.POWERCAP_ROOT.glob("intel-rapl:*"))
    assert (counter is not None) == readable
    if counter is None:
        assert reason


def _readable(path: Path) -> bool:
    try:
        int(path.read_text())
        return True
    except (OSError, ValueError):
        return False
