"""A measured run of another model or another workload is refused (count, tokens, model),
before the replay, with no report written; ``--measured`` defaults to the experiment's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from validate_factories import make_measured, make_requests

from llmsim.cli.main import main
from llmsim.errors import MeasuredRunError
from llmsim.validate.match import Workload, check_match, model_key

ROOT = Path(__file__).resolve().parents[2]
LLAMA_4090 = ROOT / "examples" / "rtx4090-llama-3.1-8b.yaml"
QWEN_MOE = ROOT / "examples" / "rtxpro6000-qwen3-30b-a3b.yaml"
RUN_4090 = "llmservingsim/measured/RTX4090/Llama-3.1-8B"
RUN_PRO = "llmservingsim/measured/RTXPRO6000/Llama-3.1-8B"


@pytest.mark.parametrize("a,b", [
    ("meta-llama/Llama-3.1-8B", "Llama-3.1-8B"),
    ("meta-llama/Llama-3.1-8B", "/models/meta-llama/Llama-3.1-8B/"),
    ("meta-llama/Llama-3.1-8B",
     "/root/.cache/huggingface/hub/models--meta-llama--Llama-3.1-8B/snapshots/0123456789abcdef0123456789abcdef01234567"),
    ("Qwen/Qwen3-32B", "qwen/qwen3-32b"),
])
def test_model_names_that_match(a, b):
    assert model_key(a) == model_key(b)


@pytest.mark.parametrize("a,b", [
    ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"),
    ("meta-llama/Llama-3.1-8B", "Qwen/Qwen3-30B-A3B-Instruct-2507"),
])
def test_model_names_that_do_not(a, b):
    assert model_key(a) != model_key(b)


def _workload(reqs, model="meta-llama/Llama-3.1-8B", changes=()):
    ins = list(reqs["input_tokens"])
    outs = list(reqs["output_tokens"])
    for i, col, value in changes:
        (ins if col == "in" else outs)[i] = value
    return Workload(request_ids=tuple(reqs["request_id"]), input_tokens=tuple(ins),
                    output_tokens=tuple(outs), model=model)


def _run(meta=None):
    reqs = make_requests([0.1, 0.2, 0.3], [1.0] * 3, [5, 6, 7])
    run = make_measured(reqs)
    if meta is not None:
        object.__setattr__(run, "meta", meta)
    return run, reqs


def test_model_mismatch_is_refused_naming_both():
    run, reqs = _run({"model": "meta-llama/Llama-3.1-8B"})
    with pytest.raises(MeasuredRunError,
                       match="served model 'meta-llama/Llama-3.1-8B'.*replays 'Qwen/Qwen3-32B'") as exc:
        check_match(run, _workload(reqs, model="Qwen/Qwen3-32B"))
    assert exc.value.field == "model" and str(exc.value.path).endswith("meta.json")


def test_model_match_and_unknown_model_are_noted():
    run, reqs = _run({"model": "/models/Llama-3.1-8B"})
    assert any("model matched" in n for n in check_match(run, _workload(reqs)))
    run, reqs = _run({})
    assert any("model not checked" in n for n in check_match(run, _workload(reqs)))


def test_request_count_mismatch_is_refused():
    run, reqs = _run({"model": "meta-llama/Llama-3.1-8B"})
    short = Workload(request_ids=("0", "1"), input_tokens=(100, 100), output_tokens=(5, 6),
                     model="meta-llama/Llama-3.1-8B")
    with pytest.raises(MeasuredRunError,
                       match="measured run has 3 requests but the experiment's workload has 2") as exc:
        check_match(run, short)
    assert exc.value.field == "requests"


@pytest.mark.parametrize("col,field", [("in", "input_tokens"), ("out", "output_tokens")])
def test_token_mismatch_names_the_first_request(col, field):
    run, reqs = _run({"model": "meta-llama/Llama-3.1-8B"})
    with pytest.raises(MeasuredRunError, match=f"request '1' \\(same request_id\\) has {field}=") as exc:
        check_match(run, _workload(reqs, changes=[(1, col, 999), (2, col, 998)]))
    assert exc.value.field == field and "2 of 3 requests differ" in str(exc.value)


def test_pairing_by_position_when_ids_differ():
    run, reqs = _run({"model": "meta-llama/Llama-3.1-8B"})
    w = Workload(request_ids=("a", "b", "c"), input_tokens=(100, 100, 100), output_tokens=(5, 6, 8),
                 model=None)
    with pytest.raises(MeasuredRunError, match="request '2' \\(same position in workload order\\)"):
        check_match(run, w)


# ------------------------------------------------------------------ end to end (real data)


def _copy_run(data_path, tmp_path, edit):
    src = data_path(RUN_4090)
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    edit(dst / "vllm")
    return dst


@pytest.mark.realdata
def test_cli_refuses_the_llama_run_for_the_qwen_experiment(data_path, tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["validate", str(QWEN_MOE), "--measured", str(data_path(RUN_PRO)), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "served model 'meta-llama/Llama-3.1-8B'" in err and "Qwen3-30B-A3B" in err
    assert not out.exists()


@pytest.mark.realdata
def test_cli_refuses_a_run_with_other_token_counts(data_path, tmp_path, capsys):
    def edit(vdir):
        lines = (vdir / "requests.jsonl").read_text().splitlines()
        row = json.loads(lines[7])
        row["output_toks"] += 1
        lines[7] = json.dumps(row)
        (vdir / "requests.jsonl").write_text("\n".join(lines) + "\n")

    run = _copy_run(data_path, tmp_path, edit)
    out = tmp_path / "rep"
    code = main(["validate", str(LLAMA_4090), "--measured", str(run), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "request 'bench-7'" in err and "output_tokens" in err
    assert not out.exists()


@pytest.mark.realdata
def test_cli_refuses_a_run_with_fewer_requests(data_path, tmp_path, capsys):
    def edit(vdir):
        lines = (vdir / "requests.jsonl").read_text().splitlines()
        (vdir / "requests.jsonl").write_text("\n".join(lines[:-1]) + "\n")
        meta = json.loads((vdir / "meta.json").read_text())
        meta["num_requests"] = len(lines) - 1
        (vdir / "meta.json").write_text(json.dumps(meta))

    run = _copy_run(data_path, tmp_path, edit)
    out = tmp_path / "rep"
    code = main(["validate", str(LLAMA_4090), "--measured", str(run), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "measured run has 299 requests but the experiment's workload has 300" in err
    assert not out.exists()


@pytest.mark.realdata
def test_cli_refuses_a_run_of_another_model(data_path, tmp_path, capsys):
    def edit(vdir):
        meta = json.loads((vdir / "meta.json").read_text())
        meta["model"] = "meta-llama/Llama-3.1-8B-Instruct"
        (vdir / "meta.json").write_text(json.dumps(meta))

    run = _copy_run(data_path, tmp_path, edit)
    code = main(["validate", str(LLAMA_4090), "--measured", str(run), "--out", str(tmp_path / "rep")])
    assert code == 2 and "Llama-3.1-8B-Instruct" in capsys.readouterr().err


@pytest.mark.realdata
def test_measured_defaults_to_the_experiments(data_path, tmp_path, capsys):
    data_path("llmservingsim/measured/RTX4090/Llama-3.1-8B")
    code = main(["validate", str(LLAMA_4090), "--out", str(tmp_path / "rep")])
    out = capsys.readouterr().out
    assert code == 0 and "RTX4090/Llama-3.1-8B" in out
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert any(n.startswith("model matched") for n in report["notes"])
    code = main(["validate", str(QWEN_MOE), "--out", str(tmp_path / "q")])
    assert code == 2 and "no measured run" in capsys.readouterr().err


@pytest.mark.realdata
def test_python_api_refuses_too(data_path):
    import llmsim

    with pytest.raises(MeasuredRunError, match="served model"):
        llmsim.validate(QWEN_MOE, data_path(RUN_PRO))
