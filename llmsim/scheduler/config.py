"""Scheduler settings, named as vLLM's engine arguments."""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerConfig:
    """vLLM V1 scheduler limits.

    Attributes:
        max_num_seqs: most running sequences (vLLM ``max_num_seqs``).
        max_num_batched_tokens: token budget per step (``max_num_batched_tokens``).
        block_size: tokens per KV block (``block_size``).
        enable_prefix_caching: reuse cached full blocks (``enable_prefix_caching``).
        reserve_full_isl: admit a waiting request only when the whole remaining sequence
            fits in the free blocks, not just its first chunk
            (``scheduler_reserve_full_isl``, true in vLLM 0.19's resolved config of the
            RTX4090 run).
        long_prefill_token_threshold: cap on one request's chunk per step, 0 = none
            (``long_prefill_token_threshold``).
        enable_chunked_prefill: admit a waiting request with part of its prompt when the
            step's budget is short (``enable_chunked_prefill``, vLLM V1's default); false:
            a waiting request whose tokens (after the threshold cap) exceed the remaining
            budget stops admission for the step (vLLM 0.19 ``Scheduler.schedule``, waiting
            loop: "If chunked_prefill is disabled, we can stop the scheduling here").
    """

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    block_size: int = 16
    enable_prefix_caching: bool = True
    reserve_full_isl: bool = True
    long_prefill_token_threshold: int = 0
    enable_chunked_prefill: bool = True

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=name)
        if self.max_num_batched_tokens < self.block_size:
            raise ConfigError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) is smaller than one "
                f"KV block ({self.block_size} tokens)", field="max_num_batched_tokens")
        if self.long_prefill_token_threshold < 0:
            raise ConfigError("must be >= 0", field="long_prefill_token_threshold")
