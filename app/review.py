"""Review of runs: the runs dashboard's search, and the marks and comments on products.

- **Search** (``search_runs``): the runs of many sessions (those a user may see), newest first,
  filtered by session, script, phase, trigger (``manual``, ``standing``, ``schedule``, or one
  request or schedule: ``standing:<id>``) and creation date, a page at a time.
- **Marks and comments**: each product of an ended run can be marked ``valid`` or ``rejected``
  (2SPOT ARP's "Valid" box) and carry comments (Goodman Live's), each saying who and when. They
  are kept in SQLite at ``<REGIO_SESSIONS>/review.db`` (``db_path``), the one store of this
  module, with its own ``MIGRATIONS``. ``review`` gives them with the products; ``export`` is
  the ``review.json`` a run's bundle carries: after every change the bundle is made again
  (``rebundle``), so a downloaded bundle always holds the current marks and comments.

Who may do what is the views' business (``app.views.automation``): reading needs read access to
the run's session, marking and commenting write access.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import string
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlite_utils

from app import db as sqlitedb
from app import runs
from app.plumbing import now, parse_time

DB_NAME = "review.db"
MARKS = ("valid", "rejected")
REVIEW_FILE = "review.json"  # its name in a run's bundle
MAX_COMMENT_CHARS = 4000
MAX_COMMENTS_PER_RUN = 2000
MAX_PAGE = 200
REBUNDLE_TRIES = 5

_ID_ALPHABET = string.ascii_lowercase + string.digits


class ReviewError(ValueError):
    """Input refused (an unknown mark, an empty comment, a bad filter); ``str(exc)`` says why."""


class NotFound(LookupError):
    """No such product or comment."""


def db_path(sessions_dir: Path | str) -> Path:
    """Where the review database lives: ``<REGIO_SESSIONS>/review.db``."""
    return Path(sessions_dir) / DB_NAME


# ---------------------------------------------------------------------------------- database


def _m1_create_tables(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE marks (
            run_id TEXT NOT NULL,
            product TEXT NOT NULL,
            mark TEXT NOT NULL,
            by_user TEXT NOT NULL DEFAULT '',
            by_name TEXT NOT NULL DEFAULT '',
            at TEXT NOT NULL,
            PRIMARY KEY (run_id, product)
        );
        CREATE TABLE comments (
            id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            product TEXT,
            author TEXT NOT NULL DEFAULT '',
            author_name TEXT NOT NULL DEFAULT '',
            at TEXT NOT NULL,
            text TEXT NOT NULL
        );
        CREATE INDEX comments_run ON comments (run_id, at);
        CREATE TABLE versions (
            run_id TEXT PRIMARY KEY,
            version INTEGER NOT NULL
        );
        """
    )


# Append only: migration N brings the schema from version N-1 to N.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_m1_create_tables,)


def connect(path: Path | str) -> contextlib.AbstractContextManager[sqlite_utils.Database]:
    """A short-lived connection to the review database, created and migrated on first use."""
    return sqlitedb.connect(path, MIGRATIONS, what="review database")


def _bump(conn: sqlite_utils.Database, run_id: str) -> None:
    conn.execute(
        "INSERT INTO versions (run_id, version) VALUES (?, 1) "
        "ON CONFLICT(run_id) DO UPDATE SET version = version + 1",
        [run_id],
    )


def version(db: Path | str, run_id: str) -> int:
    """How many changes the run's marks and comments have seen (0: none)."""
    if not Path(db).is_file():
        return 0
    with connect(db) as conn:
        row = conn.execute("SELECT version FROM versions WHERE run_id = ?", [run_id]).fetchone()
    return int(row[0]) if row else 0


# -------------------------------------------------------------------------- marks, comments


def _product_names(run: runs.Run) -> set[str]:
    return {p["file"] for p in runs.list_products(run.run_dir)}


def _check_product(run: runs.Run, product: Any) -> str:
    if not isinstance(product, str) or not product or len(product) > 1000:
        raise ReviewError("'product' must be the file name of one of the run's products")
    if product not in _product_names(run):
        raise NotFound(f"run {run.id} has no product {product!s:.100}")
    return product


