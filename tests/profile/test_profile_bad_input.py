"""Bad input names the file, line and field, and leaves nothing half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmsim.cli.main import main
from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel.profile_model import ProfileCostModel
from llmsim.errors import ConfigError, ProfileError, ProfileRangeError
from llmsim.profile import SCHEMA_VERSION, load_profile, read_profile, write_profile
from llmsim.profile.importers.llmservingsim import export_bundle, import_bundle

TP2 = ParallelConfig(tensor_parallel_size=2)

MODEL_CFG = {
    "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16,
    "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 2,
    "vocab_size": 32, "torch_dtype": "bfloat16",
}
DENSE_OPS = ("layernorm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj", "act_fn",
             "down_proj", "embedding", "final_layernorm")


def make_bundle(root: Path, *, tps=(1,), files: dict[str, str] | None = None,
                model_cfg: dict | None = None) -> Path:
    """A tiny valid bundle at ``root/profiles/HW/org/tiny/bf16``; ``files`` overrides CSVs
    (key ``tp1/dense.csv`` etc.)."""
    bundle = root / "profiles" / "HW" / "org" / "tiny" / "bf16"
    meta = (f"model: org/tiny\nhardware: HW\ngpu: Test GPU\nvariant: bf16\n"
            f"tp_degrees: [{', '.join(map(str, tps))}]\nmeasurement_iterations: 3\n")
    cfg_dir = root / "configs" / "model" / "org"
    cfg_dir.mkdir(parents=True)
    (cfg_dir / "tiny.json").write_text(json.dumps(model_cfg or MODEL_CFG))
    for tp in tps:
        d = bundle / f"tp{tp}"
        d.mkdir(parents=True)
        dense = ["layer,tokens,time_us"] + [f"{op},{t},{t + 1.5}" for op in DENSE_OPS
                                            for t in (1, 2, 4)]
        per_seq = ["layer,sequences,time_us"] + [f"{op},{s},{10 * s}" for op in
                                                 ("lm_head", "sampler") for s in (1, 2)]
        att = ["prefill_chunk,kv_prefill,n_decode,kv_decode,time_us"]
        att += [f"0,0,{n},{kv},{n * kv / 10}" for n in (1, 2) for kv in (16, 32)]
        att += [f"{pc},{kp},0,0,{pc + kp}" for pc in (16, 32) for kp in (0, 16)]
        att += [f"{pc},{kp},{n},{kv},{pc + kp + n * kv}" for pc in (16, 32) for kp in (0, 16)
                for n in (1, 2) for kv in (16, 32)]
        content = {"dense.csv": dense, "per_sequence.csv": per_seq, "attention.csv": att}
        for name, lines in content.items():
            (d / name).write_text("\n".join(lines) + "\n")
    (bundle / "meta.yaml").write_text(meta)
    for rel, text in (files or {}).items():
        (bundle / rel).write_text(text)
    return bundle


def test_tiny_bundle_imports_and_prices(tmp_path):
    bundle = make_bundle(tmp_path)
    profile = import_bundle(bundle)
    assert profile.model.num_hidden_layers == 2
    from llmsim.costmodel.base import StepBatch

    cost = ProfileCostModel(profile).step_cost(StepBatch(decode_context_lens=(16,)))
    # every dense op is 2.5 us at 1 token; 2 layers; layernorm twice per layer
    assert cost.breakdown_ns["layernorm"] == 2 * 2 * 2500
    assert cost.breakdown_ns["qkv_proj"] == 2 * 2500
    assert cost.breakdown_ns["final_layernorm"] == 2500
    assert cost.breakdown_ns["lm_head"] == 10_000
    assert cost.breakdown_ns["attention"] == 2 * 1600
    assert cost.duration_ns == sum(cost.breakdown_ns.values())


@pytest.mark.parametrize("bad_header", ["layer,time_us,tokenz", "layer,tokens"])
def test_missing_column_names_file_line_field(tmp_path, bad_header):
    bundle = make_bundle(tmp_path, files={"tp1/dense.csv": bad_header + "\n"})
    with pytest.raises(ProfileError) as exc:
        import_bundle(bundle)
    err = exc.value
    assert err.path.endswith("tp1/dense.csv") and err.line == 1
    assert err.field in ("tokens", "time_us")
    assert "dense.csv:1" in str(err)


def test_non_numeric_cell_names_line_and_field(tmp_path):
    text = "layer,tokens,time_us\nqkv_proj,1,2.5\nqkv_proj,2,fast\n"
    bundle = make_bundle(tmp_path, files={"tp1/dense.csv": text})
    with pytest.raises(ProfileError) as exc:
        import_bundle(bundle)
    assert (exc.value.line, exc.value.field) == (3, "time_us")
    assert "'fast'" in str(exc.value)


def test_unparsable_cell_message_is_plain(tmp_path):
    """Decimal's internal signal class must not leak into the message."""
    text = "layer,tokens,time_us\nqkv_proj,one,2.5\n"
    bundle = make_bundle(tmp_path, files={"tp1/dense.csv": text})
    with pytest.raises(ProfileError) as exc:
        import_bundle(bundle)
    assert (exc.value.line, exc.value.field) == (2, "tokens")
    assert "not an integer" in str(exc.value) and "decimal" not in str(exc.value)
    bundle = make_bundle(tmp_path / "b", files={"tp1/dense.csv": "layer,tokens,time_us\nqkv_proj,1,2.5us\n"})
    with pytest.raises(ProfileError, match="not a number") as exc:
        import_bundle(bundle)
    assert "decimal" not in str(exc.value)


