"""Where and how a profile was measured: device, versions, clocks, host.

Everything is read, never assumed: a fact that cannot be read is left out (empty field or
absent attribute).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
from pathlib import Path
from typing import Any

import torch


def now_rfc3339() -> str:
    """Current UTC time, RFC 3339 with seconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` otherwise)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def short_label(device_name: str) -> str:
    """A short hardware label from a device name (alphanumerics, e.g. "NVIDIAH200" -> "H200")."""
    words = [w for w in device_name.replace("NVIDIA", "").split() if w.isalnum()]
    return "".join(words[:3]) or "unknown"


def nvml_facts(nvml: Any, index: int = 0) -> dict[str, str]:
    """Driver version, clocks and power limit of GPU ``index`` via NVML (what is readable)."""
    facts: dict[str, str] = {}
    try:
        nvml.nvmlInit()
        h = nvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # NVMLError family; no NVML -> no facts
        return facts
    reads = {
        "driver_version": lambda: nvml.nvmlSystemGetDriverVersion(),
        "sm_clock_max_mhz": lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM),
        "mem_clock_max_mhz": lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM),
        "sm_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),
        "mem_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM),
        "power_limit_w": lambda: nvml.nvmlDeviceGetPowerManagementLimit(h) / 1000.0,
        "gpu_uuid": lambda: nvml.nvmlDeviceGetUUID(h),
    }
    for key, read in reads.items():
        try:
            value = read()
            facts[key] = value.decode() if isinstance(value, bytes) else str(value)
        except Exception:
            continue
    return facts


def device_facts(device: str, *, nvml: Any = None) -> dict[str, str]:
    """Device name, runtime and driver facts for ``device`` ("cpu" / "cuda[:i]")."""
    facts: dict[str, str] = {"framework": "torch", "framework_version": torch.__version__,
                             "host": socket.gethostname(), "python": platform.python_version()}
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        facts["device_name"] = torch.cuda.get_device_name(index)
        facts["runtime_version"] = f"CUDA {torch.version.cuda}"
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                nvml = None
        if nvml is not None:
            facts.update(nvml_facts(nvml, index))
    else:
        facts["device_name"] = cpu_model_name()
        facts["runtime_version"] = f"cpu ({platform.machine()}, {os.cpu_count()} logical CPUs)"
        facts["cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    return facts
