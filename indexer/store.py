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
    index depth ``depth``). A file with data to process also keeps, in ``meta`` under
    ``PIXEL_WCS``, the WCS of its pixel frame as FITS cards (:func:`pixel_wcs`): a run's regions
    are converted to the file's pixels at launch without opening the file.
``exposures``
    One row per (mission, obsid, camera): the metadata of the file chosen for it (see
    ``indexer.build``), with its data ``kind`` (``indexer.instruments.KINDS``) and a stable
    integer ``id`` that is also the MOC id in the MOC set. Outside the index an exposure is named
    by :func:`exposure_id` (``MISSION:OBSID:CAMERA``), which survives a rebuild from scratch.
``settings``
    Key/value text pairs (index depth, build generation...).

Synthetic catalogues (``demo.synth``) store their footprints like the files a build read, under
paths starting with :data:`SYNTHETIC_PREFIX` that name no file: builds neither scan nor remove
them (:func:`file_states` leaves them out), and every later step (choosing the exposures,
building the MOC set) treats them like any other file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
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
#: Path prefix of the footprints of synthetic catalogues (no file behind them).
SYNTHETIC_PREFIX = "synthetic:"
#: Key of a file's ``meta`` holding its pixel-frame WCS cards (not an exposure column).
PIXEL_WCS = "pixel_wcs"


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


def _m3_pixel_wcs(db: Database) -> None:
    """Files with data to process indexed before their pixel WCS was kept (``PIXEL_WCS``): their
    recorded modification time and checksum are cleared: the next build reads them again."""
    db.execute(
        "update files set mtime_ns = -1, checksum = '' where status = 'indexed' "
        "and path like '/%' and json_extract(meta, '$.pixel_wcs') is null "
        "and coalesce(json_extract(meta, '$.kind'), case when json_extract(meta, '$.source') "
        "= 'expmap' then 'exposure-map' else 'events' end) in ('events', 'longslit-frame')"
    )


#: Ordered migrations: ``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``.
MIGRATIONS: list[Callable[[Database], None]] = [_m1_initial, _m2_kind, _m3_pixel_wcs]


def exposure_id(row: dict[str, Any]) -> str:
    """The stable name of an exposure outside the index: ``MISSION:OBSID:CAMERA``."""
    return f"{row['mission']}:{row['obsid']}:{row['camera']}"


#: :func:`exposure_id` as an SQL expression on the ``exposures`` table.
EXPOSURE_ID_SQL = "mission || ':' || obsid || ':' || camera"


def parse_exposure_id(text: str) -> tuple[str, str, str]:
    """``(mission, obsid, camera)`` of an exposure id ``MISSION:OBSID:CAMERA`` (the mission ends
    at the first colon, the camera starts after the last); ValueError if it is not one."""
    mission, _, rest = text.partition(":")
    obsid, _, camera = rest.rpartition(":")
    if not (mission and obsid and camera) or not text.isprintable():
        raise ValueError(f"{text[:80]!r} is not an exposure id MISSION:OBSID:CAMERA")
    return mission, obsid, camera


def parse_observation_id(text: str) -> tuple[str, str]:
    """``(mission, obsid)`` of an observation named ``MISSION:OBSID`` (the mission ends at the
    first colon); ValueError if it is not one."""
    mission, _, obsid = text.partition(":")
    if not (mission and obsid) or not text.isprintable():
        raise ValueError(f"{text[:80]!r} is not an observation MISSION:OBSID")
    return mission, obsid


# Paged reads, by keyset on the unique index (mission, obsid, camera): a row-value comparison
# with the cursor, ORDER BY the index's columns and LIMIT, never OFFSET, so a page deep in a
# million rows costs what the first one does. EXPLAIN QUERY PLAN (SQLite 3.40, the 1M bench
# index) shows "SEARCH exposures USING INDEX idx_exposures_mission_obsid_camera
# ((mission,obsid,camera)>(?,?,?))" (with a mission: "(mission=? AND (obsid,camera)>(?,?))"),
# for the observation keys "USING COVERING INDEX", and no "USE TEMP B-TREE": no full scan and
# no sort (tests/test_paging.py checks the plans on a small index).
_KEY_ORDER = "order by mission, obsid, camera"


