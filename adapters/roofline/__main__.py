"""``python -m adapters.roofline --hardware FILE|NAME [--port 0]``: serve the roofline model."""

from __future__ import annotations

import argparse
from pathlib import Path

from adapters.common.server import add_server_arguments, run_server_cli
from adapters.roofline.coster import RooflineCoster
from adapters.roofline.hardware import builtin_hardware, load_hardware
from llmsim.errors import ConfigError


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of the roofline server."""
    parser = parser or argparse.ArgumentParser(prog="python -m adapters.roofline",
                                               description="roofline cost-bridge server")
    parser.add_argument("--hardware", required=True,
                        help="hardware YAML file, or a shipped name: "
                             + ", ".join(builtin_hardware()))
    add_server_arguments(parser)
    return parser


def resolve_hardware(value: str) -> Path:
    """A path, or the stem of a shipped hardware file.

    Raises:
        ConfigError: neither exists.
    """
    path = Path(value)
    if path.exists():
        return path
    shipped = builtin_hardware()
    if value in shipped:
        return shipped[value]
    raise ConfigError(f"no such hardware file or shipped name (have {', '.join(shipped)})",
                      field="--hardware")


def build(args: argparse.Namespace) -> RooflineCoster:
    """The coster for parsed arguments."""
    return RooflineCoster(load_hardware(resolve_hardware(args.hardware)))


def main(argv: list[str] | None = None) -> int:
    return run_server_cli(build, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
