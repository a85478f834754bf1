"""Roofline bridge server: analytical operator costs from a hardware YAML file.

Start it with ``python -m adapters.roofline --hardware adapters/roofline/hardware/h100-sxm.yaml
--port 0`` (prints ``{"server": ..., "address": ..., "port": N}``) or
``llmsim bridge serve roofline --hardware h100-sxm --port 0``.
"""

from adapters.roofline.coster import RooflineCoster
from adapters.roofline.hardware import HardwareSpec, builtin_hardware, load_hardware
from adapters.roofline.model import RooflineModel

__all__ = ["HardwareSpec", "RooflineCoster", "RooflineModel", "builtin_hardware",
           "load_hardware"]