def exposures_page_sql(
    after: tuple[str, str, str] | None, limit: int, mission: str | None = None
) -> tuple[str, list[Any]] | None:
    """The query of :func:`exposures_page` and its parameters (None: the page is empty)."""
    where, params = [], []
    if mission is not None:
        where.append("mission = ?")
        params.append(mission)
        if after is not None and after[0] > mission:
            return None  # the cursor is past every exposure of the mission
        if after is not None and after[0] == mission:
            # the mission's part of the index is searched from the cursor on: comparing the
            # whole triple would read the mission's rows from its first one
            where.append("(obsid, camera) > (?, ?)")
            params.extend(after[1:])
    elif after is not None:
        where.append("(mission, obsid, camera) > (?, ?, ?)")
        params.extend(after)
    clause = f"where {' and '.join(where)} " if where else ""
    return f"select * from exposures {clause}{_KEY_ORDER} limit ?", [*params, limit]


def exposures_page(
    conn: sqlite3.Connection,
    after: tuple[str, str, str] | None,
    limit: int,
    mission: str | None = None,
) -> list[Any]:
    """At most ``limit`` exposure rows (as ``conn``'s row factory makes them) in (mission,
    obsid, camera) order, after the key ``after`` (from the first without it), of ``mission``
    only if given."""
    query = exposures_page_sql(after, limit, mission)
    return [] if query is None else conn.execute(*query).fetchall()


def count_exposures_of(conn: sqlite3.Connection, mission: str | None = None) -> int:
    """The number of exposures (of ``mission`` only if given): a count over the unique index
    (covering; ~10 ms at a million rows)."""
    if mission is None:
        return int(conn.execute("select count(*) from exposures").fetchone()[0])
    return int(
        conn.execute("select count(*) from exposures where mission = ?", [mission]).fetchone()[0]
    )


def observation_keys_page_sql(after: tuple[str, str] | None, limit: int) -> tuple[str, list[Any]]:
    """The query of the (mission, obsid) keys of an observations page and its parameters."""
    clause, params = ("where (mission, obsid) > (?, ?) ", list(after)) if after else ("", [])
    return (
        f"select mission, obsid from exposures {clause}group by mission, obsid "
        "order by mission, obsid limit ?",
        [*params, limit],
    )


def observations_page(
    conn: sqlite3.Connection, after: tuple[str, str] | None, limit: int
) -> tuple[list[Any], bool]:
    """The exposure rows of the next ``limit`` observations (distinct mission, obsid) after the
    key ``after`` (from the first without it), in (mission, obsid, camera) order, and whether
    more observations follow. Two reads on the index: the page's keys (one more than asked, to
    know), then the rows between the cursor and the last key."""
    keys = conn.execute(*observation_keys_page_sql(after, limit + 1)).fetchall()
    more = len(keys) > limit
    keys = keys[:limit]
    if not keys:
        return [], False
    where, params = ["(mission, obsid) <= (?, ?)"], list(keys[-1])
    if after is not None:
        where.append("(mission, obsid) > (?, ?)")
        params.extend(after)
    rows = conn.execute(
        f"select * from exposures where {' and '.join(where)} {_KEY_ORDER}", params
    ).fetchall()
    return rows, more


def exposure_ids_of(conn: sqlite3.Connection, obsid: str, camera: str) -> list[str]:
    """The exposure ids with this obsid and camera, by mission."""
    with _plain_tuples(conn):
        return [
            row[0]
            for row in conn.execute(
                f"select {EXPOSURE_ID_SQL} from exposures where obsid = ? and camera = ?"
                " order by mission",
                [obsid, camera],
            )
        ]


def exposure_checksums(conn: sqlite3.Connection) -> dict[str, str]:
    """``{exposure id: checksum of its file}`` of every exposure ('' when unknown), without a
    row dict each (a million exposures: ~1 s and ~150 MB instead of tens of seconds and GBs)."""
    with _plain_tuples(conn):
        return dict(
            conn.execute(f"select {EXPOSURE_ID_SQL}, coalesce(checksum, '') from exposures")
        )


@contextlib.contextmanager
def _plain_tuples(conn: sqlite3.Connection) -> Iterator[None]:
    """Rows as plain tuples on ``conn`` for a while: a ``sqlite3.Row`` per row costs about twice
    as much when there are thousands."""
    factory = conn.row_factory
    conn.row_factory = None
    try:
        yield
    finally:
        conn.row_factory = factory


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
    """``{path: {size, mtime_ns, checksum, status, reason}}`` for every known file (synthetic
    footprints, which name no file, left out)."""
    rows = db.execute(
        "select path, size, mtime_ns, checksum, status, reason from files "
        "where path < ? or path >= ?",
        [SYNTHETIC_PREFIX, SYNTHETIC_PREFIX[:-1] + chr(ord(SYNTHETIC_PREFIX[-1]) + 1)],
    )
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


