"""Loaders on real files (Azure 2023, Mooncake) and on fixtures (Azure 2024, BurstGPT,
Qwen-Bailian, Vidur, generic CSV), plus the Azure streaming Parquet cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from llmsim.errors import ConfigError, TraceFormatError
from llmsim.trace import detect_format, load_trace, load_trace_frame
from llmsim.trace.azure import azure_parquet_cache, load_azure_frame

FIX = "tests/fixtures/traces"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def write_azure(path, n, *, seed=0, tz=True, bad_line=None):
    rng = np.random.default_rng(seed)
    t = pd.Timestamp("2024-05-10") + pd.to_timedelta(np.cumsum(rng.exponential(0.05, n)), unit="s")
    fmt = "%Y-%m-%d %H:%M:%S.%f" + ("+00:00" if tz else "")
    df = pd.DataFrame({"TIMESTAMP": t.strftime(fmt), "ContextTokens": rng.integers(1, 8000, n),
                       "GeneratedTokens": rng.integers(1, 900, n)})
    df.to_csv(path, index=False)
    if bad_line is not None:
        lines = path.read_text().splitlines()
        lines[bad_line - 1] = lines[bad_line - 1].rsplit(",", 1)[0] + ",abc"
        path.write_text("\n".join(lines) + "\n")
    return df


@pytest.mark.realdata
@pytest.mark.parametrize(("kind", "n", "last_s"), [("code", 8819, 3435.948056), ("conv", 19366, 3501.721937)])
def test_azure_2023_real(data_path, kind, n, last_s):
    trace = load_trace("azure", data_path(f"azure-llm-2023/AzureLLMInferenceTrace_{kind}.csv"))
    assert len(trace) == n
    assert trace.requests[0].arrival_ns == 0
    assert trace.requests[-1].arrival_ns == pytest.approx(last_s * 1e9, abs=1000)
    assert trace.requests[-1].request_id == str(n - 1)
    if kind == "conv":
        assert (trace.requests[0].input_tokens, trace.requests[0].output_tokens) == (374, 44)
        assert trace.requests[1].arrival_ns == 4_314_579_000  # 18:15:50.9951690 - 18:15:46.6805900


def test_azure_2024_fixture_with_zone_offset():
    frame = load_trace_frame("azure", f"{FIX}/azure2024_sample.csv")
    assert frame.data["arrival_ns"].tolist() == [0, 243_070_000, 991_320_000, 1_590_070_000]
    assert frame.data["input_tokens"].tolist() == [2048, 1165, 4012, 87]


def test_azure_streaming_cache_matches_and_is_bounded(tmp_path):
    src = tmp_path / "AzureLLMInferenceTrace_conv_1week.csv"
    expected = write_azure(src, 60_000)
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    cache = azure_parquet_cache(src, block_bytes=256 << 10, memory_pool=pool)
    assert cache.exists() and str(tmp_path / "xdg") in str(cache)
    # One 256 KiB text block and its columns at a time, never the 2.6 MB file.
    assert pool.max_memory() < 2 << 20 < src.stat().st_size
    streamed = load_azure_frame(src, cache=True)
    direct = load_azure_frame(src, cache=False)
    assert len(streamed) == len(direct) == 60_000
    for col in ("arrival_ns", "input_tokens", "output_tokens"):
        assert np.array_equal(streamed.data[col].to_numpy(), direct.data[col].to_numpy())
    assert np.array_equal(direct.data["input_tokens"].to_numpy(), expected["ContextTokens"].to_numpy())
    mtime = cache.stat().st_mtime_ns
    again = load_azure_frame(src, cache=True)  # cache reused, not rebuilt
    assert cache.stat().st_mtime_ns == mtime and len(again) == 60_000
    window = load_azure_frame(src, cache=True, start_s=600, end_s=1200)
    arr = direct.data["arrival_ns"].to_numpy()
    assert len(window) == int(((arr >= 600e9) & (arr < 1200e9)).sum())
    assert 0 <= window.data["arrival_ns"].min() and window.data["arrival_ns"].max() < 600e9


def test_azure_streaming_bad_value_names_line(tmp_path):
    src = tmp_path / "big.csv"
    write_azure(src, 20_000, tz=False, bad_line=15_001)
    with pytest.raises(TraceFormatError) as info:
        azure_parquet_cache(src, block_bytes=64 << 10)
    assert (info.value.line, info.value.field) == (15_001, "GeneratedTokens")
    frame = load_azure_frame(src, cache=True, skip_bad_rows=True, block_bytes=64 << 10)
    assert len(frame) == 19_999 and frame.metadata["skipped_rows"] == "1"
    assert not list((tmp_path / "xdg").rglob("*.tmp"))


def test_csv_wrong_column_count_line_and_skip(tmp_path):
    src = tmp_path / "a.csv"
    src.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-01-01 00:00:00,5,6\n"
                   "2023-01-01 00:00:01,7\n2023-01-01 00:00:02,0,3\n2023-01-01 00:00:03,8,9\n")
    with pytest.raises(TraceFormatError) as info:
        load_trace("azure", src)
    assert info.value.line == 3
    frame = load_trace_frame("azure", src, skip_bad_rows=True)
    # line 3 (2 columns) and line 4 (0 context tokens) skipped; ids keep file rows
    assert frame.data["request_id"].tolist() == [0, 3]
    assert frame.metadata["skipped_rows"] == "2"


def test_absurd_and_unsorted_timestamps(tmp_path):
    src = tmp_path / "a.csv"
    src.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-01-01 00:00:00,5,6\n2100-01-01 00:00:01,7,1\n")
    with pytest.raises(TraceFormatError, match="absurd timestamp") as info:
        load_trace("azure", src)
    assert (info.value.line, info.value.field) == (3, "TIMESTAMP")
    src.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-01-01 00:00:00,5,6\n2999-01-01 00:00:01,7,1\n")
    with pytest.raises(TraceFormatError, match="unparsable") as info:
        load_trace("azure", src)
    assert (info.value.line, info.value.field) == (3, "TIMESTAMP")
    src.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-01-01 00:00:05,5,6\n2023-01-01 00:00:01,7,1\n")
    with pytest.raises(TraceFormatError, match="not sorted"):
        load_trace("azure", src)
    trace = load_trace("azure", src, sort=True)
    assert [r.request_id for r in trace.requests] == ["1", "0"]
    assert [r.arrival_ns for r in trace.requests] == [0, 4_000_000_000]
    src.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    with pytest.raises(TraceFormatError, match="no requests"):
        load_trace("azure", src)


@pytest.mark.realdata
def test_mooncake_conversation_real(data_path):
    frame = load_trace_frame("mooncake", data_path("mooncake/conversation_trace.jsonl"))
    assert len(frame) == 12031 and frame.hash_block_size == 512
    trace = frame.to_trace()
    r = trace.requests[0]
    assert (r.arrival_ns, r.input_tokens, r.output_tokens, r.hash_block_size) == (0, 6758, 500, 512)
    assert r.block_hashes == tuple(range(14))
    assert trace.requests[-1].arrival_ns == 3_536_999 * 1_000_000
    assert all(len(q.block_hashes) == -(-q.input_tokens // 512) for q in trace.requests)


def test_mooncake_bad_hash_count(tmp_path):
    src = tmp_path / "m.jsonl"
    src.write_text('{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}\n'
                   '{"timestamp": 3, "input_length": 600, "output_length": 5, "hash_ids": [1]}\n')
    with pytest.raises(TraceFormatError) as info:
        load_trace("mooncake", src)
    assert (info.value.line, info.value.field) == (2, "hash_ids")


def test_burstgpt_drops_failed_and_keeps_models():
    frame = load_trace_frame("burstgpt", f"{FIX}/burstgpt_sample.csv")
    assert frame.metadata["dropped_failed"] == "2"
    assert frame.data["request_id"].tolist() == [0, 2, 3, 4, 6]
    assert frame.data["model"].tolist() == ["ChatGPT", "GPT-4", "ChatGPT", "GPT-4", "ChatGPT"]
    assert frame.data["arrival_ns"].tolist()[1] == 118 * 10**9
    with pytest.raises(TraceFormatError) as info:
        load_trace("burstgpt", f"{FIX}/burstgpt_sample.csv", drop_failed=False)
    assert (info.value.line, info.value.field) == (3, "Response tokens")


def test_burstgpt_sessions_chain_turns_with_think_time():
    trace = load_trace("burstgpt", f"{FIX}/burstgpt_session_sample.csv")
    by_id = {r.request_id: r for r in trace.requests}
    assert set(by_id) == {"0", "1", "2", "4", "5"}  # row 3 failed (0 response tokens)
    assert (by_id["2"].parent_id, by_id["2"].turn, by_id["2"].session_id) == ("0", 1, "s1")
    assert by_id["2"].think_time_ns == 7_500_000_000  # 20 - (10 + 2.5)
    assert (by_id["4"].parent_id, by_id["4"].turn, by_id["4"].think_time_ns) == ("2", 2, 8_000_000_000)
    assert (by_id["5"].parent_id, by_id["5"].think_time_ns) == ("1", 17_000_000_000)
    assert by_id["0"].parent_id is None and by_id["1"].parent_id is None


def test_qwen_bailian_parents_sessions_hashes():
    trace = load_trace("qwen_bailian", f"{FIX}/qwen_bailian_sample.jsonl")
    by_id = {r.request_id: r for r in trace.requests}
    assert by_id["1003"].parent_id == "1001" and by_id["1005"].parent_id == "1003"
    assert by_id["1005"].session_id == "1001" and by_id["1002"].session_id == "1002"
    assert by_id["1004"].parent_id is None  # parent 999 is not in the file
    assert trace.metadata["orphaned_turns"] == "1"
    assert by_id["1001"].arrival_ns == 0 and by_id["1005"].arrival_ns == 28_750_000_000
    assert by_id["1005"].block_hashes[:5] == by_id["1003"].block_hashes
    assert all(r.hash_block_size == 16 for r in trace.requests)


def test_qwen_duplicate_chat_id(tmp_path):
    src = tmp_path / "q.jsonl"
    row = ('{"chat_id": 1, "parent_chat_id": -1, "timestamp": %s, "input_length": 5, '
           '"output_length": 2, "turn": 1, "hash_ids": [1]}\n')
    src.write_text(row % 0 + row % 1)
    with pytest.raises(TraceFormatError, match="duplicate") as info:
        load_trace("qwen_bailian", src)
    assert (info.value.line, info.value.field) == (2, "chat_id")


def test_vidur_and_generic_csv(tmp_path):
    vid = load_trace("vidur", f"{FIX}/vidur_sample.csv")
    assert [r.arrival_ns for r in vid.requests] == [0, 250_000_000, 500_000_000, 1_750_000_000]
    assert [r.input_tokens for r in vid.requests] == [512, 1024, 300, 2048]
    src = tmp_path / "g.csv"
    src.write_text("t_ms,p,c,conv,m\n1000,10,2,a,x\n1500,20,3,a,y\n2500,30,4,,x\n")
    mapping = {"arrival": "t_ms", "input_tokens": "p", "output_tokens": "c", "session_id": "conv", "model": "m"}
    trace = load_trace("csv", src, columns=mapping, time_unit="ms", rebase=True)
    assert [r.arrival_ns for r in trace.requests] == [0, 500_000_000, 1_500_000_000]
    assert [r.session_id for r in trace.requests] == ["a", "a", None]
    assert [r.model for r in trace.requests] == ["x", "y", "x"]
    with pytest.raises(TraceFormatError, match="missing column") as info:
        load_trace("csv", src, columns={**mapping, "arrival": "nope"})
    assert info.value.line == 1
    with pytest.raises(ConfigError, match="time unit"):
        load_trace("csv", src, columns=mapping, time_unit="fortnights")


def test_detect_format(tmp_path):
    assert detect_format(f"{FIX}/burstgpt_sample.csv") == "burstgpt"
    assert detect_format(f"{FIX}/qwen_bailian_sample.jsonl") == "qwen_bailian"
    assert detect_format(f"{FIX}/vidur_sample.csv") == "vidur"
    assert detect_format(f"{FIX}/azure2024_sample.csv") == "azure"
    other = tmp_path / "x.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError):
        detect_format(other)


def test_shipped_examples_load_with_session_chaining():
    mapping = {"arrival": "arrival_s", "session_id": "conversation", "input_tokens": "prompt_tokens",
               "output_tokens": "completion_tokens", "think_time": "think_s", "model": "model"}
    trace = load_trace("csv", "traces/examples/sessions_example.csv", columns=mapping)
    assert [(r.parent_id, r.turn, r.think_time_ns) for r in trace.requests] == [
        (None, 0, 0), (None, 0, 0), ("0", 1, 3_500_000_000), ("1", 1, 2_000_000_000), ("2", 2, 4_000_000_000)]
    agentic = load_trace("llmservingsim", "traces/examples/agentic_example.jsonl")
    assert [r.request_id for r in agentic.requests] == ["0", "1.0", "1.1", "1.2", "2", "3.0", "3.1"]
    assert [r.think_time_ns for r in agentic.requests if r.session_id == "1"] == [0, 400_000_000, 1_200_000_000]
