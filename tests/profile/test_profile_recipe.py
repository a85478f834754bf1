"""Profile recipes (llmsim/profile/recipe.py): a YAML recipe loads as the profile it names,
built once from AIConfigurator's database and then served from the on-disk cache; bad recipes
are refused with file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import llmsim.profile.importers.aiconfigurator as aic
import llmsim.profile.io as pio
from llmsim.errors import ProfileError
from llmsim.profile.importers.aiconfigurator import import_aiconfigurator
from llmsim.profile.io import load_profile

MODEL = "llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json"
SYSTEM_DIR = "aiconfigurator/systems/data/h100_sxm"


def _recipe(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "r.aic.yaml"
    p.write_text(textwrap.dedent(body))
    return p


@pytest.fixture
def cache_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv(pio.NO_CACHE_ENV, raising=False)
    return home


def test_recipe_equals_import_then_comes_from_the_cache(tmp_path, data_path, cache_home,
                                                         monkeypatch):
    data_path(MODEL)
    data_path(SYSTEM_DIR)
    p = _recipe(tmp_path, f"""\
        source: aiconfigurator
        database: aiconfigurator
        system: h100_sxm
        model: {MODEL}
        tp: [1, 2]
        """)
    got = load_profile(p)
    want = import_aiconfigurator(data_path("aiconfigurator"), model_config=data_path(MODEL),
                                 tp_degrees=(1, 2), system="h100_sxm")
    assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)
    assert [t.tp_degree for t in got.tp] == [1, 2]
    cached = list((cache_home / "llmsim" / "profiles").glob("*.pb"))
    assert len(cached) == 1
    pio._CACHE.clear()  # a new process: only the on-disk cache is left

    def boom(*args, **kwargs):
        raise AssertionError("imported again instead of read from the cache")

    monkeypatch.setattr(aic, "import_aiconfigurator", boom)
    again = load_profile(p)
    assert again.SerializeToString(deterministic=True) == got.SerializeToString(deterministic=True)
    # an edited recipe is a new key: rebuilt, not served stale
    p.write_text(p.read_text().replace("tp: [1, 2]", "tp: [2]"))
    pio._CACHE.clear()
    with pytest.raises(AssertionError, match="imported again"):
        load_profile(p)


@pytest.mark.parametrize("body,field,words", [
    ("source: aiconfigurator\ndatabase: x\nsystem: s\nmodel: m\ntp: 1\ncolour: red\n",
     "colour", "unknown key"),
    ("source: vidur\ndatabase: x\nsystem: s\nmodel: m\ntp: 1\n", "source", "unknown source"),
    ("source: aiconfigurator\ndatabase: x\nsystem: s\nmodel: m\ntp: [2, 0]\n", "tp",
     "positive integer"),
    ("source: aiconfigurator\ndatabase: x\nsystem: s\nmodel: m\n", "tp", "required"),
    ("source: aiconfigurator\ndatabase: no/such/dir\nsystem: s\nmodel: m\ntp: 1\n", "database",
     "not found"),
])
def test_bad_recipe_names_file_line_and_field(tmp_path, body, field, words):
    p = _recipe(tmp_path, body)
    with pytest.raises(ProfileError) as err:
        load_profile(p)
    e = err.value
    assert str(e.path) == str(p) and e.field == field, e
    assert words in str(e)
    lines = p.read_text().splitlines()
    at = next((i for i, line in enumerate(lines, 1) if line.startswith(f"{field}:")), 1)
    assert e.line == at
