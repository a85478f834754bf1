"""``llmsim data``: list, download (``pull``) and verify the catalog's public datasets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmsim.data.catalog import Dataset


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``data list``, ``data pull NAME`` and ``data verify [NAME...]``."""
    parser = subparsers.add_parser("data", help="list, download and verify public datasets")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="datasets with size, license and local status")
    ls.add_argument("-v", "--details", action="store_true", help="also print citation, URLs and notes")
    ls.set_defaults(func=run_list)
    pull = sub.add_parser("pull", help="download a dataset into the user cache (resume + sha256 check)")
    pull.add_argument("name", nargs="+", help="dataset name(s), see `llmsim data list`")
    pull.add_argument("--dest", type=Path, help="data root to download into (default: user cache)")
    pull.add_argument("--mirror", help="base URL of a mirror laid out like the data root")
    pull.add_argument("--retries", type=int, default=3, help="resumptions after a cut-off response")
    pull.set_defaults(func=run_pull)
    verify = sub.add_parser("verify", help="check local copies against catalog sizes and sha256")
    verify.add_argument("name", nargs="*", help="dataset name(s) (default: all)")
    verify.add_argument("--root", type=Path, help="data root to check (default: each data dir)")
    verify.set_defaults(func=run_verify)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _local_root(dataset: Dataset) -> Path | None:
    from llmsim.data.paths import data_dirs

    for root in data_dirs():
        if all((root / f.path).is_file() for f in dataset.files):
            return root
    return None


def run_list(args: argparse.Namespace) -> int:
    """Print the catalog as a table."""
    from llmsim.data.catalog import load_catalog

    cat = load_catalog()
    print(f"{'dataset':<16} {'files':>5} {'size':>10}  {'license':<11} local")
    for ds in cat.datasets.values():
        root = _local_root(ds)
        print(f"{ds.name:<16} {len(ds.files):>5} {_size(ds.size_bytes):>10}  {ds.license:<11} "
              f"{root if root else '-'}")
        if args.details:
            print(f"    {ds.description}\n    cite: {ds.citation}\n    home: {ds.homepage}")
            if ds.notes:
                print(f"    note: {ds.notes}")
    print("\nnamed traces: " + ", ".join(cat.traces))
    return 0


def run_pull(args: argparse.Namespace) -> int:
    """Download datasets; exit 0 when every file is verified."""
    from llmsim.data.catalog import load_catalog
    from llmsim.data.download import pull_dataset
    from llmsim.data.paths import user_cache_dir

    cat = load_catalog()
    root = args.dest or user_cache_dir()
    for name in args.name:
        ds = cat.dataset(name)
        if args.mirror:
            ds = ds.with_mirror(args.mirror)
        paths = pull_dataset(ds, root, retries=args.retries)
        print(f"{name}: {len(paths)} file(s) in {root}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Check local files; exit 1 when any present file is corrupt (missing is reported)."""
    from llmsim.data.catalog import load_catalog
    from llmsim.data.download import FileState, verify_dataset
    from llmsim.data.paths import data_dirs

    cat = load_catalog()
    names = args.name or list(cat.datasets)
    roots = [args.root] if args.root else data_dirs()
    bad = 0
    for name in names:
        ds = cat.dataset(name)
        for root in roots:
            checks = verify_dataset(ds, root)
            counts: dict[str, int] = {}
            for c in checks:
                counts[c.state] = counts.get(c.state, 0) + 1
                if c.state in (FileState.SIZE_MISMATCH, FileState.CHECKSUM_MISMATCH):
                    bad += 1
                    print(f"  BAD {c.state}: {c.path}")
            if counts.get(FileState.MISSING, 0) == len(checks):
                continue
            summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            print(f"{name} @ {root}: {summary}")
    return 1 if bad else 0
