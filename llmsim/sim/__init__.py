"""The discrete-event simulation loop (integer-ns clock)."""

from llmsim.sim.events import EventKind, Handoff
from llmsim.sim.loop import HandoffPolicy, SimStats, Simulation

__all__ = ["EventKind", "Handoff", "HandoffPolicy", "SimStats", "Simulation"]