def pixel_wcs(db: Database, paths: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{path: WCS cards}`` of the indexed files among ``paths`` that keep their pixel WCS
    (files indexed before it was kept have none: they are left out)."""
    paths = list(dict.fromkeys(paths))
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(paths), 500):  # SQLite's bound-parameter limit
        chunk = paths[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(
            f"select path, json_extract(meta, '$.{PIXEL_WCS}') from files "
            f"where status = 'indexed' and path in ({marks})",
            chunk,
        )
        for path, cards in rows:
            if cards:
                out[path] = json.loads(cards)
    return out


def indexed_files_at(db: Database, paths: Iterable[str]) -> list[dict[str, Any]]:
    """``{path, size, checksum, meta}`` (``meta`` parsed) of those ``paths`` that are indexed."""
    out = []
    for path in paths:
        row = db.execute(
            "select size, checksum, meta from files where path = ? and status = 'indexed'",
            [path],
        ).fetchone()
        if row:
            out.append(
                {"path": path, "size": row[0], "checksum": row[1], "meta": json.loads(row[2])}
            )
    return out


def insert_files(db: Database, rows: Iterable[dict[str, Any]]) -> None:
    """Bulk-insert indexed file records ``{path, size, mtime_ns, checksum, meta, depth, ranges}``
    (new paths only; used for synthetic catalogues)."""
    with db.conn:
        db.conn.executemany(
            "insert into files (path, size, mtime_ns, checksum, status, reason, meta, depth, "
            "ranges) values (?, ?, ?, ?, 'indexed', null, ?, ?, ?)",
            (
                (
                    row["path"],
                    row["size"],
                    row["mtime_ns"],
                    row["checksum"],
                    json.dumps(row["meta"]),
                    row["depth"],
                    ranges_to_blob(row["ranges"]),
                )
                for row in rows
            ),
        )


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


def count_exposures(db: Database) -> int:
    return int(db.execute("select count(*) from exposures").fetchone()[0])


def existing_keys(db: Database, keys: Iterable[tuple]) -> set[tuple]:
    """Those of the (mission, obsid, camera) ``keys`` that have an exposure row."""
    query = "select 1 from exposures where mission = ? and obsid = ? and camera = ?"
    return {key for key in keys if db.execute(query, list(key)).fetchone()}


def exposure_record(meta: dict[str, Any], path: str, size: int, checksum: str) -> dict[str, Any]:
    """An exposure row (without ``id``) from a file's metadata."""
    row = {**meta, "path": path, "size": size, "checksum": checksum}
    row["kind"] = default_kind(row)
    return {k: row.get(k) for k in EXPOSURE_COLUMNS}


def add_exposures(db: Database, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert rows for new (mission, obsid, camera) keys with the next free ids, in the order
    given; returns them as stored (with ``id``)."""
    with db.conn:
        next_id = int(db.execute("select coalesce(max(id), 0) from exposures").fetchone()[0]) + 1
        stored = []
        for offset, row in enumerate(rows):
            stored.append({"id": next_id + offset, **{k: row.get(k) for k in EXPOSURE_COLUMNS}})
    insert_exposures(db, stored)
    return stored


_CHOSEN = """
create temp table chosen as
select path, checksum, mission, obsid, camera from (
    select path, checksum, json_extract(meta, '$.mission') as mission,
        json_extract(meta, '$.obsid') as obsid, json_extract(meta, '$.camera') as camera,
        row_number() over (
            partition by json_extract(meta, '$.mission'), json_extract(meta, '$.obsid'),
                json_extract(meta, '$.camera')
            order by coalesce(json_extract(meta, '$.source'), '') != 'events',
                -coalesce(json_extract(meta, '$.exposure'), 0.0), path
        ) as rank
    from files where status = 'indexed'
) where rank = 1
"""
_SAME_KEY = "c.mission = e.mission and c.obsid = e.obsid and c.camera = e.camera"


def sync_exposures(
    db: Database, moc_file: Callable[[dict[str, Any]], str | None]
) -> dict[str, list[dict[str, Any]]]:
    """Make the exposures table follow the indexed files, in SQL (no row per exposure in Python
    unless it changes): per (mission, obsid, camera) the file ranked first by ``build._rank``
    (event list, then longest exposure, then first path) describes the exposure.

    Existing keys keep their ``id``; new keys get new ids (in key order); keys without a file
    are deleted. ``moc_file(row)`` names the row's MOC FITS file. Returns the rows ``new``,
    ``changed`` (another file or content) as now stored and ``removed`` as they were.
    """
    with db.conn:
        db.execute("drop table if exists temp.chosen")
        db.execute(_CHOSEN)
        db.execute("create index temp.chosen_key on chosen (mission, obsid, camera)")
        removed = [
            dict(zip(("id", *EXPOSURE_COLUMNS), row, strict=True))
            for row in db.execute(
                f"select e.id, {', '.join('e.' + c for c in EXPOSURE_COLUMNS)} from exposures e "
                f"where not exists (select 1 from chosen c where {_SAME_KEY})"
            )
        ]
        changed_ids = db.execute(
            f"select e.id, c.path from chosen c join exposures e on {_SAME_KEY} "
            "where e.path is not c.path or e.checksum is not c.checksum"
        ).fetchall()
        new_paths = [
            row[0]
            for row in db.execute(
                f"select c.path from chosen c where not exists (select 1 from exposures e "
                f"where {_SAME_KEY}) order by c.mission, c.obsid, c.camera"
            )
        ]
        db.execute("drop table temp.chosen")
        for row in removed:
            db.execute("delete from exposures where id = ?", [row["id"]])
        changed = []
        for ident, path in changed_ids:
            record = {"id": ident, **_record_of_file(db, path)}
            record["moc_file"] = moc_file(record)
            db["exposures"].upsert(record, pk="id")
            changed.append(record)
    new_rows = []
    for path in new_paths:
        record = _record_of_file(db, path)
        record["moc_file"] = moc_file(record)
        new_rows.append(record)
    new = add_exposures(db, new_rows)
    return {"new": new, "changed": changed, "removed": removed}


def _record_of_file(db: Database, path: str) -> dict[str, Any]:
    size, checksum, meta = db.execute(
        "select size, checksum, meta from files where path = ?", [path]
    ).fetchone()
    return exposure_record(json.loads(meta), path, size, checksum)


def exposure_records(
    conn: sqlite3.Connection, ids: np.ndarray
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """``(column names, rows as tuples)`` of the exposures with these ids (any order; ids no
    longer in the table are left out)."""
    if len(ids) == 0:
        return ["id", *EXPOSURE_COLUMNS], []
    with _plain_tuples(conn):
        cursor = conn.execute(
            "select e.* from json_each(?) j join exposures e on e.id = j.value",
            [json.dumps(np.asarray(ids).tolist())],
        )
        return [column[0] for column in cursor.description], cursor.fetchall()


def exposure_pointings(db: Database) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, ra, dec)`` of every exposure, by id: int64 and float64 arrays, pointing [deg]
    (NaN where the file had none)."""
    cursor = db.conn.execute("select id, ra_pnt, dec_pnt from exposures order by id")
    parts = [  # numbers by chunks: a million rows as Python tuples would weigh ~150 MB
        np.array(rows, dtype=float).reshape(-1, 3)
        for rows in iter(lambda: cursor.fetchmany(100_000), [])
    ]
    table = np.concatenate(parts) if parts else np.zeros((0, 3))
    return table[:, 0].astype(np.int64), table[:, 1], table[:, 2]


def iter_exposure_ranges(
    db: Database, ids: np.ndarray, chunk: int = 5_000
) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """The footprints of the exposures ``ids``, in that order: chunks ``(ids, [(n, 2) uint32
    ranges])`` read from each one's file record (empty ranges for an exposure without one; ids
    not in the table are left out)."""
    for start in range(0, len(ids), chunk):
        rows = db.conn.execute(
            "select e.id, f.ranges from json_each(?) j join exposures e on e.id = j.value"
            " left join files f on f.path = e.path order by j.key",
            [json.dumps(np.asarray(ids[start : start + chunk]).tolist())],
        ).fetchall()
        if rows:
            found = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
            yield found, [blob_to_ranges(row[1]) for row in rows]


def insert_exposures(db: Database, rows: Iterable[dict[str, Any]]) -> None:
    """Bulk-insert exposure rows that carry their own ``id`` (used for synthetic catalogues)."""
    columns = ["id", *EXPOSURE_COLUMNS]
    with db.conn:
        db.conn.executemany(
            f"insert into exposures ({', '.join(columns)}) values ({', '.join('?' * len(columns))})",
            ([row.get(k) for k in columns] for row in rows),
        )
