"""GPU power-state model and energy accounting over a replay's step log.

The model runs after the simulation loop, on values only: each step's start/end (s), its
device (kernel) time, its batch composition (prefill tokens, decodes, KV usage), the
instance's GPUs, and a :class:`~llmsim.power.spec.GpuPowerSpec`.

Per step and per GPU of the instance (the GPUs of a TP/PP instance are taken to draw alike):

* ``busy_s = min(gpu_ms / 1e3, end_s - start_s)``: kernels run; the rest of the step and every
  gap between steps (and before the first / after the last, up to the horizon) draws
  ``idle_w``.
* FLOPs ``= 2 x params / gpus x (prefill_tokens + decodes)`` (a multiply-add per weight per
  token; attention score FLOPs are left out) and bytes ``= weight_bytes / gpus +
  kv_cache_pct / 100 x kv_capacity_tokens x kv_bytes_per_token`` (weights and the resident
  KV cache read once per step).
* roofline shares: ``u_compute = FLOPs / (peak_bf16_flops_per_s x busy_s)``,
  ``u_memory = bytes / (memory_bandwidth_bytes_per_s x busy_s)``.
* ``active_w = idle_w + (power_limit_w - idle_w) x min(1, u_compute + u_memory)``: dynamic
  power grows with the fraction of the compute and memory roofline the step keeps busy and is
  capped at the power limit. This linear utilisation law is a modelling assumption of this
  module (docs/power.md), not a vendor figure.

A step energy measured by the profile (a finite ``measured_energy_j`` column in the step
log: NVML energy of the instance's forward pass) takes precedence over the active term.

This is the post-hoc form, on a kept step log (the ML.ENERGY script and tests cross-check
it); every replay accounts its energy online with the same law
(:mod:`llmsim.power.accumulator`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llmsim.errors import ConfigError
from llmsim.power.spec import GpuPowerSpec

MEASURED_COLUMN = "measured_energy_j"
"""Step-log column of a step's energy measured by the profile (the replay's own ``energy_j``
column is its *reported* energy, :mod:`llmsim.power.accumulator`)."""

SEGMENT_COLUMNS = ["gpu", "instance_id", "t0_s", "t1_s", "power_w", "kind"]
"""Columns of :attr:`PowerTrace.segments`: piecewise-constant power per GPU."""

STEP_ENERGY_COLUMNS = ["instance_id", "step", "start_s", "end_s", "busy_s", "u_compute",
                       "u_memory", "active_w", "energy_j", "prefill_energy_j",
                       "decode_energy_j", "source"]
"""Columns of :attr:`PowerTrace.steps`: energy of each step over all GPUs of its instance."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepShape:
    """Per-instance quantities turning a step's batch into FLOPs and bytes.

    Attributes:
        gpus_per_instance: GPUs of one instance (tensor x pipeline parallel degree).
        flops_per_token: FLOPs per token on one GPU, FLOP (``2 x params / gpus``).
        weight_bytes: weight bytes read per step by one GPU, bytes.
        kv_bytes_per_token: KV bytes per cached token on one GPU, bytes.
        kv_capacity_tokens: KV cache capacity of one instance, tokens.
    """

    gpus_per_instance: int
    flops_per_token: float
    weight_bytes: float
    kv_bytes_per_token: float
    kv_capacity_tokens: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PowerTrace:
    """Energy of a replay, per step and as piecewise-constant power per GPU.

    Attributes:
        steps: :data:`STEP_ENERGY_COLUMNS`, one row per step.
        segments: :data:`SEGMENT_COLUMNS`, covering ``[0, horizon_s]`` for every GPU.
        horizon_s: end of the accounted span, s.
        num_gpus: GPUs accounted (busy instances' GPUs plus idle ones).
    """

    steps: pd.DataFrame
    segments: pd.DataFrame
    horizon_s: float
    num_gpus: int

    @property
    def total_j(self) -> float:
        """Energy of all GPUs over ``[0, horizon_s]``, J."""
        s = self.segments
        return float(((s["t1_s"] - s["t0_s"]) * s["power_w"]).sum())

    def energy_between(self, t0_s: float, t1_s: float) -> float:
        """Energy of all GPUs within ``[t0_s, t1_s]``, J."""
        s = self.segments
        lo = np.maximum(s["t0_s"].to_numpy(), t0_s)
        hi = np.minimum(s["t1_s"].to_numpy(), t1_s)
        return float((np.clip(hi - lo, 0.0, None) * s["power_w"].to_numpy()).sum())

    def power_series(self, tick_s: float = 1.0) -> pd.DataFrame:
        """Average power per GPU per tick.

        Returns:
            columns ``t`` (end of the tick, s), ``gpu``, ``power_w`` (tick average, W).
        """
        n = max(1, math.ceil(self.horizon_s / tick_s - 1e-9))
        edges = np.arange(n + 1) * tick_s
        rows = []
        for gpu, seg in self.segments.groupby("gpu", sort=True):
            t0, t1, w = (seg[c].to_numpy() for c in ("t0_s", "t1_s", "power_w"))
            # cumulative energy at each edge: integrate piecewise-constant power
            cum_edges = np.zeros(n + 1)
            for i in range(len(t0)):
                a = np.clip(edges, t0[i], t1[i]) - t0[i]
                cum_edges += a * w[i]
            e = np.diff(cum_edges)
            span = np.diff(np.minimum(edges, self.horizon_s))
            p = np.divide(e, span, out=np.zeros_like(e), where=span > 0)
            rows.append(pd.DataFrame({"t": edges[1:], "gpu": gpu, "power_w": p}))
        return pd.concat(rows, ignore_index=True)


