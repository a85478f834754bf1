"""Measurement grids: which batch shapes each operator is timed at.

Shapes follow the published LLMServingSim profiles (``meta.yaml``'s ``attention_grid``):
dense ops over batched tokens, ``lm_head``/``sampler`` over sequences, attention over
``(prefill_chunk, kv_prefill, n_decode, kv_decode)`` and MoE experts over
``(tokens, active_experts)``. Conventions of the published attention table are kept: a point
without a prefill chunk has ``kv_prefill == 0`` and a point without decodes has
``kv_decode == 0``.

Presets: ``ci`` (a few hundred points, seconds on a CPU for a tiny model) and ``full``
(the published token and sequence axes, powers of two for attention).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

from llmsim.errors import ConfigError


class Preset(StrEnum):
    """Named grid presets."""

    CI = "ci"
    FULL = "full"


def _pow2(lo: int, hi: int) -> tuple[int, ...]:
    out, v = [], lo
    while v <= hi:
        out.append(v)
        v *= 2
    return tuple(out)


def _published_tokens(hi: int) -> tuple[int, ...]:
    """1..16, then every 4 to 64, then every 16 up to ``hi`` (the published dense axis)."""
    vals = list(range(1, 17)) + list(range(20, 65, 4)) + list(range(80, hi + 1, 16))
    return tuple(v for v in vals if v <= hi)


@dataclass(frozen=True, slots=True, kw_only=True)
class GridSpec:
    """Axis values of every table (all integers, ascending).

    Attributes:
        name: preset name (recorded in the profile).
        tokens: batched tokens for dense ops.
        sequences: sequences for ``lm_head`` / ``sampler``.
        prefill_chunks: new prompt tokens of the step's prefill chunk (0 = no prefill).
        kv_prefill: cached tokens before the chunk (0 included).
        n_decode: decodes in the step (0 = none).
        kv_decode: KV length of every decode (> 0).
        max_context: points whose prefill context (chunk + cached) or decode KV exceeds this
            are skipped.
        moe_tokens: tokens for the routed experts.
        active_experts: distinct experts that receive tokens (capped by the model's expert
            count and by tokens x top_k).
        skew_n_decode: decode counts of the KV-skew measurement (empty = no skew table).
    """

    name: str
    tokens: tuple[int, ...]
    sequences: tuple[int, ...]
    prefill_chunks: tuple[int, ...]
    kv_prefill: tuple[int, ...]
    n_decode: tuple[int, ...]
    kv_decode: tuple[int, ...]
    max_context: int
    moe_tokens: tuple[int, ...]
    active_experts: tuple[int, ...]
    skew_n_decode: tuple[int, ...] = ()

    def to_json_dict(self) -> dict[str, object]:
        """Plain-dict form for provenance (lists of ints)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def attention_points(self) -> Iterator[tuple[int, int, int, int]]:
        """``(prefill_chunk, kv_prefill, n_decode, kv_decode)`` points, in sweep order."""
        for pc in self.prefill_chunks:
            for kvp in (self.kv_prefill if pc else (0,)):
                if pc + kvp > self.max_context:
                    continue
                for nd in self.n_decode:
                    for kvd in (self.kv_decode if nd else (0,)):
                        if (pc or nd) and kvd <= self.max_context:
                            yield pc, kvp, nd, kvd

    def capped(self, *, max_tokens: int | None = None, max_sequences: int | None = None,
               max_context: int | None = None) -> GridSpec:
        """A copy with axes truncated at the given limits (keeps the limit itself)."""
        def cut(vals: tuple[int, ...], hi: int | None) -> tuple[int, ...]:
            if hi is None:
                return vals
            kept = tuple(v for v in vals if v <= hi)
            return kept if hi in kept else kept + (hi,)
        ctx = self.max_context if max_context is None else max_context
        return replace(
            self, tokens=cut(self.tokens, max_tokens), moe_tokens=cut(self.moe_tokens, max_tokens),
            prefill_chunks=cut(self.prefill_chunks, max_tokens),
            sequences=cut(self.sequences, max_sequences),
            n_decode=cut(self.n_decode, max_sequences),
            kv_prefill=cut(self.kv_prefill, None if max_context is None else ctx),
            kv_decode=cut(self.kv_decode, None if max_context is None else ctx),
            skew_n_decode=tuple(v for v in self.skew_n_decode
                                if max_sequences is None or v <= max_sequences),
            max_context=ctx)


PRESETS: dict[Preset, GridSpec] = {
    Preset.CI: GridSpec(
        name="ci", tokens=_pow2(1, 256), sequences=_pow2(1, 32),
        prefill_chunks=(0, 16, 64, 256), kv_prefill=(0, 64, 256), n_decode=(0, 1, 4, 16),
        kv_decode=(16, 64, 256), max_context=512, moe_tokens=_pow2(1, 64),
        active_experts=(1, 2, 4, 8, 16, 32, 64, 128), skew_n_decode=(4,)),
    Preset.FULL: GridSpec(
        name="full", tokens=_published_tokens(2048), sequences=_published_tokens(256),
        prefill_chunks=(0,) + _pow2(16, 2048), kv_prefill=(0,) + _pow2(16, 16384),
        n_decode=(0,) + _pow2(1, 256), kv_decode=_pow2(16, 16384), max_context=18432,
        moe_tokens=_pow2(1, 2048), active_experts=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        skew_n_decode=(2, 8, 32, 128)),
}


def get_preset(name: str) -> GridSpec:
    """The preset called ``name``.

    Raises:
        ConfigError: unknown preset.
    """
    try:
        return PRESETS[Preset(name)]
    except ValueError:
        raise ConfigError(f"unknown grid preset {name!r}; choose one of "
                          f"{', '.join(p.value for p in Preset)}", field="preset") from None
