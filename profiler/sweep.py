"""The profiling sweep: measure every (TP degree, operator, point), journal it, build the profile.

Flow: open (or resume) the journal -> measure idle power once -> for each TP degree build
the random-weight :class:`~profiler.suite.OpSuite`, then for each operator point not yet in
the journal: prepare inputs, time ``repetitions`` calls after ``warmup``, optionally loop it
over an energy window, append the record -> KV-skew points -> assemble the
``llmsim.v1.Profile`` from the journal -> write it atomically -> delete the journal.

Timing modes (:class:`~profiler.timing.TimingMode`): ``hot`` and ``cold`` time one operator
call at a time as above; ``in-context`` (the CPU default) times every operator inside whole
forward passes (:mod:`profiler.in_context`): the points are grouped by the pass that measures
them (e.g. every dense op at ``T`` tokens comes from the same passes), a group's passes run
once, and each point of the group gets its own journal record.

Resume: the journal starts with a fingerprint of everything that changes the numbers
(model config hash, grid, TP degrees, dtype, device, threads, repetitions, energy settings);
``resume=True`` refuses a journal whose fingerprint differs and skips every point already
recorded, so a killed sweep never re-measures finished points.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmsim.errors import ConfigError
from llmsim.model.config import ModelConfig
from llmsim.profile import SCHEMA_VERSION
from llmsim.v1 import profile_pb2 as pb
from profiler import (
    PROFILER_NAME,
    __version__,
    energy,
    in_context,
    ops,
    provenance,
    suite,
)
from profiler.grid import GridSpec
from profiler.store import Journal, journal_path, read_journal, write_profile
from profiler.timing import Timer, TimingMode, make_timer, summarize

logger = logging.getLogger(__name__)

DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "fp32": (torch.float32, 4), "bf16": (torch.bfloat16, 2), "fp16": (torch.float16, 2)}
_STATS = ("median_ns", "mean_ns", "p90_ns", "min_ns", "max_ns", "std_ns")
_SKEW_RATIOS = (0.25, 0.5)
_SKEW_FACTOR = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepConfig:
    """What to measure and how.

    Attributes:
        model: architecture to build.
        model_path: the config file it came from (provenance).
        grid: measurement grid.
        tp_degrees: TP degrees to measure (one rank's shapes each).
        device: "cpu" or "cuda[:i]".
        dtype: "fp32", "bf16" or "fp16".
        warmup: untimed calls per point.
        repetitions: timed calls per point.
        num_threads: CPU threads for torch (``torch.set_num_threads``).
        cuda_graphs: time CUDA-graph replays (CUDA only).
        energy: measure energy where a counter is readable.
        energy_window_s: minimum energy window per point, s.
        hardware: short hardware label ("" = derived from the device name).
        seed: weight and input seed.
        flush_cache_bytes: bytes overwritten before every timed call (``cold`` timing).
            See :func:`profiler.timing.cache_flusher`.
        timing: ``hot``, ``cold`` or ``in-context``; None picks the device's default
            (``cold`` when ``flush_cache_bytes`` is set, else ``in-context`` on the CPU and
            ``hot`` on CUDA). See :meth:`timing_mode`.
        context_budget_bytes: memory cap of the in-context passes' distinct layer weight
            copies (:func:`profiler.in_context.layer_copies`).
    """

    model: ModelConfig
    model_path: str = ""
    grid: GridSpec
    tp_degrees: tuple[int, ...] = (1,)
    device: str = "cpu"
    dtype: str = "fp32"
    warmup: int = 3
    repetitions: int = 10
    num_threads: int = 1
    cuda_graphs: bool = False
    energy: bool = True
    energy_window_s: float = 1.0
    hardware: str = ""
    seed: int = 0
    flush_cache_bytes: int = 0
    timing: TimingMode | None = None
    context_budget_bytes: int = in_context.DEFAULT_BUDGET_BYTES

    def timing_mode(self) -> TimingMode:
        """The timing mode in force (resolving the device default)."""
        if self.timing is not None:
            return TimingMode(self.timing)
        if self.flush_cache_bytes:
            return TimingMode.COLD
        return TimingMode.HOT if self.device.startswith("cuda") else TimingMode.IN_CONTEXT

    def context_layer_copies(self, tp: int) -> int:
        """Distinct layer copies of an in-context pass at ``tp``."""
        return in_context.layer_copies(self.model, ops.layer_shapes(self.model, tp),
                                       DTYPES[self.dtype][1], self.context_budget_bytes)

    def max_positions(self) -> int:
        """RoPE cache length covering every position the grid reaches."""
        g = self.grid
        return max((g.max_context, *g.tokens, *g.moe_tokens, *g.prefill_chunks)) + 1

    def validate(self) -> None:
        """Check the settings' consistency.

        Raises:
            ConfigError: unknown dtype, a timing mode that contradicts the flush size, or
                in-context timing on CUDA.
        """
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; choose one of "
                              f"{', '.join(DTYPES)}", field="dtype")
        mode = self.timing_mode()
        if mode == TimingMode.COLD and self.flush_cache_bytes <= 0:
            raise ConfigError("cold timing needs flush_cache_bytes > 0", field="timing")
        if mode != TimingMode.COLD and self.flush_cache_bytes:
            raise ConfigError(f"{mode} timing flushes no cache; set flush_cache_bytes to 0 "
                              "or use cold timing", field="flush_cache_bytes")
        if mode == TimingMode.IN_CONTEXT and self.device.startswith("cuda"):
            raise ConfigError("in-context timing is CPU-only (per-op spans need synchronous "
                              "execution); use hot or cold on CUDA", field="timing")
        if self.context_budget_bytes <= 0:
            raise ConfigError("context_budget_bytes must be > 0", field="context_budget_bytes")

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes measured values (compared on resume)."""
        return {
            "model_config_sha256": self.model.config_sha256, "model": self.model.name,
            "grid": self.grid.to_json_dict(), "tp_degrees": list(self.tp_degrees),
            "device": self.device, "dtype": self.dtype, "warmup": self.warmup,
            "repetitions": self.repetitions, "num_threads": self.num_threads,
            "cuda_graphs": self.cuda_graphs, "energy": self.energy,
            "energy_window_s": self.energy_window_s, "seed": self.seed,
            "flush_cache_bytes": self.flush_cache_bytes,
            "timing": str(self.timing_mode()),
            "context_budget_bytes": (self.context_budget_bytes
                                     if self.timing_mode() == TimingMode.IN_CONTEXT else 0),
            "profiler_version": __version__,
        }


@dataclass(slots=True, kw_only=True)
class SweepState:
    """What the journal says has been done (mutable while sweeping)."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    started_at: str = ""
    sessions: int = 0
    idle: dict[str, Any] | None = None
    measured_now: int = 0
    timed_wall_ns: int = 0  # in-context passes of this session: wall time ...
    timed_cpu_ns: int = 0   # ... and this thread's CPU time over them
    preempted_dropped: int = 0    # op spans dropped as preempted (this session)
    preempted_fallbacks: int = 0  # (point, op) groups that kept preempted spans


def point_key(tp: int, op: str, point: tuple[int, ...]) -> str:
    """Journal key of one measured point, e.g. ``tp1/qkv_proj/16``."""
    return f"tp{tp}/{op}/{','.join(str(v) for v in point)}"


def _skew_points(grid: GridSpec) -> list[tuple[int, int, int]]:
    """``(n, n_big, kv_small)`` decode batches with unequal KV lengths."""
    out = []
    for n in grid.skew_n_decode:
        for kvs in grid.kv_decode:
            if kvs * _SKEW_FACTOR > grid.max_context:
                continue
            for ratio in _SKEW_RATIOS:
                nb = max(1, int(n * ratio))
                if nb < n:
                    out.append((n, nb, kvs))
    return out


def _open_state(cfg: SweepConfig, out: Path, resume: bool) -> SweepState:
    jpath = journal_path(out)
    state = SweepState()
    if jpath.exists():
        if not resume:
            raise ConfigError(f"a sweep journal exists ({jpath}); pass --resume to continue it "
                              f"or delete it to start over", field="resume")
        records = read_journal(jpath)
        if not records or records[0].get("type") != "header":
            raise ConfigError("journal has no header; delete it", path=jpath)
        if records[0]["fingerprint"] != json.loads(json.dumps(cfg.fingerprint())):
            raise ConfigError("journal was taken with different settings (model, grid, "
                              "device, dtype, threads or repetitions); delete it or rerun "
                              "with the same settings", path=jpath, field="fingerprint")
        state.started_at = records[0]["started_at"]
        for rec in records:
            if rec["type"] in ("point", "skew"):
                state.records[rec["key"]] = rec
            elif rec["type"] == "idle":
                state.idle = rec
            elif rec["type"] == "session":
                state.sessions += 1
        logger.info("resuming %s: %d points already measured", jpath, len(state.records))
    else:
        state.started_at = provenance.now_rfc3339()
        j = Journal(jpath)
        j.append({"type": "header", "fingerprint": cfg.fingerprint(),
                  "started_at": state.started_at})
        j.close()
    return state


class _Progress:
    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self._bar = None
        if enabled:
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=done, unit="pt", desc="profile",
                             dynamic_ncols=True)

    def update(self, desc: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(desc, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _measure(call: Callable[[], Any], cfg: SweepConfig, timer: Timer,
             meter: energy.EnergyMeter | None) -> dict[str, Any]:
    stats = summarize(timer.time(call, warmup=cfg.warmup, repetitions=cfg.repetitions))
    rec: dict[str, Any] = {"stats": {k: getattr(stats, k) for k in _STATS},
                           "num_samples": stats.num_samples, "energy": None}
    if meter is not None:
        r = meter.measure(call, min_window_s=cfg.energy_window_s)
        rec["energy"] = {"energy_j": r.energy_per_call_j, "avg_power_w": r.avg_power_w,
                         "calls": r.calls, "window_ns": r.window_ns}
    return rec


def run_sweep(cfg: SweepConfig, out: str | Path, *, resume: bool = False,
              progress: bool = True, counter: energy.EnergyCounter | None = None,
              energy_reason: str = "") -> pb.Profile:
    """Measure ``cfg`` and write the profile to ``out`` (atomically).

    Args:
        cfg: what to measure.
        out: profile path (``.pb``); its journal sits next to it until the sweep completes.
        resume: continue an interrupted sweep from its journal.
        progress: show a progress bar on stderr.
        counter: energy counter to use; ``None`` opens the device's default one
            (NVML / RAPL) when ``cfg.energy``.
        energy_reason: why energy is unavailable when ``counter`` is passed as None
            deliberately (recorded in provenance).

    Returns:
        The written profile.

    Raises:
        ConfigError: bad dtype/device/timing mode, an existing journal without ``resume``,
            or a journal taken with other settings.
    """
    out = Path(out)
    cfg.validate()
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("CUDA device requested but torch sees no GPU", field="device")
    torch.set_num_threads(cfg.num_threads)
    state = _open_state(cfg, out, resume)
    journal = Journal(journal_path(out))
    journal.append({"type": "session", "at": provenance.now_rfc3339(),
                    "already_measured": len(state.records)})
    timer = make_timer(cfg.device, cuda_graphs=cfg.cuda_graphs,
                       flush_bytes=cfg.flush_cache_bytes)
    meter, reason = _open_meter(cfg, counter, energy_reason, timer)
    if meter is not None and state.idle is None:
        state.idle = {"type": "idle", "idle_power_w": meter.idle_power_w(
            window_s=cfg.energy_window_s), "source": meter.source}
        journal.append(state.idle)
    try:
        if cfg.timing_mode() == TimingMode.IN_CONTEXT:
            _sweep_in_context(cfg, state, journal, meter, progress)
        else:
            _sweep_all(cfg, state, journal, timer, meter, progress)
    finally:
        journal.close()
    profile = build_profile(cfg, state, meter=meter, energy_reason=reason)
    write_profile(profile, out)
    journal_path(out).unlink(missing_ok=True)
    logger.info("wrote %s (%d points, %d measured in this session)", out,
                len(state.records), state.measured_now)
    return profile


def _open_meter(cfg: SweepConfig, counter: energy.EnergyCounter | None, reason: str,
                timer: Timer) -> tuple[energy.EnergyMeter | None, str]:
    if not cfg.energy:
        return None, "energy measurement disabled (--no-energy)"
    if counter is None and not reason:
        counter, reason = energy.open_counter(cfg.device)
    if counter is None:
        logger.info("energy: %s", reason or "unavailable")
        return None, reason or "no energy counter"
    return energy.EnergyMeter(counter, synchronize=timer.synchronize), ""


def _all_points(cfg: SweepConfig) -> list[tuple[int, suite.OpTarget, tuple[int, ...]]]:
    return [(tp, t, p) for tp in cfg.tp_degrees for t in suite.op_targets(cfg.model, tp)
            for p in suite.target_points(t, cfg.grid, cfg.model)]


def _sweep_all(cfg: SweepConfig, state: SweepState, journal: Journal, timer: Timer,
               meter: energy.EnergyMeter | None, progress: bool) -> None:
    points = _all_points(cfg)
    skews = [(tp, s) for tp in cfg.tp_degrees for s in _skew_points(cfg.grid)]
    total = len(points) + len(skews)
    bar = _Progress(total, len(state.records), progress)
    dtype = DTYPES[cfg.dtype][0]
    device = torch.device(cfg.device)
    suites: dict[int, suite.OpSuite] = {}

    def get_suite(tp: int) -> suite.OpSuite:
        if tp not in suites:
            suites.clear()  # one TP degree's weights at a time
            suites[tp] = suite.OpSuite(cfg.model, tp, dtype=dtype, device=device,
                                       max_positions=cfg.max_positions(), seed=cfg.seed)
        return suites[tp]

    try:
        for tp, target, point in points:
            key = point_key(tp, target.op, point)
            if key in state.records:
                continue
            call = get_suite(tp).prepare(target.op, point)
            rec = {"type": "point", "key": key, "tp": tp, "op": target.op,
                   "kind": target.kind, "axes": list(point),
                   **_measure(call, cfg, timer, meter)}
            _commit(rec, state, journal, bar)
        _sweep_skews(skews, state, journal, bar, lambda tp, lens: summarize(timer.time(
            get_suite(tp).attention_call([], lens), warmup=cfg.warmup,
            repetitions=cfg.repetitions)).median_ns)
    finally:
        bar.close()


def context_groups(cfg: SweepConfig, tp: int) -> list[
        tuple[in_context.ContextBatch, list[tuple[suite.OpTarget, tuple[int, ...]]]]]:
    """The in-context passes of ``tp`` and the grid points each one measures, in sweep order
    (mapping documented in :mod:`profiler.in_context`)."""
    g, m = cfg.grid, cfg.model
    targets = suite.op_targets(m, tp)
    dense = [t for t in targets if t.kind == pb.OP_KIND_DENSE]
    per_seq = [t for t in targets if t.kind == pb.OP_KIND_PER_SEQUENCE]
    out: list[tuple[in_context.ContextBatch, list[tuple[suite.OpTarget, tuple[int, ...]]]]] = []
    kv_mid, max_decodes = in_context.typical_decode(g.kv_decode, g.n_decode)
    for t in g.tokens:
        out.append((in_context.dense_batch(t, kv_mid, max_decodes),
                    [(d, (t,)) for d in dense]))
    for n in g.sequences:
        out.append((in_context.ContextBatch(decode_lens=(kv_mid,) * n),
                    [(d, (n,)) for d in per_seq]))
    for target in targets:
        if target.kind == pb.OP_KIND_ATTENTION:
            for pc, kvp, nd, kvd in g.attention_points():
                batch = in_context.ContextBatch(prefills=((pc, kvp),) if pc else (),
                                                decode_lens=(kvd,) * nd)
                out.append((batch, [(target, (pc, kvp, nd, kvd))]))
        elif target.kind == pb.OP_KIND_MOE:
            for t, a in suite.target_points(target, g, m):
                out.append((in_context.ContextBatch(prefills=((t, 0),), moe_active=a),
                            [(target, (t, a))]))
    return out


def _sweep_in_context(cfg: SweepConfig, state: SweepState, journal: Journal,
                      meter: energy.EnergyMeter | None, progress: bool) -> None:
    """Measure every point from context passes (see :func:`context_groups`); energy, when a
    counter is readable, loops each operator alone over the window (hot)."""
    groups = [(tp, b, pts) for tp in cfg.tp_degrees for b, pts in context_groups(cfg, tp)]
    skews = [(tp, s) for tp in cfg.tp_degrees for s in _skew_points(cfg.grid)]
    total = sum(len(pts) for _, _, pts in groups) + len(skews)
    bar = _Progress(total, len(state.records), progress)
    dtype = DTYPES[cfg.dtype][0]
    device = torch.device(cfg.device)
    runners: dict[int, in_context.ContextRunner] = {}
    suites: dict[int, suite.OpSuite] = {}

    def get_runner(tp: int) -> in_context.ContextRunner:
        if tp not in runners:
            runners.clear()  # one TP degree's weights at a time
            runners[tp] = in_context.ContextRunner(
                cfg.model, tp, dtype=dtype, device=device, max_positions=cfg.max_positions(),
                num_layer_copies=cfg.context_layer_copies(tp), seed=cfg.seed)
        return runners[tp]

    def get_suite(tp: int) -> suite.OpSuite:
        if tp not in suites:
            suites.clear()
            suites[tp] = suite.OpSuite(cfg.model, tp, dtype=dtype, device=device,
                                       max_positions=cfg.max_positions(), seed=cfg.seed)
        return suites[tp]

    def passes(tp: int, batch: in_context.ContextBatch) -> dict[str, list[float]]:
        one_pass = get_runner(tp).prepare(batch)
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        res = in_context.time_passes(one_pass, warmup=cfg.warmup, repetitions=cfg.repetitions)
        state.timed_wall_ns += time.perf_counter_ns() - w0
        state.timed_cpu_ns += time.thread_time_ns() - c0
        state.preempted_dropped += res.dropped
        if res.fallback_ops:
            state.preempted_fallbacks += len(res.fallback_ops)
            logger.warning("%s: too few unpreempted calls of %s within %d passes; kept "
                           "preempted spans", batch, ", ".join(res.fallback_ops), res.passes)
        return res.samples_ns

    try:
        for tp, batch, pts in groups:
            todo = [(t, p) for t, p in pts if point_key(tp, t.op, p) not in state.records]
            if not todo:
                continue
            samples = passes(tp, batch)
            for target, point in todo:
                key = point_key(tp, target.op, point)
                stats = summarize(samples[target.op])
                rec = {"type": "point", "key": key, "tp": tp, "op": target.op,
                       "kind": target.kind, "axes": list(point),
                       "stats": {k: getattr(stats, k) for k in _STATS},
                       "num_samples": stats.num_samples, "energy": None}
                if meter is not None:
                    r = meter.measure(get_suite(tp).prepare(target.op, point),
                                      min_window_s=cfg.energy_window_s)
                    rec["energy"] = {"energy_j": r.energy_per_call_j,
                                     "avg_power_w": r.avg_power_w, "calls": r.calls,
                                     "window_ns": r.window_ns}
                _commit(rec, state, journal, bar)
        _sweep_skews(skews, state, journal, bar, lambda tp, lens: summarize(passes(
            tp, in_context.ContextBatch(decode_lens=tuple(lens)))["attention"]).median_ns)
    finally:
        bar.close()


def _commit(rec: dict[str, Any], state: SweepState, journal: Journal, bar: _Progress) -> None:
    """Journal one measured record (appended and fsync'ed), remember it, advance the bar."""
    journal.append(rec)
    state.records[rec["key"]] = rec
    state.measured_now += 1
    bar.update(rec["key"])


def _sweep_skews(skews: list[tuple[int, tuple[int, int, int]]], state: SweepState, journal: Journal,
                 bar: _Progress, decode_median_ns: Callable[[int, list[int]], float]) -> None:
    """Measure the decode-skew points not yet journaled (see :func:`_measure_skew`).

    Args:
        skews: ``(tp, (n, nb, kvs))`` points in sweep order.
        decode_median_ns: ``(tp, decode KV lengths) -> median attention time, ns`` of a
            decode-only batch, as the sweep's timing mode measures it.
    """
    for tp, (n, nb, kvs) in skews:
        key = point_key(tp, "skew", (n, nb, kvs))
        if key in state.records:
            continue
        rec = _measure_skew(lambda lens, tp=tp: decode_median_ns(tp, lens), n, nb, kvs)
        rec.update(type="skew", key=key, tp=tp)
        _commit(rec, state, journal, bar)


def _measure_skew(attention_median_ns: Callable[[list[int]], float], n: int, nb: int,
                  kvs: int) -> dict[str, Any]:
    """Decode batch of ``n`` with ``nb`` at ``4 x kvs`` and the rest at ``kvs``: its time vs
    all-at-mean and all-at-max; ``alpha = (t_skew - t_mean) / (t_max - t_mean)``.

    Args:
        attention_median_ns: median attention time (ns) of a decode-only batch with the
            given context lengths, timed in the sweep's mode.
    """
    kv_big = kvs * _SKEW_FACTOR
    kv_mean = (nb * kv_big + (n - nb) * kvs) // n
    t = {}
    for name, lens in (("t_mean_ns", [kv_mean] * n), ("t_max_ns", [kv_big] * n),
                       ("t_skew_ns", [kv_big] * nb + [kvs] * (n - nb))):
        t[name] = attention_median_ns(lens)
    span = t["t_max_ns"] - t["t_mean_ns"]
    alpha = (t["t_skew_ns"] - t["t_mean_ns"]) / span if span > 0 else 0.0
    return {"n": n, "nb": nb, "kvs": kvs, "kv_big": kv_big, "kv_mean": kv_mean,
            "alpha": alpha, **t}


# ---------------------------------------------------------------------- profile assembly

def _op_table(target_op: str, kind: int, axes: tuple[str, ...], recs: list[dict[str, Any]],
              energy_source: str) -> pb.OpTable:
    recs = sorted(recs, key=lambda r: r["axes"])
    table = pb.OpTable(op=target_op, kind=kind)
    for i, name in enumerate(axes):
        table.axes.add(name=name, values=[r["axes"][i] for r in recs])
    for stat in _STATS:
        getattr(table, stat).extend(r["stats"][stat] for r in recs)
    table.num_samples.extend(r["num_samples"] for r in recs)
    if recs and all(r.get("energy") for r in recs):
        table.energy_j.extend(r["energy"]["energy_j"] for r in recs)
        table.avg_power_w.extend(r["energy"]["avg_power_w"] for r in recs)
        table.energy_source = energy_source
    else:
        table.energy_source = energy.UNAVAILABLE
    return table


def _skew(tp_prof: pb.TpProfile, recs: list[dict[str, Any]]) -> None:
    if not recs:
        return
    recs = sorted(recs, key=lambda r: (r["n"], r["kvs"], r["nb"]))
    sk = tp_prof.skew
    for r in recs:
        sk.regime.append("pure")
        sk.n.append(r["n"])
        sk.nb.append(r["nb"])
        sk.ratio.append(r["nb"] / r["n"])
        sk.skew.append(float(_SKEW_FACTOR))
        sk.pc.append(0)
        sk.kp.append(0)
        sk.kvs.append(r["kvs"])
        sk.kv_big.append(r["kv_big"])
        sk.kv_mean.append(r["kv_mean"])
        sk.t_mean_ns.append(r["t_mean_ns"])
        sk.t_max_ns.append(r["t_max_ns"])
        sk.t_skew_ns.append(r["t_skew_ns"])
        sk.alpha.append(r["alpha"])
    alphas = sorted(r["alpha"] for r in recs)
    tp_prof.skew_fit.method = "median_alpha"
    tp_prof.skew_fit.alpha_default = alphas[len(alphas) // 2]
    tp_prof.skew_fit.num_samples = len(alphas)


def build_profile(cfg: SweepConfig, state: SweepState, *, meter: energy.EnergyMeter | None,
                  energy_reason: str) -> pb.Profile:
    """Assemble the ``llmsim.v1.Profile`` from the journal's records."""
    facts = provenance.device_facts(cfg.device)
    m = cfg.model
    source = meter.source if meter is not None else energy.UNAVAILABLE
    prof = pb.Profile(schema_version=SCHEMA_VERSION, dtype=cfg.dtype)
    prof.model.CopyFrom(pb.ModelArchitecture(
        name=m.name, architecture=m.architecture, num_hidden_layers=m.num_hidden_layers,
        hidden_size=m.hidden_size, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_key_value_heads, head_dim=m.head_dim,
        intermediate_size=m.intermediate_size, vocab_size=m.vocab_size,
        num_experts=m.num_experts, num_experts_per_token=m.num_experts_per_token,
        moe_intermediate_size=m.moe_intermediate_size, dtype_bytes=DTYPES[cfg.dtype][1],
        config_sha256=m.config_sha256, tie_word_embeddings=m.tie_word_embeddings))
    for tp in cfg.tp_degrees:
        tp_prof = prof.tp.add(tp_degree=tp)
        for target in suite.op_targets(m, tp):
            recs = [r for r in state.records.values()
                    if r["type"] == "point" and r["tp"] == tp and r["op"] == target.op]
            tp_prof.ops.append(_op_table(target.op, target.kind, target.axes, recs, source))
        _skew(tp_prof, [r for r in state.records.values()
                        if r["type"] == "skew" and r["tp"] == tp])
    if state.idle is not None:
        prof.idle_power_w = state.idle["idle_power_w"]
    _provenance(prof.provenance, cfg, state, facts, meter, energy_reason)
    return prof


def _provenance(p: pb.Provenance, cfg: SweepConfig, state: SweepState, facts: dict[str, str],
                meter: energy.EnergyMeter | None, energy_reason: str) -> None:
    p.device_name = facts.get("device_name", "")
    p.hardware = cfg.hardware or provenance.short_label(p.device_name)
    p.driver_version = facts.get("driver_version", "")
    p.runtime_version = facts.get("runtime_version", "")
    p.framework, p.framework_version = "torch", torch.__version__
    p.profiler_name, p.profiler_version = PROFILER_NAME, __version__
    p.measured_at, p.measured_until = state.started_at, provenance.now_rfc3339()
    p.host = facts.get("host", "")
    mode = cfg.timing_mode()
    p.method.timer = f"{make_timer(cfg.device, cuda_graphs=cfg.cuda_graphs).name} ({mode})"
    p.method.warmup_iterations = cfg.warmup
    p.method.timed_iterations = cfg.repetitions
    p.method.cuda_graphs = cfg.cuda_graphs
    p.method.num_threads = cfg.num_threads
    p.method.statistic = "median"
    p.method.notes = ("random-weight decoder layers timed op by op in PyTorch; paged KV "
                      "cache (gather + scaled_dot_product_attention); all_reduce not measured; "
                      + _mode_note(cfg))
    p.source.kind = "measured"
    p.source.name = "llmsim profiler"
    p.source.path = cfg.model_path
    attrs = {
        "model_config_sha256": cfg.model.config_sha256, "grid": cfg.grid.name,
        "grid_axes": json.dumps(cfg.grid.to_json_dict(), sort_keys=True),
        "device": cfg.device, "kv_layout": "paged", "kv_block_size": str(suite.BLOCK_SIZE),
        "sessions": str(state.sessions + 1), "points": str(len(state.records)),
        "energy_source": meter.source if meter is not None else energy.UNAVAILABLE,
        "energy_window_s": str(cfg.energy_window_s),
        "flush_cache_bytes": str(cfg.flush_cache_bytes),
        "timing_mode": str(mode),
        **{k: v for k, v in facts.items() if k not in ("device_name", "host")},
    }
    if mode == TimingMode.IN_CONTEXT:
        attrs["context_layer_copies"] = ",".join(
            f"tp{tp}:{cfg.context_layer_copies(tp)}" for tp in cfg.tp_degrees)
        attrs["context_budget_bytes"] = str(cfg.context_budget_bytes)
        if state.timed_wall_ns:
            # 1.0 = never preempted; below it, other processes shared the cores
            attrs["context_cpu_share_last_session"] = (
                f"{state.timed_cpu_ns / state.timed_wall_ns:.3f}")
            attrs["context_preempted_spans_dropped_last_session"] = str(
                state.preempted_dropped)
            attrs["context_preempted_fallbacks_last_session"] = str(
                state.preempted_fallbacks)
    if meter is not None:
        attrs.update(meter.counter.describe())
        if mode == TimingMode.IN_CONTEXT:
            attrs["energy_method"] = "each operator looped alone over the window (hot cache)"
    else:
        attrs["energy_unavailable_reason"] = energy_reason
    p.attributes.update(attrs)



def _mode_note(cfg: SweepConfig) -> str:
    mode = cfg.timing_mode()
    if mode == TimingMode.COLD:
        return (f"timing mode cold: {cfg.flush_cache_bytes} bytes of cache flushed before "
                "every timed call")
    if mode == TimingMode.HOT:
        return "timing mode hot: each op called in a tight loop (weights stay cached)"
    copies = ", ".join(f"tp{tp}: {cfg.context_layer_copies(tp)}" for tp in cfg.tp_degrees)
    k, d = in_context.typical_decode(cfg.grid.kv_decode, cfg.grid.n_decode)
    return ("timing mode in-context: each op timed with perf_counter_ns around its call "
            "inside whole forward passes (embedding, per layer layernorm..down_proj/moe, "
            "final_layernorm, lm_head, sampler) over distinct random-weight layer copies "
            f"({copies}; the model's layer count capped at {cfg.context_budget_bytes} bytes "
            f"of weights); dense ops at T tokens from a pass of min(T, {d}) decodes at KV {k} "
            f"plus a prefill chunk of the rest, lm_head/sampler at S from S decodes at KV "
            f"{k}, attention/moe from a pass over the point's batch; per-layer ops pool one "
            "sample per layer copy and pass; timed_iterations counts passes; op calls during "
            "which the OS ran another process (wall > thread CPU time + 10 us + 5%) are "
            "dropped and replaced by extra passes")
