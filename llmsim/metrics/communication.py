"""Per-step communication report: what each modelled collective costs per step and its source.

For every instance group whose layout communicates (TP or PP > 1), the replay's steps are
counted by shape, ``(tokens the step ran at after CUDA-graph padding, sampled sequences)``
(:meth:`llmsim.instance.step_time.StepTimeModel.count_comm_steps`), and each shape is priced
once more by the cost model's collectives
(:meth:`llmsim.costmodel.profile_model.ProfileCostModel.step_communication`), exactly as the
step was priced: the per-step figures below are means over every step of the group's
engines, so they add up to the communication time the replay charged.

Output (``summary["communication"]``, one entry per communicating group)::

    {"group": "<hardware> (instances i-j)", "tensor_parallel_size": 2,
     "pipeline_parallel_size": 1, "steps": N,
     "ms_per_step_mean": <all collectives>,
     "collectives": {
        "<op>": {"collective": "all_reduce", "group": "tp", "ranks": 2,
                 "calls_per_step": <mean>, "bytes_per_call_mean": <mean over calls>,
                 "bytes_per_step_mean": <mean>, "ms_per_step_mean": <mean>,
                 "sources": {"<vLLM implementation>: <source>": <steps priced so>}}}}

(``calls_per_step`` below 1 for per-sequence ops: steps that sample nothing gather no logits.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel.profile_model import StepCollective

__all__ = ["group_communication"]

NS_PER_MS = 1e6


class _Communicating(Protocol):
    def step_communication(self, parallel: ParallelConfig, tokens: int, sampled: int
                           ) -> tuple[StepCollective, ...]: ...


def group_communication(label: str, parallel: ParallelConfig, cost_model: object,
                        shapes: Sequence[Counter[tuple[int, int]]]) -> dict[str, Any] | None:
    """The communication report of one instance group (module docstring), or None when its
    layout does not communicate.

    Args:
        label: the group's name in the report.
        parallel: its layout.
        cost_model: its cost model; one without ``step_communication`` (the gRPC bridge) is
            reported as such, not priced.
        shapes: per engine of the group, its step-shape counts (``comm_shapes``).
    """
    if parallel.tensor_parallel_size == 1 and parallel.pipeline_parallel_size == 1:
        return None
    total: Counter[tuple[int, int]] = Counter()
    for counts in shapes:
        total.update(counts)
    steps = sum(total.values())
    out: dict[str, Any] = {"group": label,
                           "tensor_parallel_size": parallel.tensor_parallel_size,
                           "pipeline_parallel_size": parallel.pipeline_parallel_size,
                           "steps": steps}
    price = getattr(cost_model, "step_communication", None)
    if price is None:
        out["not_reported"] = (f"cost model {type(cost_model).__name__} does not list its "
                               "collectives")
        return out
    comm: _Communicating = cost_model  # type: ignore[assignment]
    acc: dict[str, dict[str, Any]] = {}
    for (tokens, sampled), n in sorted(total.items()):
        counted: set[tuple[str, str]] = set()  # an op listed twice (all_reduce) counts once
        for c in comm.step_communication(parallel, tokens, sampled):
            a = acc.setdefault(c.name, {"collective": c.collective, "group": c.group,
                                        "ranks": c.ranks, "calls": 0, "bytes": 0, "ns": 0,
                                        "sources": Counter()})
            a["calls"] += c.calls * n
            a["bytes"] += c.calls * c.bytes_per_call * n
            a["ns"] += c.duration_ns * n
            key = f"{c.impl}: {c.source}"
            if c.calls and (c.name, key) not in counted:
                counted.add((c.name, key))
                a["sources"][key] += n
    div = max(steps, 1)
    ops: dict[str, Any] = {}
    total_ns = 0
    for name, a in acc.items():
        total_ns += a["ns"]
        ops[name] = {
            "collective": a["collective"], "group": a["group"], "ranks": a["ranks"],
            "calls_per_step": a["calls"] / div,
            "bytes_per_call_mean": a["bytes"] / a["calls"] if a["calls"] else 0.0,
            "bytes_per_step_mean": a["bytes"] / div,
            "ms_per_step_mean": a["ns"] / div / NS_PER_MS,
            "sources": dict(sorted(a["sources"].items())),
        }
    out["ms_per_step_mean"] = total_ns / div / NS_PER_MS
    out["collectives"] = ops
    return out
