"""Import Vidur's measured NCCL collectives (``vidur/network/<hw>/{all_reduce,send_recv}.csv``).

Source columns (microsoft/vidur, ``data/network``): an unnamed row index,
``time_stats.<op>.{min,max,mean,median,std}`` in **milliseconds**, ``rank``, ``num_workers``,
``size`` (bytes), ``collective``, ``devices_per_node``, ``max_devices_per_node``.

Each file becomes one collectives :class:`~llmsim.v1.profile_pb2.OpTable` (``op`` = the
collective's name) with axes ``bytes``, ``ranks`` (= ``num_workers``), ``devices_per_node``
and ``rank``, and columns ``median_ns``, ``mean_ns``, ``min_ns``, ``max_ns``, ``std_ns``
converted from ms with decimal arithmetic (``Decimal(cell).scaleb(6)``). The profile has no
model and no TP tables: it is a hardware-only profile whose collectives a cost model can
borrow (``ProfileCostModel(..., collectives=vidur.collectives)``).

Repeated rows are kept: the published tables hold several measurements of one
``(size, num_workers, devices_per_node, rank)`` point (e.g. ``a100_dgx/all_reduce.csv``
lines 610 and 611), with different times, and the cost model averages them
(:func:`llmsim.costmodel.collectives.collective_grid`). Cells are refused when they are not
numbers, not finite, or negative (file, line, column).
"""

from __future__ import annotations

from pathlib import Path

from llmsim.errors import ProfileError
from llmsim.profile.importers._csv import parse_count, read_csv, scaled_to_ns
from llmsim.v1 import profile_pb2 as pb

SOURCE_NAME = "Vidur network profiles"
SOURCE_URI = "https://github.com/microsoft/vidur"
COLLECTIVE_FILES = ("all_reduce.csv", "send_recv.csv", "all_gather.csv")
_STATS = (("median", "median_ns"), ("mean", "mean_ns"), ("min", "min_ns"), ("max", "max_ns"),
          ("std", "std_ns"))
_AXES = (("bytes", "size"), ("ranks", "num_workers"), ("devices_per_node", "devices_per_node"),
         ("rank", "rank"))
ms_to_ns = scaled_to_ns(6)


def _table(path: Path) -> pb.OpTable:
    table = read_csv(path, ("collective", *(col for _, col in _AXES)))
    names = {c.strip() for c in table.column("collective", str)}
    if len(names) != 1:
        raise ProfileError(f"expected one collective per file, found {sorted(names)}",
                           path=path, field="collective")
    op = names.pop()
    if not op:
        raise ProfileError("empty collective name", path=path, line=table.lines[0] if
                           table.lines else 1, field="collective")
    out = pb.OpTable(op=op, kind=pb.OP_KIND_COLLECTIVE)
    for axis, col in _AXES:
        out.axes.add(name=axis, values=table.column(col, parse_count))
    for stat, field in _STATS:
        getattr(out, field).extend(table.column(f"time_stats.{op}.{stat}", ms_to_ns))
    out.attributes["source_file"] = path.name
    if "max_devices_per_node" in table.header:
        maxes = set(table.column("max_devices_per_node", parse_count))
        out.attributes["max_devices_per_node"] = ",".join(str(m) for m in sorted(maxes))
    return out


def import_vidur(directory: str | Path, *, source_commit: str = "") -> pb.Profile:
    """Read one hardware directory of Vidur collectives into a hardware-only Profile.

    Args:
        directory: e.g. ``.../vidur/network/h100_dgx`` (holds ``all_reduce.csv`` and/or
            ``send_recv.csv``).
        source_commit: revision of the source repository, recorded in the provenance.

    Raises:
        ProfileError: no collective file, a missing column or a malformed cell
            (file, line, field).
    """
    from llmsim.profile.io import SCHEMA_VERSION, validate_profile

    directory = Path(directory)
    files = [directory / f for f in COLLECTIVE_FILES if (directory / f).is_file()]
    if not files:
        try:
            subdirs = sorted(p.name for p in directory.iterdir() if p.is_dir()) if (
                directory.is_dir()) else []
        except OSError:
            subdirs = []
        hint = f" (pick one of: {', '.join(subdirs)})" if subdirs else ""
        raise ProfileError(f"no collective CSVs ({', '.join(COLLECTIVE_FILES)}){hint}",
                           path=directory)
    prov = pb.Provenance(
        hardware=directory.name, profiler_name="vidur",
        method=pb.MeasurementMethod(statistic="median,mean,min,max,std",
                                    notes="NCCL collectives measured by Vidur"),
        source=pb.Source(kind="imported", name=SOURCE_NAME, uri=SOURCE_URI,
                         commit=source_commit, path=str(directory), license="MIT"),
    )
    profile = pb.Profile(schema_version=SCHEMA_VERSION, provenance=prov)
    for path in files:
        profile.collectives.append(_table(path))
    validate_profile(profile, directory)
    return profile
