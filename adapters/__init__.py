"""gRPC cost-bridge servers: external simulators that price llmsim's operators.

Each adapter is one package started by one command (``python -m adapters.<name> --port 0``
or ``llmsim bridge serve <name> ...``) and speaks ``llmsim.v1.CostModelService``
(``proto/llmsim/v1/cost_model.proto``):

* :mod:`adapters.roofline`: analytical roofline model from a hardware YAML file.
* :mod:`adapters.scalesim`: SCALE-Sim systolic-array GEMMs (its own virtualenv), roofline
  for the other operators.
* :mod:`adapters.profile`: serves an llmsim ``.pb`` operator profile.

:mod:`adapters.common` holds what they share: the servicer, health checking, reflection,
the version check and the command-line plumbing.
"""
