"""A readable summary of a profile: provenance, model, TP degrees, ops and grid ranges."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from llmsim.v1 import profile_pb2 as pb

_KIND = {
    pb.OP_KIND_DENSE: "dense", pb.OP_KIND_PER_SEQUENCE: "per_sequence",
    pb.OP_KIND_ATTENTION: "attention", pb.OP_KIND_MOE: "moe",
    pb.OP_KIND_COLLECTIVE: "collective", pb.OP_KIND_UNSPECIFIED: "?",
}
_STATS = ("median_ns", "mean_ns", "p90_ns", "min_ns", "max_ns", "std_ns")


def _fmt_us(ns: float) -> str:
    us = ns / 1e3
    return f"{us:.3g}" if us < 100 else f"{us:,.0f}"


def _axis_text(axis: pb.Axis) -> str:
    vals = sorted(set(axis.values))
    if not vals:
        return f"{axis.name}: -"
    return f"{axis.name} {vals[0]}..{vals[-1]} ({len(vals)})"


def _table_rows(tables: Iterable[pb.OpTable]) -> list[list[str]]:
    rows = []
    for t in tables:
        stats = [s.removesuffix("_ns") for s in _STATS if len(getattr(t, s))]
        values: Sequence[float] = next((getattr(t, s) for s in ("mean_ns", "median_ns") if len(getattr(t, s))),
                      [])
        lat = f"{_fmt_us(min(values))}..{_fmt_us(max(values))}" if len(values) else "-"
        npts = len(t.axes[0].values) if t.axes else 0
        rows.append([t.op, _KIND.get(t.kind, "?"), str(npts),
                     "; ".join(_axis_text(a) for a in t.axes), "/".join(stats), lat])
    return rows


def _render(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_profile(profile: pb.Profile) -> str:
    """Multi-line text describing ``profile`` (``llmsim profile show``)."""
    p = profile.provenance
    m = p.method
    out = [
        f"schema version   {profile.schema_version}",
        f"device           {p.device_name or '-'} ({p.hardware or '-'})",
        f"versions         driver {p.driver_version or '-'}, runtime {p.runtime_version or '-'},"
        f" {p.framework or 'framework'} {p.framework_version or '-'}",
        f"profiler         {p.profiler_name or '-'} {p.profiler_version}".rstrip(),
        f"measured         {p.measured_at or '-'}"
        + (f" .. {p.measured_until}" if p.measured_until else ""),
        f"method           timer={m.timer or '-'} warmup={m.warmup_iterations} "
        f"timed={m.timed_iterations} cuda_graphs={'on' if m.cuda_graphs else 'off'} "
        f"threads={m.num_threads or '-'} statistic={m.statistic or '-'}",
        f"source           {p.source.kind or '-'}: {p.source.name or '-'} {p.source.uri}"
        + (f" @ {p.source.commit}" if p.source.commit else ""),
    ]
    if profile.model.name:
        a = profile.model
        out.append(
            f"model            {a.name} ({a.architecture or '?'}): layers={a.num_hidden_layers}"
            f" hidden={a.hidden_size} heads={a.num_attention_heads}/{a.num_key_value_heads}"
            f" head_dim={a.head_dim} ffn={a.intermediate_size} vocab={a.vocab_size}"
            + (f" experts={a.num_experts}x{a.num_experts_per_token}"
               f" moe_ffn={a.moe_intermediate_size}" if a.num_experts else ""))
    if profile.dtype:
        out.append(f"dtype            {profile.dtype}")
    tps = [t.tp_degree for t in profile.tp]
    out.append(f"TP degrees       {', '.join(map(str, tps)) if tps else '-'}")
    header = ["op", "kind", "points", "axes: min..max (distinct)", "stats", "latency us"]
    for t in profile.tp:
        out += ["", f"TP {t.tp_degree}"]
        out += ["  " + r for r in _render(_table_rows(t.ops), header)]
        if len(t.skew.n):
            out.append(f"  skew samples: {len(t.skew.n)} "
                       f"(n {min(t.skew.n)}..{max(t.skew.n)}, kv_big "
                       f"{min(t.skew.kv_big)}..{max(t.skew.kv_big)})")
        if len(t.skew_fit.pc):
            f = t.skew_fit
            out.append(f"  skew fit: {len(f.pc)} buckets, method {f.method or '-'}, "
                       f"alpha_default {f.alpha_default:g}, "
                       f"bucket edges {'from meta' if len(f.n_edges) else 'absent'}")
    if len(profile.collectives):
        out += ["", "collectives"]
        out += ["  " + r for r in _render(_table_rows(profile.collectives), header)]
    return "\n".join(out)
