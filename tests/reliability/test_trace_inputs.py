"""One test per class of hostile trace input named in issue 17 (loaders, transforms, hashing,
``trace stats``): each is refused with an LlmsimError naming the file, line and field."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from trace_strategies import AZURE_2023, CASES, LLMSERVINGSIM, MOONCAKE, QWEN_CSV

from llmsim.cli.main import main
from llmsim.errors import ConfigError, TraceFormatError
from llmsim.kvcache.hashing import BlockHasher
from llmsim.scheduler.state import sequence_ids
from llmsim.trace import (
    Request,
    apply_transforms,
    detect_format,
    load_trace_frame,
    trace_stats,
)
from llmsim.trace.inputs import MAX_TOKENS
from llmsim.trace.stats import MAX_RATE_BINS, format_table

FIX = "tests/fixtures/traces"
LSS_ROW = {"arrival_time_ns": 0, "input_toks": 3, "output_toks": 1}
MC_ROW = {"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1]}
QW_ROW = {"chat_id": 1, "parent_chat_id": -1, "timestamp": 1.5, "input_length": 20, "output_length": 3,
          "type": "text", "turn": 1, "hash_ids": [1, 2]}
AZ_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
BG_HEAD = ("Timestamp,Session ID,Model,Request tokens,Response tokens,Total tokens,Log Type,Elapsed time\n"
           "10,s1,ChatGPT,300,40,340,Conversation log,2.5\n")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def _jsonl_line(row: dict, key: str, raw: str) -> str:
    """``row`` as one JSON line with ``key``'s value replaced by the literal ``raw``."""
    return json.dumps({**row, key: "@@"}).replace('"@@"', raw) + "\n"


def _refused(fmt, path, *, line, field=None, match=None, **options) -> TraceFormatError:
    with pytest.raises(TraceFormatError, match=match) as exc:
        load_trace_frame(fmt, path, **options)
    err = exc.value
    assert err.path == str(path) and err.line == line, str(err)
    if field is not None:
        assert err.field == field, str(err)
    return err


# ------------------------------------------------------- NaN / inf / 1e999 / beyond int64
HOSTILE_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", "99999999999999999999", "9223372036854775808",
                   "1e20", str(MAX_TOKENS + 1)]


@pytest.mark.parametrize("raw", HOSTILE_NUMBERS)
@pytest.mark.parametrize(("fmt", "row", "key"), [
    ("llmservingsim", LSS_ROW, "input_toks"), ("llmservingsim", LSS_ROW, "arrival_time_ns"),
    ("mooncake", MC_ROW, "input_length"), ("mooncake", MC_ROW, "timestamp"),
    ("qwen_bailian", QW_ROW, "output_length"), ("qwen_bailian", QW_ROW, "turn"),
])
def test_hostile_numbers_in_jsonl(tmp_path, fmt, row, key, raw):
    if key in ("arrival_time_ns", "timestamp") and raw == str(MAX_TOKENS + 1):
        raw = "1e30"  # 2**31 ns / ms is a legitimate time; a time beyond 400 days is not
    second = {**row, "chat_id": 2} if fmt == "qwen_bailian" else row
    p = _write(tmp_path, "t.jsonl", json.dumps(row) + "\n" + _jsonl_line(second, key, raw))
    err = _refused(fmt, p, line=2)
    assert err.field in (key, None), str(err)  # None: refused by the JSON parser (line only)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e999", "99999999999999999999", "1e20", "2147483648",
                                 "-1", "0", "2.5", "abc"])
@pytest.mark.parametrize(("fmt", "text", "field"), [
    ("azure", AZ_HEAD + "2023-11-16 18:15:47.0,@,44\n", "ContextTokens"),
    ("burstgpt", BG_HEAD + "12,s1,GPT-4,@,30,150,Conversation log,4\n", "Request tokens"),
    ("vidur", "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,512,128\n0.5,128,@\n", "num_decode_tokens"),
])
def test_hostile_numbers_in_csv(tmp_path, fmt, text, field, raw):
    p = _write(tmp_path, "t.csv", text.replace("@", raw))
    _refused(fmt, p, line=3, field=field)


@pytest.mark.parametrize("raw", ["nan", "inf", "-3", "1e999"])
def test_burstgpt_elapsed_time_must_be_finite_and_non_negative(tmp_path, raw):
    if raw == "nan":  # a missing elapsed time means 0 (documented), not an error
        p = _write(tmp_path, "t.csv", BG_HEAD + f"12,s1,GPT-4,120,30,150,Conversation log,{raw}\n")
        assert load_trace_frame("burstgpt", p).to_trace().requests[1].think_time_ns == 0
        return
    p = _write(tmp_path, "t.csv", BG_HEAD + f"12,s1,GPT-4,120,30,150,Conversation log,{raw}\n")
    _refused("burstgpt", p, line=3, field="Elapsed time")


