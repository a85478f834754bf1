"""The README's Python API example runs as written, and ``import llmsim`` has the API."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import llmsim
from llmsim.errors import DataNotFoundError
from tests.conftest import REQUIRE_DATA

ROOT = Path(__file__).resolve().parent.parent


def readme_python_example() -> str:
    """The first indented code block of README.md's "## Python API" section."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Python API\n(.*?)(?=^## )", text, flags=re.DOTALL | re.MULTILINE)
    assert match, "README.md has no '## Python API' section"
    block = re.search(r"(^    .*\n(?:^    .*\n|^\n)*)", match.group(1), flags=re.MULTILINE)
    assert block, "the Python API section has no indented code block"
    return textwrap.dedent(block.group(1)).strip() + "\n"


def test_readme_example_is_the_five_statement_api_example():
    code = readme_python_example()
    assert code.startswith("import llmsim\n")
    assert len(ast.parse(code).body) == 5
    assert "llmsim.run(" in code and "llmsim.Experiment(" in code


def test_readme_example_runs(monkeypatch, tmp_path):
    code = readme_python_example()
    monkeypatch.chdir(tmp_path)  # paths resolve in the data dirs, not the checkout
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102
    except DataNotFoundError as exc:
        if REQUIRE_DATA:
            pytest.fail(f"real data required but missing: {exc}")
        pytest.skip(str(exc))
    printed = out.getvalue()
    for column in ("ttft_s", "tpot_s", "e2e_s"):
        assert column in printed
    assert re.search(r"count\s+200(\.0+)?\s+200", printed), printed


API = ["Experiment", "EngineConfig", "HardwareConfig", "TraceConfig", "StepOverheads",
       "load_experiment", "run", "validate", "ReplayResult", "generate_trace", "itls_frame",
       "Trace", "TraceFrame", "load_trace", "LlmsimError", "ConfigError", "TraceFormatError"]


def test_import_llmsim_surface():
    for name in API:
        assert name in llmsim.__all__, name
        assert getattr(llmsim, name) is not None, name
    from llmsim.experiment import Experiment
    from llmsim.replay import ReplayResult

    assert llmsim.Experiment is Experiment and llmsim.ReplayResult is ReplayResult
    assert set(dir(llmsim)) >= set(API)
    with pytest.raises(AttributeError):
        _ = llmsim.no_such_name  # type: ignore[attr-defined]
    assert (ROOT / "llmsim" / "py.typed").exists()


def test_validate_stays_the_function_after_the_subpackage_loads():
    import llmsim.validate.compare
    from llmsim.validate import compare

    assert callable(llmsim.validate) and llmsim.validate.__module__ == "llmsim"
    assert callable(compare)


def test_import_llmsim_is_lazy():
    code = ("import sys, llmsim; heavy = [m for m in ('pandas', 'pydantic', 'llmsim.experiment') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
