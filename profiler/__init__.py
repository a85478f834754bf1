"""llmsim's operator profiler: time one decoder layer's PyTorch operators into a profile.

The profiler builds the operators of one decoder layer (plus the per-step embedding,
final norm, ``lm_head`` and sampler) of an HF-style model config with random weights,
times them over grids of batch shapes on CUDA (CUDA events) or on the CPU
(``perf_counter_ns`` with a fixed thread count; by default each op is timed inside whole
forward passes over distinct layer copies, so its caches are as cold as in a real step),
optionally measures energy (NVML, Linux
RAPL), and writes the same ``llmsim.v1.Profile`` the importers produce, so the profile cost
model replays traces on it unchanged.

Public surface::

    profiler.ops        operator builders shared with the closed-loop engine
    profiler.grid       grid presets ("ci", "full") and the points they expand to
    profiler.timing     CPU / CUDA-event timers, timing modes, the kept statistics
    profiler.in_context in-context timing: ops timed inside whole forward passes (CPU default)
    profiler.energy     NVML and RAPL energy meters ("unavailable" otherwise)
    profiler.sweep      the sweep: journal, resume, profile assembly
    profiler.compare    per-op ratios between two profiles (table + plot)
    profiler.cli        ``llmsim profile run|compare``

Needs the ``profiler`` extra (``pip install 'llmsim[profiler]'``: torch, nvidia-ml-py).
"""

from __future__ import annotations

PROFILER_NAME = "llmsim-profiler"
__version__ = "0.1.0"

__all__ = ["PROFILER_NAME", "__version__"]
