"""Operator profiles: bundle CSVs, meta.yaml, Vidur tables and ``.pb`` files either load into a
profile the cost model can use or raise a ProfileError naming file, line and field."""

from __future__ import annotations

import functools
import math
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from readers_factories import (
    bundle_files,
    load_or_error,
    moe_bundle_files,
    mutated_bytes,
    mutated_cells,
    vidur_files,
    write_bundle,
    write_dir,
)

from llmsim.cli.main import main
from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.costmodel.profile_model import ProfileCostModel
from llmsim.errors import LlmsimError, ProfileError
from llmsim.profile import load_profile, read_profile, validate_profile, write_profile
from llmsim.profile.importers.llmservingsim import import_bundle
from llmsim.profile.importers.vidur import import_vidur
from llmsim.v1 import profile_pb2 as pb

FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _import_error(tmp_path, files: dict) -> ProfileError:
    bundle = write_bundle(tmp_path, files)
    with pytest.raises(ProfileError) as exc:
        import_bundle(bundle)
    return exc.value


def test_tiny_bundles_are_valid(tmp_path):
    profile = import_bundle(write_bundle(tmp_path / "dense"))
    validate_profile(profile)
    assert len(profile.tp[0].skew.n) == 3 and len(profile.tp[0].skew_fit.pc) == 2
    ProfileCostModel(profile).step_cost(StepBatch(decode_context_lens=(16, 32)))
    moe = import_bundle(write_bundle(tmp_path / "moe", moe=True))
    cost = ProfileCostModel(moe).step_cost(StepBatch(decode_context_lens=(16, 32)))
    assert cost.breakdown_ns["moe"] > 0


# --------------------------------------------------------------------------- bundle CSVs


def test_non_utf8_csv_names_file_and_line(tmp_path):
    dense = bundle_files()["tp1/dense.csv"].encode().replace(b"qkv_proj,2", b"qkv_pr\xffoj,2")
    err = _import_error(tmp_path, {"tp1/dense.csv": dense})
    assert err.path.endswith("tp1/dense.csv") and err.line == 6 and "UTF-8" in err.reason


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-inf", "-1", "1e999", "x", ""])
def test_bad_latency_cell(tmp_path, cell):
    text = bundle_files()["tp1/attention.csv"].replace("0,0,1,16,1.6", f"0,0,1,16,{cell}")
    err = _import_error(tmp_path, {"tp1/attention.csv": text})
    assert err.line == 2 and err.field == "time_us"


@pytest.mark.parametrize("cell", ["-1", "1.5", "1e30", "99999999999999999999", "1e999999999"])
def test_bad_axis_cell(tmp_path, cell):
    text = bundle_files()["tp1/dense.csv"].replace("layernorm,2,", f"layernorm,{cell},")
    t0 = time.perf_counter()
    err = _import_error(tmp_path, {"tp1/dense.csv": text})
    assert time.perf_counter() - t0 < 5  # 1e999999999 must not be expanded to an integer
    assert err.line == 3 and err.field == "tokens"


def test_contradicting_duplicate_row_is_refused(tmp_path):
    text = bundle_files()["tp1/dense.csv"] + "qkv_proj,2,9.5\n"
    err = _import_error(tmp_path, {"tp1/dense.csv": text})
    n = text.count("\n")
    assert err.line == n and err.field == "time_us" and "line 6" in err.reason
    att = bundle_files()["tp1/attention.csv"] + "16,0,0,0,99\n"
    err = _import_error(tmp_path / "att", {"tp1/attention.csv": att})
    assert err.field == "time_us" and err.path.endswith("attention.csv")
    fit = bundle_files()["tp1/skew_fit.csv"] + "0,n<=2,sr<=50%,kvB<=1k,kp=0,0.5,4\n"
    err = _import_error(tmp_path / "fit", {"tp1/skew_fit.csv": fit})
    assert err.field == "alpha" and err.line == 4


def test_identical_duplicate_row_is_dropped(tmp_path):
    clean = import_bundle(write_bundle(tmp_path / "a"))
    text = bundle_files()["tp1/dense.csv"] + "qkv_proj,2,3.5\n"
    dup = import_bundle(write_bundle(tmp_path / "b", {"tp1/dense.csv": text}))
    assert [list(t.mean_ns) for t in dup.tp[0].ops] == [list(t.mean_ns) for t in clean.tp[0].ops]