def _col(steps: pd.DataFrame, name: str) -> np.ndarray:
    if name not in steps.columns:
        raise ConfigError(f"the step log has no '{name}' column (replay with keep_steps)",
                          field=name)
    return steps[name].to_numpy(dtype=float)


def step_power(spec: GpuPowerSpec, shape: StepShape, *, busy_s: np.ndarray,
               prefill_tokens: np.ndarray, decodes: np.ndarray,
               kv_cache_pct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Active power of one GPU during each step's kernels (see the module docstring).

    Args:
        spec: complete power spec (no ``None`` values).
        shape: per-instance FLOP and byte quantities.
        busy_s: kernel time per step, s (shape ``(n,)``).
        prefill_tokens: prompt tokens computed per step.
        decodes: decode tokens per step.
        kv_cache_pct: KV usage of the instance, percent.

    Returns:
        ``(active_w, u_compute, u_memory)``, each of shape ``(n,)``; ``active_w`` is in
        ``[idle_w, power_limit_w]``.
    """
    idle, limit = spec.idle_w.value, spec.power_limit_w.value
    peak, bw = spec.peak_bf16_flops_per_s.value, spec.memory_bandwidth_bytes_per_s.value
    if idle is None or limit is None or peak is None or bw is None:
        raise ConfigError(f"power spec {spec.name} lacks {', '.join(spec.missing())}",
                          path=spec.path or None)
    flops = shape.flops_per_token * (prefill_tokens + decodes)
    nbytes = shape.weight_bytes + kv_cache_pct / 100.0 * shape.kv_capacity_tokens \
        * shape.kv_bytes_per_token
    with np.errstate(divide="ignore", invalid="ignore"):
        u_c = np.where(busy_s > 0, flops / (peak * busy_s), 0.0)
        u_m = np.where(busy_s > 0, nbytes / (bw * busy_s), 0.0)
    active = idle + (max(limit, idle) - idle) * np.minimum(1.0, u_c + u_m)
    return np.minimum(active, limit), u_c, u_m


def power_trace(steps: pd.DataFrame, spec: GpuPowerSpec, shape: StepShape, *,
                num_instances: int, horizon_s: float | None = None,
                idle_gpus: int = 0) -> PowerTrace:
    """Energy of every step and the power of every GPU over ``[0, horizon_s]``.

    Args:
        steps: step log (:data:`llmsim.metrics.STEP_COLUMNS`; ``start_s``, ``end_s``,
            ``gpu_ms``, ``num_prefill_tokens``, ``num_decodes``, ``kv_cache_pct``, and
            optionally ``measured_energy_j``: measured energy of the step over the
            instance's GPUs).
        spec: complete GPU power spec.
        shape: per-instance FLOP and byte quantities.
        num_instances: instances of the replay (ids ``0..n-1``); an instance without steps
            idles throughout.
        horizon_s: end of the accounted span (default: the last step's end), s.
        idle_gpus: further GPUs of the cluster serving no instance (drawing ``idle_w``).

    Raises:
        ConfigError: the spec lacks a value, or the step log lacks a column.
    """
    missing = spec.missing()
    if missing:
        raise ConfigError(f"power spec {spec.name} has no sourced {', '.join(missing)}",
                          path=spec.path or None)
    idle = float(spec.idle_w.value)  # type: ignore[arg-type]
    st = steps.sort_values(["instance_id", "start_s"], kind="stable").reset_index(drop=True)
    start, end = _col(st, "start_s"), _col(st, "end_s")
    inst = st["instance_id"].to_numpy(dtype=int) if len(st) else np.zeros(0, dtype=int)
    # clip overlaps so an instance's steps tile its timeline without double counting
    for i in range(1, len(st)):
        if inst[i] == inst[i - 1] and start[i] < end[i - 1]:
            start[i] = end[i - 1]
    end = np.maximum(end, start)
    dur = end - start
    busy = np.minimum(_col(st, "gpu_ms") / 1e3, dur)
    pre, dec = _col(st, "num_prefill_tokens"), _col(st, "num_decodes")
    active_w, u_c, u_m = step_power(spec, shape, busy_s=busy, prefill_tokens=pre,
                                    decodes=dec, kv_cache_pct=_col(st, "kv_cache_pct"))
    g = shape.gpus_per_instance
    energy = g * (active_w * busy + idle * (dur - busy))
    source = np.full(len(st), "power_state", dtype=object)
    if MEASURED_COLUMN in st.columns:
        measured = st[MEASURED_COLUMN].to_numpy(dtype=float)
        ok = np.isfinite(measured)
        energy = np.where(ok, measured + g * idle * (dur - busy), energy)
        source[ok] = "profile"
        with np.errstate(divide="ignore", invalid="ignore"):
            active_w = np.where(ok & (busy > 0), measured / (g * busy), active_w)
    tok = pre + dec
    pre_share = np.divide(pre, tok, out=np.zeros_like(tok), where=tok > 0)
    step_frame = pd.DataFrame({
        "instance_id": inst, "step": st["step"].to_numpy() if "step" in st else np.arange(len(st)),
        "start_s": start, "end_s": end, "busy_s": busy, "u_compute": u_c, "u_memory": u_m,
        "active_w": active_w, "energy_j": energy, "prefill_energy_j": energy * pre_share,
        "decode_energy_j": energy * (1 - pre_share), "source": source})
    horizon = float(horizon_s) if horizon_s is not None else float(end.max(initial=0.0))
    segs: list[tuple[int, int, float, float, float, str]] = []
    gpu = 0
    for i_id in range(num_instances):
        sel = np.flatnonzero(inst == i_id)
        for _ in range(g):
            t = 0.0
            for k in sel:
                a, b = min(start[k], horizon), min(end[k], horizon)
                if a > t:
                    segs.append((gpu, i_id, t, a, idle, "idle"))
                bb = min(a + busy[k], b)
                if bb > a:
                    segs.append((gpu, i_id, a, bb, float(active_w[k]), "active"))
                if b > bb:
                    segs.append((gpu, i_id, bb, b, idle, "idle"))
                t = max(t, b)
            if horizon > t:
                segs.append((gpu, i_id, t, horizon, idle, "idle"))
            gpu += 1
    for _ in range(idle_gpus):
        segs.append((gpu, -1, 0.0, horizon, idle, "idle"))
        gpu += 1
    seg_frame = pd.DataFrame(segs, columns=SEGMENT_COLUMNS)
    return PowerTrace(steps=step_frame, segments=seg_frame, horizon_s=horizon, num_gpus=gpu)


def token_times(requests: pd.DataFrame, itls_s: Sequence[np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Emission time of every output token.

    Returns:
        ``(request_index, instance_id, t_s)`` arrays, one entry per output token: the first
        token at ``first_token_s``, then ``first_token_s + cumsum(itls)``.
    """
    idx, ins, ts = [], [], []
    for i, (ft, iid, gaps) in enumerate(zip(requests["first_token_s"].to_numpy(dtype=float),
                                            requests["instance_id"].to_numpy(),
                                            itls_s, strict=True)):
        if not math.isfinite(ft):
            continue
        t = np.concatenate([[ft], ft + np.cumsum(np.asarray(gaps, dtype=float))])
        idx.append(np.full(len(t), i))
        ins.append(np.full(len(t), int(iid)))
        ts.append(t)
    if not ts:
        z = np.zeros(0)
        return z.astype(int), z.astype(int), z
    return np.concatenate(idx), np.concatenate(ins), np.concatenate(ts)


def attribute_to_requests(trace: PowerTrace, requests: pd.DataFrame,
                          itls_s: Sequence[np.ndarray]) -> np.ndarray:
    """Energy of each request by its share of each step's tokens, J (shape ``(n_req,)``).

    A step's decode energy is split among the requests that emitted a token at its end
    (each token matched to the step of its instance ending nearest it); its prefill energy
    among the requests in prefill during it (``first_scheduled_s <= start`` and
    ``end <= first_token_s``), weighted by their computed prompt tokens
    (``input_tokens - prefix_hit_tokens``). Energy no token claims (idle GPUs and gaps,
    dummy or unmatched steps) is then shared in proportion to those shares, so the result
    sums to :attr:`PowerTrace.total_j` (all zeros when no request produced a token).
    """
    n = len(requests)
    out = np.zeros(n)
    st = trace.steps
    if n == 0 or len(st) == 0:
        return out
    ridx, rins, rt = token_times(requests, itls_s)
    s_inst = st["instance_id"].to_numpy(dtype=int)
    s_end = st["end_s"].to_numpy(dtype=float)
    s_start = st["start_s"].to_numpy(dtype=float)
    dec_e = st["decode_energy_j"].to_numpy(dtype=float)
    pre_e = st["prefill_energy_j"].to_numpy(dtype=float)
    step_of_token = np.full(len(rt), -1)
    for i_id in np.unique(s_inst):
        rows = np.flatnonzero(s_inst == i_id)
        ends = s_end[rows]
        sel = np.flatnonzero(rins == i_id)
        pos = np.clip(np.searchsorted(ends, rt[sel]), 0, len(rows) - 1)
        prev = np.clip(pos - 1, 0, len(rows) - 1)
        best = np.where(np.abs(ends[prev] - rt[sel]) < np.abs(ends[pos] - rt[sel]), prev, pos)
        step_of_token[sel] = rows[best]
    ok = step_of_token >= 0
    counts = np.bincount(step_of_token[ok], minlength=len(st)).astype(float)
    per_tok = np.divide(dec_e, counts, out=np.zeros_like(dec_e), where=counts > 0)
    np.add.at(out, ridx[ok], per_tok[step_of_token[ok]])
    fs = requests["first_scheduled_s"].to_numpy(dtype=float)
    ft = requests["first_token_s"].to_numpy(dtype=float)
    w = np.clip(requests["input_tokens"].to_numpy(dtype=float)
                - requests["prefix_hit_tokens"].to_numpy(dtype=float), 1.0, None)
    r_inst = requests["instance_id"].to_numpy(dtype=int)
    eps = 1e-9
    for k in np.flatnonzero(pre_e > 0):
        m = (r_inst == s_inst[k]) & (fs <= s_start[k] + eps) & (s_end[k] <= ft + eps)
        if m.any():
            out[m] += pre_e[k] * w[m] / w[m].sum()
    claimed = out.sum()
    if claimed > 0:
        out *= trace.total_j / claimed
    return out
