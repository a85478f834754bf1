"""Chained block hashes: the prefix identity of each full KV block of a sequence.

Block ``j`` of a sequence (tokens ``[j*B, (j+1)*B)``, ``B`` = engine ``block_size``) gets
``h_j = hash((h_{j-1}, content_j))`` with ``h_{-1} = ROOT``. Two sequences share ``h_j``
exactly when their first ``(j+1)*B`` tokens are (believed) equal, so a hash lookup finds the
longest cached prefix. This mirrors vLLM V1's chained block hashing (it uses sha256 over the
parent hash and token ids; we use Python's 64-bit tuple hash over ints only, which is
deterministic and independent of ``PYTHONHASHSEED``; a collision has probability ~2^-64 per
pair). ``TRACE`` and ``UNIQUE`` below are small int tags.

``content_j`` depends on what the trace knows about the tokens:

* **token ids** (``input_token_ids``, ``output_token_ids``): the tuple of the block's ids.
  Prompt and generated tokens are treated alike, so generated blocks are cached too.
* **trace block hashes** (Mooncake / Qwen-Bailian ``block_hashes`` over ``H =
  hash_block_size`` prompt tokens): the engine block covers trace blocks ``k0..k1`` with
  ``k0 = j*B // H`` and ``k1 = ((j+1)*B - 1) // H``; its content is
  ``(TRACE, (ids[k0], ..., ids[k1]), j*B mod H)``. For the usual ``H = 512``, ``B = 16`` this
  is ``(hash id, offset)``: two requests whose hash-id lists agree up to block ``k`` hit on
  every engine block inside those trace blocks and miss from the first differing id on.
  For ``H = 16 = B`` it is the trace id itself. Any ``H`` and ``B`` work (not only multiples).
* **nothing known** (no ids, or tokens beyond what the trace describes, e.g. generated
  tokens of a hash-id trace): unique to the request (per-request ``salt``, the trace
  index): it never hits another request but lets a preempted request find its own blocks.
  Such a block's identity is ``(salt, j)`` whatever its parent, so it is not chained: its
  key is the negative int ``-1 - (salt * 2**32 + j)``, made without hashing (unique blocks
  are most blocks of traces without ids; a key equal to some content hash has the same
  ~2^-64 probability as any hash collision).

A block that mixes known prompt content with unknown generated content is unique to the
request as well; every block after a unique block is unique too (the known content is a
prefix of the sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.errors import ConfigError, InvariantError, TraceFormatError

ROOT_HASH = 0x6C6C6D73696D  # any fixed int; ints (not str) keep hashes PYTHONHASHSEED-free
_TAG_TRACE_HASH = 1
_UNIQUE_SALT_SHIFT = 32  # unique key = -1 - (salt << 32 | j), for j < 2**32 blocks


@dataclass(frozen=True, slots=True, kw_only=True)
class SequenceIds:
    """What the KV layer knows about one sequence's content: ids only (no trace record).

    Attributes:
        request_id: the request's id (for error messages).
        num_prompt_tokens: prompt tokens (> 0).
        token_ids: known token ids from the start of the sequence (prompt, then generated
            when known), or ``None``.
        block_hashes: prefix identity per ``hash_block_size`` prompt tokens (Mooncake /
            Qwen-Bailian ``hash_ids``), or ``None``.
        hash_block_size: tokens per entry of ``block_hashes`` (0 when absent).
    """

    request_id: str
    num_prompt_tokens: int
    token_ids: tuple[int, ...] | None = None
    block_hashes: tuple[int, ...] | None = None
    hash_block_size: int = 0


def check_int_ids(ids: object, request_id: str, name: str) -> None:
    """Raise unless ``ids`` is ``None`` or a tuple/list of ints (bools refused)."""
    if ids is None:
        return
    if isinstance(ids, (tuple, list)) and set(map(type, ids)) <= _INT_TYPES:
        return
    bad = next((v for v in ids if type(v) not in _INT_TYPES), ids) if isinstance(ids, (tuple, list)) else ids
    raise TraceFormatError(f"request {request_id!r}: ids must be integers, got {bad!r}"[:300],
                           field=name)


_INT_TYPES = {int}


class BlockHasher:
    """Incrementally computes the chained hashes of one sequence's full blocks.

    The blocks fall into three consecutive runs, by what is known about their content
    (see the module doc): blocks inside the known token ids, then blocks inside the trace's
    hash ids, then unique blocks. Each run has its own loop (this runs for every block of
    every request, ~10^6-10^7 times per replay).

    Token ids and trace hash ids must be ints: they are hashed, and only ints hash the same
    in every process (``str`` hashes depend on ``PYTHONHASHSEED``) and never fail (a nested
    list is unhashable). The trace loaders enforce this at the file; it is checked again
    here, once per request (a set of the element types, ~10 ns per id), for requests built
    in code.

    Args:
        ids: the sequence's ids (:class:`SequenceIds`; the scheduler builds it from the
            trace record with :func:`llmsim.scheduler.state.sequence_ids`).
        block_size: engine block size ``B`` in tokens (> 0).
        salt: per-request value making unknown content unique (the request's trace index).

    Raises:
        ConfigError: ``block_size`` is not a positive integer.
        TraceFormatError: token ids or block hashes of the request are not all integers.
    """

    __slots__ = ("_seq_ids", "_bs", "_salt", "hashes", "_ids", "_n_known", "_n_id_blocks",
                 "_n_trace_blocks")

    def __init__(self, ids: SequenceIds, block_size: int, salt: int) -> None:
        if type(block_size) is not int or block_size <= 0:
            raise ConfigError(f"block size must be a positive integer, got {block_size!r}", field="block_size")
        check_int_ids(ids.token_ids, ids.request_id, "input_token_ids")
        check_int_ids(ids.block_hashes, ids.request_id, "block_hashes")
        self._seq_ids = ids
        self._bs = block_size
        self._salt = salt
        self.hashes: list[int] = []
        n_known = len(ids.token_ids) if ids.token_ids is not None else 0
        self._ids = ids.token_ids
        self._n_known = n_known  # tokens whose ids are known (prefix of the sequence)
        # block j holds known ids iff (j + 1) * B <= n_known
        self._n_id_blocks = n_known // block_size if ids.token_ids is not None else 0
        # block j is covered by trace hash ids iff (j + 1) * B <= input_tokens and
        # ((j + 1) * B - 1) // H < len(hb), i.e. (j + 1) * B <= len(hb) * H
        hb, h = ids.block_hashes, ids.hash_block_size
        if hb and h > 0:
            self._n_trace_blocks = min(ids.num_prompt_tokens, len(hb) * h) // block_size
        else:
            self._n_trace_blocks = 0

    @property
    def block_size(self) -> int:
        """Engine block size ``B`` the hashes are computed for, tokens."""
        return self._bs

    def ensure(self, num_blocks: int) -> list[int]:
        """Extend :attr:`hashes` to at least ``num_blocks`` entries and return it."""
        hashes = self.hashes
        j = len(hashes)
        if j >= num_blocks:
            return hashes
        parent = hashes[-1] if hashes else ROOT_HASH
        bs = self._bs
        append = hashes.append
        stop = min(num_blocks, self._n_id_blocks)
        if j < stop:
            ids = self._ids
            if ids is None:  # _n_id_blocks > 0 only when ids are known
                raise InvariantError("block hasher: id blocks without token ids")
            for k in range(j, stop):
                parent = hash((parent, ids[k * bs:(k + 1) * bs]))
                append(parent)
            j = stop
        stop = min(num_blocks, self._n_trace_blocks)
        if j < stop:
            seq_ids = self._seq_ids
            hb, h = seq_ids.block_hashes, seq_ids.hash_block_size
            if hb is None:  # _n_trace_blocks > 0 only when the trace gives block hashes
                raise InvariantError("block hasher: trace blocks without block hashes")
            for k in range(j, stop):
                start = k * bs
                content = (_TAG_TRACE_HASH, tuple(hb[start // h:(start + bs - 1) // h + 1]),
                           start % h)
                parent = hash((parent, content))
                append(parent)
            j = stop
        if j < num_blocks:
            base = -1 - (self._salt << _UNIQUE_SALT_SHIFT)
            hashes.extend(range(base - j, base - num_blocks, -1))
        return hashes
