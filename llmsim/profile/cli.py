"""``llmsim profile import ...`` and ``llmsim profile show ...``.

Usage::

    llmsim profile import llmservingsim <bundle dir> -o out.pb
    llmsim profile import vidur <dir> -o out.pb
    llmsim profile import aiconfigurator <system dir> -o out.pb
    llmsim profile import aiconfigurator <db root> --system h100_sxm --model config.json \
        --tp 1,2,4,8 -o out.pb
    llmsim profile show file.pb            (a bundle directory works too)

Input paths (bundle, directory, profile, model config) are used as given when they exist,
else looked up in the data directories (``LLMSIM_DATA_DIR``, then the user cache), like the
other commands: ``llmsim profile show llmservingsim/profiles/RTXPRO6000/...`` works from
anywhere. Output paths are used as given.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def resolve_input(path: str | Path) -> Path:
    """``path`` as given when it exists, else inside the data dirs.

    Raises:
        DataNotFoundError: neither exists (names the directories searched).
    """
    from llmsim.data.paths import dataset_path

    p = Path(path).expanduser()
    if p.exists():
        return p
    return dataset_path(p)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``import`` and ``show`` sub-commands to ``llmsim profile``."""
    imp = subparsers.add_parser("import", help="import published profile data into a .pb")
    sources = imp.add_subparsers(dest="import_source", metavar="SOURCE", required=True)

    lss = sources.add_parser("llmservingsim", help="an LLMServingSim profile bundle directory")
    lss.add_argument("bundle", help="bundle dir holding meta.yaml and tpN/")
    lss.add_argument("-o", "--output", required=True, help="output .pb file")
    lss.add_argument("--model-config", help="HF config.json of the model (default: found "
                     "next to the bundle's profiles/ tree)")
    lss.add_argument("--source-commit", default="", help="source revision for the provenance")
    lss.set_defaults(func=_import_llmservingsim)

    vid = sources.add_parser("vidur", help="Vidur NCCL collectives of one hardware setup")
    vid.add_argument("directory", help="e.g. vidur/network/h100_dgx")
    vid.add_argument("-o", "--output", required=True, help="output .pb file")
    vid.add_argument("--source-commit", default="", help="source revision for the provenance")
    vid.set_defaults(func=_import_vidur)

    aic = sources.add_parser("aiconfigurator",
                             help="AIConfigurator measured vLLM all-reduce of one system")
    aic.add_argument("directory", help="e.g. aiconfigurator/systems/data/rtx_pro_6000_server")
    aic.add_argument("-o", "--output", required=True, help="output .pb file")
    aic.add_argument("--vllm-version", default=None, help="comm/vllm/<version> (default: newest)")
    aic.add_argument("--source-commit", default="", help="source revision for the provenance")
    aic.add_argument("--system", default=None, help="AIConfigurator system (then DIRECTORY is "
                     "the database root), e.g. h100_sxm")
    aic.add_argument("--model", default=None, help="HF config.json: build a model profile "
                     "from the kernel tables (default: the all-reduce table only)")
    aic.add_argument("--tp", default="1", help="TP degrees of a model profile, e.g. 1,2,4,8")
    aic.add_argument("--moe-distribution", default="balanced",
                     help="routing distribution of the MoE rows (balanced, power_law_1.01, ...)")
    aic.set_defaults(func=_import_aiconfigurator)

    show = subparsers.add_parser("show", help="summarize a profile (.pb or bundle dir)")
    show.add_argument("profile", help=".pb file or LLMServingSim bundle directory")
    show.set_defaults(func=_show)


def _import_llmservingsim(args: argparse.Namespace) -> int:
    from llmsim.profile.importers.llmservingsim import import_bundle
    from llmsim.profile.io import write_profile

    model_config = resolve_input(args.model_config) if args.model_config else None
    profile = import_bundle(resolve_input(args.bundle), model_config=model_config,
                            source_commit=args.source_commit)
    path = write_profile(profile, args.output)
    print(f"wrote {path} ({path.stat().st_size:,} bytes; TP "
          f"{', '.join(str(t.tp_degree) for t in profile.tp)})")
    return 0


def _import_vidur(args: argparse.Namespace) -> int:
    from llmsim.profile.importers.vidur import import_vidur
    from llmsim.profile.io import write_profile

    profile = import_vidur(resolve_input(args.directory), source_commit=args.source_commit)
    path = write_profile(profile, args.output)
    print(f"wrote {path} ({path.stat().st_size:,} bytes; collectives "
          f"{', '.join(t.op for t in profile.collectives)})")
    return 0


def _import_aiconfigurator(args: argparse.Namespace) -> int:
    from llmsim.profile.importers.aiconfigurator import import_aiconfigurator_comm
    from llmsim.profile.io import write_profile

    if args.model or args.system:
        return _import_aiconfigurator_model(args)
    profile = import_aiconfigurator_comm(args.directory, version=args.vllm_version,
                                         source_commit=args.source_commit)
    path = write_profile(profile, args.output)
    print(f"wrote {path} ({path.stat().st_size:,} bytes; collectives "
          f"{', '.join(t.op for t in profile.collectives)})")
    return 0


def _import_aiconfigurator_model(args: argparse.Namespace) -> int:
    from llmsim.errors import ConfigError
    from llmsim.profile.importers.aiconfigurator import import_aiconfigurator
    from llmsim.profile.io import write_profile

    if not args.model:
        raise ConfigError("--system needs --model (the HF config.json to profile)",
                          field="model")
    try:
        tps = tuple(int(t) for t in str(args.tp).split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"--tp must be comma-separated integers, got {args.tp!r}",
                          field="tp") from None
    profile = import_aiconfigurator(resolve_input(args.directory),
                                    model_config=resolve_input(args.model), tp_degrees=tps,
                                    system=args.system, version=args.vllm_version,
                                    moe_distribution=args.moe_distribution,
                                    source_commit=args.source_commit)
    path = write_profile(profile, args.output)
    print(f"wrote {path} ({path.stat().st_size:,} bytes; {profile.model.name} on "
          f"{profile.provenance.hardware}, vLLM {profile.provenance.framework_version}; TP "
          f"{', '.join(str(t.tp_degree) for t in profile.tp)})")
    return 0


def _show(args: argparse.Namespace) -> int:
    from llmsim.profile.io import load_profile
    from llmsim.profile.show import format_profile

    print(format_profile(load_profile(args.profile)))  # resolves in the data dirs too
    return 0