@pytest.mark.parametrize(("content", "match"), [
    (b"layer,tokens,time_us\nqkv_proj,1,\x002\n", "NUL"),
    (b'layer,tokens,time_us\nqkv_proj,1,"' + b"9" * 200_000 + b'"\n', "malformed CSV"),
    (b"layer,tokens,time_us,tokens\nqkv_proj,1,2,1\n", "twice"),
    (b"layer,tokens,time_us\nqkv_proj,1\n", "cells"),
    (b"", "empty"),
])
def test_malformed_csv(tmp_path, content, match):
    err = _import_error(tmp_path, {"tp1/dense.csv": content})
    assert match in err.reason and err.path.endswith("dense.csv")


def test_skew_fit_label_must_be_a_meta_label(tmp_path):
    fit = bundle_files()["tp1/skew_fit.csv"].replace("kvB>1k", "kvB>2k")
    err = _import_error(tmp_path, {"tp1/skew_fit.csv": fit})
    assert err.field == "kv_big_label" and err.line == 3


def test_skew_fit_labels_readable_without_meta_buckets(tmp_path):
    # RTX4090 layout: no bucket edges in meta.yaml, the cost model parses the labels
    ok = import_bundle(write_bundle(tmp_path / "ok", {"meta.yaml": _meta_without_fit()}))
    ProfileCostModel(ok, skew=True).step_cost(StepBatch(decode_context_lens=(16, 40)))
    fit = bundle_files()["tp1/skew_fit.csv"].replace("kvB>1k", "big")
    err = _import_error(tmp_path / "bad", {"tp1/skew_fit.csv": fit,
                                           "meta.yaml": _meta_without_fit()})
    assert err.field == "tp1/skew_fit.kv_big_label[1]" and "big" in err.reason


# --------------------------------------------------------------------------- meta.yaml


@pytest.mark.parametrize(("old", "new", "field"), [
    ("tp_degrees: [1]", "tp_degrees: [true]", "tp_degrees"),
    ("tp_degrees: [1]", "tp_degrees: [1, 1]", "tp_degrees"),
    ("tp_degrees: [1]", "tp_degrees: '1'", "tp_degrees"),
    ("tp_degrees: [1]", "tp_degrees: []", "tp_degrees"),
    ("model: org/tiny", "model: 5", "model"),
    ("model: org/tiny", "model: ../../etc/tiny", "model"),
    ("model: org/tiny", "model: [org, tiny]", "model"),
    ("measurement_iterations: 3", "measurement_iterations: many", "measurement_iterations"),
    ("measurement_iterations: 3", "measurement_iterations: -3", "measurement_iterations"),
    ("gpu: Test GPU", "gpu: {name: x}", "gpu"),
    ("gpu: Test GPU", "engine_effective: [1]", "engine_effective"),
    ("gpu: Test GPU", "engine_effective: {enforce_eager: 'no'}",
     "engine_effective.enforce_eager"),
    ("skew_fit:\n", "skew_fit: 3\nold_fit:\n", "skew_fit"),
    ("alpha_default: 0.05", "alpha_default: .nan", "skew_fit.per_tp.1.alpha_default"),
    ("alpha_default: 0.05", "alpha_default: high", "skew_fit.per_tp.1.alpha_default"),
    ("n_samples: 4", "n_samples: -4", "skew_fit.per_tp.1.n_samples"),
    ("rel_err_p50: 0.01", "rel_err_p50: .inf", "skew_fit.per_tp.1.rel_err_p50"),
    ("n_bins: [0, 2, 1000000]", "n_bins: [0, 2, 1]", "skew_fit.bucket_axes.n_bins"),
    ("n_bins: [0, 2, 1000000]", "n_bins: [0, x, 1]", "skew_fit.bucket_axes.n_bins"),
    ("n_bins: [0, 2, 1000000]", "n_bins: 5", "skew_fit.bucket_axes.n_bins"),
])
def test_meta_yaml_fields_typed(tmp_path, old, new, field):
    meta = bundle_files()["meta.yaml"]
    assert old in meta
    err = _import_error(tmp_path, {"meta.yaml": meta.replace(old, new, 1)})
    assert err.path.endswith("meta.yaml") and err.field == field