@pytest.mark.parametrize(("col", "raw"), [("turn", "inf"), ("turn", "-1"), ("turn", "1.5"), ("think", "inf"),
                                          ("think", "-2"), ("think", "1e300")])
def test_generic_csv_optional_columns_in_range(tmp_path, col, raw):
    head = "arrival_s,input_tokens,output_tokens,turn,think,sid\n0,5,5,0,0,a\n"
    row = {"turn": f"1,5,5,{raw},0,a\n", "think": f"1,5,5,1,{raw},a\n"}[col]
    p = _write(tmp_path, "t.csv", head + row)
    cols = {"arrival": "arrival_s", "input_tokens": "input_tokens", "output_tokens": "output_tokens",
            "turn": "turn", "think_time": "think", "session_id": "sid"}
    _refused("csv", p, line=3, field=col, columns=cols)


def test_generic_csv_request_ids_present_and_unique(tmp_path):
    p = _write(tmp_path, "t.csv", "arrival_s,input_tokens,output_tokens,rid\n0,5,5,a\n1,5,5,a\n")
    cols = {"arrival": "arrival_s", "input_tokens": "input_tokens", "output_tokens": "output_tokens",
            "request_id": "rid"}
    _refused("csv", p, line=3, field="rid", match="duplicate", columns=cols)


def test_llmservingsim_tool_duration_bounded(tmp_path):
    row = {"arrival_time_ns": 0, "sub_requests": [{"input_toks": 1, "output_toks": 1, "tool_duration_ns": 1e300},
                                                  {"input_toks": 1, "output_toks": 1}]}
    p = _write(tmp_path, "t.jsonl", json.dumps(row) + "\n")
    _refused("llmservingsim", p, line=1, field="sub_requests[0].tool_duration_ns")


def test_qwen_infinite_timestamp_does_not_shift_the_others(tmp_path):
    p = _write(tmp_path, "t.csv", QWEN_CSV.decode() + '3,-1,-inf,20,3,text,1,"[1]"\n')
    _refused("qwen_bailian", p, line=4, field="timestamp")
    frame = load_trace_frame("qwen_bailian", p, skip_bad_rows=True)
    assert frame.data["arrival_ns"].tolist() == [0, 500_000_000] and frame.metadata["skipped_rows"] == "1"


# ------------------------------------------------------------------------ deep nesting
DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError in Python's parser, a crash in Arrow's


@pytest.mark.parametrize(("fmt", "row", "key"), [("llmservingsim", LSS_ROW, "input_tok_ids"),
                                                 ("mooncake", MC_ROW, "hash_ids"),
                                                 ("qwen_bailian", QW_ROW, "hash_ids")])
def test_deep_nesting_in_jsonl(tmp_path, fmt, row, key):
    p = _write(tmp_path, "t.jsonl", json.dumps(row) + "\n" + _jsonl_line(row, key, DEEP))
    _refused(fmt, p, line=2, match="deeper than 64")
    assert len(load_trace_frame(fmt, p, skip_bad_rows=True)) == 1


def test_deep_nesting_in_qwen_csv_hash_ids(tmp_path):
    p = _write(tmp_path, "t.csv", QWEN_CSV.decode() + f'3,-1,12,20,3,text,1,"{DEEP}"\n')
    _refused("qwen_bailian", p, line=4, field="hash_ids")


def test_deep_nesting_in_detect_format_and_cli_transform(tmp_path, capsys):
    p = _write(tmp_path, "t.jsonl", '{"a": ' + DEEP + "}\n")
    with pytest.raises(ConfigError, match="cannot tell"):
        detect_format(p)
    good = _write(tmp_path, "g.jsonl", LLMSERVINGSIM)
    assert main(["trace", "stats", str(good), "--transform", DEEP]) == 2
    assert "deeper than 64" in capsys.readouterr().err


# --------------------------------------------------------------------------- token ids
@pytest.mark.parametrize("ids", ["[[1], 2, 3]", '["1", 2, 3]', "[1.0, 2, 3]", "[1, null, 3]", "[true, 2, 3]",
                                 "[-1, 2, 3]", '{"a": 1}', '"123"', "[1, 2, 9223372036854775808]"])
