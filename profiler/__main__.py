"""``python -m profiler run|compare ...``: shorthand for ``llmsim profile run|compare ...``."""

from __future__ import annotations

import sys

from llmsim.cli.main import main as llmsim_main


def main(argv: list[str] | None = None) -> int:
    """Run ``llmsim profile <argv>``; returns the exit code (2 on llmsim errors)."""
    return llmsim_main(["profile", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
