"""Small valid traces of every registered format and hypothesis strategies that damage them
(imported as ``trace_strategies`` by the ``test_trace_*`` reliability tests).

Damage is what real trace files suffer: hostile numbers (``NaN``, ``Infinity``, ``1e999``,
integers beyond int64, strings, bools, nested lists) in place of any number, deep nesting,
invalid UTF-8, cut lines, dropped / repeated / swapped rows, blank lines, CRLF, a BOM, NUL
bytes, a key repeated in one object or a header column named twice. :func:`check_loaded`
states what a trace that *does* load must satisfy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from llmsim.errors import LlmsimError, TraceFormatError
from llmsim.kvcache.hashing import BlockHasher
from llmsim.safeio import INT64_MAX
from llmsim.scheduler.state import sequence_ids
from llmsim.trace import TraceFrame, trace_stats
from llmsim.trace.inputs import MAX_TOKENS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "traces"


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


LLMSERVINGSIM = _jsonl([
    {"arrival_time_ns": 0, "input_toks": 3, "output_toks": 2, "input_tok_ids": [11, 12, 13],
     "output_tok_ids": [7, 8]},
    {"arrival_time_ns": 1500, "input_toks": 4, "output_toks": 1, "input_tok_ids": [11, 12, 13, 14],
     "output_tok_ids": [9]},
    {"arrival_time_ns": 2000, "sub_requests": [
        {"input_toks": 5, "output_toks": 2, "tool_duration_ns": 250},
        {"input_toks": 6, "output_toks": 1}]},
])
MOONCAKE = _jsonl([
    {"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]},
    {"timestamp": 3, "input_length": 1100, "output_length": 9, "hash_ids": [1, 2, 3]},
    {"timestamp": 7, "input_length": 100, "output_length": 1, "hash_ids": [4]},
])
AZURE_2023 = (b"TIMESTAMP,ContextTokens,GeneratedTokens\n"
              b"2023-11-16 18:15:46.6805900,374,44\n"
              b"2023-11-16 18:15:50.9951690,396,109\n"
              b"2023-11-16 18:15:51.2012320,879,20\n")
GENERIC_CSV = (b"arrival_s,input_tokens,output_tokens,turn,think,sid,rid\n"
               b"0,5,5,0,0.5,a,r1\n0.25,7,3,0,0,b,r2\n1.5,9,2,1,1.25,a,r3\n")
GENERIC_OPTIONS = {"columns": {"arrival": "arrival_s", "input_tokens": "input_tokens",
                               "output_tokens": "output_tokens", "turn": "turn",
                               "think_time": "think", "session_id": "sid", "request_id": "rid"}}
QWEN_CSV = (b"chat_id,parent_chat_id,timestamp,input_length,output_length,type,turn,hash_ids\n"
            b'1,-1,10.5,20,3,text,1,"[1, 2]"\n'
            b'2,1,11.0,40,4,text,2,"[1, 2, 3]"\n')

#: format -> (file suffix, valid content, loader options) for every registered format.
CASES: dict[str, tuple[str, bytes, dict]] = {
    "llmservingsim": (".jsonl", LLMSERVINGSIM, {}),
    "mooncake": (".jsonl", MOONCAKE, {}),
    "qwen_bailian": (".jsonl", (FIXTURES / "qwen_bailian_sample.jsonl").read_bytes(), {}),
    "qwen_bailian_csv": (".csv", QWEN_CSV, {}),
    "azure": (".csv", AZURE_2023, {}),
    "azure_2024": (".csv", (FIXTURES / "azure2024_sample.csv").read_bytes(), {}),
    "burstgpt": (".csv", (FIXTURES / "burstgpt_sample.csv").read_bytes(), {}),
    "burstgpt_session": (".csv", (FIXTURES / "burstgpt_session_sample.csv").read_bytes(), {}),
    "vidur": (".csv", (FIXTURES / "vidur_sample.csv").read_bytes(), {}),
    "csv": (".csv", GENERIC_CSV, GENERIC_OPTIONS),
    "workload": (".yaml", b"tool: inference-perf\nseed: 3\ndata:\n  type: shared_prefix\n"
                 b"  shared_prefix: {num_groups: 2, num_prompts_per_group: 3, system_prompt_len: 40,"
                 b" question_len: 9, output_len: 4, enable_multi_turn_chat: true}\n"
                 b"load:\n  type: poisson\n  stages: [{rate: 4, duration: 3}]\n", {}),
}


def registry_format(case: str) -> str:
    """The registered format name of a :data:`CASES` key."""
    return {"qwen_bailian_csv": "qwen_bailian", "azure_2024": "azure",
            "burstgpt_session": "burstgpt"}.get(case, case)


HOSTILE_JSON = [
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e300", "99999999999999999999",
    "9223372036854775808", "-9223372036854775809", "2147483648", "-1", "0", "1.5", '"12"',
    "true", "null", "[]", "{}", "[[1]]", '["a"]', "[1.5]", "[null]", "[true]", "[NaN]",
    "[" * 80 + "]" * 80, "[" * 40000 + "]" * 40000, "{\"a\": " * 70 + "1" + "}" * 70,
]
HOSTILE_CSV = [
    "nan", "NaN", "inf", "-inf", "1e999", "1e300", "99999999999999999999", "2147483648",
    "-1", "0", "1.5", "abc", "", "true", '"[1, [2]]"', '"[NaN]"', '"' + "[" * 5000 + '"',
    "9999-12-31 23:59:59", "0001-01-01 00:00:00", "2023-13-45 99:99:99",
]
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


@st.composite
def mutated(draw: st.DrawFn, base: bytes, hostile: list[str]) -> bytes:
    """``base`` with one to three damages (see the module docstring)."""
    data = bytes(base)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "value", "value", "truncate", "utf8", "drop_line",
                                     "dup_line", "swap_lines", "blank", "crlf", "bom", "nul",
                                     "drop_field", "dup_name", "text"]))
        lines = data.split(b"\n")
        if kind == "value":
            spots = list(_NUMBER.finditer(data))
            if not spots:
                continue
            m = draw(st.sampled_from(spots))
            new = draw(st.sampled_from(hostile) | st.integers().map(str)
                       | st.floats(allow_nan=False).map(repr)).encode()
            data = data[: m.start()] + new + data[m.end():]
        elif kind == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == "utf8":
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"])) + data[at:]
        elif kind in ("drop_line", "dup_line", "swap_lines") and len(lines) > 1:
            i = draw(st.integers(0, len(lines) - 2))
            if kind == "drop_line":
                del lines[i]
            elif kind == "dup_line":
                lines.insert(i, lines[i])
            else:
                lines[i], lines[i + 1] = lines[i + 1], lines[i]
            data = b"\n".join(lines)
        elif kind == "blank":
            i = draw(st.integers(0, len(lines)))
            data = b"\n".join([*lines[:i], draw(st.sampled_from([b"", b"   ", b"\r"])), *lines[i:]])
        elif kind == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif kind == "bom":
            data = b"\xef\xbb\xbf" + data
        elif kind == "nul":
            at = draw(st.integers(0, len(data)))
            data = data[:at] + b"\x00" + data[at:]
        elif kind == "drop_field":
            spots = list(re.finditer(rb'"[a-z_]+": [^,}]+, ?|,[^,\n]*(?=\n)', data))
            if spots:
                m = draw(st.sampled_from(spots))
                data = data[: m.start()] + data[m.end():]
        elif kind == "dup_name":  # a key repeated in one object, or a header column named twice
            spots = list(re.finditer(rb'"[a-z_]+": [^,}]+', data)) or list(re.finditer(rb"[A-Za-z_ ]+", lines[0]))
            if spots:
                m = draw(st.sampled_from(spots))
                if data.startswith(b"{") or b'": ' in m.group():
                    data = data[: m.end()] + b", " + m.group() + data[m.end():]
                else:
                    data = data[: len(lines[0])] + b"," + m.group() + data[len(lines[0]):]
        else:  # arbitrary text spliced in
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.text(max_size=12)).encode() + data[at:]
    return data


def load_or_error(load: Callable[[], TraceFrame]) -> TraceFrame | None:
    """The loaded frame, or ``None`` when ``load`` raised an :class:`LlmsimError`.

    Anything else (a traceback-worthy exception) propagates and fails the test. A
    :class:`TraceFormatError` must carry a non-empty message.
    """
    try:
        return load()
    except LlmsimError as exc:
        assert str(exc)
        if isinstance(exc, TraceFormatError):
            assert exc.path is None or exc.path in str(exc)
            assert exc.line is None or exc.line >= 1
        return None


def check_loaded(frame: TraceFrame) -> None:
    """What every loaded trace satisfies: non-empty, sorted int64 arrivals >= 0, counts in
    [1, MAX_TOKENS], flat int ids of the right length, hashable requests, finite stats."""
    df = frame.data
    assert len(df) >= 1
    for col in ("arrival_ns", "input_tokens", "output_tokens"):
        assert df[col].dtype == np.int64, col
    arrival = df["arrival_ns"].to_numpy()
    assert (arrival >= 0).all() and (np.diff(arrival) >= 0).all()
    for col in ("input_tokens", "output_tokens"):
        v = df[col].to_numpy()
        assert ((v >= 1) & (v <= MAX_TOKENS)).all(), col
    trace = frame.to_trace()
    for i, r in enumerate(trace.requests):
        for ids, n in ((r.input_token_ids, r.input_tokens), (r.output_token_ids, r.output_tokens)):
            if ids is not None:
                assert len(ids) == n and all(type(x) is int and 0 <= x <= INT64_MAX for x in ids)
        if r.block_hashes is not None:
            assert all(type(x) is int for x in r.block_hashes)
        assert r.think_time_ns >= 0 and r.turn >= 0
        hasher = BlockHasher(sequence_ids(r), 16, i)
        hasher.ensure(-(-(r.input_tokens + r.output_tokens) // 16) if r.input_tokens < 10**5 else 4)
    stats = trace_stats(frame)
    json.dumps(stats.to_dict(), allow_nan=False)
