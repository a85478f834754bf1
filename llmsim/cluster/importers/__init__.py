"""Importers of other simulators' cluster descriptions into llmsim experiment YAML.

- :mod:`llmsim.cluster.importers.llmservingsim`: LLMServingSim 2.0 cluster configs
  (``configs/cluster/*.json``), ``llmsim cluster import llmservingsim``.
"""
