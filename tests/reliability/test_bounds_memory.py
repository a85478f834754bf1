"""Sizes without bound (issue 17): refuse, naming the setting, before allocating.

Capture sizes above ``MAX_CAPTURE_SIZE``; block pools, instance counts and output-token
totals whose estimated host memory exceeds what the OS has available (pinned here to a
fixed budget, so the tests do not depend on the machine); and each check is fast (nothing
of the requested size is built).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from bounds_factories import FnCost, make_request

from llmsim.errors import ConfigError
from llmsim.instance import StepOverheads, StepTimeModel
from llmsim.instance.step_time import MAX_CAPTURE_SIZE
from llmsim.kvcache.block_pool import BlockPool
from llmsim.memory import host
from llmsim.memory.capacity import KVCapacity, kv_capacity
from llmsim.metrics import Recorder
from llmsim.replay import check_instances_memory

GIB = 1 << 30


@pytest.fixture
def eight_gib(monkeypatch):
    """The host has 8 GiB available, whatever this machine has."""
    monkeypatch.setattr(host, "available_host_bytes", lambda: 8 * GIB)


def _step_time(sizes):
    return StepTimeModel(FnCost(lambda _b: 1), StepOverheads(), cudagraph_capture_sizes=sizes)


@pytest.mark.parametrize("sizes", [(10**12,), (1, 2, MAX_CAPTURE_SIZE + 1), (0, 4), (2.0,),
                                   (True,)])
def test_capture_sizes_beyond_the_ceiling_are_refused_before_the_table(sizes):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        _step_time(sizes)
    assert err.value.field == "engine.cudagraph_capture_sizes"
    assert time.perf_counter() - t0 < 1.0


def test_the_largest_capture_size_builds_the_same_table_as_a_bisect():
    st = _step_time((1, 2, 4, 512, MAX_CAPTURE_SIZE))
    assert len(st._pad_to) == MAX_CAPTURE_SIZE + 1
    assert [st.padded_tokens(n) for n in (0, 1, 3, 5, 512, 513, MAX_CAPTURE_SIZE,
                                          MAX_CAPTURE_SIZE + 1)] == [
        1, 1, 4, 512, 512, MAX_CAPTURE_SIZE, MAX_CAPTURE_SIZE, MAX_CAPTURE_SIZE + 1]


@pytest.mark.parametrize("blocks", [10**12, 2**40])
def test_a_block_pool_that_cannot_fit_is_refused(eight_gib, blocks):
    with pytest.raises(ConfigError) as err:
        BlockPool(blocks)
    assert err.value.field == "num_gpu_blocks" and "GiB" in str(err.value)


def test_a_block_pool_that_fits_is_built_and_a_non_integer_is_refused(eight_gib):
    assert BlockPool(10**5).num_free_blocks == 10**5 - 1
    with pytest.raises(ConfigError):
        BlockPool(1e6)  # type: ignore[arg-type]


def _experiment(instances: int, sizes=(1, 2, 4, 512)):
    return SimpleNamespace(engine=SimpleNamespace(cudagraph_capture_sizes=sizes),
                           num_instances=instances, source="exp.yaml")


def _capacity(blocks: int, source: str) -> KVCapacity:
    return KVCapacity(num_gpu_blocks=blocks, block_size=16, bytes_per_block=1, source=source)


@pytest.mark.parametrize(("blocks", "source", "field"), [
    (10**12, "override", "engine.num_gpu_blocks_override"),
    (10**25, "memory_model", "hardware.gpu_memory_bytes"),
])
def test_one_instance_kv_cache_too_large_names_what_sized_it(eight_gib, blocks, source, field):
    with pytest.raises(ConfigError) as err:
        check_instances_memory(_experiment(1), _capacity(blocks, source))
    assert (err.value.field, err.value.path) == (field, "exp.yaml")


def test_too_many_instances_names_instances(eight_gib):
    with pytest.raises(ConfigError) as err:
        check_instances_memory(_experiment(10**6), _capacity(2588, "override"))
    assert err.value.field == "instances" and "1000000 instances" in str(err.value)
    check_instances_memory(_experiment(64), _capacity(2588, "override"))  # fits


def test_gpu_memory_of_1e30_bytes_gives_a_huge_count_that_the_check_refuses(eight_gib):
    model = SimpleNamespace(kv_bytes_per_token=lambda parallel, stage=None: 131072,
                            weight_bytes=lambda parallel, stage=None: 16 * GIB,
                            hidden_size=4096, head_dim=128, num_attention_heads=32,
                            num_key_value_heads=8, is_moe=False, intermediate_size=14336,
                            dtype_bytes=2, vocab_size=128256, moe_intermediate_size=0,
                            num_experts_per_token=0)
    cap = kv_capacity(model, total_gpu_bytes=10**30, gpu_memory_utilization=0.9,  # type: ignore[arg-type]
                      block_size=16, max_num_batched_tokens=2048, max_num_seqs=256)
    assert cap.num_gpu_blocks > 10**20
    with pytest.raises(ConfigError) as err:
        check_instances_memory(_experiment(1), cap)
    assert err.value.field == "hardware.gpu_memory_bytes"
    with pytest.raises(ConfigError) as err:
        kv_capacity(model, total_gpu_bytes=1e30, gpu_memory_utilization=0.9,  # type: ignore[arg-type]
                    block_size=16, max_num_batched_tokens=2048, max_num_seqs=256)
    assert err.value.field == "hardware.gpu_memory_bytes"


def test_a_request_of_1e9_output_tokens_is_refused_naming_it(eight_gib):
    reqs = [make_request("small"), make_request("huge", output=10**9), make_request("c")]
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        Recorder(reqs)
    assert time.perf_counter() - t0 < 1.0
    assert (err.value.field, err.value.line) == ("output_tokens", 2)
    assert "'huge'" in str(err.value) and "1000000000 output tokens" in str(err.value)


def test_check_host_memory_passes_small_and_unknown_budgets(monkeypatch):
    host.check_host_memory(10**15, what="x", field="f", available_bytes=2 * 10**15)
    host.check_host_memory(host.UNCHECKED_BYTES, what="x", field="f", available_bytes=1)
    monkeypatch.setattr(host, "available_host_bytes", lambda: None)
    host.check_host_memory(10**18, what="x", field="f")  # the OS does not say: no check
    with pytest.raises(ConfigError) as err:
        host.check_host_memory(3 * GIB, what="a thing", field="f", path="p.yaml",
                               available_bytes=GIB)
    assert str(err.value).startswith("p.yaml: field 'f': a thing needs ~3 GiB")


def test_available_host_bytes_reads_the_os():
    avail = host.available_host_bytes()
    assert avail is None or avail > 0
