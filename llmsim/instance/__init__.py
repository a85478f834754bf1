"""A serving instance: scheduler + KV cache + step-time model (cost model + overheads)."""

from llmsim.instance.instance import CheckLevel, Instance, StepRecord
from llmsim.instance.step_time import StepOverheads, StepTimeModel

__all__ = ["CheckLevel", "Instance", "StepOverheads", "StepRecord", "StepTimeModel"]
