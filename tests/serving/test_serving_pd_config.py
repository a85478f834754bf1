"""P/D in the experiment YAML: roles, kv_transfer_config, refusals with file/line/field, and
an end-to-end replay (client vs per-instance TTFT, heterogeneous TP bytes)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from llmsim.errors import ConfigError
from llmsim.experiment import load_experiment
from llmsim.pd import KVConnectorKind, PdRole

MODEL = "llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json"
PROFILE = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"
TRACE = "llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"


@pytest.fixture(autouse=True)
def _data(data_path) -> None:
    data_path(MODEL)
    data_path(TRACE)


def _write(tmp_path: Path, groups: str, extra: str = "", gpus: int = 2) -> Path:
    cluster = f"""\
        cluster:
          nodes:
            - name: n0
              gpus: [{{hardware: RTXPRO6000, count: {gpus}, gpu_memory_bytes: 102642302976}}]
            - name: n1
              gpus: [{{hardware: RTXPRO6000, count: 1, gpu_memory_bytes: 102642302976}}]
        """ if "instance_groups" in groups else """\
        hardware: {name: RTXPRO6000, gpu_memory_bytes: 102642302976}
        """
    head = f"""\
        name: pd
        model: {MODEL}
        profile: {PROFILE}
        trace: {{format: llmservingsim, path: {TRACE}}}
        """
    p = tmp_path / "exp.yaml"
    p.write_text(textwrap.dedent(head) + textwrap.dedent(cluster) + textwrap.dedent(groups)
                 + textwrap.dedent(extra))
    return p


PD = """\
instance_groups:
  - {name: p, role: prefill, placement: {node: n0}}
  - {name: d, role: decode, placement: {node: n0}}
