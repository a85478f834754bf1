"""Optional persistent answer cache (SQLite), so a rerun against the same server costs no RPC.

Rows are keyed by a *namespace* (server fingerprint, dtype, TP degree: anything that changes
answers) and the query key's ``repr``. Writes are batched in transactions; SQLite keeps each
transaction atomic, so a crash loses at most the unflushed rows, never corrupts the table.
:meth:`PersistentCache.load` skips (and logs) rows that are not a valid cost (a latency that
fails :func:`~llmsim.costmodel.base.step_cost_is_valid`, an energy that is not a finite
non-negative number), so a file edited by hand or written by an older client can only cost
a re-asked query, never a wrong number.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from pathlib import Path

from llmsim.costmodel.base import step_cost_is_valid
from llmsim.errors import ConfigError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    namespace TEXT NOT NULL,
    query TEXT NOT NULL,
    latency_ns REAL NOT NULL,
    energy_j REAL,
    PRIMARY KEY (namespace, query)
)
"""


class PersistentCache:
    """A SQLite table of answers.

    Args:
        path: database file (created with its parent directory when missing).
        namespace: the answers' namespace.
        flush_every: rows buffered before a commit.

    Raises:
        ConfigError: the file cannot be opened as a database.
    """

    def __init__(self, path: str | Path, namespace: str, *, flush_every: int = 512) -> None:
        self.path = Path(path)
        self.namespace = namespace
        self.flush_every = flush_every
        self._pending: list[tuple[str, str, float, float | None]] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: commits without fsync
            self._db.execute(_SCHEMA)
            self._db.commit()
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open bridge cache: {exc}", path=self.path) from exc

    def load(self) -> dict[str, tuple[float, float | None]]:
        """Every valid answer of this namespace: ``{query repr: (latency_ns, energy_j)}``.

        Raises:
            ConfigError: the file is not a readable cache database.
        """
        try:
            rows = self._db.execute(
                "SELECT query, latency_ns, energy_j FROM answers WHERE namespace = ?",
                (self.namespace,)).fetchall()
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot read bridge cache: {exc}", path=self.path) from exc
        answers = {q: (lat, e) for q, lat, e in rows if _valid(lat, e)}
        if len(answers) < len(rows):
            log.warning("%s: skipped %d cached answer(s) that are not valid costs",
                        self.path, len(rows) - len(answers))
        return answers

    def put(self, query: str, latency_ns: float, energy_j: float | None) -> None:
        """Remember one answer (committed in batches)."""
        self._pending.append((self.namespace, query, latency_ns, energy_j))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Commit buffered answers."""
        if not self._pending:
            return
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                                 self._pending)
        self._pending.clear()

    def close(self) -> None:
        """Flush and close."""
        try:
            self.flush()
        finally:
            self._db.close()


def _valid(latency_ns: float, energy_j: float | None) -> bool:
    """A stored row is a cost: valid latency, energy absent or finite and non-negative."""
    if not step_cost_is_valid(latency_ns):
        return False
    return energy_j is None or (isinstance(energy_j, (int, float))
                                and math.isfinite(energy_j) and energy_j >= 0)
