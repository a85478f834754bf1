"""``llmsim bridge``: start cost-bridge servers and check running ones.

    llmsim bridge serve roofline --hardware h100-sxm --port 0
    llmsim bridge serve profile --profile PATH --port 0
    llmsim bridge serve scalesim --array systolic-32x32 --port 0   # runs in .venv-scalesim
    llmsim bridge describe grpc://127.0.0.1:50051

``serve`` hands its remaining arguments to ``python -m adapters.<server>``. SCALE-Sim
needs its own virtualenv: when ``scalesim`` does not import here, the server is started with
``--python``, ``$LLMSIM_SCALESIM_PYTHON`` or ``.venv-scalesim/bin/python`` (repository root).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from llmsim.errors import ConfigError

SERVERS = ("roofline", "scalesim", "profile")
REPO_ROOT = Path(__file__).resolve().parents[2]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bridge serve`` and ``bridge describe``."""
    parser = subparsers.add_parser("bridge", help="gRPC cost-bridge servers and checks")
    sub = parser.add_subparsers(dest="bridge_command", metavar="SUBCOMMAND", required=True)
    serve = sub.add_parser("serve", help="start a bridge server (prints its port as JSON)")
    serve.add_argument("server", choices=SERVERS)
    serve.add_argument("--python", default=None,
                       help="interpreter for the scalesim server (default: .venv-scalesim)")
    serve.add_argument("args", nargs=argparse.REMAINDER,
                       help="the server's own arguments (see python -m adapters.NAME -h)")
    serve.set_defaults(func=run_serve)
    describe = sub.add_parser("describe", help="health-check and describe a running server")
    describe.add_argument("target", help="grpc://HOST:PORT")
    describe.add_argument("--timeout-s", type=float, default=5.0,
                          help="connect, health-check and Describe deadline, seconds "
                               "(finite, > 0, at most one day; default 5)")
    describe.set_defaults(func=run_describe)


def scalesim_python(explicit: str | None) -> str | None:
    """The interpreter to run the scalesim server with, ``None`` for this one."""
    if explicit:
        return explicit
    if importlib.util.find_spec("scalesim") is not None:
        return None
    env = os.environ.get("LLMSIM_SCALESIM_PYTHON")
    if env:
        return env
    venv = REPO_ROOT / ".venv-scalesim" / "bin" / "python"
    if venv.exists():
        return str(venv)
    raise ConfigError("scalesim is not installed here and no .venv-scalesim exists; run "
                      "adapters/scalesim/setup_env.sh or pass --python", field="server")


def run_serve(args: argparse.Namespace) -> int:
    """Run an adapter server in the foreground (``exec`` into the scalesim venv when needed).

    Raises:
        ConfigError: bad server arguments, or no interpreter with ``scalesim`` installed.
    """
    rest = [a for a in args.args if a != "--"]
    if args.server == "scalesim":
        python = scalesim_python(args.python)
        if python is not None:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                              env.get("PYTHONPATH")]))
            os.execve(python, [python, "-m", "adapters.scalesim", *rest], env)
    module = importlib.import_module(f"adapters.{args.server}.__main__")
    code: int = module.main(rest)
    return code


def run_describe(args: argparse.Namespace) -> int:
    """Connect (health check + version check) and print the server's ``Describe`` answer.

    Raises:
        ConfigError: a malformed target, or ``--timeout-s`` not a finite number of seconds
            in ``(0, MAX_TIMEOUT_S]``.
        CostModelUnavailable: no healthy server within ``--timeout-s``, or a protocol mismatch.
    """
    from llmsim.bridge.client import parse_spec
    from llmsim.bridge.transport import BridgeTransport, TransportOptions, check_seconds

    check_seconds(args.timeout_s, field="--timeout-s")
    spec = args.target if "://" in args.target else f"grpc://{args.target}"
    try:
        target, _ = parse_spec(spec)
    except ConfigError as exc:
        raise ConfigError(exc.reason, field="target") from None
    transport = BridgeTransport(target, TransportOptions(connect_timeout_s=args.timeout_s,
                                                         deadline_s=args.timeout_s))
    try:
        info = transport.connect()
    finally:
        transport.close()
    from llmsim.v1 import cost_model_pb2 as pb

    print(f"{target}: SERVING, protocol v{info.protocol_version}")
    print(f"  server:   {info.server_name} {info.server_version}")
    print(f"  hardware: {info.hardware} ({info.hardware_description})")
    print("  kinds:    " + ", ".join(pb.OperatorKind.Name(k).removeprefix("OPERATOR_KIND_")
                                     .lower() for k in info.operator_kinds))
    print(f"  energy:   {'yes' if info.provides_energy else 'no'}")
    print(f"  stream:   {'CostStream' if info.supports_stream else 'CostBatch only'}")
    print("  attention detail: " + pb.AttentionDetail.Name(info.attention_detail)
          .removeprefix("ATTENTION_DETAIL_").lower())
    print(f"  dtypes:   {', '.join(info.dtypes) or 'any'}")
    print(f"  tp:       {', '.join(map(str, info.tp_degrees)) or 'any'}")
    if info.model_name:
        print(f"  model:    {info.model_name}")
    print(f"  fingerprint: {info.fingerprint}")
    sys.stdout.flush()
    return 0
