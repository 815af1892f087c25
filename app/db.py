"""SQLite plumbing shared by the app's stores (``app.runs``, ``app.accounts``).

Each store owns its own database file, tables and ordered migrations; this module only knows how
to open a short-lived connection safely on a shared file system and how to apply migrations:

- rollback journal, not WAL (network file systems lack the shared memory WAL needs);
- a busy timeout, so writers on several hosts wait for each other instead of failing;
- migrations are append-only: migration N brings the schema from version N-1 to N; one process
  migrates under the write lock while the others wait, then find nothing to do.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]

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


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """Several statements as one: all or nothing, with the write lock taken up front."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def schema_version(db: sqlite_utils.Database) -> int:
    if not db["schema_version"].exists():
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return row[0] if row else 0


def migrate(
    db: sqlite_utils.Database, migrations: Sequence[Migration], what: str = "database"
) -> None:
    """Apply the pending migrations; one process migrates, the others wait on the write lock."""
    if schema_version(db) == len(migrations):  # the common case: no lock taken
        return
    with transaction(db):
        version = schema_version(db)
        if version > len(migrations):
            raise RuntimeError(
                f"the {what} has schema version {version}, newer than this Regio knows "
                f"({len(migrations)}): upgrade Regio"
            )
        if not db["schema_version"].exists():
            db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            db.execute("INSERT INTO schema_version VALUES (0)")
        for migration in migrations[version:]:
            migration(db)
        db.execute("UPDATE schema_version SET version = ?", [len(migrations)])
