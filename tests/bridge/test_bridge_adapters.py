"""Roofline and SCALE-Sim adapters: hardware files, formulas, fake and real SCALE-Sim."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from bridge_testlib import FIXTURES, REPO, start_subprocess, stop_subprocess

from adapters.common.server import serve
from adapters.roofline import RooflineCoster, builtin_hardware, load_hardware
from adapters.scalesim import GemmSim, ResultTable, ScaleSimCoster, load_array_config
from adapters.scalesim.config import CONFIG_DIR
from llmsim.bridge import BridgeCostModel, BridgeOptions, TransportOptions
from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.errors import ConfigError
from llmsim.model.config import load_model_config
from llmsim.v1 import cost_model_pb2 as pb

TINY = load_model_config(FIXTURES / "tiny-llama.json")
ARRAY = CONFIG_DIR / "systolic-32x32.yaml"


def gemm(m, n, k, dtype="bf16", reps=1):
    return pb.OpQuery(op_name="g", dtype=dtype, tp_degree=1, repetitions=reps,
                      gemm=pb.GemmShape(m=m, n=n, k=k))


def test_shipped_hardware_files_load_with_sources():
    shipped = builtin_hardware()
    assert {"h100-sxm", "a100-80gb", "rtx-4090", "rtx-pro-6000"} <= set(shipped)
    for path in shipped.values():
        hw = load_hardware(path)
        assert hw.peak_flops_per_s["bf16"] > 1e14
        assert "datasheet" in path.read_text().lower()
    h100 = load_hardware(shipped["h100-sxm"])
    assert h100.memory_bandwidth_bytes_per_s == 3.35e12


def test_bad_hardware_file_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((builtin_hardware()["h100-sxm"]).read_text().replace(
        "memory_bandwidth_bytes_per_s: 3.35e12", "memory_bandwidth_bytes_per_s: -1"))
    with pytest.raises(ConfigError, match="memory_bandwidth_bytes_per_s"):
        load_hardware(bad)


def test_roofline_regimes_and_repetitions():
    coster = RooflineCoster(load_hardware(builtin_hardware()["h100-sxm"]))
    hw = coster.model.hw
    big = coster.cost_one(gemm(8192, 8192, 8192))[0]
    flops_ns = 2 * 8192**3 / (hw.peak_flops_per_s["bf16"] * hw.efficiency.gemm_compute) * 1e9
    assert big == pytest.approx(flops_ns + hw.kernel_launch_overhead_ns)      # compute-bound
    small = coster.cost_one(gemm(1, 4096, 4096))[0]
    bytes_ns = 2 * (4096 + 4096 * 4096 + 4096) / (hw.memory_bandwidth_bytes_per_s
                                                   * hw.efficiency.memory) * 1e9
    assert small == pytest.approx(bytes_ns + hw.kernel_launch_overhead_ns)    # memory-bound
    assert coster.cost_one(gemm(1, 4096, 4096, reps=32))[0] == pytest.approx(32 * small)
    assert coster.cost_one(gemm(1, 4096, 4096, dtype="fp8"))[0] < small
    a100 = RooflineCoster(load_hardware(builtin_hardware()["a100-80gb"]))
    assert a100.cost_batch([gemm(8, 8, 8, dtype="fp8")])[0].error.code == \
        pb.OP_ERROR_CODE_UNSUPPORTED


def fake_runner(calls: list):
    def run(shapes):
        calls.append(list(shapes))
        return [GemmSim(cycles=m * 10 + n + k, sram_reads=m * k, sram_writes=m * n,
                        dram_reads=k * n, dram_writes=m * n) for m, n, k in shapes]
    return run


def test_scalesim_coster_with_fake_runner(tmp_path):
    array = load_array_config(ARRAY)
    calls: list = []
    table = ResultTable(tmp_path / "r.sqlite", array.sha256)
    coster = ScaleSimCoster(array, fake_runner(calls), table)
    answers = coster.cost_batch([gemm(4, 64, 32, reps=3), gemm(4, 64, 32),
                                 pb.OpQuery(op_name="act_fn", dtype="bf16",
                                            elementwise=pb.ElementwiseShape(rows=4,
                                                                            row_elements=64))])
    assert calls == [[(4, 64, 32)]]                     # one simulation for the shape
    cycles = 4 * 10 + 64 + 32
    assert answers[1].cost.latency_ns == pytest.approx(cycles / array.clock_hz * 1e9)
    assert answers[0].cost.latency_ns == pytest.approx(3 * answers[1].cost.latency_ns)
    e = array.energy_pj
    pj = 4 * 32 * e["sram_read"] + 4 * 64 * e["sram_write"] + 32 * 64 * e["dram_read"] \
        + 4 * 64 * e["dram_write"]
    assert answers[1].cost.energy_j == pytest.approx(pj * 1e-12)
    assert answers[2].cost.latency_ns > 0                # roofline fallback
    table.close()
    # a new server on the same table simulates nothing again
    calls2: list = []
    again = ScaleSimCoster(array, fake_runner(calls2), ResultTable(tmp_path / "r.sqlite",
                                                                   array.sha256))
    assert again.cost_batch([gemm(4, 64, 32)])[0].cost.latency_ns == answers[1].cost.latency_ns
    assert calls2 == []


def test_scalesim_failure_is_a_per_query_error(tmp_path):
    array = load_array_config(ARRAY)

    def broken(shapes):
        raise RuntimeError("simulator crashed")

    coster = ScaleSimCoster(array, broken, ResultTable(tmp_path / "r.sqlite", array.sha256))
    a = coster.cost_batch([gemm(2, 2, 2), pb.OpQuery(
        op_name="n", dtype="bf16", elementwise=pb.ElementwiseShape(rows=1, row_elements=8))])
    assert a[0].error.code == pb.OP_ERROR_CODE_INTERNAL and "crashed" in a[0].error.message
    assert a[1].WhichOneof("result") == "cost"


def test_tiny_replay_on_fake_scalesim_server(tmp_path):
    from llmsim import replay
    from llmsim.experiment import load_experiment

    array = load_array_config(ARRAY)
    calls: list = []
    running = serve(ScaleSimCoster(array, fake_runner(calls),
                                   ResultTable(tmp_path / "r.sqlite", array.sha256)))
    try:
        exp = load_experiment(FIXTURES / "tiny-experiment.yaml",
                              {"cost_model": f"grpc://{running.target}"})
        result = replay.run(exp)
    finally:
        running.stop(0)
    assert result.requests["finish_s"].notna().all()
    simulated = sum(len(c) for c in calls)
    assert 0 < simulated < result.num_steps * 5


def _scalesim_python() -> str | None:
    env = os.environ.get("LLMSIM_SCALESIM_PYTHON")
    if env:
        return env
    venv = REPO / ".venv-scalesim" / "bin" / "python"
    return str(venv) if venv.exists() else None


@pytest.mark.slow
def test_real_scalesim_server_prices_a_small_step(tmp_path):
    python = _scalesim_python()
    if python is None:
        if os.environ.get("LLMSIM_REQUIRE_SCALESIM"):
            pytest.fail("LLMSIM_REQUIRE_SCALESIM set but no SCALE-Sim venv found")
        pytest.skip("no SCALE-Sim venv (run adapters/scalesim/setup_env.sh)")
    proc, port = start_subprocess(
        ["-m", "adapters.scalesim", "--array", str(ARRAY), "--port", "0",
         "--results", str(tmp_path / "r.sqlite"), "--work-dir", str(tmp_path / "runs")],
        python=python, timeout_s=60)
    try:
        slow = BridgeOptions(transport=TransportOptions(deadline_s=120))  # SCALE-Sim is slow
        with BridgeCostModel(f"127.0.0.1:{port}", model=TINY, options=slow) as c:
            assert c.server.server_name == "llmsim-scalesim" and c.server.provides_energy
            cost = c.step_cost(StepBatch(prefills=(PrefillChunk(num_new_tokens=4),)))
            assert cost.duration_ns > 0 and cost.energy_j > 0
            assert c.stats.rpcs == 1
    finally:
        stop_subprocess(proc)
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # per-run dirs cleaned up
    assert shutil.which(python) or Path(python).exists()
