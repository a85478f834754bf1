"""A minimal real continuous-batching engine on PyTorch, for closing the loop on a CPU.

It serves a trace in real time with the operators the profiler times (:mod:`profiler.ops`)
on a random-weight model of the given config, so a profile taken on the same machine prices
exactly its forward passes. Measured TTFT / ITL come from real arrival times and real
forward passes.

Scheduling mirrors vLLM V1 (``docs/engine-semantics.md``), restricted to what a
closed-loop check needs:

* one step = schedule -> one forward pass over every scheduled token -> update;
* running requests first, in admission order, each ``min(remaining tokens, budget)``
  (1 for a decode; chunked prefill), then waiting requests strictly FCFS while budget and
  ``max_num_seqs`` allow;
* a request emits its first token at the end of the step that computes its last prompt
  token, then one token per step; output lengths are fixed (no EOS);
* paged KV cache with blocks of ``block_size`` slots from a FIFO free list.

The scheduler here is deliberately a separate, minimal implementation rather than
:mod:`llmsim.scheduler`: the engine is the *measured* side of the comparison, and sharing the
simulator's scheduler would hide any scheduling mistake both sides made alike.

Deliberate differences from vLLM: no prefix caching and no preemption (the block pool is
sized so every admitted request fits; running out raises :class:`InvariantError`), greedy
sampling, one synchronous process (no async scheduling, no API server, no detokenizer).

The forward pass is :func:`profiler.in_context.forward`, the very operator sequence the
in-context profiler times. ``Engine.run(..., time_ops=True)`` also records every operator's
``perf_counter_ns`` span, so a calibration run can measure the engine's per-step CPU work
outside the profiled operators (scheduling, input preparation, Python glue of the forward
pass, bookkeeping) as step time minus the sum of operator times.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field

import torch

from llmsim.errors import InvariantError
from llmsim.model.config import ModelConfig
from llmsim.trace.record import Request
from profiler import in_context, ops

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Engine limits (vLLM argument names).

    Attributes:
        max_num_seqs: most running requests.
        max_num_batched_tokens: token budget per step.
        block_size: KV slots per block.
        num_blocks: KV blocks in the pool.
        num_threads: torch CPU threads.
    """

    max_num_seqs: int = 16
    max_num_batched_tokens: int = 256
    block_size: int = 16
    num_blocks: int = 1024
    num_threads: int = 1


@dataclass(slots=True, kw_only=True)
class _Seq:
    req: Request
    index: int
    prompt: torch.Tensor
    blocks: list[int] = field(default_factory=list)
    num_computed: int = 0
    last_token: int = 0
    token_times_s: list[float] = field(default_factory=list)
    first_scheduled_s: float = float("nan")

    @property
    def num_generated(self) -> int:
        return len(self.token_times_s)

    def num_tokens(self) -> int:
        """Tokens whose KV the request needs: prompt + generated (the last one not yet)."""
        return self.req.input_tokens + max(0, self.num_generated)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepLog:
    """One engine step.

    Attributes:
        start_s, end_s: step wall times from the run start, s.
        num_prefill_tokens, num_decodes: scheduled work.
        schedule_ns: scheduling and input preparation (CPU), ns.
        forward_ns: the forward pass incl. sampling (the profiled operators), ns.
        update_ns: bookkeeping after the forward pass, ns.
        step_ns: the whole engine iteration (admission, schedule, forward, update), ns.
        step_cpu_ns: CPU time of the engine thread over the iteration
            (``time.thread_time_ns``); below ``step_ns`` when other processes preempted
            it on a shared machine, ns.
        op_ns: sum of the operators' spans inside the forward pass (0 unless the run
            timed operators), ns.
        prefills: ``(new tokens, cached tokens, completes the prompt)`` per scheduled
            prefill chunk.
        decode_lens: context length (incl. the new token) of every decode.
    """

    start_s: float
    end_s: float
    num_prefill_tokens: int
    num_prefills: int
    num_decodes: int
    schedule_ns: int
    forward_ns: int
    update_ns: int
    step_ns: int = 0
    step_cpu_ns: int = 0
    op_ns: int = 0
    prefills: tuple[tuple[int, int, bool], ...] = ()
    decode_lens: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineResult:
    """Measured per-request timings (s from the run start; arrivals are the trace's)."""

    arrival_s: list[float]
    first_scheduled_s: list[float]
    token_times_s: list[list[float]]
    input_lens: list[int]
    output_lens: list[int]
    steps: list[StepLog]
    duration_s: float

    def cpu_share(self) -> float:
        """Engine-thread CPU time / wall time over all steps (1.0 = never preempted)."""
        wall = sum(s.step_ns for s in self.steps)
        return sum(s.step_cpu_ns for s in self.steps) / wall if wall else float("nan")


