"""Refuse a measured run that did not serve the experiment's workload on the experiment's model.

A validation is only meaningful when both sides served the same requests on the same model.
:func:`check_match` checks, in this order, and raises :class:`~llmsim.errors.MeasuredRunError`
naming the first mismatch:

1. **Model.** The measured run's model name (``meta.json`` ``model``, else
   ``engine_kwargs.model``; a bench JSON's ``model_id``) against the experiment's
   (:attr:`llmsim.model.config.ModelConfig.name`, ``<org>/<name>`` from the config path). Both
   are reduced by :func:`model_key`: the last path component that is not a Hugging Face cache
   artefact (``snapshots``, a 40-hex commit, ``models--org--name`` -> ``name``), case-folded.
   So ``meta-llama/Llama-3.1-8B``, ``/models/Llama-3.1-8B`` and
   ``~/.cache/huggingface/hub/models--meta-llama--Llama-3.1-8B/snapshots/<sha>`` all match
   each other, and ``Llama-3.1-8B-Instruct`` matches none of them (other weights, other
   outputs). A side that records no model name is not checked (said in a note).
2. **Request count.** Measured rows against the replayed workload's requests.
3. **Per-request token counts.** ``input_tokens`` and ``output_tokens`` of every pair
   (pairing as in :mod:`llmsim.validate.compare`: by ``request_id`` when both sides use the
   same ids, else by position in workload order); the first differing pair is named with
   both values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from llmsim.errors import MeasuredRunError
from llmsim.validate.measured import MeasuredFormat, MeasuredRun

__all__ = ["Workload", "check_match", "measured_model_name", "model_key"]

_HEX40 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """What the experiment replays, as far as matching is concerned.

    Attributes:
        request_ids: per request, in workload (arrival) order.
        input_tokens: prompt tokens per request, same order.
        output_tokens: output tokens per request, same order.
        model: the served model's name (None: unknown, not checked).
    """

    request_ids: tuple[str, ...]
    input_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    model: str | None = None


def model_key(name: str) -> str:
    """The comparable part of a model name or path (rule in the module docstring)."""
    parts = [p for p in PurePosixPath(name.strip().replace("\\", "/")).parts if p not in ("/", "")]
    for part in reversed(parts):
        low = part.casefold()
        if low == "snapshots" or _HEX40.match(low):
            continue
        if low.startswith("models--"):
            return low.rsplit("--", 1)[-1]
        return low
    return name.strip().casefold()


def measured_model_name(run: MeasuredRun) -> str | None:
    """The model the measured run served, when its metadata records one."""
    meta = run.meta
    keys = ("model_id", "model") if run.format is MeasuredFormat.BENCH_JSON else ("model",)
    for key in keys:
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return value
    kwargs = meta.get("engine_kwargs")
    if isinstance(kwargs, dict) and isinstance(kwargs.get("model"), str) and kwargs["model"].strip():
        return str(kwargs["model"])
    return None


def _meta_field(run: MeasuredRun) -> str:
    return "model_id" if run.format is MeasuredFormat.BENCH_JSON else "model"


def check_match(run: MeasuredRun, workload: Workload) -> list[str]:
    """Raise on the first mismatch between the measured run and the workload.

    Returns:
        Notes for the report (how the model was matched, or that it could not be).

    Raises:
        MeasuredRunError: the model, the request count or a request's token counts differ
            (names the measured file and the field; a request by its id).
    """
    notes = []
    theirs = measured_model_name(run)
    if theirs is None or workload.model is None:
        notes.append("model not checked: " + ("the measured run records no model name" if theirs is None
                                              else "the experiment's model name is unknown"))
    elif model_key(theirs) != model_key(workload.model):
        raise MeasuredRunError(
            f"the measured run served model {theirs!r}, the experiment replays {workload.model!r} "
            f"(compared as {model_key(theirs)!r} vs {model_key(workload.model)!r}); validate against a run "
            "of the same model",
            path=run.source / "vllm" / "meta.json" if run.format is MeasuredFormat.VLLM_DIR else run.source,
            field=_meta_field(run),
        )
    else:
        notes.append(f"model matched: measured {theirs!r} = experiment {workload.model!r}")
    check_requests(run, workload.request_ids, workload.input_tokens, workload.output_tokens)
    return notes


def check_requests(run: MeasuredRun, request_ids: Sequence[Any], input_tokens: Sequence[int],
                   output_tokens: Sequence[int]) -> None:
    """Raise unless both sides have the same requests with the same token counts.

    Raises:
        MeasuredRunError: count or the first differing pair's token counts (both values).
    """
    meas = run.requests
    n = len(request_ids)
    if len(meas) != n:
        raise MeasuredRunError(
            f"measured run has {len(meas)} requests but the experiment's workload has {n}; "
            "replay the same workload (same trace, no sampling/window transforms)",
            path=run.requests_path, field="requests")
    ids = [str(i) for i in request_ids]
    order = np.arange(n)
    by_id = set(ids) == set(meas["request_id"]) and len(set(ids)) == n
    if by_id:
        pos = {rid: i for i, rid in enumerate(ids)}
        order = np.array([pos[r] for r in meas["request_id"]], dtype=np.int64)
    ins = np.asarray(input_tokens, dtype=np.int64)[order]
    outs = np.asarray(output_tokens, dtype=np.int64)[order]
    m_in = meas["input_tokens"].to_numpy(dtype=np.int64)
    m_out = meas["output_tokens"].to_numpy(dtype=np.int64)
    bad = np.flatnonzero((ins != m_in) | (outs != m_out))
    if bad.size:
        i = int(bad[0])
        col = "input_tokens" if ins[i] != m_in[i] else "output_tokens"
        ours = ins[i] if col == "input_tokens" else outs[i]
        theirs = m_in[i] if col == "input_tokens" else m_out[i]
        how = "same request_id" if by_id else "same position in workload order"
        raise MeasuredRunError(
            f"request {meas['request_id'].iat[i]!r} ({how}) has {col}={int(theirs)} measured but "
            f"{int(ours)} in the experiment's workload ({bad.size} of {n} requests differ); "
            "validate against a run of the same workload",
            path=run.requests_path, field=col)