def test_token_ids_must_be_flat_non_negative_ints(tmp_path, ids):
    row = {"arrival_time_ns": 0, "input_toks": 3, "output_toks": 1}
    p = _write(tmp_path, "t.jsonl", json.dumps(row) + "\n" + _jsonl_line(row, "input_tok_ids", ids))
    _refused("llmservingsim", p, line=2, field="input_tok_ids")


@pytest.mark.parametrize("ids", ["[[1]]", '["1"]', "[1.5]", "[null]", "[true]", "[NaN]"])
@pytest.mark.parametrize("fmt", ["mooncake", "qwen_bailian"])
def test_hash_ids_must_be_flat_ints(tmp_path, fmt, ids):
    row = MC_ROW if fmt == "mooncake" else QW_ROW
    second = row if fmt == "mooncake" else {**row, "chat_id": 2}
    p = _write(tmp_path, "t.jsonl", json.dumps(row) + "\n" + _jsonl_line(second, "hash_ids", ids))
    _refused(fmt, p, line=2)


@pytest.mark.parametrize("ids", [(1, [2], 3), ("a", 2, 3), (1.0, 2, 3), (True, 2, 3), (None, 2, 3)])
def test_block_hasher_refuses_non_int_ids(ids):
    r = Request(request_id="r", arrival_ns=0, input_tokens=3, output_tokens=1, input_token_ids=ids)
    with pytest.raises(TraceFormatError) as exc:
        BlockHasher(sequence_ids(r), 2, 0).ensure(2)
    assert exc.value.field == "input_token_ids" and "'r'" in str(exc.value)


@pytest.mark.parametrize("block_size", [0, -16, 1.5, True])
def test_block_hasher_refuses_bad_block_size(block_size):
    r = Request(request_id="r", arrival_ns=0, input_tokens=3, output_tokens=1)
    with pytest.raises(ConfigError):
        BlockHasher(sequence_ids(r), block_size, 0)


# ---------------------------------------------------------------------------- UTF-8
@pytest.mark.parametrize("case", sorted(CASES))
def test_non_utf8_bytes_name_the_line(tmp_path, case):
    suffix, content, options = CASES[case]
    lines = content.split(b"\n")
    lines[2] = lines[2][:5] + b"\xff\xfe" + lines[2][5:]
    p = _write(tmp_path, "t" + suffix, b"\n".join(lines))
    fmt = {"qwen_bailian_csv": "qwen_bailian", "azure_2024": "azure", "burstgpt_session": "burstgpt"}.get(case, case)
    err = _refused(fmt, p, line=3, **options)
    assert "UTF-8" in str(err)


def test_non_utf8_in_streamed_azure_file(tmp_path):
    p = _write(tmp_path, "t.csv", AZURE_2023 + b"2023-11-16 18:15:52.0,\xff1,2\n")
    _refused("azure", p, line=5, cache=True)


# ------------------------------------------------------------------ non-regular files
@pytest.mark.parametrize("fmt", ["llmservingsim", "azure", "mooncake", "burstgpt", "qwen_bailian", "vidur", "csv"])
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_devices_are_refused_before_reading(fmt, device):
    with pytest.raises(TraceFormatError, match="not a regular file"):
        load_trace_frame(fmt, device)


def test_fifo_and_directory_are_refused(tmp_path, capsys):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    result: list[object] = []

    def load() -> None:  # a reader that opened the FIFO would block here forever
        try:
            load_trace_frame("llmservingsim", fifo)
        except TraceFormatError as exc:
            result.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(10)
    assert result and "not a regular file" in str(result[0])
    with pytest.raises(TraceFormatError, match="directory"):
        load_trace_frame("mooncake", tmp_path)
    assert main(["trace", "stats", "/dev/zero", "--format", "azure"]) == 2
    assert main(["trace", "stats", "/dev/zero"]) == 2  # format detection reads no byte either
    assert "not a regular file" in capsys.readouterr().err


