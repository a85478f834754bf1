"""Helpers for the bridge tests: fake costers, servers in threads and subprocesses.

Run as a script it serves a roofline coster that can misbehave on purpose::

    python tests/bridge/bridge_testlib.py --die-after N --port 0   # os._exit on the Nth batch
    python tests/bridge/bridge_testlib.py --stall-s S --port 0     # every batch sleeps S s
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "bridge"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from adapters.common.coster import ServerInfo  # noqa: E402
from adapters.roofline import RooflineCoster, builtin_hardware, load_hardware  # noqa: E402
from llmsim.v1 import cost_model_pb2 as pb  # noqa: E402


def h100_coster() -> RooflineCoster:
    return RooflineCoster(load_hardware(builtin_hardware()["h100-sxm"]))


class StallingCoster:
    """Sleeps ``stall_s`` in every batch (a stuck simulator)."""

    def __init__(self, stall_s: float) -> None:
        self.inner = h100_coster()
        self.stall_s = stall_s

    def info(self) -> ServerInfo:
        return self.inner.info()

    def cost_batch(self, queries: Sequence[pb.OpQuery]) -> list[pb.OpAnswer]:
        time.sleep(self.stall_s)
        return self.inner.cost_batch(queries)


class DyingCoster:
    """Exits the whole process (like ``kill -9``) on the ``die_after``-th batch."""

    def __init__(self, die_after: int) -> None:
        self.inner = h100_coster()
        self.die_after = die_after
        self.calls = 0

    def info(self) -> ServerInfo:
        return self.inner.info()

    def cost_batch(self, queries: Sequence[pb.OpQuery]) -> list[pb.OpAnswer]:
        self.calls += 1
        if self.calls >= self.die_after:
            os._exit(137)
        return self.inner.cost_batch(queries)


def start_subprocess(argv: list[str], *, python: str = sys.executable,
                     timeout_s: float = 30.0) -> tuple[subprocess.Popen, int]:
    """Start ``python argv...`` and read the JSON port line it prints."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([python, *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=REPO, env=env)
    deadline = time.monotonic() + timeout_s
    line = proc.stdout.readline()
    if not line or time.monotonic() > deadline:
        proc.kill()
        raise RuntimeError(f"server {argv} printed no port line (rc={proc.poll()})")
    return proc, int(json.loads(line)["port"])


def stop_subprocess(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    from adapters.common.server import add_server_arguments, run_server_cli

    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--die-after", type=int)
    group.add_argument("--stall-s", type=float)
    add_server_arguments(parser)
    return run_server_cli(lambda a: (DyingCoster(a.die_after) if a.die_after is not None
                                     else StallingCoster(a.stall_s)), parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