"""


def test_roles_and_connector_load(tmp_path: Path) -> None:
    exp = load_experiment(_write(tmp_path, PD, "kv_transfer_config: {kv_connector: "
                                               "P2pNcclConnector}\n"))
    assert [g.role for g in exp.groups()] == [PdRole.PREFILL, PdRole.DECODE]
    assert exp.kv_transfer_config is not None
    assert exp.kv_transfer_config.kv_connector is KVConnectorKind.P2P_NCCL
    plain = load_experiment(_write(tmp_path, "instances: 2\n"))
    assert [g.role for g in plain.groups()] == [PdRole.BOTH]


@pytest.mark.parametrize(("groups", "extra", "field", "message", "line_text"), [
    ("instance_groups:\n  - {name: p, role: prefill, placement: {node: n0}}\n", "",
     "instance_groups.0.role", "needs a group with role decode too", "{name: p,"),
    ("instance_groups:\n  - {name: p, role: prefill, placement: {node: n0}}\n"
     "  - {name: d, role: decode, placement: {node: n0}}\n"
     "  - {name: c, role: both, placement: {node: n1}}\n", "",
     "instance_groups.2.role", "not supported yet: colocated", "{name: c,"),
    ("instance_groups:\n  - {name: p, role: prefill, placement: {node: n0}}\n"
     "  - {name: d, role: decode, placement: {node: n1}}\n", "",
     "instance_groups.1.placement.node", "not supported yet: a KV transfer across nodes",
     "{name: d,"),
    ("instance_groups:\n  - {name: p, role: prefill, placement: {node: n0}}\n"
     "  - {name: d, role: decode, placement: {node: n0}, engine: {block_size: 32}}\n", "",
     "instance_groups.1.engine.block_size", "different block sizes", "{name: d,"),
    ("instance_groups:\n  - {name: p, role: prefill, placement: {node: n0}}\n"
     "  - {name: d, role: decode, placement: {node: n0},\n"
     "     engine: {data_parallel_size: 2}}\n", "",
     "instance_groups.1.engine.data_parallel_size", "not supported yet: data parallelism",
     "engine: {data_parallel_size"),
    ("instance_groups:\n  - {name: p, role: prefil, placement: {node: n0}}\n", "",
     "instance_groups.0.role", "unknown value 'prefil'", "{name: p,"),
    ("instances: 1\n", "kv_transfer_config: {kv_connector: NixlConnector}\n",
     "kv_transfer_config", "needs instance groups with role prefill", "kv_transfer_config"),
    (PD, "kv_transfer_config: {kv_connector: Mooncake}\n",
     "kv_transfer_config.kv_connector", "unknown value 'Mooncake'", "kv_transfer_config"),
])
def test_pd_yaml_errors_name_file_line_and_field(tmp_path: Path, groups: str, extra: str,
                                                  field: str, message: str,
                                                  line_text: str) -> None:
    p = _write(tmp_path, groups, extra, gpus=3)
    with pytest.raises(ConfigError) as err:
        load_experiment(p)
    e = err.value
    assert str(e.path) == str(p) and e.field == field and message in str(e)
    want = next(i for i, line in enumerate(p.read_text().splitlines(), 1) if line_text in line)
    assert e.line == want


def test_link_without_p2p_figures_is_refused_at_replay(tmp_path: Path) -> None:
    from llmsim.replay import run

    p = _write(tmp_path, PD, "kv_transfer_config: {link: RTX4090}\n")
    with pytest.raises(ConfigError, match="not supported yet: a KV transfer over link 'RTX4090'"
                       ) as err:
        run(load_experiment(p, {"trace.transforms": [{"sample": {"n": 5, "seed": 0}}]}))
    assert err.value.field == "kv_transfer_config.link" and str(err.value.path) == str(p)


def test_replay_reports_client_and_instance_ttft_and_tp_bytes(tmp_path: Path, data_path) -> None:
    from llmsim.replay import run

    data_path(PROFILE)
    groups = """\
        instance_groups:
          - {name: p, role: prefill, placement: {node: n0}}
          - {name: d, role: decode, placement: {node: n0}, engine: {tensor_parallel_size: 2}}
        """
    p = _write(tmp_path, groups, gpus=3)
    res = run(load_experiment(p, {"trace.transforms": [{"sample": {"n": 20, "seed": 1}}]}),
              keep_steps=True)
    r = res.requests
    assert (r["prefill_instance_id"] == 0).all() and (r["decode_instance_id"] == 1).all()
    # client TTFT = D's first token - arrival at the proxy; P's view ends at its own token,
    # D's view starts when the proxy forwarded the request (P's first token time)
    assert (r["ttft_s"] > r["ttft_prefill_instance_s"]).all()
    assert ((r["first_token_s"] - r["decode_arrival_s"]) == r["ttft_decode_instance_s"]).all()
    assert (r["decode_arrival_s"] == r["prefill_first_token_s"]).all()
    assert (r["kv_transfer_end_s"] > r["kv_transfer_ready_s"]).all()
    # P at TP1, D at TP2: each D rank reads its half of the heads, the P rank sends all:
    # bytes = whole 16-token blocks x KV per token at TP1 (Llama-3.1-8B: 131,072 B)
    blocks = -(-r["input_tokens"] // 16)
    assert (r["kv_transfer_bytes"] == blocks * 16 * 131_072).all()
    pd_sum = res.summary["pd"]
    assert pd_sum["connector"] == "NixlConnector" and pd_sum["num_transfers"] == 20
    assert "rtx6kpro" in pd_sum["link"]
    json.dumps(res.summary)
    # the timeline draws each transfer inside its request's prefill span, and stays valid
    from llmsim.timeline import check_trace_events
    from llmsim.timeline.chrome import encode_trace_events
    from llmsim.timeline.events import EventKind
    from llmsim.timeline.from_replay import timeline_from_replay

    tl = timeline_from_replay(res)
    kv = [s for s in tl.slices if s.kind is EventKind.KV_TRANSFER]
    assert len(kv) == 20 and all(dict(s.args)["bytes"] > 0 for s in kv)
    prefill = {s.track: s for s in tl.slices if s.kind is EventKind.REQUEST_PREFILL}
    for s in kv:
        p_span = prefill[s.track]
        assert p_span.start_ns <= s.start_ns
        assert s.start_ns + s.duration_ns <= p_span.start_ns + p_span.duration_ns
    assert check_trace_events(encode_trace_events(tl)).problems == ()


def test_back_pressure_replay_with_full_invariant_checks(tmp_path: Path, data_path) -> None:
    """A small decode pool (600 blocks) under the real workload: requests wait for blocks,
    decodes are preempted, the prefill instance holds KV meanwhile; blocks stay conserved
    (every step's full check) and every request finishes."""
    from llmsim.replay import run

    data_path(PROFILE)
    groups = """\
        instance_groups:
          - {name: p, role: prefill, placement: {node: n0}}
          - {name: d, role: decode, placement: {node: n0},
             engine: {num_gpu_blocks_override: 600}}
        check_invariants: full
        """
    p = _write(tmp_path, groups)
    res = run(load_experiment(p, {"trace.transforms": [{"sample": {"n": 40, "seed": 3}}]}))
    r = res.requests
    assert res.summary["num_finished"] == 40
    waited = r["kv_transfer_ready_s"] - r["decode_arrival_s"]
    assert (waited >= 0).all() and (waited > 0.05).sum() >= 10  # reservations waited
    assert res.summary["num_preemptions"] > 0
    assert (r["ttft_decode_instance_s"] >= r["kv_transfer_end_s"] - r["decode_arrival_s"]).all()


def test_pd_with_kv_tiers_is_refused(tmp_path: Path) -> None:
    from llmsim.replay import run

    tiers = """\
        memory_tiers:
          - {name: cpu, kind: dram, capacity_bytes: 68719476736,
             bandwidth_bytes_per_s: 64000000000, latency_ns: 0, shared: node}
        kv_offload: {backend: native, tiers: [cpu], host_link_bandwidth_bytes_per_s: 64000000000}
        """
    p = _write(tmp_path, PD, tiers)
    with pytest.raises(ConfigError, match="not supported yet: prefill/decode roles with KV "
                       "tiers") as err:
        run(load_experiment(p, {"trace.transforms": [{"sample": {"n": 3, "seed": 0}}]}))
    assert str(err.value.path) == str(p) and err.value.field == "instance_groups"
