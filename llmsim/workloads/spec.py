"""Workload spec files: a YAML mapping naming a benchmarking tool and its settings.

``tool:`` picks the generator (``vllm-bench``, ``inference-perf``, ``guidellm``; see those
modules for each one's keys and the tool semantics they follow); ``seed:`` (integer >= 0,
default 0) seeds one ``numpy.random.default_rng`` from which every draw of the spec comes, so
the same spec gives the same trace, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from llmsim.errors import ConfigError, LlmsimError, TraceFormatError
from llmsim.trace.frame import TraceFrame
from llmsim.workloads.fields import Fields

#: Largest spec file read, bytes (specs are a few hundred bytes).
MAX_SPEC_BYTES = 1 << 20


class Tool(StrEnum):
    """Benchmarking tools whose workloads llmsim generates."""

    VLLM_BENCH = "vllm_bench"
    INFERENCE_PERF = "inference_perf"
    GUIDELLM = "guidellm"


def _generators() -> dict[Tool, Callable[..., TraceFrame]]:
    from llmsim.workloads import guidellm, inference_perf, vllm_bench

    return {Tool.VLLM_BENCH: vllm_bench.generate, Tool.INFERENCE_PERF: inference_perf.generate,
            Tool.GUIDELLM: guidellm.generate}


def generate_workload(spec: Mapping[str, Any], *, path: str | Path | None = None,
                      lines: Mapping[str, int] | None = None) -> TraceFrame:
    """The trace a workload spec (already parsed) describes.

    Args:
        spec: the spec mapping (``tool``, ``seed`` and the tool's keys).
        path: the spec file, for errors.
        lines: dotted key -> line, for errors.

    Raises:
        ConfigError: not a mapping, unknown tool, or a bad key (file, line, field).
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"a workload spec must be a mapping, got {type(spec).__name__}",
                          path=path, field="tool")
    f = Fields(data=dict(spec), path=None if path is None else str(path), lines=dict(lines or {}))
    tool = Tool(f.choice("tool", [t.value for t in Tool]))
    seed = f.int_("seed", 0, maximum=2**63 - 1)
    frame = _generators()[tool](f, np.random.default_rng(seed), seed=seed)
    meta = dict(frame.metadata)
    meta.update(tool=tool.value, seed=str(seed))
    if path is not None:
        meta["spec"] = str(path)
    return frame.with_data(frame.data, **meta)


def load_workload_spec(path: str | Path, *, read_error: type[LlmsimError] = ConfigError) -> TraceFrame:
    """Read a spec YAML file with :mod:`llmsim.yamlfile` and generate its trace.

    Args:
        path: the spec file.
        read_error: error raised when the file cannot be read or is not valid YAML.

    Raises:
        ConfigError: a bad spec (file, line, field); also a file that cannot be read or is
            not valid YAML, unless ``read_error`` says otherwise.
    """
    from llmsim.yamlfile import load_yaml_document

    doc = load_yaml_document(path, what="workload spec", error=read_error, max_bytes=MAX_SPEC_BYTES)
    return generate_workload(doc.data, path=path, lines=doc.lines)


def load_workload_frame(path: str | Path, *, skip_bad_rows: bool = False, sort: bool = False) -> TraceFrame:
    """Trace loader for the ``workload`` format (``trace: {format: workload, path: SPEC.yaml}``).

    ``skip_bad_rows`` and ``sort`` are accepted like every loader's; a generated trace has no
    bad rows and is sorted already.

    Raises:
        TraceFormatError: the file is not a regular UTF-8 file or not valid YAML (file, line),
            like every trace loader.
        ConfigError: a bad spec (file, line, field).
    """
    return load_workload_spec(path, read_error=TraceFormatError)
