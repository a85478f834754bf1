"""The normalized request record that every trace loader produces.

Times inside llmsim are integer nanoseconds; trace files use seconds or milliseconds and
are converted once, in the loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One request of a trace.

    Attributes:
        request_id: unique id within the trace.
        arrival_ns: arrival time from the trace start, ns (>= 0).
        input_tokens: prompt length in tokens (> 0).
        output_tokens: tokens to generate (> 0; replay uses fixed output lengths).
        input_token_ids: prompt token ids when the trace has them (len == input_tokens).
        output_token_ids: generated token ids when known (len == output_tokens).
        block_hashes: prefix identity per block of ``hash_block_size`` prompt tokens
            (Mooncake: 512, Qwen-Bailian: 16); equal prefixes of ids mean equal content.
        hash_block_size: tokens per entry of ``block_hashes`` (0 when absent).
        session_id: conversation / session id, when the trace has one.
        parent_id: request this one follows in a session (released after it finishes).
        turn: turn index within the session.
        think_time_ns: delay after the parent finishes before this request is released.
        model: model name the request targets, when the trace mixes models.
    """

    request_id: str
    arrival_ns: int
    input_tokens: int
    output_tokens: int
    input_token_ids: tuple[int, ...] | None = None
    output_token_ids: tuple[int, ...] | None = None
    block_hashes: tuple[int, ...] | None = None
    hash_block_size: int = 0
    session_id: str | None = None
    parent_id: str | None = None
    turn: int = 0
    think_time_ns: int = 0
    model: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Trace:
    """An ordered list of requests plus where it came from.

    Attributes:
        requests: requests sorted by ``arrival_ns`` (ties keep file order).
        source: file or generator description.
        name: short name for reports.
    """

    requests: tuple[Request, ...]
    source: str = ""
    name: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.requests)