def test_meta_yaml_bytes(tmp_path):
    meta = bundle_files()["meta.yaml"].encode()
    err = _import_error(tmp_path, {"meta.yaml": meta.replace(b"Test GPU", b"Test \xffGPU")})
    assert err.path.endswith("meta.yaml") and err.line == 3 and "UTF-8" in err.reason
    err = _import_error(tmp_path / "deep", {"meta.yaml": meta + b"x: " + b"[" * 5000 + b"\n"})
    assert err.path.endswith("meta.yaml")


# --------------------------------------------------------------------------- .pb files


def _tiny_pb(tmp_path) -> pb.Profile:
    return import_bundle(write_bundle(tmp_path / "src"))


@pytest.mark.parametrize(("value", "reason"), [(math.nan, "NaN"), (math.inf, "finite"),
                                               (-math.inf, "finite"), (-1.0, "negative")])
@pytest.mark.parametrize("column", ["mean_ns", "energy_j", "avg_power_w", "std_ns"])
def test_pb_refuses_bad_latencies_and_energies(tmp_path, value, reason, column):
    profile = _tiny_pb(tmp_path)
    table = profile.tp[0].ops[1]
    n = len(table.axes[0].values)
    if column != "mean_ns":
        getattr(table, column).extend([1.0] * n)
    getattr(table, column)[2] = value
    path = write_profile(profile, tmp_path / "p.pb")
    with pytest.raises(ProfileError) as exc:
        read_profile(path)
    assert exc.value.path == str(path) and reason in exc.value.reason
    assert exc.value.field == f"tp1/{table.op}.{column}[2]"


def test_pb_structure(tmp_path):
    def refused(mutate, field_part: str) -> None:
        profile = _tiny_pb(tmp_path)
        mutate(profile)
        with pytest.raises(ProfileError) as exc:
            validate_profile(profile, "p.pb")
        assert field_part in exc.value.field, exc.value

    refused(lambda p: p.tp[0].ops[0].mean_ns.append(1.0), "layernorm.mean_ns")
    refused(lambda p: p.tp[0].ops[-1].axes[1].values.append(8), "attention.axes.kv_prefill")
    refused(lambda p: p.tp[0].ops[0].axes[0].values.__setitem__(1, 1), "layernorm.axes[1]")
    refused(lambda p: p.tp[0].ops[0].axes[0].values.__setitem__(1, -2), "tokens[1]")
    refused(lambda p: p.tp[0].ops[0].ClearField("mean_ns"), "layernorm.mean_ns")
    refused(lambda p: p.tp.add(tp_degree=1), "tp1.tp_degree")
    refused(lambda p: p.tp[0].skew.t_mean_ns.__setitem__(0, -5.0), "skew.t_mean_ns[0]")
    refused(lambda p: p.tp[0].skew.alpha.append(0.1), "skew.alpha")
    refused(lambda p: p.tp[0].skew_fit.bucket_alpha.__setitem__(0, math.inf), "bucket_alpha")
    refused(lambda p: p.tp[0].skew_fit.n_edges.__setitem__(1, 5e6), "n_edges")
    refused(lambda p: setattr(p.model, "hidden_size", 0), "model.hidden_size")
    refused(lambda p: setattr(p.model, "num_key_value_heads", 3), "model.num_key_value_heads")
    refused(lambda p: setattr(p, "idle_power_w", math.nan), "idle_power_w")


def test_pb_blank_skew_times_stay_nan(tmp_path):
    profile = read_profile(write_profile(_tiny_pb(tmp_path), tmp_path / "p.pb"))
    assert math.isnan(profile.tp[0].skew.t_mean_ns[2])


def test_pb_file_errors(tmp_path):
    garbage = tmp_path / "g.pb"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(ProfileError, match="not a llmsim.v1.Profile"):
        read_profile(garbage)
    with pytest.raises(ProfileError, match="regular file|directory"):
        read_profile(tmp_path)
    with pytest.raises(ProfileError, match="not an LLMServingSim bundle"):
        load_profile(tmp_path)


# --------------------------------------------------------------------------- Vidur