# ------------------------------------------------------------- wrong types in options
@pytest.mark.parametrize(("fmt", "options", "field"), [
    ("azure", {"skip_bad_rows": "yes"}, "options.skip_bad_rows"),
    ("azure", {"sort": 1}, "options.sort"),
    ("azure", {"start_s": "10"}, "options.start_s"),
    ("azure", {"start_s": float("nan")}, "options.start_s"),
    ("azure", {"end_s": -5}, "end_s"),
    ("azure", {"block_bytes": 0}, "block_bytes"),
    ("azure", {"cache": "no"}, "options.cache"),
    ("azure", {"transform": []}, "options.transform"),
    ("burstgpt", {"drop_failed": None}, "options.drop_failed"),
    ("csv", {"columns": "arrival"}, "options.columns"),
    ("csv", {"columns": {"arrival": 1}}, "options.columns"),
    ("csv", {"time_unit": ["s"]}, "options.time_unit"),
    ("csv", {"time_unit": "hours"}, "time_unit"),
    ("csv", {"path": "x"}, "options.path"),
    ("mooncake", {"fmt": "csv"}, "options.fmt"),
])
def test_wrong_option_types_are_config_errors(tmp_path, fmt, options, field):
    content = {"azure": AZURE_2023, "mooncake": MOONCAKE, "csv": b"arrival_s,input_tokens,output_tokens\n0,1,1\n",
               "burstgpt": Path(f"{FIX}/burstgpt_sample.csv").read_bytes()}[fmt]
    p = _write(tmp_path, "t.csv", content)
    with pytest.raises(ConfigError) as exc:
        load_trace_frame(fmt, p, **options)
    assert exc.value.field == field, str(exc.value)


@pytest.mark.parametrize(("spec", "field"), [
    ({"window": {"start_s": "a"}}, "window.start_s"), ({"window": {"end_s": float("nan")}}, "window.end_s"),
    ({"window": {"rebase": "no"}}, "window.rebase"), ({"window": {"bogus": 1}}, "window"),
    ({"scale_rate": "2"}, "scale_rate"), ({"scale_rate": float("inf")}, "scale_rate"),
    ({"scale_rate": 1e-300}, "scale_rate"), ({"scale_rate": True}, "scale_rate"),
    ({"sample": {"n": 1.5}}, "sample.n"), ({"sample": {"fraction": float("nan")}}, "sample.fraction"),
    ({"sample": {"n": 1, "seed": -1}}, "sample.seed"), ({"truncate": {"max_input_tokens": 1.5}},
                                                         "truncate.max_input_tokens"),
    ({"truncate": {"max_requests": float("nan")}}, "truncate.max_requests"),
    ({"filter_model": [1, 2]}, "filter_model"), ({"filter_model": []}, "filter_model"),
    ({"transfrom": {}}, "transforms"), ({"sample": {"n": 0}}, "transforms"),
    ({"window": {"end_s": 1e-9}}, "transforms"),
])
def test_wrong_transform_options_are_config_errors(spec, field):
    frame = load_trace_frame("burstgpt", f"{FIX}/burstgpt_session_sample.csv")
    with pytest.raises(ConfigError) as exc:
        apply_transforms(frame, [spec])
    assert exc.value.field == field, str(exc.value)


def test_transforms_must_be_a_list():
    frame = load_trace_frame("burstgpt", f"{FIX}/burstgpt_sample.csv")
    for bad in ("window", {"window": {}}, 5):
        with pytest.raises(ConfigError, match="must be a list"):
            apply_transforms(frame, bad)


def test_filter_model_that_matches_nothing_is_an_error_not_an_empty_trace():
    frame = load_trace_frame("burstgpt", f"{FIX}/burstgpt_sample.csv")
    with pytest.raises(ConfigError, match="leaves no requests"):
        apply_transforms(frame, [{"filter_model": "gpt-4"}])  # names are case-sensitive
    assert len(apply_transforms(frame, [{"filter_model": "GPT-4"}])) >= 1


# --------------------------------------------------------------------------- trace stats
@pytest.mark.parametrize("args", [["--bin-s", "0"], ["--bin-s", "nan"], ["--bin-s", "inf"], ["--bin-s", "-1"],
                                  ["--bin-s", "1e-9"], ["--block-size", "0"], ["--block-size", "-16"]])
