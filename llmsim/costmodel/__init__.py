"""Step cost models: how long one engine step takes on given hardware.

The serving loop hands a :class:`StepBatch` to a :class:`CostModel` and gets a
:class:`StepCost` back. Implementations: the profile cost model (operator tables from a
``llmsim.v1.Profile``), the gRPC bridge client (external simulators), and fakes in tests.
"""

from llmsim.costmodel.base import CostModel, PrefillChunk, StepBatch, StepCost

__all__ = ["CostModel", "PrefillChunk", "StepBatch", "StepCost"]