def test_vidur_repeated_measurements_are_kept(tmp_path):
    directory = write_dir(tmp_path / "hw", vidur_files())
    table = import_vidur(directory).collectives[0]
    sizes = list(next(a for a in table.axes if a.name == "bytes").values)
    assert sizes == [1024, 4096, 4096, 16384]  # both 4096 rows, as measured
    validate_profile(import_vidur(directory))


@pytest.mark.parametrize(("old", "new", "field"), [
    (",0,2,1024,", ",0,2,-1024,", "size"),
    ("0.011024", "nan", "time_stats.all_reduce.mean"),
    ("0.011024", "-0.5", "time_stats.all_reduce.mean"),
])
def test_vidur_bad_cells(tmp_path, old, new, field):
    files = vidur_files()
    assert old in files["all_reduce.csv"]
    files["all_reduce.csv"] = files["all_reduce.csv"].replace(old, new, 1)
    with pytest.raises(ProfileError) as exc:
        import_vidur(write_dir(tmp_path / "hw", files))
    assert exc.value.line == 2 and exc.value.field == field


def test_vidur_non_utf8(tmp_path):
    files = {"all_reduce.csv": vidur_files()["all_reduce.csv"].encode().replace(b"all_reduce,2",
                                                                             b"all_r\xe9duce,2")}
    with pytest.raises(ProfileError, match="UTF-8") as exc:
        import_vidur(write_dir(tmp_path / "hw", files))
    assert exc.value.line == 2


# --------------------------------------------------------------------------- real data


def test_real_bundles_and_vidur_tables_validate(data_path):
    root = data_path("llmservingsim/profiles")
    bundles = sorted(p.parent for p in root.rglob("meta.yaml"))
    assert len(bundles) == 4
    for bundle in bundles:
        validate_profile(import_bundle(bundle), bundle)
    for hw in sorted(data_path("vidur/network").iterdir()):
        profile = import_vidur(hw)
        validate_profile(profile, hw)
        for table in profile.collectives:  # repeated rows kept: one point per CSV row
            rows = (hw / table.attributes["source_file"]).read_text().count("\n") - 1
            assert len(table.mean_ns) == rows


# --------------------------------------------------------------------------- CLI paths


