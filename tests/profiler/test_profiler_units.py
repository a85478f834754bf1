"""Operators (paged attention against a dense reference, MoE routing), timers (CPU and a
fake CUDA), the journal, grids and profile comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmsim.errors import ConfigError
from llmsim.model.config import load_model_config
from profiler import ops
from profiler.compare import compare_profiles, format_table, plot_ratios
from profiler.grid import get_preset
from profiler.store import Journal, read_journal
from profiler.suite import OpSuite, _paged_slots
from profiler.timing import CpuTimer, CudaEventTimer, summarize

FIXTURES = Path(__file__).parents[1] / "fixtures" / "profiler"


def _reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         cached: int) -> torch.Tensor:
    """Dense causal attention of ``q [new, H, d]`` over ``k, v [cached+new, KVH, d]``."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5
    mask = ops.causal_mask(q.shape[0], cached, q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


def test_paged_attention_matches_dense_reference() -> None:
    torch.manual_seed(0)
    shapes = ops.layer_shapes(load_model_config(FIXTURES / "tiny-llama.json"))
    h, kvh, d = shapes.q_heads, shapes.kv_heads, shapes.head_dim
    gen = torch.Generator().manual_seed(1)
    seqs = [(7, 20), (5, 0)]          # prefill chunks: (new, cached)
    dec = [33, 9, 17]                 # decode contexts incl. the new token
    slots, num_slots = _paged_slots([n + c for n, c in seqs] + dec, gen)
    kc = torch.randn(num_slots, kvh, d)
    vc = torch.randn(num_slots, kvh, d)
    rows = sum(n for n, _ in seqs) + len(dec)
    qkv = torch.randn(rows, shapes.q_size + 2 * shapes.kv_size)
    meta = ops.build_attention_meta([(slots[0], 7), (slots[1], 5)], slots[2:], torch.device("cpu"))
    k_ref, v_ref = kc.clone(), vc.clone()
    out = ops.attention(qkv, shapes, kc, vc, meta).view(rows, h, d)
    q, k, v = qkv.split([shapes.q_size, shapes.kv_size, shapes.kv_size], dim=-1)
    q, k, v = q.view(rows, h, d), k.view(rows, kvh, d), v.view(rows, kvh, d)
    k_ref[meta.slot_mapping] = k
    v_ref[meta.slot_mapping] = v
    assert torch.equal(kc, k_ref) and torch.equal(vc, v_ref)  # cache written in place
    row = 0
    for i, (new, cached) in enumerate(seqs):
        s = slots[i]
        want = _reference_attention(q[row:row + new], k_ref[s], v_ref[s], cached)
        torch.testing.assert_close(out[row:row + new], want, rtol=1e-4, atol=1e-5)
        row += new
    for j, s in enumerate(slots[2:]):
        want = _reference_attention(q[row + j:row + j + 1], k_ref[s], v_ref[s], len(s) - 1)
        torch.testing.assert_close(out[row + j:row + j + 1], want, rtol=1e-4, atol=1e-5)


def test_moe_uses_exactly_the_requested_experts() -> None:
    model = load_model_config(FIXTURES / "tiny-qwen3-moe.json")
    suite = OpSuite(model, 1, dtype=torch.float32, device=torch.device("cpu"), max_positions=64)
    used: list[int] = []
    real_mm = torch.mm

    def spy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        for e in range(model.num_experts):
            if b.data_ptr() == suite.layer.w13[e].data_ptr():
                used.append(e)
        return real_mm(a, b)

    call = suite.prepare("moe", (16, 4))
    torch.mm = spy
    try:
        out = call()
    finally:
        torch.mm = real_mm
    assert sorted(used) == [0, 1, 2, 3] and out.shape == (16, model.hidden_size)


def test_moe_matches_dense_per_token_reference() -> None:
    torch.manual_seed(0)
    e, h, i, k = 4, 8, 6, 2
    x, logits = torch.randn(5, h), torch.randn(5, e)
    w13, w2 = torch.randn(e, h, 2 * i), torch.randn(e, i, h)
    got = ops.moe(x, logits, w13, w2, k)
    p = logits.softmax(-1)
    tw, ti = p.topk(k, -1)
    tw = tw / tw.sum(-1, keepdim=True)
    want = torch.stack([sum(tw[t, j] * (ops.act_fn(x[t:t + 1] @ w13[ti[t, j]]) @ w2[ti[t, j]])[0]
                            for j in range(k)) for t in range(5)])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_rotary_preserves_norms_and_position_zero() -> None:
    shapes = ops.layer_shapes(load_model_config(FIXTURES / "tiny-llama.json"))
    sw = ops.build_step_weights(shapes, dtype=torch.float32, device=torch.device("cpu"),
                                max_positions=32)
    qkv = torch.randn(4, shapes.q_size + 2 * shapes.kv_size)
    out = ops.rotary_emb(qkv, torch.tensor([0, 1, 5, 31]), shapes, sw.rope_cos, sw.rope_sin)
    torch.testing.assert_close(out[0], qkv[0])
    qk = (shapes.q_heads + shapes.kv_heads) * shapes.head_dim
    torch.testing.assert_close(out[:, qk:], qkv[:, qk:])  # v untouched
    torch.testing.assert_close(out[:, :qk].view(4, -1, shapes.head_dim).norm(dim=-1),
                               qkv[:, :qk].view(4, -1, shapes.head_dim).norm(dim=-1))


def test_layernorm_is_rmsnorm_of_residual_sum() -> None:
    x, r, w = torch.randn(3, 16), torch.randn(3, 16), torch.rand(16)
    out, res = ops.layernorm(x, r, w)
    torch.testing.assert_close(res, x + r)
    torch.testing.assert_close(out, F.rms_norm(x + r, (16,), w, eps=ops.RMS_EPS))


def test_summarize_statistics() -> None:
    s = summarize([5, 1, 3, 2, 4, 100, 6, 7, 8, 9])
    assert s.median_ns == 5.5 and s.min_ns == 1 and s.max_ns == 100
    assert s.mean_ns == pytest.approx(14.5)
    assert s.p90_ns == pytest.approx(9 + 0.1 * 91)
    assert s.num_samples == 10
    with pytest.raises(ValueError):
        summarize([])


def test_cpu_timer_counts_calls() -> None:
    ticks = iter(range(0, 10_000, 7))
    calls = []
    timer = CpuTimer(clock_ns=lambda: next(ticks))
    out = timer.time(lambda: calls.append(1), warmup=3, repetitions=4)
    assert len(calls) == 7 and out == [7.0] * 4


class FakeCuda:
    """``torch.cuda`` stand-in: a device clock advanced by kernels; events read it when
    the stream reaches them; graphs record kernels during capture and replay them."""

    def __init__(self) -> None:
        self.t_ms = 0.0
        self.capturing = None
        self.synced = 0
        self.launched = 0

    def kernel(self, ms: float) -> None:
        if self.capturing is not None:
            self.capturing.kernels.append(ms)
        else:
            self.launched += 1
            self.t_ms += ms

    def Event(self, enable_timing: bool = False):
        cuda = self

        class _Event:
            def record(self) -> None:
                self.t = cuda.t_ms

            def elapsed_time(self, end) -> float:
                return end.t - self.t
        return _Event()

    def synchronize(self) -> None:
        self.synced += 1

    def Stream(self):
        return object()

    def stream(self, s):
        import contextlib
        return contextlib.nullcontext()

    def CUDAGraph(self):
        cuda = self

        class _Graph:
            kernels: list[float]

            def __init__(self) -> None:
                self.kernels = []

            def replay(self) -> None:
                cuda.t_ms += sum(self.kernels) * 0.5  # replays skip launch gaps

        return _Graph()

    def graph(self, g):
        import contextlib
        cuda = self

        @contextlib.contextmanager
        def cm():
            cuda.capturing = g
            try:
                yield
            finally:
                cuda.capturing = None
        return cm()


def test_cuda_event_timer_with_fake_device() -> None:
    cuda = FakeCuda()
    timer = CudaEventTimer(cuda)
    out = timer.time(lambda: cuda.kernel(0.25), warmup=2, repetitions=3)
    assert out == [pytest.approx(250_000.0)] * 3  # ns
    assert cuda.synced == 1 and cuda.launched == 5 and timer.name == "cuda_event"


def test_cuda_graph_timer_times_replays() -> None:
    cuda = FakeCuda()
    timer = CudaEventTimer(cuda, cuda_graphs=True)
    out = timer.time(lambda: cuda.kernel(0.25), warmup=1, repetitions=2)
    assert out == [pytest.approx(125_000.0)] * 2
    assert cuda.launched == 1  # only the side-stream warm-up ran eagerly


def test_journal_drops_torn_line_and_appends_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.append({"type": "header", "n": 1})
    j.append({"type": "point", "key": "a"})
    j.close()
    with open(path, "a") as f:
        f.write('{"type": "point", "ke')  # killed mid-write
    assert [r["type"] for r in read_journal(path)] == ["header", "point"]
    j = Journal(path)
    j.append({"type": "point", "key": "b"})
    j.close()
    assert [r.get("key") for r in read_journal(path)] == [None, "a", "b"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_grid_presets_and_caps() -> None:
    full = get_preset("full")
    assert full.tokens[:3] == (1, 2, 3) and full.tokens[-1] == 2048 and len(full.tokens) == 152
    capped = get_preset("ci").capped(max_tokens=100, max_sequences=10, max_context=300)
    assert capped.tokens[-1] == 100 and capped.sequences[-1] == 10
    assert all(pc + kvp <= 300 and kvd <= 300 for pc, kvp, _, kvd in capped.attention_points())
    with pytest.raises(ConfigError):
        get_preset("huge")


def test_compare_profiles_ratios(tmp_path: Path) -> None:
    from llmsim.v1 import profile_pb2 as pb

    def prof(scale: float) -> pb.Profile:
        p = pb.Profile(schema_version=1)
        t = p.tp.add(tp_degree=1)
        o = t.ops.add(op="qkv_proj", kind=pb.OP_KIND_DENSE)
        o.axes.add(name="tokens", values=[1, 2, 4])
        o.median_ns.extend([100 * scale, 200 * scale, 400 * scale])
        o2 = t.ops.add(op="lm_head", kind=pb.OP_KIND_PER_SEQUENCE)
        o2.axes.add(name="sequences", values=[1, 8])
        o2.mean_ns.extend([10.0, 20.0 * scale])  # imported profiles carry only the mean
        return p

    ratios = compare_profiles(prof(1.0), prof(2.0))
    by_op = {r.op: r for r in ratios}
    assert by_op["qkv_proj"].ratios == (2.0, 2.0, 2.0)
    assert by_op["lm_head"].geomean == pytest.approx(2.0 ** 0.5)
    assert "qkv_proj" in format_table(ratios, label_a="A", label_b="B")
    png = tmp_path / "r.png"
    plot_ratios(ratios, png, title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
