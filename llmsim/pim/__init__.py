"""PIM (processing-in-memory) attention offload: decode attention priced on PIM channels
(:mod:`llmsim.pim.model`). A model of LLMServingSim's PIM path without a measured
validation."""

from llmsim.pim.model import (
    PIM_DEVICES,
    PimCostModel,
    PimDevice,
    assign_channels,
    interleaved_step_ns,
    pim_attention_ns,
    split_sub_batches,
)

__all__ = ["PIM_DEVICES", "PimCostModel", "PimDevice", "assign_channels",
           "interleaved_step_ns", "pim_attention_ns", "split_sub_batches"]
