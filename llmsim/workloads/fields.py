"""Typed, located reads of a workload spec's YAML mapping.

Every value of a spec is read through :class:`Fields`, so a wrong value is a
:class:`~llmsim.errors.ConfigError` naming the spec file, the line of the key and its dotted
field (``data.shared_prefix.num_groups``), and an unknown key is refused with the known ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from llmsim.errors import ConfigError

#: Most requests one spec may generate (benchmark runs send 10^2..10^5; a bigger workload is
#: several specs). Bounds generation time (~3 us per request).
MAX_SPEC_REQUESTS = 1_000_000
#: Longest prompt or output a spec may ask for, tokens.
MAX_SPEC_TOKENS = 10_000_000
#: Most prompt tokens (summed over requests) one spec may generate: every prompt is held as
#: token ids, ~36 bytes per distinct token in memory, so this caps a spec at ~600 MB.
MAX_SPEC_TOTAL_TOKENS = 16_000_000


@dataclass(slots=True, kw_only=True)
class Fields:
    """One mapping of a spec, with where it came from.

    Attributes:
        data: the mapping.
        path: the spec file (None for a spec built in memory).
        lines: dotted key -> 1-based line (from :class:`llmsim.yamlfile.YamlDocument`).
        prefix: dotted path of this mapping (``""`` at the top).
    """

    data: dict[str, Any]
    path: str | None = None
    lines: dict[str, int] = field(default_factory=dict)
    prefix: str = ""
    _used: set[str] = field(default_factory=set)

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError at ``key`` (its line when known, else this mapping's)."""
        name = self._name(key)
        line = self.lines.get(name, self.lines.get(self.prefix.rstrip(".")))
        return ConfigError(message[:300], path=self.path, line=line, field=name)

    def has(self, key: str) -> bool:
        """True when ``key`` is present and not null."""
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        """The value as written (marks the key used)."""
        self._used.add(key)
        value = self.data.get(key)
        return default if value is None else value

    def int_(self, key: str, default: int | None = None, *, minimum: int = 0,
             maximum: int = MAX_SPEC_TOKENS) -> int:
        """An integer in ``[minimum, maximum]``; ``default`` when absent (required if None).

        Raises:
            ConfigError: missing, not an integer, or out of range.
        """
        value = self.raw(key, default)
        if value is None:
            raise self.error(key, "missing (an integer is required)")
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is not int or not minimum <= value <= maximum:
            raise self.error(key, f"must be an integer in [{minimum}, {maximum}], got {value!r}")
        return value

    def float_(self, key: str, default: float | None = None, *, minimum: float = 0.0,
               maximum: float = math.inf, allow_inf: bool = False, open_min: bool = False) -> float:
        """A number in ``[minimum, maximum]`` (``(minimum, ...`` with ``open_min``); ``inf``
        (also the strings ``inf`` / ``.inf``) only with ``allow_inf``.

        Raises:
            ConfigError: missing, not a number, or out of range.
        """
        value = self.raw(key, default)
        if value is None:
            raise self.error(key, "missing (a number is required)")
        if allow_inf and isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "infinity"):
            return math.inf
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            v = float(value)
            ok = (v > minimum if open_min else v >= minimum) and v <= maximum
            ok = ok and (math.isfinite(v) or (allow_inf and v == math.inf))
        if not ok:
            lo = "(" if open_min else "["
            raise self.error(key, f"must be a number in {lo}{minimum}, {maximum}]"
                             f"{' or inf' if allow_inf else ''}, got {value!r}")
        return float(value)

    def bool_(self, key: str, default: bool) -> bool:
        """``true`` or ``false``.

        Raises:
            ConfigError: another value.
        """
        value = self.raw(key, default)
        if type(value) is not bool:
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def choice(self, key: str, options: Iterable[str], default: str | None = None) -> str:
        """One of ``options`` (case-insensitive, ``-`` read as ``_``).

        Raises:
            ConfigError: missing or not one of them (the message lists them).
        """
        opts = tuple(options)
        value = self.raw(key, default)
        name = value.strip().lower().replace("-", "_") if isinstance(value, str) else None
        if name not in opts:
            raise self.error(key, f"must be one of {', '.join(opts)}, got {value!r}")
        return name

    def sub(self, key: str, *, required: bool = False) -> Fields | None:
        """The nested mapping at ``key`` (None when absent and not required).

        Raises:
            ConfigError: not a mapping, or missing when required.
        """
        value = self.raw(key)
        if value is None:
            if required:
                raise self.error(key, "missing (a mapping is required)")
            return None
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping, got {type(value).__name__}")
        return Fields(data=value, path=self.path, lines=self.lines, prefix=f"{self._name(key)}.")

    def need(self, key: str) -> Fields:
        """The nested mapping at ``key``, which must be present.

        Raises:
            ConfigError: missing or not a mapping.
        """
        value = self.raw(key)
        if not isinstance(value, dict):
            raise self.error(key, "missing (a mapping is required)" if value is None
                             else f"must be a mapping, got {type(value).__name__}")
        return Fields(data=value, path=self.path, lines=self.lines, prefix=f"{self._name(key)}.")

    def items(self, key: str) -> list[Fields]:
        """The list of mappings at ``key`` (at least one).

        Raises:
            ConfigError: missing, empty, or an item that is not a mapping.
        """
        value = self.raw(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, "must be a non-empty list of mappings")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error(f"{key}.{i}", "must be a mapping")
            out.append(Fields(data=item, path=self.path, lines=self.lines, prefix=f"{self._name(key)}.{i}."))
        return out

    def check_unknown(self, ignore: Iterable[str] = ()) -> None:
        """Refuse keys that were never read.

        Raises:
            ConfigError: at the first unknown key.
        """
        known = self._used | set(ignore)
        for key in self.data:
            if key not in known:
                raise self.error(str(key), f"unknown key (known here: {', '.join(sorted(self._used))})")