@pytest.mark.parametrize("rel,header,row", [
    ("tp1/dense.csv", "layer,tokens,time_us", "qkv_proj,2,-0.5"),
    ("tp1/per_sequence.csv", "layer,sequences,time_us", "lm_head,2,-10"),
])
def test_negative_latency_rejected(tmp_path, rel, header, row):
    bundle = make_bundle(tmp_path, files={rel: f"{header}\n{row.split(',')[0]},1,2.5\n{row}\n"})
    with pytest.raises(ProfileError, match="negative") as exc:
        import_bundle(bundle)
    assert exc.value.path.endswith(rel) and (exc.value.line, exc.value.field) == (3, "time_us")


def test_exported_bundle_has_ordinary_permissions(tmp_path):
    """mkdtemp makes 0700 directories; a published bundle must look like a plain mkdir."""
    profile = import_bundle(make_bundle(tmp_path / "src"))
    umask = os.umask(0o022)
    try:
        out = export_bundle(profile, tmp_path / "out")
    finally:
        os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o755
    assert import_bundle(out).tp[0].tp_degree == 1


def test_non_integer_axis_cell(tmp_path):
    text = "prefill_chunk,kv_prefill,n_decode,kv_decode,time_us\n0,0,1.5,16,3.0\n"
    bundle = make_bundle(tmp_path, files={"tp1/attention.csv": text})
    with pytest.raises(ProfileError) as exc:
        import_bundle(bundle)
    assert (exc.value.line, exc.value.field) == (2, "n_decode")


def test_ragged_row(tmp_path):
    bundle = make_bundle(tmp_path, files={"tp1/per_sequence.csv":
                                          "layer,sequences,time_us\nlm_head,1\n"})
    with pytest.raises(ProfileError) as exc:
        import_bundle(bundle)
    assert exc.value.line == 2


def test_tp_listed_but_absent(tmp_path):
    bundle = make_bundle(tmp_path)
    meta = bundle / "meta.yaml"
    meta.write_text(meta.read_text().replace("tp_degrees: [1]", "tp_degrees: [1, 4]"))
    with pytest.raises(ProfileError) as exc:
        import_bundle(bundle)
    assert exc.value.field == "tp_degrees" and exc.value.path.endswith("meta.yaml")


def test_meta_missing_field(tmp_path):
    bundle = make_bundle(tmp_path)
    meta = bundle / "meta.yaml"
    meta.write_text(meta.read_text().replace("model: org/tiny\n", ""))
    with pytest.raises(ProfileError) as exc:
        import_bundle(bundle)
    assert exc.value.field == "model"


def test_model_config_lacking_field(tmp_path):
    cfg = dict(MODEL_CFG)
    del cfg["vocab_size"]
    bundle = make_bundle(tmp_path, model_cfg=cfg)
    with pytest.raises(ConfigError) as exc:
        import_bundle(bundle)
    assert exc.value.field == "vocab_size" and exc.value.path.endswith("tiny.json")


def test_absent_tp_degree_and_op(tmp_path):
    profile = import_bundle(make_bundle(tmp_path))
    with pytest.raises(ProfileRangeError) as exc:
        ProfileCostModel(profile, parallel=TP2, source="tiny.pb")
    assert exc.value.path == "tiny.pb" and "TP degree 2" in str(exc.value)
    del profile.tp[0].ops[1]  # the second dense op (qkv_proj in file order)
    with pytest.raises(ProfileRangeError) as exc:
        ProfileCostModel(profile, source="tiny.pb")
    assert exc.value.field == "tp1/qkv_proj"


def test_profile_without_model_needs_one(tmp_path):
    profile = import_bundle(make_bundle(tmp_path))
    profile.ClearField("model")
    with pytest.raises(ConfigError) as exc:
        ProfileCostModel(profile, source="x.pb")
    assert exc.value.field == "model"


def test_schema_version_and_garbage(tmp_path):
    profile = import_bundle(make_bundle(tmp_path))
    path = write_profile(profile, tmp_path / "p.pb")
    assert read_profile(path).schema_version == SCHEMA_VERSION
    profile.schema_version = SCHEMA_VERSION + 1
    (tmp_path / "future.pb").write_bytes(profile.SerializeToString())
    with pytest.raises(ProfileError) as exc:
        read_profile(tmp_path / "future.pb")
    assert exc.value.field == "schema_version"
    (tmp_path / "junk.pb").write_bytes(b"\xff\xff\xff not a profile")
    with pytest.raises(ProfileError):
        read_profile(tmp_path / "junk.pb")
    with pytest.raises(ProfileError):
        load_profile(tmp_path / "missing.pb")


def test_write_is_atomic(tmp_path, monkeypatch):
    profile = import_bundle(make_bundle(tmp_path / "src"))
    out = tmp_path / "out"
    out.mkdir()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(ProfileError):
        write_profile(profile, out / "p.pb")
    assert list(out.iterdir()) == []
    monkeypatch.undo()
    target = out / "p.pb"
    target.write_bytes(b"old")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(ProfileError):
        write_profile(profile, target)
    assert target.read_bytes() == b"old" and list(out.iterdir()) == [target]


def test_export_refuses_existing_and_cleans_up(tmp_path):
    profile = import_bundle(make_bundle(tmp_path / "src"))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ProfileError):
        export_bundle(profile, out)
    profile.provenance.attributes.pop("source_meta_yaml")
    with pytest.raises(ProfileError):
        export_bundle(profile, tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_cli_failure_writes_nothing(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "src", files={"tp1/dense.csv": "layer,tokens\n"})
    out = tmp_path / "out.pb"
    assert main(["profile", "import", "llmservingsim", str(bundle), "-o", str(out)]) == 2
    assert not out.exists() and not list(tmp_path.glob(".out.pb*"))
    assert "dense.csv:1" in capsys.readouterr().err