def set_mark(
    db: Path | str, run: runs.Run, product: Any, mark: Any, by_user: str, by_name: str
) -> dict[str, Any] | None:
    """Mark a product of an ended run ``valid`` or ``rejected`` (None: clear the mark); returns
    the mark as stored (None when cleared)."""
    product = _check_product(run, product)
    if mark is not None and mark not in MARKS:
        raise ReviewError("'mark' must be 'valid', 'rejected' or null (no mark)")
    stamp = now()
    with connect(db) as conn, sqlitedb.transaction(conn):
        if mark is None:
            conn.execute("DELETE FROM marks WHERE run_id = ? AND product = ?", [run.id, product])
        else:
            conn.execute(
                "INSERT OR REPLACE INTO marks (run_id, product, mark, by_user, by_name, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [run.id, product, mark, by_user or "", by_name or "", stamp],
            )
        _bump(conn, run.id)
    if mark is None:
        return None
    return {"mark": mark, "by": by_user or "", "by_name": by_name or "", "at": stamp}


def add_comment(
    db: Path | str, run: runs.Run, product: Any, text: Any, author: str, author_name: str
) -> dict[str, Any]:
    """Add a comment on a product of a run (``product`` None: on the run as a whole)."""
    if product is not None:
        product = _check_product(run, product)
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_COMMENT_CHARS:
        raise ReviewError(f"'text' must be a comment of 1 to {MAX_COMMENT_CHARS} characters")
    if "\x00" in text:
        raise ReviewError("'text' must not contain NUL characters")
    comment = {
        "id": "".join(secrets.choice(_ID_ALPHABET) for _ in range(12)),
        "run_id": run.id,
        "product": product,
        "author": author or "",
        "author_name": author_name or "",
        "at": now(),
        "text": text.strip(),
    }
    with connect(db) as conn, sqlitedb.transaction(conn):
        count = conn.execute("SELECT count(*) FROM comments WHERE run_id = ?", [run.id]).fetchone()[
            0
        ]
        if count >= MAX_COMMENTS_PER_RUN:
            raise ReviewError(f"a run has at most {MAX_COMMENTS_PER_RUN} comments")
        conn["comments"].insert(comment)  # type: ignore[union-attr]
        _bump(conn, run.id)
    return _comment_json(comment)


def get_comment(db: Path | str, run_id: str, comment_id: str) -> dict[str, Any]:
    if not Path(db).is_file():
        raise NotFound(comment_id)
    with connect(db) as conn:
        row = conn.execute(
            "SELECT * FROM comments WHERE id = ? AND run_id = ?", [comment_id, run_id]
        ).fetchone()
    if row is None:
        raise NotFound(f"no comment {comment_id!s:.40} on run {run_id}")
    return _comment_json(row)


def delete_comment(db: Path | str, run_id: str, comment_id: str) -> None:
    get_comment(db, run_id, comment_id)
    with connect(db) as conn, sqlitedb.transaction(conn):
        conn.execute("DELETE FROM comments WHERE id = ? AND run_id = ?", [comment_id, run_id])
        _bump(conn, run_id)


