"""Standard benchmark workloads as seeded, deterministic traces.

``generate_workload(spec)`` / ``load_workload_spec(path)`` turn a spec naming a tool
(vLLM ``bench serve``, inference-perf, guidellm) and its settings into a
:class:`~llmsim.trace.TraceFrame` whose token ids share exactly the prefixes the spec implies.
A spec file is also a trace format: ``trace: {format: workload, path: spec.yaml}``, and
``llmsim trace generate SPEC.yaml -o trace.jsonl`` writes it out.
"""

from llmsim.workloads.spec import Tool, generate_workload, load_workload_frame, load_workload_spec

__all__ = ["Tool", "generate_workload", "load_workload_frame", "load_workload_spec"]
