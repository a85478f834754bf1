"""Importers that turn published profile data into ``llmsim.v1.Profile`` messages."""
