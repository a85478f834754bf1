"""The discrete-event simulation loop (integer-ns clock)."""

from llmsim.sim.events import EventKind, Handoff, HandoffDescriptor, HandoffOrder
from llmsim.sim.loop import EventHandler, HandoffPolicy, SimStats, Simulation, StepHook

__all__ = ["EventHandler", "EventKind", "Handoff", "HandoffDescriptor", "HandoffOrder",
           "HandoffPolicy", "SimStats", "Simulation", "StepHook"]