def test_profile_commands_resolve_data_dir_paths(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_bundle(data / "llmservingsim")
    write_dir(data / "vidur" / "network" / "hw", vidur_files())
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("LLMSIM_DATA_DIR", str(data))
    rel = "llmservingsim/profiles/HW/org/tiny/bf16"
    assert main(["profile", "show", rel]) == 0
    assert "Test GPU" in capsys.readouterr().out
    assert main(["profile", "import", "llmservingsim", rel, "-o", "b.pb"]) == 0
    assert main(["profile", "show", "b.pb"]) == 0  # an existing local path wins
    assert main(["profile", "import", "vidur", "vidur/network/hw", "-o", "v.pb"]) == 0
    assert read_profile(elsewhere / "v.pb").collectives[0].op == "all_reduce"
    assert main(["profile", "compare", rel, "b.pb"]) == 0  # profiler.store -> load_profile
    capsys.readouterr()
    assert main(["profile", "show", "llmservingsim/profiles/nope"]) == 2
    assert "nope" in capsys.readouterr().err


# --------------------------------------------------------------------------- fuzzing


def _usable(profile: pb.Profile) -> None:
    """'Loaded correctly': the profile validates and the cost model, with and without the
    skew fit, prices a mixed step."""
    validate_profile(profile)
    for skew in (None, True, False):
        try:
            model = ProfileCostModel(profile, skew=skew)
            model.step_cost(StepBatch(decode_context_lens=(16, 40),
                                      prefills=(PrefillChunk(num_new_tokens=8),)))
        except LlmsimError:
            pass  # e.g. an operator the fuzz removed: a located refusal, not a crash


def _meta_without_fit() -> str:
    """meta.yaml with no skew_fit section: the cost model reads bucket edges from labels."""
    return bundle_files()["meta.yaml"].split("skew_fit:")[0]


_BUNDLE_FILES = sorted(moe_bundle_files())  # moe.csv is ignored by the dense variant


@FUZZ
@given(rel=st.sampled_from(_BUNDLE_FILES), moe=st.booleans(), data=st.data())
def test_fuzz_bundle_file_bytes(tmp_path_factory, rel, moe, data):
    base = moe_bundle_files() if moe else bundle_files()
    mutated = data.draw(mutated_bytes(base.get(rel, base["tp1/dense.csv"]).encode()))
    bundle = write_bundle(tmp_path_factory.mktemp("b"), {rel: mutated}, moe=moe)
    profile = load_or_error(lambda: import_bundle(bundle))
    if profile is not None:
        _usable(profile)


@FUZZ
@given(rel=st.sampled_from([r for r in _BUNDLE_FILES if r.endswith(".csv")]),
       fit_in_meta=st.booleans(), moe=st.booleans(), data=st.data())
def test_fuzz_bundle_cells(tmp_path_factory, rel, fit_in_meta, moe, data):
    base = moe_bundle_files() if moe else bundle_files()
    mutated = data.draw(mutated_cells(base.get(rel, base["tp1/dense.csv"])))
    files = {rel: mutated} if fit_in_meta else {rel: mutated, "meta.yaml": _meta_without_fit()}
    bundle = write_bundle(tmp_path_factory.mktemp("c"), files, moe=moe)
    profile = load_or_error(lambda: import_bundle(bundle))
    if profile is not None:
        _usable(profile)


@FUZZ
@given(data=st.data())
def test_fuzz_vidur(tmp_path_factory, data):
    text = vidur_files()["all_reduce.csv"]
    mutated = data.draw(st.one_of(mutated_cells(text), mutated_bytes(text.encode())))
    directory = write_dir(tmp_path_factory.mktemp("v"), {"all_reduce.csv": mutated})
    profile = load_or_error(lambda: import_vidur(directory))
    if profile is not None:
        validate_profile(profile)


@functools.cache
def _tiny_blob() -> bytes:
    """The serialized tiny profile (same bytes in every example: the source path is fixed)."""
    with tempfile.TemporaryDirectory() as tmp:
        profile = import_bundle(write_bundle(Path(tmp)))
    profile.provenance.source.path = "bundle"
    return profile.SerializeToString(deterministic=True)


@FUZZ
@given(data=st.data())
def test_fuzz_pb_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("pb") / "m.pb"
    path.write_bytes(data.draw(mutated_bytes(_tiny_blob())))
    profile = load_or_error(lambda: read_profile(path))
    if profile is not None:
        _usable(profile)


_COLUMNS = ("mean_ns", "median_ns", "energy_j", "avg_power_w", "std_ns")


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 11), st.sampled_from(_COLUMNS),
                                st.integers(0, 40),
                                st.floats(allow_nan=True, allow_infinity=True)),
                      min_size=1, max_size=4))
def test_fuzz_pb_values(tmp_path_factory, edits):
    root = tmp_path_factory.mktemp("pv")
    profile = pb.Profile.FromString(_tiny_blob())
    for t, column, i, value in edits:
        table = profile.tp[0].ops[t % len(profile.tp[0].ops)]
        col = getattr(table, column)
        n = len(table.axes[0].values)
        if len(col) == 0:
            col.extend([1.0] * n)
        col[i % n] = value
    path = write_profile(profile, root / "p.pb")
    bad = any(not (math.isfinite(v) and v >= 0) for table in profile.tp[0].ops
              for column in _COLUMNS for v in getattr(table, column))
    loaded = load_or_error(lambda: read_profile(path))
    assert (loaded is None) == bad  # refused exactly when a value is NaN, infinite or < 0
    if loaded is not None:
        _usable(loaded)


@pytest.mark.parametrize(("rel", "old", "new"), [
    ("tp1/per_sequence.csv", "lm_head,1,10", "lm_head,-0,10"),
    ("tp1/dense.csv", "qkv_proj,1,2.5", "qkv_proj,0,2.5"),
])
def test_zero_row_count_is_refused(tmp_path, rel, old, new):
    # Found by test_fuzz_bundle_cells: a per-sequence point at 0 sequences imported and the
    # cost model then divided by it (ZeroDivisionError) when extrapolating.
    files = bundle_files()
    assert old in files[rel]
    files[rel] = files[rel].replace(old, new, 1)
    exc = _import_error(tmp_path, files)
    assert "must be >= 1" in str(exc)