class TinyModel:
    """A random-weight decoder-only model built from :mod:`profiler.ops`."""

    def __init__(self, model: ModelConfig, *, num_slots: int, max_positions: int,
                 seed: int = 0) -> None:
        self.shapes = ops.layer_shapes(model, 1)
        dt, dev = torch.float32, torch.device("cpu")
        self.layers = [ops.build_layer(self.shapes, dtype=dt, device=dev, seed=seed + 10 * i)
                       for i in range(model.num_hidden_layers)]
        self.step_w = ops.build_step_weights(self.shapes, dtype=dt, device=dev,
                                             max_positions=max_positions, seed=seed + 1)
        s = self.shapes
        self.k_cache = [torch.zeros(num_slots, s.kv_heads, s.head_dim) for _ in self.layers]
        self.v_cache = [torch.zeros(num_slots, s.kv_heads, s.head_dim) for _ in self.layers]

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, meta: ops.AttentionMeta,
                sample_rows: torch.Tensor,
                clock: in_context.OpClock | None = None) -> torch.Tensor:
        """Tokens ``ids [T]`` at ``positions [T]`` -> greedy next tokens of ``sample_rows``
        (operator spans recorded in ``clock`` when given)."""
        return in_context.forward(self.shapes, self.layers, self.step_w, self.k_cache,
                                  self.v_cache, ids, positions, meta, sample_rows, clock=clock)


