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
  tokens of a hash-id trace): ``(UNIQUE, salt, j)`` with a per-request ``salt``, unique to the
  request: it never hits another request but lets a preempted request find its own blocks.

A block that mixes known prompt content with unknown generated content is unique to the
request as well.
"""

from __future__ import annotations

from llmsim.trace.record import Request

ROOT_HASH = 0x6C6C6D73696D  # any fixed int; ints (not str) keep hashes PYTHONHASHSEED-free
_TAG_TRACE_HASH = 1
_TAG_UNIQUE = 2


class BlockHasher:
    """Incrementally computes the chained hashes of one sequence's full blocks.

    Args:
        request: the request whose tokens are hashed.
        block_size: engine block size ``B`` in tokens (> 0).
        salt: per-request value making unknown content unique (the request's trace index).
    """

    __slots__ = ("_req", "_bs", "_salt", "hashes", "_ids", "_n_known")

    def __init__(self, request: Request, block_size: int, salt: int) -> None:
        self._req = request
        self._bs = block_size
        self._salt = salt
        self.hashes: list[int] = []
        ids: tuple[int, ...] | None = None
        n_known = 0
        if request.input_token_ids is not None:
            ids = request.input_token_ids
            n_known = len(ids)
            if request.output_token_ids is not None:
                ids = ids + request.output_token_ids
                n_known = len(ids)
        self._ids = ids
        self._n_known = n_known  # tokens whose ids are known (prefix of the sequence)

    def ensure(self, num_blocks: int) -> list[int]:
        """Extend :attr:`hashes` to at least ``num_blocks`` entries and return it."""
        hashes = self.hashes
        j = len(hashes)
        if j >= num_blocks:
            return hashes
        parent = hashes[-1] if hashes else ROOT_HASH
        bs = self._bs
        ids = self._ids
        known = self._n_known
        while j < num_blocks:
            end = (j + 1) * bs
            if ids is not None and end <= known:
                content: object = ids[j * bs:end]
            else:
                content = self._fallback_content(j)
            parent = hash((parent, content))
            hashes.append(parent)
            j += 1
        return hashes

    def _fallback_content(self, j: int) -> object:
        req = self._req
        bs = self._bs
        hb = req.block_hashes
        h = req.hash_block_size
        start, end = j * bs, (j + 1) * bs
        if hb and h > 0 and end <= req.input_tokens:
            k0, k1 = start // h, (end - 1) // h
            if k1 < len(hb):
                return (_TAG_TRACE_HASH, tuple(hb[k0:k1 + 1]), start % h)
        return (_TAG_UNIQUE, self._salt, j)
