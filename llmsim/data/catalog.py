"""The data catalog: public datasets llmsim uses, with URL, size, SHA-256, license, citation.

The catalog ships as ``llmsim/data/catalog.yaml``. A dataset is a list of files addressed by
their path relative to the data root (the same relative paths :func:`dataset_path`
resolves), so a pulled dataset lands exactly where loaders look for it. The ``traces``
section names individual trace files (``azure-conv-2023`` -> path + format) for the CLI
and the synthetic generators.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from llmsim.errors import ConfigError

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")


@dataclass(frozen=True, slots=True, kw_only=True)
class DataFile:
    """One downloadable file.

    Attributes:
        path: path relative to the data root, e.g. ``mooncake/conversation_trace.jsonl``.
        url: where to download it.
        size_bytes: expected size (``None`` when unpublished).
        sha256: expected SHA-256 hex digest (``None`` when unpublished).
    """

    path: str
    url: str
    size_bytes: int | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataset:
    """A named dataset of the catalog.

    Attributes:
        name: catalog name (``azure-llm-2023``), also the first path component of its files.
        description: one line.
        license: SPDX-style license name.
        citation: how to cite it.
        homepage: project URL.
        files: the files, in catalog order.
        notes: caveats (e.g. unverified URLs).
    """

    name: str
    description: str
    license: str
    citation: str
    homepage: str
    files: tuple[DataFile, ...]
    notes: str = ""

    @property
    def size_bytes(self) -> int | None:
        """Total size, ``None`` when any file's size is unpublished."""
        sizes = [f.size_bytes for f in self.files if f.size_bytes is not None]
        return None if len(sizes) < len(self.files) else sum(sizes)

    def with_mirror(self, base_url: str) -> Dataset:
        """The same dataset downloaded from a mirror laid out like the data root."""
        base = base_url.rstrip("/")
        return replace(self, files=tuple(replace(f, url=f"{base}/{f.path}") for f in self.files))


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedTrace:
    """A trace file known by name (``azure-conv-2023``)."""

    name: str
    dataset: str
    path: str
    format: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalog:
    """All datasets and named traces."""

    datasets: dict[str, Dataset]
    traces: dict[str, NamedTrace]

    def dataset(self, name: str) -> Dataset:
        """Look a dataset up by name.

        Raises:
            ConfigError: unknown name (lists the known ones).
        """
        try:
            return self.datasets[name]
        except KeyError:
            raise ConfigError(f"unknown dataset {name!r} (known: {', '.join(self.datasets)})",
                              field="dataset") from None

    def trace(self, name: str) -> NamedTrace:
        """Look a named trace up.

        Raises:
            ConfigError: unknown name (lists the known ones).
        """
        try:
            return self.traces[name]
        except KeyError:
            raise ConfigError(f"unknown trace {name!r} (known: {', '.join(self.traces)})", field="trace") from None


def load_catalog(path: str | Path = CATALOG_PATH) -> Catalog:
    """Read and validate a catalog YAML file.

    Raises:
        ConfigError: a malformed entry (file and field named).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path=path) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), dict):
        raise ConfigError("expected a mapping with 'datasets'", path=path, field="datasets")
    datasets: dict[str, Dataset] = {}
    for name, entry in raw["datasets"].items():
        where = f"datasets.{name}"
        try:
            files = tuple(
                DataFile(path=str(f["path"]), url=str(f["url"]),
                         size_bytes=None if f.get("size_bytes") is None else int(f["size_bytes"]),
                         sha256=None if f.get("sha256") is None else str(f["sha256"]).lower())
                for f in entry["files"]
            )
            datasets[name] = Dataset(
                name=name, description=str(entry.get("description", "")), license=str(entry["license"]),
                citation=str(entry["citation"]), homepage=str(entry.get("homepage", "")), files=files,
                notes=str(entry.get("notes", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"bad dataset entry: {exc!r}", path=path, field=where) from None
        for f in files:
            if Path(f.path).is_absolute() or ".." in Path(f.path).parts:
                raise ConfigError(f"file path must be relative and inside the data root: {f.path}",
                                  path=path, field=where)
    traces: dict[str, NamedTrace] = {}
    for name, entry in (raw.get("traces") or {}).items():
        try:
            traces[name] = NamedTrace(name=name, dataset=str(entry["dataset"]), path=str(entry["path"]),
                                      format=str(entry["format"]))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"bad trace entry: {exc!r}", path=path, field=f"traces.{name}") from None
    return Catalog(datasets=datasets, traces=traces)


def named_trace_path(name: str, catalog: Catalog | None = None) -> tuple[Path, str]:
    """Resolve a named trace to ``(local path, format)``.

    Raises:
        ConfigError: unknown name.
        DataNotFoundError: the dataset is not present locally (message says how to pull it).
    """
    from llmsim.data.paths import dataset_path

    entry = (catalog or load_catalog()).trace(name)
    return dataset_path(entry.path, dataset=entry.dataset), entry.format