def _comment_json(row: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("id", "product", "author", "author_name", "at", "text")
    return {key: row[key] for key in keys}


def _stored(db: Path | str, run_id: str) -> tuple[dict[str, dict[str, Any]], list[dict]]:
    if not Path(db).is_file():
        return {}, []
    with connect(db) as conn:
        marks = conn.execute("SELECT * FROM marks WHERE run_id = ?", [run_id]).fetchall()
        comments = conn.execute(
            "SELECT * FROM comments WHERE run_id = ? ORDER BY at, id", [run_id]
        ).fetchall()
    by_product = {
        m["product"]: {"mark": m["mark"], "by": m["by_user"], "by_name": m["by_name"],
                       "at": m["at"]}
        for m in marks
    }  # fmt: skip
    return by_product, [_comment_json(c) for c in comments]


def review(db: Path | str, run: runs.Run) -> dict[str, Any]:
    """The run's products, each with its ``mark`` (or None) and ``comments``, and the comments
    on the run as a whole. Marks and comments of products the run no longer has are kept under
    ``orphans`` (a product can vanish only if someone removed its file)."""
    marks, comments = _stored(db, run.id)
    products = runs.list_products(run.run_dir)
    names = {p["file"] for p in products}
    for product in products:
        product["mark"] = marks.get(product["file"])
        product["comments"] = [c for c in comments if c["product"] == product["file"]]
    orphans = sorted(
        ({m for m in marks if m not in names} | {c["product"] for c in comments}) - names - {None}
    )
    return {
        "run_id": run.id,
        "products": products,
        "comments": [c for c in comments if c["product"] is None],
        "orphans": [
            {
                "product": name,
                "mark": marks.get(name),
                "comments": [c for c in comments if c["product"] == name],
            }
            for name in orphans
        ],  # fmt: skip
        "version": version(db, run.id),
    }


def summaries(db: Path | str, run_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """``{run_id: {"valid", "rejected", "comments"}}`` counts for the runs asked."""
    ids = list(run_ids)
    out = {run_id: {"valid": 0, "rejected": 0, "comments": 0} for run_id in ids}
    if not ids or not Path(db).is_file():
        return out
    marks_sql = "SELECT run_id, mark, count(*) FROM marks WHERE run_id IN ({}) GROUP BY 1, 2"
    comments_sql = (
        "SELECT run_id, 'comments', count(*) FROM comments WHERE run_id IN ({}) GROUP BY 1"
    )
    with connect(db) as conn:
        for sql in (marks_sql, comments_sql):
            for run_id, name, count in conn.execute(sql.format(", ".join("?" * len(ids))), ids):
                out[run_id][name] = count
    return out


def export(db: Path | str, run: runs.Run) -> bytes:
    """``review.json`` for the run's bundle: every product's mark and comments (who, when)."""
    data = review(db, run)
    document = {
        "run_id": run.id,
        "session_id": run.session_id,
        "script": run.script,
        "trigger": run.trigger,
        "exported": now(),
        "products": {
            p["file"]: {"mark": p["mark"], "comments": p["comments"]}
            for p in data["products"]
            if p["mark"] or p["comments"]
        },
        "comments": data["comments"],
        "orphans": data["orphans"],
    }
    return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode()


def rebundle(
    db: Path | str, run: runs.Run, extra_files: Mapping[str, Path | str] | None = None
) -> Path | None:
    """Make the run's bundle again with the current ``review.json`` (after a change of its marks
    or comments). Two changes at once may race: each maker checks afterwards that no change came
    in while it zipped, and zips again if one did, so the last bundle written holds the last
    change. Returns the bundle's path (None while the run goes on: it is made when it ends)."""
    if not run.terminal:
        return None
    path = None
    for _ in range(REBUNDLE_TRIES):
        seen = version(db, run.id)
        path = runs.bundle(run.run_dir, extra_files=extra_files,
                           extra_data={REVIEW_FILE: export(db, run)})  # fmt: skip
        if version(db, run.id) == seen:
            break
    return path


# ------------------------------------------------------------------------------------ search


def _day_or_time(value: Any, name: str, end: bool = False) -> str:
    """A filter date (``YYYY-MM-DD``, inclusive) or ISO time as the runs table stores times."""
    if not isinstance(value, str) or not value or len(value) > 40:
        raise ReviewError(f"'{name}' must be a date (YYYY-MM-DD) or an ISO 8601 time")
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            when = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            if end:
                when += dt.timedelta(days=1)
        else:
            when = parse_time(value)
    except ValueError:
        raise ReviewError(f"'{name}' must be a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_filters(args: Mapping[str, Any]) -> dict[str, Any]:
    """Dashboard filters from query arguments: session, script, phase, trigger, since, until,
    limit, offset; ReviewError for anything malformed."""
    allowed = {"session", "script", "phase", "trigger", "since", "until", "limit", "offset"}
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise ReviewError(f"unknown filter(s): {', '.join(unknown)[:200]}")
    out: dict[str, Any] = {}
    for name in ("session", "script"):
        value = args.get(name)
        if value:
            if len(value) > 64:
                raise ReviewError(f"'{name}' is too long")
            out[name] = value
    phase = args.get("phase")
    if phase:
        if phase not in runs.PHASES:
            raise ReviewError(f"'phase' must be one of {', '.join(runs.PHASES)}")
        out["phase"] = phase
    trigger = args.get("trigger")
    if trigger:
        kind, _, ident = trigger.partition(":")
        if kind not in runs.TRIGGER_KINDS or (ident and (kind == "manual" or len(ident) > 64)):
            raise ReviewError(
                "'trigger' must be manual, standing, schedule, standing:<id> or schedule:<id>"
            )
        out["trigger"] = trigger
    if args.get("since"):
        out["since"] = _day_or_time(args["since"], "since")
    if args.get("until"):
        out["until"] = _day_or_time(args["until"], "until", end=True)
    for name, default, top in (("limit", 50, MAX_PAGE), ("offset", 0, 10**9)):
        raw = args.get(name)
        if raw in (None, ""):
            out[name] = default
            continue
        if not (isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 10):
            raise ReviewError(f"'{name}' must be a whole number")
        out[name] = min(int(raw), top) if name == "limit" else int(raw)
        if name == "limit" and out[name] < 1:
            raise ReviewError("'limit' must be at least 1")
    return out


def search_runs(
    db: Path | str, session_ids: Iterable[str] | None, filters: Mapping[str, Any]
) -> tuple[list[runs.Run], int]:
    """The runs of the sessions given (every session when None) matching ``filters``
    (``check_filters``), newest first: one page (``limit``, ``offset``) and the total count."""
    where, args = [], []
    if session_ids is not None:
        ids = list(session_ids)
        if not ids:
            return [], 0
        where.append(f"session_id IN ({', '.join('?' * len(ids))})")
        args += ids
    for name, column in (("session", "session_id"), ("script", "script"), ("phase", "phase")):
        if filters.get(name):
            where.append(f"{column} = ?")
            args.append(filters[name])
    trigger = filters.get("trigger")
    if trigger:
        if ":" in trigger or trigger == "manual":
            where.append('"trigger" = ?')
            args.append(trigger)
        else:
            where.append('"trigger" LIKE ?')
            args.append(f"{trigger}:%")
    if filters.get("since"):
        where.append("created >= ?")
        args.append(filters["since"])
    if filters.get("until"):
        where.append("created < ?")
        args.append(filters["until"])
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    with runs.connect(db) as conn:
        total = conn.execute(f"SELECT count(*) FROM runs{condition}", args).fetchone()[0]
        rows = conn.execute(
            f"SELECT * FROM runs{condition} ORDER BY created DESC, id LIMIT ? OFFSET ?",
            [*args, filters.get("limit", 50), filters.get("offset", 0)],
        ).fetchall()
    return [runs.Run.from_row(r) for r in rows], int(total)


def scripts_run(db: Path | str, session_ids: Iterable[str] | None) -> list[str]:
    """The names of the scripts that have runs in the sessions given (all when None)."""
    where, args = "", []
    if session_ids is not None:
        args = list(session_ids)
        if not args:
            return []
        where = f" WHERE session_id IN ({', '.join('?' * len(args))})"
    with runs.connect(db) as conn:
        rows = conn.execute(f"SELECT DISTINCT script FROM runs{where}", args).fetchall()
    return sorted(r[0] for r in rows)


def duration(run: runs.Run) -> float | None:
    """Seconds from start to end (to now while it runs); None before it starts."""
    if not run.started:
        return None
    end = parse_time(run.ended) if run.ended else dt.datetime.now(dt.UTC)
    return round(max(0.0, (end - parse_time(run.started)).total_seconds()), 3)
