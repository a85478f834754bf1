"""Factories for the timeline tests: a tiny experiment on disk and a fake cost model."""

from __future__ import annotations

import json
from pathlib import Path

from llmsim.costmodel.base import StepBatch, StepCost

MS = 1_000_000

TINY_MODEL = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2, "hidden_size": 64,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
              "vocab_size": 1000}


class TokenCost:
    """A cost model from a formula: ``base_ns + per_token_ns x tokens`` (decode = 1 token).

    Per-step costs that vary with the batch make slice lengths differ step to step, so a
    test that compares the timeline with the step log cannot pass by accident.
    """

    def __init__(self, base_ns: int = 2 * MS, per_token_ns: int = 50_000) -> None:
        self.base_ns = base_ns
        self.per_token_ns = per_token_ns

    def step_cost(self, batch: StepBatch) -> StepCost:
        return StepCost(duration_ns=self.base_ns + self.per_token_ns * batch.num_tokens)


def make_experiment(tmp_path: Path, *, num_requests: int = 40, gap_ms: int = 3,
                    instances: int = 1, blocks: int = 40, extra_engine: str = "",
                    cpu_step_ns: int = 300_000) -> Path:
    """Write a tiny experiment (model, trace, YAML) under ``tmp_path``; returns the YAML path.

    ``blocks`` small against the prompts (20-48 tokens, block 16, 8 seqs) makes the KV cache
    run out, so the scheduler preempts.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "model.json").write_text(json.dumps(TINY_MODEL))
    rows = []
    for i in range(num_requests):
        n_in, n_out = 20 + 7 * (i % 5), 3 + 5 * (i % 4)
        rows.append(json.dumps({"arrival_time_ns": i * gap_ms * MS, "input_toks": n_in,
                                "output_toks": n_out, "input_tok_ids": [i % 3] * n_in,
                                "output_tok_ids": list(range(n_out))}))
    (tmp_path / "trace.jsonl").write_text("\n".join(rows) + "\n")
    path = tmp_path / "exp.yaml"
    path.write_text(f"""name: tiny-timeline
model: model.json
cost_model: profile
profile: model.json
hardware: {{name: fake, gpu_memory_bytes: 1000000000}}
instances: {instances}
engine:
  max_num_seqs: 8
  max_num_batched_tokens: 64
  block_size: 16
  num_gpu_blocks_override: {blocks}
{extra_engine}overheads: {{cpu_step_ns: {cpu_step_ns}, cpu_per_seq_ns: 10000}}
trace: {{format: llmservingsim, path: trace.jsonl}}
check_invariants: full
""")
    return path
