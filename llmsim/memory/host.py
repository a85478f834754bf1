"""Host-memory budget of a replay: refuse a setting before allocating what it asks for.

A replay's big host allocations are sized by its inputs: every instance's KV block pool
(``num_gpu_blocks`` entries in four per-block tables), every instance's scheduler and
step-time model, and per request its state, its metrics row and one entry per output
token. An absurd value (``num_gpu_blocks_override: 1e12``, ``gpu_memory_bytes: 1e30``,
``instances: 1e6``, a request of 10^9 output tokens) used to run for tens of seconds and
die in ``MemoryError``; :func:`check_host_memory` compares the estimate with the memory
the OS reports as available and raises a :class:`~llmsim.errors.ConfigError` naming the
setting.

The per-item byte figures are measured with ``tracemalloc`` on CPython 3.11, 64-bit
(``BlockPool(10**6)``; 1,000 instances with 2 blocks and vLLM's default capture sizes;
10^5 requests with their ``SeqState`` and metrics row), rounded up. They are estimates:
the check refuses what cannot fit, it does not promise that what passes fits alongside
everything else the machine runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmsim.errors import ConfigError

BYTES_PER_KV_BLOCK = 72
"""Host bytes per KV block of a pool (measured 64: ref count, hash and stale-entry list
slots, a deque entry and the block id's int object)."""

BYTES_PER_INSTANCE = 16 * 1024
"""Host bytes per instance besides its block pool (measured ~9 KiB with the default
capture sizes: scheduler, KV manager, step-time model and its padding table)."""

BYTES_PER_CAPTURE_TOKEN = 8
"""Host bytes per token of the largest CUDA-graph capture size (the padding table)."""

BYTES_PER_REQUEST = 1024
"""Host bytes per request while it is simulated (measured ~770: ``SeqState`` with its block
hasher and lists, the metrics row, the per-request token list; the ``Request`` itself is the
caller's)."""

BYTES_PER_OUTPUT_TOKEN = 48
"""Host bytes per output token: its time in the recorder (8) and, when the tables are
built, its entries in the flat time and gap arrays and the ITL table (~40)."""

GIB = 1 << 30

UNCHECKED_BYTES = 64 << 20
"""Allocations estimated at or below this (64 MiB) are not checked (no ``/proc`` read)."""


def available_host_bytes() -> int | None:
    """Memory the OS can give this process now, bytes, or ``None`` when unknown.

    ``MemAvailable`` from ``/proc/meminfo`` (Linux), else ``os.sysconf``'s available
    physical pages times the page size.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_host_memory(needed_bytes: int, *, what: str, field: str,
                      path: str | Path | None = None,
                      available_bytes: int | None = None) -> None:
    """Refuse an allocation of ``needed_bytes`` that the host cannot hold.

    Args:
        needed_bytes: estimated bytes of the allocation.
        what: what would be allocated, for the message (e.g. ``"2 instances x 10^12 KV
            blocks"``).
        field: the setting to blame (e.g. ``"engine.num_gpu_blocks_override"``).
        path: the experiment or trace file, when known.
        available_bytes: the budget; default :func:`available_host_bytes` (no check when
            the OS does not say). Estimates up to :data:`UNCHECKED_BYTES` always pass.

    Raises:
        ConfigError: ``needed_bytes`` exceeds the budget (names ``field`` and both sizes).
    """
    if needed_bytes <= UNCHECKED_BYTES:
        return
    if available_bytes is None:
        available_bytes = available_host_bytes()
    if available_bytes is None or needed_bytes <= available_bytes:
        return
    raise ConfigError(f"{what} needs ~{needed_bytes / GIB:.3g} GiB of host memory, more than "
                      f"the {available_bytes / GIB:.3g} GiB available; reduce it",
                      path=path, field=field)
