"""vLLM's all-reduce implementation rule (docs/cluster-semantics.md, "Tensor parallelism") and the link descriptions."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.costmodel.collectives import AllReduceImpl, vllm_all_reduce_impl
from llmsim.errors import ConfigError
from llmsim.hardware.links import (
    LINKS_DIR,
    LinkKind,
    find_link_spec,
    load_link_spec,
    shipped_link_specs,
)

MiB = 1 << 20
CUSTOM, SYMM, NCCL = AllReduceImpl.CUSTOM, AllReduceImpl.SYMM_MEM, AllReduceImpl.NCCL


def spec(name: str):
    found = find_link_spec(name)
    assert found is not None, name
    return found


def test_rtx_pro_6000_tp2_custom_below_8_mib_then_nccl():
    pro = spec("RTXPRO6000")
    assert vllm_all_reduce_impl(10 * 1024, 2, pro) is CUSTOM          # 1 token of Qwen3-32B
    assert vllm_all_reduce_impl(8 * MiB - 16, 2, pro) is CUSTOM
    assert vllm_all_reduce_impl(8 * MiB, 2, pro) is NCCL               # size < max_size only
    assert vllm_all_reduce_impl(20 * MiB, 2, pro) is NCCL
    assert vllm_all_reduce_impl(10 * 1024 + 8, 2, pro) is NCCL         # not a multiple of 16 B
    assert vllm_all_reduce_impl(1024, 2, pro, custom_all_reduce=False) is NCCL


def test_more_than_two_pcie_gpus_use_nccl():
    pro = spec("RTXPRO6000")
    for ranks in (4, 8):
        assert vllm_all_reduce_impl(1024, ranks, pro) is NCCL
    assert vllm_all_reduce_impl(1024, 3, pro) is NCCL  # unsupported world size


def test_rtx_4090_has_no_p2p_so_always_nccl():
    g = spec("NVIDIA GeForce RTX 4090")
    assert not g.p2p
    for nbytes in (16, 1024, MiB, 64 * MiB):
        assert vllm_all_reduce_impl(nbytes, 2, g) is NCCL


def test_h100_custom_then_symm_mem_then_nccl():
    h = spec("h100_sxm")
    assert h.link_kind is LinkKind.NVLINK and h.fully_nvlink
    assert vllm_all_reduce_impl(MiB, 2, h) is CUSTOM
    assert vllm_all_reduce_impl(8 * MiB, 2, h) is SYMM       # custom cap min(8 MiB, 64 MiB)
    assert vllm_all_reduce_impl(64 * MiB, 2, h) is NCCL
    assert vllm_all_reduce_impl(128 * 1024, 8, h) is CUSTOM  # TP8 cap 256 KiB
    assert vllm_all_reduce_impl(256 * 1024, 8, h) is SYMM
    assert vllm_all_reduce_impl(16 * MiB, 4, h) is SYMM      # TP4 symm-mem up to 32 MiB
    assert vllm_all_reduce_impl(32 * MiB, 4, h) is NCCL


@settings(max_examples=100, deadline=None)
@given(words=st.integers(min_value=1, max_value=(64 * MiB) // 16), ranks=st.sampled_from(
    [2, 4, 6, 8]), name=st.sampled_from(["RTXPRO6000", "RTX4090", "H100", "H200", "A100"]))
def test_custom_iff_p2p_group_and_below_cap(words, ranks, name):
    link = spec(name)
    nbytes = 16 * words
    group_ok = link.p2p and (ranks == 2 or link.fully_nvlink)
    cap = link.custom_all_reduce_max_bytes.get(ranks, 0)
    impl = vllm_all_reduce_impl(nbytes, ranks, link)
    assert (impl is CUSTOM) == (group_ok and nbytes < cap)
    if impl is not CUSTOM:
        assert (impl is SYMM) == (nbytes < link.symm_mem_max_bytes.get(ranks, 0))


def test_every_shipped_link_value_has_a_source():
    specs = shipped_link_specs()
    assert {s.name for s in specs} >= {"RTXPRO6000", "RTX4090", "H100", "H200", "A100"}
    for s in specs:
        required = {"link_kind", "p2p", "fully_nvlink", "custom_all_reduce_max_bytes",
                    "symm_mem_max_bytes", "nccl_latency_ns", "nccl_bus_bandwidth_bytes_per_s"}
        # optional figures (P2P copy bandwidth and latency) carry a source exactly when given
        optional = {k for k in ("p2p_bandwidth_bytes_per_s", "p2p_latency_ns") if getattr(s, k)}
        assert set(s.sources) == required | optional, s.name
        assert all(len(text) > 20 for text in s.sources.values()), s.name
        assert s.nccl_bus_bandwidth_bytes_per_s > 0


def test_lookup_by_experiment_name_profile_label_or_device(tmp_path):
    assert find_link_spec(None, "", "NVIDIA RTX PRO 6000 Blackwell Server Edition").name == (
        "RTXPRO6000")
    assert find_link_spec("rtxpro6000").name == "RTXPRO6000"
    assert find_link_spec("TPU-v9", None) is None
    assert find_link_spec("unknown", "RTX4090").name == "RTX4090"  # first match wins


def test_unsourced_value_is_refused(tmp_path):
    text = (LINKS_DIR / "rtxpro6000.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace('  source: "no NVLink', '  note: "no NVLink', 1))
    with pytest.raises(ConfigError) as exc:
        load_link_spec(bad)
    assert exc.value.field == "link_kind.source" and exc.value.path == str(bad)
    bad.write_text(text.replace("value: pcie", "value: carrier-pigeon"))
    with pytest.raises(ConfigError, match="link_kind"):
        load_link_spec(bad)


def test_replace_keeps_rule_inputs():
    pro = spec("RTXPRO6000")
    patched = replace(pro, p2p=False)  # a host whose driver reports no P2P
    assert vllm_all_reduce_impl(1024, 2, patched) is NCCL
