"""``llmsim profile``: import/show (``llmsim.profile.cli``) and run/compare (``profiler.cli``)."""

from __future__ import annotations

import argparse
import importlib

# sub-command -> module that defines ``register(subparsers)`` for it
_SUBCOMMANDS = {
    "import": "llmsim.profile.cli",
    "show": "llmsim.profile.cli",
    "run": "profiler.cli",
    "compare": "profiler.cli",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("profile", help="operator profiles")
    sub = parser.add_subparsers(dest="profile_command", metavar="SUBCOMMAND", required=True)
    seen: set[str] = set()
    for module in _SUBCOMMANDS.values():
        if module not in seen:
            seen.add(module)
            importlib.import_module(module).register(sub)
