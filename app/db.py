"""SQLite connections for the app's stores (``app.runs``, ``app.accounts``).

Each store owns its own database file, tables and ordered migrations; this module only knows how
to open a short-lived connection safely on a shared file system, migrated on first use:

- rollback journal, not WAL (network file systems lack the shared memory WAL needs);
- a busy timeout, so writers on several hosts wait for each other instead of failing;
- migrations and ``transaction`` are ``indexer.migrations`` (the one copy, shared with the index):
  append-only, migration N brings the schema from version N-1 to N; one process migrates under
  the write lock while the others wait, then find nothing to do.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import sqlite_utils

from indexer.migrations import Migration, migrate, transaction

__all__ = ["BUSY_TIMEOUT", "Migration", "connect", "transaction"]

#: Seconds a writer waits for the database lock (shared file systems are slow).
BUSY_TIMEOUT = 15.0


@contextlib.contextmanager
def connect(
    path: Path | str,
    migrations: Sequence[Migration],
    *,
    what: str = "database",
    foreign_keys: bool = False,
) -> Iterator[sqlite_utils.Database]:
    """A short-lived connection to the database at ``path``, created and migrated on first use.

    ``what`` names the database in error messages ("the run database").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=DELETE")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys=ON")
        db = sqlite_utils.Database(conn)
        migrate(db, migrations, what)
        yield db
    finally:
        conn.close()
