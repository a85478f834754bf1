"""Shipped TP link descriptions: one YAML file per GPU type (a package so they install)."""
