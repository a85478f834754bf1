"""``python -m adapters.scalesim --array CONFIG [--results DB] [--port 0]`` (own venv)."""

from __future__ import annotations

import argparse
from pathlib import Path

from adapters.common.server import add_server_arguments, run_server_cli
from adapters.scalesim.config import CONFIG_DIR, load_array_config
from adapters.scalesim.coster import ScaleSimCoster
from adapters.scalesim.runner import ResultTable, ScaleSimRunner
from llmsim.errors import ConfigError

DEFAULT_STATE_DIR = Path.home() / ".cache" / "llmsim" / "scalesim"
MAX_SIM_WORKERS = 256
"""Most SCALE-Sim worker processes accepted (each is a process)."""


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of the SCALE-Sim server."""
    parser = parser or argparse.ArgumentParser(prog="python -m adapters.scalesim",
                                               description="SCALE-Sim cost-bridge server")
    parser.add_argument("--array", required=True,
                        help="array YAML file or a shipped name: "
                             + ", ".join(p.stem for p in sorted(CONFIG_DIR.glob("*.yaml"))))
    parser.add_argument("--results", default=str(DEFAULT_STATE_DIR / "results.sqlite"),
                        help="persistent SQLite result table")
    parser.add_argument("--work-dir", default=str(DEFAULT_STATE_DIR / "runs"),
                        help="parent of SCALE-Sim's per-run directories")
    parser.add_argument("--sim-workers", type=int, default=2,
                        help="SCALE-Sim worker processes")
    add_server_arguments(parser)
    return parser


def build(args: argparse.Namespace) -> ScaleSimCoster:
    """The coster for parsed arguments.

    Raises:
        ConfigError: no such array config, or ``--sim-workers`` outside ``1..MAX_SIM_WORKERS``.
    """
    if not 1 <= args.sim_workers <= MAX_SIM_WORKERS:
        raise ConfigError(f"{args.sim_workers} is not in 1..{MAX_SIM_WORKERS}",
                          field="--sim-workers")
    path = Path(args.array)
    if not path.exists():
        path = CONFIG_DIR / f"{args.array}.yaml"
        if not path.exists():
            raise ConfigError("no such array config file or shipped name", field="--array")
    array = load_array_config(path)
    runner = ScaleSimRunner(array, args.work_dir, workers=args.sim_workers)
    return ScaleSimCoster(array, runner, ResultTable(args.results, array.sha256))


def main(argv: list[str] | None = None) -> int:
    return run_server_cli(build, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
