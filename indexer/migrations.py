"""Schema versions and ordered migrations of a SQLite database: generic plumbing, no tables.

The one copy of this code, used by the index (``indexer.store``) and by the app's stores (``app.db``
for ``app.runs`` and ``app.accounts``). It lives in ``indexer/`` because the index must not import
the web app, while the app already imports the indexer; it knows nothing of the index either.

Each database has a table ``schema_version`` with one row: the number of migrations applied.
A store keeps its migrations in an append-only sequence: ``migrations[i]`` brings the schema from
version ``i`` to ``i + 1``. ``migrate`` applies the pending ones and the new version in one
transaction that takes the write lock first (``BEGIN IMMEDIATE``): when several processes open a
new database at once, one migrates and the others wait, then find nothing to do. A database
newer than the code is refused. Works on connections in autocommit mode (``isolation_level=None``)
and in Python's default mode alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]


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
    """The number of migrations applied to ``db`` (0 for a new database)."""
    if not db["schema_version"].exists():
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite_utils.Database, migrations: Sequence[Migration], what: str) -> int:
    """Apply the pending ``migrations``; returns the schema version (``len(migrations)``).

    ``what`` names the database in the error for a database newer than the code ("the index").
    """
    if schema_version(db) == len(migrations):  # the common case: no lock taken
        return len(migrations)
    with transaction(db):
        version = schema_version(db)
        if version > len(migrations):
            raise RuntimeError(
                f"the {what} has schema version {version}, newer than this Regio knows "
                f"({len(migrations)}): upgrade Regio"
            )
        if not db["schema_version"].exists():
            db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for migration in migrations[version:]:
            migration(db)
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", [len(migrations)])
    return len(migrations)
