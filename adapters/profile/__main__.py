"""``python -m adapters.profile --profile PATH [--model CONFIG] [--port 0]``."""

from __future__ import annotations

import argparse

from adapters.common.server import add_server_arguments, run_server_cli
from adapters.profile.coster import ProfileCoster
from llmsim.model.config import load_model_config


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of the profile server."""
    parser = parser or argparse.ArgumentParser(prog="python -m adapters.profile",
                                               description="profile cost-bridge server")
    parser.add_argument("--profile", required=True,
                        help="llmsim .pb profile or LLMServingSim bundle directory")
    parser.add_argument("--model", default=None,
                        help="HF config.json of the served model (default: the profile's)")
    add_server_arguments(parser)
    return parser


def build(args: argparse.Namespace) -> ProfileCoster:
    """The coster for parsed arguments."""
    model = load_model_config(args.model) if args.model else None
    return ProfileCoster.from_path(args.profile, model=model)


def main(argv: list[str] | None = None) -> int:
    return run_server_cli(build, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
