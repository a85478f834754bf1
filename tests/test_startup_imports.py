"""Start-up: what a command imports. ``llmsim --help`` loads no numeric stack; a replay of
an LLMServingSim trace loads no other trace loader, no plotting and no gRPC."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmsim.trace.registry import _LOADER_PATHS, TraceFormat, _loaders

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rtxpro6000-llama-3.1-8b.yaml"

PROBE = """
import json, runpy, sys
sys.argv = ["llmsim", *json.loads(sys.argv[1])]
try:
    runpy.run_module("llmsim", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("MODULES=" + json.dumps(sorted(sys.modules)))
sys.exit(code or 0)
"""


def modules_after(args: list[str], tmp_path: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("MODULES="))
    return set(json.loads(line[len("MODULES="):]))


def test_help_imports_no_numeric_stack(tmp_path):
    mods = modules_after(["--help"], tmp_path)
    assert "llmsim.cli.main" in mods
    for heavy in ("pandas", "numpy", "pyarrow", "pydantic", "matplotlib", "grpc"):
        assert heavy not in mods, heavy


def test_replay_imports_only_its_trace_loader(tmp_path, data_path):
    data_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    mods = modules_after(["replay", str(EXAMPLE), "--no-progress", "--out",
                          str(tmp_path / "out")], tmp_path)
    assert (tmp_path / "out" / "requests.csv").is_file()
    assert "llmsim.trace.llmservingsim" in mods
    for unused in ("llmsim.trace.azure", "llmsim.trace.mooncake", "llmsim.trace.burstgpt",
                   "llmsim.trace.qwen_bailian", "llmsim.trace.generic_csv",
                   "llmsim.workloads.spec", "matplotlib", "grpc", "llmsim.bridge"):
        assert unused not in mods, unused


@pytest.mark.parametrize("kind", list(TraceFormat))
def test_lazy_loader_is_the_module_function(kind):
    module, name = _LOADER_PATHS[kind]
    assert _loaders()[kind] is getattr(importlib.import_module(module), name)


def test_lazy_loaders_cover_every_format():
    loaders = _loaders()
    assert set(loaders) == set(TraceFormat)
    assert len(loaders) == len(TraceFormat)
    with pytest.raises(KeyError):
        loaders["no-such-format"]  # type: ignore[index]
