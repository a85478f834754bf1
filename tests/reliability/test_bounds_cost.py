"""Step costs without bound (issue 17): every cost is checked in the instance.

A cost model (here a plain function) that prices a step at NaN, infinity, a negative or a
1e300 ns duration, or a non-number, stops the run with ``CostModelUnavailable`` naming the
instance and the step; so does a bad price for the CUDA-graph padded copy of a batch. CPU
overheads beyond ``MAX_STEP_COST_NS`` are refused when the overheads are built.
"""

from __future__ import annotations

import math

import pytest
from bounds_factories import MS, FnCost, make_instance, make_request, simulate

from llmsim.costmodel.base import MAX_STEP_COST_NS
from llmsim.errors import ConfigError, CostModelUnavailable
from llmsim.instance import StepOverheads


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1, -0.5, 1e300, MAX_STEP_COST_NS + 1,
                                 10**30, "12", None])
def test_a_bad_step_cost_names_instance_and_step(bad):
    calls = []

    def fn(batch):
        calls.append(batch)
        return bad if len(calls) == 3 else 10 * MS  # the third step goes wrong

    inst = make_instance(cost=FnCost(fn), instance_id=0)
    with pytest.raises(CostModelUnavailable) as err:
        simulate([make_request("a", output=6)], [inst])
    msg = str(err.value)
    assert "instance 0 (fake), step 2" in msg
    assert "MAX_STEP_COST_NS" in msg and repr(bad) in msg


def test_valid_costs_at_the_bounds_pass_and_floats_stay_floats():
    durations = iter([0, MAX_STEP_COST_NS, 2.5 * MS] + [MS] * 10)
    rec, _ = simulate([make_request("a", output=4)],
                      [make_instance(cost=FnCost(lambda _b: next(durations)))])
    ends = [s[4] for s in rec.steps]
    assert ends[:3] == [0, MAX_STEP_COST_NS, MAX_STEP_COST_NS + 2.5 * MS]


def test_a_bad_cost_for_the_padded_batch_is_refused():
    # real batch: 1 decode -> 10 ms; the padded copy (4 tokens) -> NaN
    def fn(batch):
        return math.nan if batch.num_tokens == 4 and batch.num_decodes > 1 else 10 * MS

    inst = make_instance(cost=FnCost(fn), capture_sizes=(4,), budget=64)
    with pytest.raises(CostModelUnavailable) as err:
        simulate([make_request("a", prompt=8, output=3)], [inst])
    assert "padded to 4 tokens" in str(err.value) and "step 1" in str(err.value)


@pytest.mark.parametrize("field", ["cpu_step_ns", "cpu_per_seq_ns"])
@pytest.mark.parametrize("bad", [10**18, MAX_STEP_COST_NS + 1, -1, 1e6, True, math.nan])
def test_cpu_overheads_beyond_the_ceiling_are_refused(field, bad):
    with pytest.raises(ConfigError) as err:
        StepOverheads(**{field: bad})
    assert err.value.field == f"overheads.{field}"


def test_cpu_overheads_at_the_ceiling_are_accepted():
    o = StepOverheads(cpu_step_ns=MAX_STEP_COST_NS, cpu_per_seq_ns=0)
    assert o.cpu_ns(256) == MAX_STEP_COST_NS
