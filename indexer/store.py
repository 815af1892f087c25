"""The index's SQLite database: schema, migrations and every query that knows the table layout.

Tables (``index.db`` in the index folder):

``schema_version``
    One row: the number of migrations applied. :func:`connect` applies the missing ones, in
    order, in one transaction (``MIGRATIONS[i]`` brings version ``i`` to ``i + 1``; the code is
    ``indexer.migrations``, shared with the app's databases).
``files``
    Every FITS file the last builds looked at (key: absolute ``path``), with ``size`` [bytes],
    ``mtime_ns``, ``checksum`` (sha256 hex), ``status`` (``indexed`` or ``skipped``), ``reason``
    (why it was skipped), the metadata read from it (``meta``, JSON) and its footprint as
    ``ranges`` (a BLOB of little-endian uint32 ``[start, end)`` HEALPix NESTED cell ranges at the
    index depth ``depth``).
``exposures``
    One row per (mission, obsid, camera): the metadata of the file chosen for it (see
    ``indexer.build``), with its data ``kind`` (``indexer.instruments.KINDS``) and a stable
    integer ``id`` that is also the MOC id in the MOC set. Outside the index an exposure is named
    by :func:`exposure_id` (``MISSION:OBSID:CAMERA``), which survives a rebuild from scratch.
``settings``
    Key/value text pairs (index depth, build generation...).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from sqlite_utils import Database

from indexer import migrations
from indexer.migrations import schema_version as schema_version  # store.schema_version(db)

#: Metadata columns of an exposure (and of a file's ``meta``), in display order.
EXPOSURE_COLUMNS: dict[str, type] = {
    "mission": str,
    "obsid": str,
    "camera": str,
    "instrument": str,
    "kind": str,
    "object": str,
    "observer": str,
    "date_obs": str,
    "date_end": str,
    "exposure": float,
    "ra_pnt": float,
    "dec_pnt": float,
    "pa_pnt": float,
    "filter": str,
    "submode": str,
    "n_events": int,
    "source": str,
    "path": str,
    "size": int,
    "checksum": str,
    "moc_file": str,
}
EXPOSURE_KEY = ("mission", "obsid", "camera")


def _m1_initial(db: Database) -> None:
    db["files"].create(
        {
            "path": str,
            "size": int,
            "mtime_ns": int,
            "checksum": str,
            "status": str,
            "reason": str,
            "meta": str,
            "depth": int,
            "ranges": bytes,
        },
        pk="path",
    )
    # the columns as they were then (migrations are frozen: later ones add columns)
    columns = {k: v for k, v in EXPOSURE_COLUMNS.items() if k != "kind"}
    db["exposures"].create({"id": int, **columns}, pk="id")
    db["exposures"].create_index(list(EXPOSURE_KEY), unique=True)
    db["settings"].create({"key": str, "value": str}, pk="key")


def _m2_kind(db: Database) -> None:
    """Exposures carry their data kind (indexes built before instruments were plug-ins)."""
    db["exposures"].add_column("kind", str)
    db.execute(
        "update exposures set kind = case when source = 'expmap' then 'exposure-map' "
        "else 'events' end"
    )


#: Ordered migrations: ``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``.
MIGRATIONS: list[Callable[[Database], None]] = [_m1_initial, _m2_kind]


def exposure_id(row: dict[str, Any]) -> str:
    """The stable name of an exposure outside the index: ``MISSION:OBSID:CAMERA``."""
    return f"{row['mission']}:{row['obsid']}:{row['camera']}"


def default_kind(meta: dict[str, Any]) -> str:
    """The data kind of a metadata row written before rows carried one."""
    return meta.get("kind") or ("exposure-map" if meta.get("source") == "expmap" else "events")


def migrate(db: Database) -> int:
    """Apply the pending migrations in order (``indexer.migrations``); return the schema version."""
    return migrations.migrate(db, MIGRATIONS, what="index")


def connect(path: Path, *, readonly: bool = False) -> Database:
    """Open the index database at ``path`` (created and migrated unless ``readonly``)."""
    if readonly:
        import sqlite3

        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        return Database(conn)
    db = Database(path)
    migrate(db)
    return db


# --- settings ---------------------------------------------------------------------------------


def get_setting(db: Database, key: str, default: str | None = None) -> str | None:
    row = db.execute("select value from settings where key = ?", [key]).fetchone()
    return row[0] if row else default


def set_setting(db: Database, key: str, value: object) -> None:
    db["settings"].upsert({"key": key, "value": str(value)}, pk="key")


# --- files ------------------------------------------------------------------------------------


def ranges_to_blob(ranges: np.ndarray) -> bytes:
    """``(n, 2)`` cell ranges at the index depth -> BLOB (little-endian uint32)."""
    return np.ascontiguousarray(ranges, dtype="<u4").tobytes()


def blob_to_ranges(blob: bytes | None) -> np.ndarray:
    """Inverse of :func:`ranges_to_blob`: an ``(n, 2)`` uint32 array."""
    if not blob:
        return np.zeros((0, 2), dtype=np.uint32)
    return np.frombuffer(blob, dtype="<u4").reshape(-1, 2).astype(np.uint32)


def file_states(db: Database) -> dict[str, dict[str, Any]]:
    """``{path: {size, mtime_ns, checksum, status, reason}}`` for every known file."""
    rows = db.execute("select path, size, mtime_ns, checksum, status, reason from files")
    names = ("path", "size", "mtime_ns", "checksum", "status", "reason")
    return {row[0]: dict(zip(names, row, strict=True)) for row in rows}


def put_file(
    db: Database,
    path: str,
    *,
    size: int,
    mtime_ns: int,
    checksum: str,
    status: str,
    reason: str | None = None,
    meta: dict[str, Any] | None = None,
    depth: int | None = None,
    ranges: np.ndarray | None = None,
) -> None:
    """Insert or replace the record of one file."""
    db["files"].upsert(
        {
            "path": path,
            "size": size,
            "mtime_ns": mtime_ns,
            "checksum": checksum,
            "status": status,
            "reason": reason,
            "meta": json.dumps(meta) if meta is not None else None,
            "depth": depth,
            "ranges": ranges_to_blob(ranges) if ranges is not None else None,
        },
        pk="path",
    )


def touch_file(db: Database, path: str, *, mtime_ns: int) -> None:
    """Record a new modification time for a file whose content did not change."""
    db.execute("update files set mtime_ns = ? where path = ?", [mtime_ns, path])


def delete_files(db: Database, paths: Iterable[str]) -> None:
    for path in paths:
        db.execute("delete from files where path = ?", [path])


def indexed_files(db: Database) -> list[dict[str, Any]]:
    """Metadata of the indexed files: ``meta`` fields plus path, size, checksum (no ranges)."""
    rows = db.execute(
        "select path, size, checksum, meta from files where status = 'indexed' order by path"
    )
    out = []
    for path, size, checksum, meta in rows:
        row = {**json.loads(meta), "path": path, "size": size, "checksum": checksum}
        row["kind"] = default_kind(row)
        out.append(row)
    return out


def file_ranges(db: Database, paths: Iterable[str]) -> dict[str, np.ndarray]:
    """``{path: (n, 2) uint32 ranges}`` of indexed files."""
    out = {}
    for path in paths:
        row = db.execute("select ranges from files where path = ?", [path]).fetchone()
        out[path] = blob_to_ranges(row[0] if row else None)
    return out


# --- exposures --------------------------------------------------------------------------------


def exposures(db: Database) -> list[dict[str, Any]]:
    """All exposure rows (dicts with ``id`` and ``EXPOSURE_COLUMNS``), ordered by id."""
    return list(db["exposures"].rows_where(order_by="id"))


def replace_exposures(db: Database, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make the exposures table hold exactly ``rows`` (matched on mission/obsid/camera).

    Existing keys keep their ``id``; new keys get new ids; keys not in ``rows`` are deleted.
    Returns the rows as stored (with ``id``), in the order given. Runs in one transaction.
    """
    with db.conn:
        existing = {
            tuple(row[k] for k in EXPOSURE_KEY): row["id"]
            for row in db["exposures"].rows_where(select="id, mission, obsid, camera")
        }
        wanted = {tuple(row[k] for k in EXPOSURE_KEY) for row in rows}
        for key, ident in existing.items():
            if key not in wanted:
                db.execute("delete from exposures where id = ?", [ident])
        next_id = max(existing.values(), default=0) + 1
        stored = []
        for row in rows:
            key = tuple(row[k] for k in EXPOSURE_KEY)
            ident = existing.get(key)
            if ident is None:
                ident, next_id = next_id, next_id + 1
            record = {"id": ident, **{k: row.get(k) for k in EXPOSURE_COLUMNS}}
            db["exposures"].upsert(record, pk="id")
            stored.append(record)
    return stored


def insert_exposures(db: Database, rows: Iterable[dict[str, Any]]) -> None:
    """Bulk-insert exposure rows that carry their own ``id`` (used for synthetic catalogues)."""
    columns = ["id", *EXPOSURE_COLUMNS]
    with db.conn:
        db["exposures"].insert_all(
            ({k: row.get(k) for k in columns} for row in rows), pk="id", batch_size=5000
        )
