"""Factories for the workload tests: specs, a tiny experiment replaying a spec, block sharing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from llmsim.costmodel.base import StepBatch, StepCost
from llmsim.experiment import load_experiment
from llmsim.kvcache import BlockHasher
from llmsim.replay import ReplayResult, run
from llmsim.scheduler.state import sequence_ids
from llmsim.trace import Request
from llmsim.workloads import generate_workload

BLOCK = 16
MS = 1_000_000
TINY_MODEL = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2, "hidden_size": 64,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
              "vocab_size": 1000}


class TokenCost:
    """Fake cost model: ``1 ms + 10 us x tokens`` per step."""

    def step_cost(self, batch: StepBatch) -> StepCost:
        return StepCost(duration_ns=MS + 10_000 * batch.num_tokens)


def vllm_spec(**over: object) -> dict:
    return {"tool": "vllm-bench", "seed": 1, "num_prompts": 50, "random_input_len": 64,
            "random_output_len": 8, **over}


def frame_of(spec: dict):
    return generate_workload(spec).data


def requests_of(spec: dict) -> list[Request]:
    return list(generate_workload(spec).to_trace().requests)


def gaps_s(arrival_ns: np.ndarray) -> np.ndarray:
    return np.diff(np.asarray(arrival_ns, dtype=float)) / 1e9


def shared_blocks(a: Request, b: Request) -> int:
    """Leading KV blocks (16 tokens) with equal chained hashes: what a prefix-cache lookup of
    ``b`` finds after ``a`` (the engine's own hashing, :mod:`llmsim.kvcache.hashing`)."""
    ha = BlockHasher(sequence_ids(a), BLOCK, 1).ensure(a.input_tokens // BLOCK)
    hb = BlockHasher(sequence_ids(b), BLOCK, 2).ensure(b.input_tokens // BLOCK)
    n = 0
    for x, y in zip(ha, hb, strict=False):
        if x != y:
            break
        n += 1
    return n


def replay_spec(tmp_path: Path, spec: dict, *, blocks: int = 4000, max_num_seqs: int = 64) -> ReplayResult:
    """Write ``spec`` and a tiny experiment whose trace is ``{format: workload}``; replay it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "model.json").write_text(json.dumps(TINY_MODEL))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return run(load_experiment(write_experiment(tmp_path, blocks=blocks, max_num_seqs=max_num_seqs)),
               cost_model=TokenCost())


def write_experiment(tmp_path: Path, *, blocks: int = 4000, max_num_seqs: int = 64) -> Path:
    (tmp_path / "model.json").write_text(json.dumps(TINY_MODEL))
    path = tmp_path / "exp.yaml"
    path.write_text(f"""name: tiny-workload
model: model.json
cost_model: profile
profile: model.json
hardware: {{name: fake, gpu_memory_bytes: 1000000000}}
engine:
  max_num_seqs: {max_num_seqs}
  max_num_batched_tokens: 4096
  block_size: {BLOCK}
  num_gpu_blocks_override: {blocks}
  enable_prefix_caching: true
trace: {{format: workload, path: spec.yaml}}
output_dir: {tmp_path / 'out'}
""")
    return path


def max_in_flight(result: ReplayResult) -> int:
    """Most requests between first scheduling and finish at once."""
    df = result.requests
    events = sorted([(t, 1) for t in df["first_scheduled_s"]] + [(t, -1) for t in df["finish_s"]],
                    key=lambda e: (e[0], e[1]))
    live = peak = 0
    for _, d in events:
        live += d
        peak = max(peak, live)
    return peak