def test_trace_stats_bad_options_exit_2_without_traceback(tmp_path, capsys, args):
    p = _write(tmp_path, "t.jsonl", LLMSERVINGSIM)
    if args == ["--bin-s", "1e-9"]:  # fine bins are refused only when they would be too many
        p = _write(tmp_path, "t.jsonl", json.dumps({**LSS_ROW}) + "\n"
                   + json.dumps({**LSS_ROW, "arrival_time_ns": 60 * 10**9}) + "\n")
    assert main(["trace", "stats", str(p), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmsim: error: ") and "Traceback" not in err
    assert ("bin_s" in err) if args[0] == "--bin-s" else ("block_size" in err)


def test_too_many_bins_is_bounded_in_the_library():
    frame = load_trace_frame("vidur", f"{FIX}/vidur_sample.csv")
    span_s = frame.data["arrival_ns"].iloc[-1] / 1e9
    with pytest.raises(ConfigError, match="bins"):
        trace_stats(frame, bin_s=span_s / (MAX_RATE_BINS * 2))


def test_single_request_has_no_mean_rate_or_cv(tmp_path, capsys):
    p = _write(tmp_path, "t.jsonl", json.dumps(LSS_ROW) + "\n")
    stats = trace_stats(load_trace_frame("llmservingsim", p))
    assert stats.mean_rate_per_s is None and stats.interarrival_cv is None
    assert "nan" not in format_table(stats)
    out = tmp_path / "out"
    assert main(["trace", "stats", str(p), "--out", str(out)]) == 0
    assert "nan" not in capsys.readouterr().out
    d = json.loads((out / "stats.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert d["mean_rate_per_s"] is None


def test_huge_token_counts_are_refused_not_wrapped(tmp_path, capsys):
    p = _write(tmp_path, "t.jsonl", _jsonl_line(LSS_ROW, "input_toks", "100000000000000000000"))
    assert main(["trace", "stats", str(p)]) == 2
    err = capsys.readouterr().err
    assert "t.jsonl:1" in err and "input_toks" in err and "-9" not in err
    p = _write(tmp_path, "m.jsonl", _jsonl_line(MC_ROW, "input_length", "1e20"))
    _refused("mooncake", p, line=1, field="input_length")


def test_cli_path_with_nul_byte_is_an_error(capsys):
    assert main(["trace", "stats", "bad\x00name.jsonl"]) == 2
    for cmd in ("stats", "convert"):
        assert main(["trace", cmd, f"{FIX}/vidur_sample.csv", "--out", "a\x00b"]) == 2
    assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------------------------------ Azure Parquet cache
def test_damaged_azure_cache_is_rebuilt(tmp_path):
    from llmsim.trace.azure import azure_parquet_cache

    p = _write(tmp_path, "t.csv", AZURE_2023)
    want = load_trace_frame("azure", p, cache=True).data
    cache = azure_parquet_cache(p)
    for damage in (b"PAR1 not parquet", None):
        if damage is None:  # a damaged sidecar instead
            cache.with_suffix(cache.suffix + ".json").write_text("{not json")
        else:
            cache.write_bytes(damage)
        got = load_trace_frame("azure", p, cache=True).data
        assert got.equals(want)


def test_unwritable_azure_cache_is_a_config_error(tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "xdg"))
    p = _write(tmp_path, "t.csv", AZURE_2023)
    with pytest.raises(ConfigError, match="cache=False") as exc:
        load_trace_frame("azure", p, cache=True)
    assert exc.value.field == "cache"
    assert len(load_trace_frame("azure", p, cache=False)) == 3


# ------------------------------------------------------------- repeated names
@pytest.mark.parametrize(("fmt", "row", "key"), [("llmservingsim", LSS_ROW, "input_toks"),
                                                 ("mooncake", MC_ROW, "input_length"),
                                                 ("qwen_bailian", QW_ROW, "chat_id")])
def test_repeated_json_key_is_refused(tmp_path, fmt, row, key):
    line = json.dumps(row)[:-1] + f', "{key}": {json.dumps(row[key])}}}\n'
    p = _write(tmp_path, "t.jsonl", line)
    _refused(fmt, p, line=1, field=key, match="duplicate key")


@pytest.mark.parametrize(("fmt", "header", "col"), [
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens,ContextTokens", "ContextTokens"),
    ("vidur", "arrived_at,arrived_at,num_prefill_tokens,num_decode_tokens", "arrived_at"),
    ("burstgpt", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type,Model", "Model"),
])
def test_header_column_named_twice_is_refused(tmp_path, fmt, header, col):
    n = header.count(",") + 1
    p = _write(tmp_path, "t.csv", header + "\n" + ",".join(["1"] * n) + "\n")
    _refused(fmt, p, line=1, field=col, match="twice")
    if fmt == "azure":
        _refused(fmt, p, line=1, field=col, match="twice", cache=True)


def test_default_bins_cover_the_longest_accepted_trace(tmp_path):
    # BurstGPT spans 121 days; any trace the loaders accept (<= 400 days) takes 1 s bins
    last_s = 400 * 86_400
    p = _write(tmp_path, "t.csv", f"arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,5\n{last_s},5,5\n")
    stats = trace_stats(load_trace_frame("vidur", p))
    assert stats.rate_per_s.size == last_s and stats.peak_rate_per_s == 1.0
