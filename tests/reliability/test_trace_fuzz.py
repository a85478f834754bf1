"""Property tests (issue 17): every registered trace loader, the transforms and the
``llmsim trace`` CLI either load correctly or raise an LlmsimError, whatever the input.

Each example damages a small valid file of one format (see ``trace_strategies``) and loads it
through the registry; a trace that loads must pass :func:`trace_strategies.check_loaded`.
Examples are bounded (a few seconds per test).
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trace_strategies import (
    CASES,
    HOSTILE_CSV,
    HOSTILE_JSON,
    check_loaded,
    load_or_error,
    mutated,
    registry_format,
)

from llmsim.cli.main import main
from llmsim.trace import apply_transforms, load_trace_frame
from llmsim.trace.registry import TraceFormat

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_names = itertools.count()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_every_registered_format_has_a_fuzz_case():
    assert {registry_format(c) for c in CASES} == {f.value for f in TraceFormat}


@pytest.mark.parametrize("case", sorted(CASES))
def test_valid_cases_load(tmp_path, case):
    suffix, content, options = CASES[case]
    path = tmp_path / f"t{suffix}"
    path.write_bytes(content)
    check_loaded(load_trace_frame(registry_format(case), path, **options))


@pytest.mark.parametrize("case", sorted(CASES))
@FUZZ
@given(data=st.data(), skip=st.booleans(), sort=st.booleans())
def test_fuzz_loader_loads_or_raises(tmp_path, case, data, skip, sort):
    suffix, content, options = CASES[case]
    hostile = HOSTILE_JSON if suffix == ".jsonl" else HOSTILE_CSV
    damaged = data.draw(mutated(content, hostile))
    path = tmp_path / f"t{next(_names)}{suffix}"  # fresh name: the Azure cache keys on it
    path.write_bytes(damaged)
    frame = load_or_error(lambda: load_trace_frame(registry_format(case), path, skip_bad_rows=skip,
                                                   sort=sort, **options))
    if frame is not None:
        check_loaded(frame)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_azure_streaming_cache(tmp_path, data):
    # the week-long files stream through a Parquet cache: same contract, small blocks
    damaged = data.draw(mutated(CASES["azure_2024"][1] * 3, HOSTILE_CSV))
    path = tmp_path / f"a{next(_names)}.csv"
    path.write_bytes(damaged)
    frame = load_or_error(lambda: load_trace_frame("azure", path, cache=True, block_bytes=4096,
                                                   skip_bad_rows=data.draw(st.booleans()),
                                                   sort=data.draw(st.booleans())))
    if frame is not None:
        check_loaded(frame)


OPTION_VALUES = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5)
                 | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(),
                                                                        max_size=2))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(CASES)),
       options=st.dictionaries(st.sampled_from(["skip_bad_rows", "sort", "cache", "start_s", "end_s",
                                                "block_bytes", "drop_failed", "columns", "time_unit",
                                                "rebase", "fmt", "bogus"]), OPTION_VALUES, max_size=3))
def test_fuzz_loader_options(tmp_path, case, options):
    suffix, content, base = CASES[case]
    path = tmp_path / f"o{next(_names)}{suffix}"
    path.write_bytes(content)
    frame = load_or_error(lambda: load_trace_frame(registry_format(case), path, **{**base, **options}))
    if frame is not None:
        check_loaded(frame)


TRANSFORM_PARAMS = st.recursive(
    OPTION_VALUES, lambda inner: st.dictionaries(
        st.sampled_from(["start_s", "end_s", "rebase", "factor", "n", "fraction", "seed", "max_requests",
                         "max_input_tokens", "max_output_tokens", "models", "bogus"]), inner, max_size=3),
    max_leaves=4)
TRANSFORMS = st.lists(st.dictionaries(st.sampled_from(["window", "scale_rate", "sample", "truncate",
                                                       "filter_model", "transform"]),
                                      TRANSFORM_PARAMS, min_size=1, max_size=2), max_size=3)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(["llmservingsim", "mooncake", "burstgpt_session", "qwen_bailian"]),
       transforms=TRANSFORMS)
def test_fuzz_transforms(tmp_path, case, transforms):
    suffix, content, base = CASES[case]
    path = tmp_path / f"x{suffix}"
    path.write_bytes(content)
    frame = load_trace_frame(registry_format(case), path, **base)
    out = load_or_error(lambda: apply_transforms(frame, transforms))
    if out is not None:
        check_loaded(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(["llmservingsim", "mooncake", "azure", "burstgpt", "vidur"]), data=st.data())
def test_fuzz_trace_cli(tmp_path, capsys, case, data):
    suffix, content, _ = CASES[case]
    path = tmp_path / f"c{next(_names)}{suffix}"
    path.write_bytes(data.draw(mutated(content, HOSTILE_JSON if suffix == ".jsonl" else HOSTILE_CSV)))
    argv = ["trace", data.draw(st.sampled_from(["stats", "convert"])), str(path)]
    if argv[1] == "convert":
        argv += ["--out", str(tmp_path / "out.jsonl")]
    else:
        bin_s = data.draw(st.floats(-10, 1e4) | st.sampled_from([0.0, 1e-9, float("nan"), float("inf")]))
        argv += [f"--bin-s={bin_s!r}", f"--block-size={data.draw(st.integers(-32, 64))}"]
    if data.draw(st.booleans()):
        argv += ["--transform", data.draw(st.sampled_from([
            '{"window": {"end_s": 1}}', '{"scale_rate": 0}', '{"sample": {"n": 1}}', "[" * 5000,
            '{"truncate": {"max_requests": NaN}}', '{"filter_model": "x"}', "not json"]))]
    if data.draw(st.booleans()):
        argv.append("--skip-bad-rows")
    if data.draw(st.booleans()):
        argv.append("--sort")
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (0, 2)
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("llmsim: error: ")
    elif argv[1] == "convert":
        for line in (tmp_path / "out.jsonl").read_text().splitlines():
            json.loads(line)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 50) | st.sampled_from([0, -1, 1.5, True, None, "5", 2**70, float("nan")]),
       rate=OPTION_VALUES | st.floats(1e-3, 1e3),
       arrival=st.sampled_from(["poisson", "gamma", "x", 5]), cv=OPTION_VALUES | st.floats(0.1, 10),
       lengths=OPTION_VALUES | st.fixed_dictionaries({"input": OPTION_VALUES, "output": OPTION_VALUES}),
       seed=OPTION_VALUES)
def test_fuzz_generator(n, rate, arrival, cv, lengths, seed):
    from llmsim.trace import generate_trace

    frame = load_or_error(lambda: generate_trace(n=n, rate_per_s=rate, arrival=arrival, cv=cv,
                                                 lengths=lengths, seed=seed))
    if frame is not None:
        check_loaded(frame)
