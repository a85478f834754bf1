"""``llmsim`` entry point: one sub-command per module, imported only when used.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` (taking the parsed ``argparse.Namespace``, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from llmsim.errors import LlmsimError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "profile": ("llmsim.cli.profile", "import, show, run and compare operator profiles"),
    "replay": ("llmsim.cli.replay", "replay a trace through the simulated serving loop"),
    "validate": ("llmsim.cli.validate", "replay a measured workload and report the error"),
    "trace": ("llmsim.cli.trace", "characterize and transform request traces"),
    "data": ("llmsim.cli.data", "list, download and verify public datasets"),
    "bridge": ("llmsim.cli.bridge", "gRPC cost-bridge servers and checks"),
    "cluster": ("llmsim.cli.cluster", "import cluster configs of other simulators (LLMServingSim)"),
    "sweep": ("llmsim.cli.sweep", "run a grid of overrides over one experiment (local pool or Ray)"),
    "search": ("llmsim.cli.search", "capacity search: highest rate / fewest instances meeting SLOs"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Build the parser; only the module of the chosen command is imported."""
    parser = argparse.ArgumentParser(prog="llmsim", description="LLM serving simulator")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        if name == chosen:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


EXIT_ERROR = 2
"""Exit code for an llmsim error (bad input, unwritable output, unavailable cost model)."""
EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C / SIGINT: 128 + SIGINT, the shell convention."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    Returns:
        The command's code (0 on success); 1 when no command is given; ``EXIT_ERROR`` (2)
        after an :class:`~llmsim.errors.LlmsimError` or an ``OSError`` (one line on stderr,
        no traceback; ``-v`` adds it); ``EXIT_INTERRUPTED`` (130) after Ctrl-C, with
        ``llmsim: interrupted`` on stderr. Partial outputs are cleaned up by the writers.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("llmsim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except LlmsimError as exc:
        print(f"llmsim: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # an environment problem (disk full, permissions), not a bug
        logging.getLogger(__name__).debug("OSError", exc_info=verbose)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"llmsim: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR


def _run(argv: list[str]) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
