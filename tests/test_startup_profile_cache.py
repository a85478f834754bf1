"""The on-disk parsed-bundle cache of :func:`llmsim.profile.io.load_profile`.

A cached load must equal a fresh import; any change to what the import reads (a CSV, the
model config, the bundle's path) must miss the cache; a damaged cache file is rebuilt; an
unwritable cache directory and ``LLMSIM_NO_CACHE=1`` only turn the speed-up off.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
from pathlib import Path

import pytest

import llmsim.profile.importers.llmservingsim as lss
from llmsim.profile import io as pio
from llmsim.profile.importers.llmservingsim import import_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent / "reliability"))
from readers_factories import write_bundle  # noqa: E402

REAL_BUNDLE = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch) -> Path:
    """A private XDG cache home, the cache switched on, and no in-process results."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv(pio.NO_CACHE_ENV, raising=False)
    pio._CACHE.clear()
    yield home
    pio._CACHE.clear()


def cache_files() -> list[Path]:
    d = pio.profile_cache_dir()
    return sorted(d.glob("*.pb")) if d.is_dir() else []


def fresh_load(bundle: Path):
    """``load_profile`` in a new process's state (no in-process results)."""
    pio._CACHE.clear()
    return pio.load_profile(bundle)


def forbid_import(monkeypatch) -> None:
    """Make any CSV import fail, so a load that succeeds came from the disk cache."""
    def boom(*_a, **_k):
        raise AssertionError("bundle was re-imported instead of read from the cache")

    monkeypatch.setattr(lss, "import_bundle", boom)


def test_cache_dir_is_beside_the_data_cache(cache_home):
    assert pio.profile_cache_dir() == cache_home / "llmsim" / "profiles"


def test_cached_load_equals_fresh_import(tmp_path, monkeypatch):
    bundle = write_bundle(tmp_path)
    first = fresh_load(bundle)
    [cached] = cache_files()
    assert cached.stem == pio.bundle_cache_key(bundle)
    assert cached.read_bytes().startswith(pio.CACHE_MAGIC)
    expected = import_bundle(bundle)
    forbid_import(monkeypatch)
    second = fresh_load(bundle)
    assert second == expected == first
    assert second.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True)


def test_real_bundle_cached_equals_fresh_import(data_path, monkeypatch):
    bundle = data_path(REAL_BUNDLE)
    fresh_load(bundle)
    expected = import_bundle(bundle)
    forbid_import(monkeypatch)
    assert fresh_load(bundle) == expected
    assert fresh_load(bundle).provenance.source.path == str(bundle)


def test_changed_csv_invalidates(tmp_path):
    bundle = write_bundle(tmp_path)
    before = fresh_load(bundle)
    key_before = pio.bundle_cache_key(bundle)
    dense = bundle / "tp1" / "dense.csv"
    dense.write_text(dense.read_text().replace("layernorm,1,2.5", "layernorm,1,7.5"))
    assert pio.bundle_cache_key(bundle) != key_before
    # no in-process clearing: the in-process cache is keyed by content too
    after = pio.load_profile(bundle)
    assert after == import_bundle(bundle)
    assert after != before
    assert after.tp[0].ops[0].mean_ns[0] == 7500.0
    assert len(cache_files()) == 2


def test_changed_model_config_and_bundle_path_invalidate(tmp_path):
    bundle = write_bundle(tmp_path / "a")
    key = pio.bundle_cache_key(bundle)
    cfg = tmp_path / "a" / "configs" / "model" / "org" / "tiny.json"
    cfg.write_text(cfg.read_text().replace('"vocab_size": 32', '"vocab_size": 48'))
    assert pio.bundle_cache_key(bundle) != key
    assert fresh_load(bundle).model.vocab_size == 48
    other = write_bundle(tmp_path / "b")  # same bytes, another place
    assert pio.bundle_cache_key(other) != pio.bundle_cache_key(write_bundle(tmp_path / "c"))
    assert fresh_load(other).provenance.source.path == str(other)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty", "no-digest"])
