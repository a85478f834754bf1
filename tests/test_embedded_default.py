"""The embedded default: a fresh clone validates the main example with no data directory.

Checks provenance (every embedded file equals the published original by the catalog's
SHA-256), the search order (a data directory always wins), that a replay from the embedded
copy is byte-identical to one from the full dataset, and the data-pull hints.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from llmsim.cli.main import main
from llmsim.data.catalog import load_catalog
from llmsim.data.paths import EMBEDDED_DIR, dataset_path, embedded_index, embedded_path
from llmsim.errors import DataNotFoundError
from llmsim.experiment import load_experiment
from llmsim.profile.io import load_profile
from llmsim.replay import run
from tests.conftest import require_data

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "rtxpro6000-llama-3.1-8b.yaml"
BUNDLE = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No data directory and an empty user cache: only the embedded default is left."""
    monkeypatch.setenv("LLMSIM_DATA_DIR", str(tmp_path / "empty-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    return tmp_path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_embedded_files_equal_the_published_originals():
    catalog = {f.path: f.sha256 for ds in load_catalog().datasets.values() for f in ds.files}
    checked = 0
    for rel, target in embedded_index().items():
        assert target.exists(), target
        if target.is_dir():
            files = sorted(p for p in target.rglob("*") if p.is_file())
            for f in files:
                original = f"{rel}/{f.relative_to(target).as_posix()}"
                assert catalog[original] == _sha256(f.read_bytes()), original
                checked += 1
        elif target.name.endswith(".gz"):
            assert catalog[rel] == _sha256(gzip.decompress(target.read_bytes())), rel
            checked += 1
        elif target.suffix == ".json":
            assert catalog[rel] == _sha256(target.read_bytes()), rel
            checked += 1
    assert checked >= 7  # model config, workload, 5 files of the measured run
    assert (EMBEDDED_DIR / "LICENSE").read_text().startswith("The files under this directory")
    total = sum(p.stat().st_size for p in EMBEDDED_DIR.rglob("*") if p.is_file())
    assert total < 4 * 2**20, f"the embedded default grew to {total} bytes"


def test_embedded_is_searched_last(no_data, data_path):
    # No data dir: the embedded copy stands in, also for a file inside an embedded directory.
    workload = "llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"
    assert dataset_path(workload) == embedded_path(workload)
    meta = dataset_path("llmservingsim/measured/RTXPRO6000/Llama-3.1-8B/vllm/meta.json")
    assert meta.is_relative_to(EMBEDDED_DIR) and meta.is_file()
    # A data dir that holds the path wins.
    (no_data / "empty-data" / "llmservingsim" / "workloads").mkdir(parents=True)
    own = no_data / "empty-data" / workload
    own.write_text("{}\n")
    assert dataset_path(workload) == own


def test_profile_equals_a_fresh_import_of_the_bundle():
    bundle = require_data(BUNDLE)
    if bundle.is_relative_to(EMBEDDED_DIR):
        pytest.skip("the real bundle is not available (only the embedded copy)")
    fresh = load_profile(bundle)
    embedded = load_profile(embedded_path(BUNDLE))
    tp1 = [t for t in fresh.tp if t.tp_degree == 1]
    assert [t.tp_degree for t in embedded.tp] == [1]
    assert embedded.tp[0] == tp1[0]
    assert embedded.model == fresh.model


def test_replay_from_embedded_is_identical_to_the_dataset(monkeypatch, tmp_path):
    real_dir = require_data(BUNDLE)  # skips (or fails in CI) without the real data
    if real_dir.is_relative_to(EMBEDDED_DIR):
        pytest.skip("the real dataset is not available")
    full = run(load_experiment(EXAMPLE))
    monkeypatch.setenv("LLMSIM_DATA_DIR", str(tmp_path / "empty-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    assert dataset_path(BUNDLE).is_relative_to(EMBEDDED_DIR)
    embedded = run(load_experiment(EXAMPLE))
    assert embedded.requests.equals(full.requests)
    assert embedded.timeseries.equals(full.timeseries)


def test_main_job_runs_without_data(no_data, capsys):
    out = no_data / "report"
    code = main(["validate", str(EXAMPLE), "--measured",
                 "llmservingsim/measured/RTXPRO6000/Llama-3.1-8B", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert (out / "report.md").is_file() and (out / "report.json").is_file()
    assert "TTFT" in printed and "TPOT" in printed


@pytest.mark.parametrize(("path", "dataset", "needle"), [
    ("azure-conv-2023", "azure-llm-2023", "llmsim data pull azure-llm-2023"),
    ("mooncake/conversation_trace.jsonl", "mooncake", "llmsim data pull mooncake"),
    ("llmservingsim/workloads/no-such.jsonl", "llmservingsim", "has no file"),
    ("nothing-here/x.csv", "nothing-here", "no dataset of llmsim's catalog"),
])
def test_missing_data_hint_names_the_catalog_entry(no_data, path, dataset, needle):
    with pytest.raises(DataNotFoundError) as exc:
        dataset_path(path)
    assert exc.value.dataset == dataset
    assert needle in str(exc.value)