class Engine:
    """Serves requests in real time with vLLM-V1-like continuous batching."""

    def __init__(self, model: ModelConfig, cfg: EngineConfig, *, max_positions: int,
                 seed: int = 0) -> None:
        torch.set_num_threads(cfg.num_threads)
        self.cfg = cfg
        self.model = TinyModel(model, num_slots=cfg.num_blocks * cfg.block_size,
                               max_positions=max_positions, seed=seed)
        self.vocab = model.vocab_size
        self.free_blocks: collections.deque[int] = collections.deque(range(cfg.num_blocks))
        self.running: list[_Seq] = []
        self.waiting: collections.deque[_Seq] = collections.deque()
        self._gen = torch.Generator().manual_seed(seed + 99)

    # ------------------------------------------------------------------ scheduling
    def _allocate(self, seq: _Seq, num_tokens: int) -> None:
        need = -(-num_tokens // self.cfg.block_size) - len(seq.blocks)
        if need > len(self.free_blocks):
            raise InvariantError("KV block pool exhausted (the closed-loop engine does not "
                                 "preempt; size num_blocks for the trace)",
                                 request_id=seq.req.request_id)
        seq.blocks.extend(self.free_blocks.popleft() for _ in range(max(0, need)))

    def schedule(self, now_s: float) -> list[tuple[_Seq, int]]:
        """Running first (admission order), then waiting FCFS; ``(seq, new tokens)``."""
        budget = self.cfg.max_num_batched_tokens
        out: list[tuple[_Seq, int]] = []
        for seq in self.running:
            if budget == 0:
                break
            n = min(seq.num_tokens() - seq.num_computed, budget)
            self._allocate(seq, seq.num_computed + n)
            out.append((seq, n))
            budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.cfg.max_num_seqs:
            seq = self.waiting.popleft()
            n = min(seq.req.input_tokens, budget)
            self._allocate(seq, n)
            seq.first_scheduled_s = now_s
            self.running.append(seq)
            out.append((seq, n))
            budget -= n
        return out

    def _slots(self, seq: _Seq, length: int) -> torch.Tensor:
        bs = self.cfg.block_size
        blocks = torch.tensor(seq.blocks, dtype=torch.long)
        return (blocks.unsqueeze(1) * bs + torch.arange(bs)).reshape(-1)[:length]

    def _inputs(self, sched: list[tuple[_Seq, int]]):
        """Token ids, positions, attention metadata and sampled rows of a step (prefill
        chunks first, then decodes)."""
        prefills = [(s, n) for s, n in sched if s.num_computed < s.req.input_tokens]
        decodes = [(s, n) for s, n in sched if s.num_computed >= s.req.input_tokens]
        ids, pos, sample_rows, order = [], [], [], []
        row = 0
        for s, n in prefills:
            c = s.num_computed
            ids.append(s.prompt[c:c + n])
            pos.append(torch.arange(c, c + n))
            row += n
            if c + n == s.req.input_tokens:
                sample_rows.append(row - 1)
                order.append(s)
        for s, _ in decodes:
            ids.append(torch.tensor([s.last_token]))
            pos.append(torch.tensor([s.num_computed]))
            sample_rows.append(row)
            order.append(s)
            row += 1
        meta = ops.build_attention_meta(
            [(self._slots(s, s.num_computed + n), n) for s, n in prefills],
            [self._slots(s, s.num_computed + 1) for s, _ in decodes], torch.device("cpu"))
        return (torch.cat(ids), torch.cat(pos), meta,
                torch.tensor(sample_rows, dtype=torch.long), order, len(prefills),
                sum(n for _, n in prefills), len(decodes))

    def _update(self, sched: list[tuple[_Seq, int]], order: list[_Seq],
                tokens: torch.Tensor, now_s: float) -> list[_Seq]:
        for s, n in sched:
            s.num_computed += n
        finished = []
        for s, tok in zip(order, tokens.tolist(), strict=True):
            s.last_token = int(tok)
            s.token_times_s.append(now_s)
            if s.num_generated >= s.req.output_tokens:
                finished.append(s)
        for s in finished:
            self.running.remove(s)
            self.free_blocks.extend(reversed(s.blocks))
            s.blocks = []
        return finished

    # ------------------------------------------------------------------------ run
    def run(self, requests: list[Request], *, time_ops: bool = False) -> EngineResult:
        """Serve ``requests`` (sorted by arrival) in real time until all finish.

        Args:
            requests: the trace, sorted by arrival.
            time_ops: record every operator's span (``StepLog.op_ns``); for calibration
                runs (it adds two clock reads per operator call).
        """
        seqs = [_Seq(req=r, index=i, prompt=torch.tensor(r.input_token_ids, dtype=torch.long)
                     if r.input_token_ids else torch.randint(0, self.vocab, (r.input_tokens,),
                                                             generator=self._gen))
                for i, r in enumerate(requests)]
        pending = collections.deque(seqs)
        steps: list[StepLog] = []
        t0 = time.perf_counter()
        done = 0
        while done < len(seqs):
            step_a = time.perf_counter_ns()
            cpu_a = time.thread_time_ns()
            now = time.perf_counter() - t0
            while pending and pending[0].req.arrival_ns * 1e-9 <= now:
                self.waiting.append(pending.popleft())
            if not self.running and not self.waiting:
                time.sleep(max(0.0, pending[0].req.arrival_ns * 1e-9 - now))
                continue
            a = time.perf_counter_ns()
            sched = self.schedule(now)
            prefills = tuple((n, s.num_computed, s.num_computed + n == s.req.input_tokens)
                             for s, n in sched if s.num_computed < s.req.input_tokens)
            decode_lens = tuple(s.num_computed + 1 for s, _ in sched
                                if s.num_computed >= s.req.input_tokens)
            ids, pos, meta, rows, order, npf, npt, nd = self._inputs(sched)
            b = time.perf_counter_ns()
            clock = in_context.OpClock() if time_ops else None
            tokens = self.model.forward(ids, pos, meta, rows, clock)
            c = time.perf_counter_ns()
            end_s = time.perf_counter() - t0
            done += len(self._update(sched, order, tokens, end_s))
            d = time.perf_counter_ns()
            cpu_d = time.thread_time_ns()
            steps.append(StepLog(start_s=now, end_s=end_s, num_prefill_tokens=npt,
                                 num_prefills=npf, num_decodes=nd, schedule_ns=b - a,
                                 forward_ns=c - b, update_ns=d - c, step_ns=d - step_a,
                                 step_cpu_ns=cpu_d - cpu_a,
                                 op_ns=clock.total_ns() if clock is not None else 0,
                                 prefills=prefills, decode_lens=decode_lens))
        duration = time.perf_counter() - t0
        return EngineResult(
            arrival_s=[s.req.arrival_ns * 1e-9 for s in seqs],
            first_scheduled_s=[s.first_scheduled_s for s in seqs],
            token_times_s=[s.token_times_s for s in seqs],
            input_lens=[s.req.input_tokens for s in seqs],
            output_lens=[s.req.output_tokens for s in seqs], steps=steps, duration_s=duration)
