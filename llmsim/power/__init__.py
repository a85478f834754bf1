"""Power and energy of a replay (GPU power-state model; docs/power.md)."""

from llmsim.power.model import PowerTrace, StepShape, attribute_to_requests, power_trace, step_power
from llmsim.power.report import (
    EnergyReport,
    energy_report,
    profile_has_energy,
    write_energy,
    write_replay_energy,
)
from llmsim.power.spec import GpuPowerSpec, SourcedValue, find_power_spec, load_power_spec_file

__all__ = ["EnergyReport", "GpuPowerSpec", "PowerTrace", "SourcedValue", "StepShape",
           "attribute_to_requests", "energy_report", "find_power_spec", "load_power_spec_file",
           "power_trace", "profile_has_energy", "step_power", "write_energy",
           "write_replay_energy"]