def test_corrupt_cache_file_is_rebuilt(tmp_path, damage, caplog):
    bundle = write_bundle(tmp_path)
    expected = fresh_load(bundle)
    [cached] = cache_files()
    good = cached.read_bytes()
    bad = {
        "garbage": b"not a cache file at all",
        "truncated": good[: len(good) // 2],
        "flipped": good[:-1] + bytes([good[-1] ^ 0x01]),
        "empty": b"",
        "no-digest": pio.CACHE_MAGIC + good[len(pio.CACHE_MAGIC) + 32:],
    }[damage]
    cached.write_bytes(bad)
    caplog.set_level("WARNING", logger="llmsim.profile.io")
    assert fresh_load(bundle) == expected
    assert "corrupt" in caplog.text
    assert cached.read_bytes() == good  # rebuilt in place


def test_hash_valid_but_invalid_profile_is_refused_and_rebuilt(tmp_path, caplog):
    """A payload whose digest matches but which validate_profile refuses is not served."""
    bundle = write_bundle(tmp_path)
    expected = fresh_load(bundle)
    [cached] = cache_files()
    poisoned = import_bundle(bundle)
    poisoned.tp[0].ops[0].mean_ns[0] = math.nan
    payload = poisoned.SerializeToString(deterministic=True)
    cached.write_bytes(pio.CACHE_MAGIC + hashlib.sha256(payload).digest() + payload)
    caplog.set_level("WARNING", logger="llmsim.profile.io")
    got = fresh_load(bundle)
    assert got == expected
    assert not math.isnan(got.tp[0].ops[0].mean_ns[0])
    assert "refused" in caplog.text


def test_unwritable_cache_dir_still_loads(tmp_path, monkeypatch):
    bundle = write_bundle(tmp_path)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir under a file fails, even as root
    assert fresh_load(bundle) == import_bundle(bundle)
    assert blocker.is_file()


def test_read_only_cache_dir_serves_existing_entries(tmp_path, monkeypatch):
    bundle = write_bundle(tmp_path)
    expected = fresh_load(bundle)
    cache_dir = pio.profile_cache_dir()

    def no_write(*_a, **_k):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(pio, "atomic_write_bytes", no_write)
    forbid_import(monkeypatch)
    assert fresh_load(bundle) == expected  # read works without writing
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir.parent.parent))
    monkeypatch.setattr(pio, "atomic_write_bytes", no_write)
    shutil.rmtree(cache_dir)
    assert fresh_load(bundle) == expected  # a miss that cannot be stored still loads
    assert not cache_dir.exists()


def test_no_cache_env_neither_reads_nor_writes(tmp_path, monkeypatch):
    bundle = write_bundle(tmp_path)
    monkeypatch.setenv(pio.NO_CACHE_ENV, "1")
    assert fresh_load(bundle) == import_bundle(bundle)
    assert cache_files() == []
    monkeypatch.setenv(pio.NO_CACHE_ENV, "0")  # "0" means on
    fresh_load(bundle)
    [cached] = cache_files()
    cached.write_bytes(b"corrupt")
    monkeypatch.setenv(pio.NO_CACHE_ENV, "1")
    assert fresh_load(bundle) == import_bundle(bundle)
    assert cached.read_bytes() == b"corrupt"  # not even looked at


def test_bad_bundle_is_never_cached(tmp_path):
    bundle = write_bundle(tmp_path, {"tp1/dense.csv": "layer,tokens,time_us\nqkv_proj,1,nan\n"})
    with pytest.raises(pio.ProfileError):
        fresh_load(bundle)
    assert cache_files() == []


def test_cache_keeps_at_most_max_files_newest_first(tmp_path):
    cache_dir = pio.profile_cache_dir()
    cache_dir.mkdir(parents=True)
    old = []
    for i in range(pio.CACHE_MAX_FILES + 5):
        f = cache_dir / f"{i:064x}.pb"
        f.write_bytes(b"stale")
        ns = (1_000_000 + i) * 10**9
        os.utime(f, ns=(ns, ns))
        old.append(f)
    bundle = write_bundle(tmp_path)
    fresh_load(bundle)
    left = cache_files()
    assert len(left) == pio.CACHE_MAX_FILES
    assert cache_dir / f"{pio.bundle_cache_key(bundle)}.pb" in left
    assert set(left) - {cache_dir / f"{pio.bundle_cache_key(bundle)}.pb"} == set(
        old[-(pio.CACHE_MAX_FILES - 1):])  # the newest stale ones survive


def test_cache_read_refreshes_the_entry_so_eviction_is_least_recently_used(tmp_path):
    cache_dir = pio.profile_cache_dir()
    bundle = write_bundle(tmp_path)
    fresh_load(bundle)  # written now
    mine = cache_dir / f"{pio.bundle_cache_key(bundle)}.pb"
    ns = 1_000_000 * 10**9  # make it the oldest entry
    os.utime(mine, ns=(ns, ns))
    fresh_load(bundle)  # read from the cache: refreshed
    assert mine.stat().st_mtime_ns > ns
    for i in range(pio.CACHE_MAX_FILES - 1):  # fill the cache with entries written before
        f = cache_dir / f"{i:064x}.pb"
        f.write_bytes(b"stale")
        t = (1_000_100 + i) * 10**9
        os.utime(f, ns=(t, t))
    other = write_bundle(tmp_path / "other")  # another place: another key
    fresh_load(other)  # a write evicts the least recently used: the oldest stale one
    left = cache_files()
    assert mine in left and len(left) == pio.CACHE_MAX_FILES
    assert cache_dir / f"{0:064x}.pb" not in left
