"""``python -m profiler run|compare ...``: the profiler's commands without the rest of llmsim.

Same arguments as ``llmsim profile run|compare``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from llmsim.errors import LlmsimError
from profiler import cli


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; 2 on llmsim errors."""
    parser = argparse.ArgumentParser(prog="python -m profiler")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    cli.register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except LlmsimError as exc:
        print(f"llmsim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
