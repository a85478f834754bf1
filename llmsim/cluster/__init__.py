"""Cluster layout: parallel degrees of a deployment and the nodes/GPUs instances sit on."""

from llmsim.cluster.parallel import ParallelConfig, check_supported

__all__ = ["ParallelConfig", "check_supported"]
