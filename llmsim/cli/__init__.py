"""The ``llmsim`` command line."""
