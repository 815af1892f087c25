"""Automation: standing requests, schedules and saved default parameters. The only code that
knows their store: SQLite at ``<REGIO_SESSIONS>/automation.db`` (``db_path``), on the file system
the hosts share, with short-lived connections and ordered ``MIGRATIONS`` like ``app.runs``.

- **Standing request** (``StandingRequest``): "whenever new data of these instruments cover the
  source region of this session, run these scripts with these parameters". ``check_standing``
  is called by the ingest process (``app.ingest``) whenever the index changed, and once at its
  start: it compares the index with the exposures it has already looked at (``known_exposures``:
  id and checksum, so a rewritten file is new data too) and, for every enabled request whose
  source region a new exposure covers, queues a run of each of its scripts (``app.launch``) on
  the new exposures only (``scope="new"``) or on every covering exposure of its instruments
  (``scope="all"``). The run's record says so: ``trigger="standing:<id>"`` and
  ``trigger_detail`` (the new exposures, when they were seen). The first look only records what
  the index holds: a request fires for data that arrives after it was made. Whoever indexed the
  data (the ingest watcher, the service's start-up build, a manual ``python -m indexer build``),
  the next look finds it.
- **Schedule** (``Schedule``): a script run periodically on a session's selection, by a cron
  expression (5 fields, or ``@daily``...; in the schedule's time zone) or every ``interval``
  seconds. The cron process (``app.automation_cron``, rq's ``CronScheduler``) fires it
  (``fire_schedule``); each firing claims its tick in this database first (``last_fired``), so
  two cron processes never both fire it, and a restarted one knows where it was: a tick missed
  while it was down is fired once at start (``pending_tick``), then the schedule goes on.
- **Saved defaults**: parameter values per script, for the site (staff) and per user. A run's
  parameters are, in increasing precedence: the manifest's defaults, the site's, the session
  owner's, the values given (``saved_defaults``; ``app.launch`` applies them to every launch, the
  launch form shows them through ``with_defaults``).

Runs started here are ordinary runs: queued, executed, reconciled and notified (``app.notify``)
like the others, owned by the session's owner.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import secrets
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlite_utils
from croniter import croniter

from app import catalog, runs
from app import db as sqlitedb
from app.plumbing import iso, now, parse_time

log = logging.getLogger("regio.automation")

DB_NAME = "automation.db"
SCOPES = ("new", "all")
SITE = "site"  # the scope of the site's saved defaults (staff)
MAX_STANDING_PER_SESSION = 20
MAX_SCHEDULES_PER_SESSION = 20
MAX_SCRIPTS_PER_REQUEST = 10
MAX_INSTRUMENTS = 20
MAX_TITLE = 200
MAX_INTERVAL = 366 * 24 * 3600
CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

_ID_ALPHABET = string.ascii_lowercase + string.digits


class AutomationError(ValueError):
    """Input the automation store refuses; ``str(exc)`` says why, for the user (400)."""


class NotFound(LookupError):
    """No standing request or schedule with this id."""


def db_path(sessions_dir: Path | str) -> Path:
    """Where the automation database lives: ``<REGIO_SESSIONS>/automation.db``."""
    return Path(sessions_dir) / DB_NAME


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


# ---------------------------------------------------------------------------------- database


def _m1_create_tables(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE standing_requests (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            owner TEXT NOT NULL DEFAULT '',
            created_by TEXT NOT NULL DEFAULT '',
            title TEXT NOT NULL DEFAULT '',
            instruments TEXT NOT NULL DEFAULT '[]',
            scripts TEXT NOT NULL,
            scope TEXT NOT NULL DEFAULT 'new',
            min_coverage REAL NOT NULL DEFAULT 0,
            enabled INTEGER NOT NULL DEFAULT 1,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            last_triggered TEXT,
            last_runs TEXT NOT NULL DEFAULT '[]',
            last_error TEXT
        );
        CREATE INDEX standing_session ON standing_requests (session_id);
        CREATE TABLE schedules (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            owner TEXT NOT NULL DEFAULT '',
            created_by TEXT NOT NULL DEFAULT '',
            title TEXT NOT NULL DEFAULT '',
            script TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',
            cron TEXT,
            interval INTEGER,
            timezone TEXT NOT NULL DEFAULT 'UTC',
            enabled INTEGER NOT NULL DEFAULT 1,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            last_fired TEXT,
            last_run_id TEXT,
            last_error TEXT
        );
        CREATE INDEX schedules_session ON schedules (session_id);
        CREATE TABLE saved_defaults (
            scope TEXT NOT NULL,
            script TEXT NOT NULL,
            params TEXT NOT NULL,
            updated TEXT NOT NULL,
            updated_by TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (scope, script)
        );
        CREATE TABLE known_exposures (
            exposure_id TEXT PRIMARY KEY,
            checksum TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE ingest_state (
            key TEXT PRIMARY KEY,
            value TEXT
        );
        """
    )


# Append only: migration N brings the schema from version N-1 to N.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_m1_create_tables,)


def connect(path: Path | str) -> contextlib.AbstractContextManager[sqlite_utils.Database]:
    """A short-lived connection to the automation database, created and migrated on first use."""
    return sqlitedb.connect(path, MIGRATIONS, what="automation database")


# ------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class StandingRequest:
    """Run ``scripts`` whenever new data of ``instruments`` cover the session's source region."""

    id: str
    session_id: str
    owner: str
    created_by: str
    title: str
    instruments: list[str]  # MISSION/INSTRUMENT; empty: any
    scripts: list[dict[str, Any]]  # [{"script": name, "params": {...}}]
    scope: str  # "new": the new exposures only; "all": every covering exposure
    min_coverage: float  # least fraction of the source region an exposure must cover
    enabled: bool
    created: str
    updated: str
    last_triggered: str | None = None
    last_runs: list[str] | None = None
    last_error: str | None = None

    @property
    def trigger(self) -> str:
        return f"standing:{self.id}"

    def takes(self, row: Mapping[str, Any]) -> bool:
        """Whether a coverage row is data this request waits for (instrument, coverage)."""
        instrument = f"{row.get('mission')}/{row.get('instrument')}"
        if self.instruments and instrument not in self.instruments:
            return False
        return float(row.get("coverage") or 0.0) >= self.min_coverage

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StandingRequest:
        values = {f.name: row[f.name] for f in fields(cls)}
        for name in ("instruments", "scripts", "last_runs"):
            values[name] = json.loads(values[name]) if values[name] else []
        values["enabled"] = bool(values["enabled"])
        return cls(**values)


@dataclass(frozen=True)
class Schedule:
    """Run ``script`` with ``params`` on the session's selection, by ``cron`` or ``interval``."""

    id: str
    session_id: str
    owner: str
    created_by: str
    title: str
    script: str
    params: dict[str, Any]
    cron: str | None  # 5-field cron expression or @alias, in ``timezone``
    interval: int | None  # seconds
    timezone: str
    enabled: bool
    created: str
    updated: str
    last_fired: str | None = None  # the last tick fired (ISO UTC)
    last_run_id: str | None = None
    last_error: str | None = None

    @property
    def trigger(self) -> str:
        return f"schedule:{self.id}"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["next_fire"] = (
            iso(pending_tick(self, dt.datetime.now(dt.UTC))) if self.enabled else None
        )
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Schedule:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["params"] = json.loads(values["params"] or "{}")
        values["enabled"] = bool(values["enabled"])
        return cls(**values)


# ------------------------------------------------------------------------------- input checks


def _title(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_TITLE or any(c < " " for c in value):
        raise AutomationError(f"'title' must be one line of at most {MAX_TITLE} characters")
    return value.strip()


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise AutomationError(f"'{name}' must be true or false")
    return value


def check_params(script: catalog.Script, params: Any, where: str = "params") -> dict[str, Any]:
    """Some parameter values of ``script`` (not necessarily all), each checked; AutomationError
    naming the first bad one."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise AutomationError(f"'{where}' must be an object of parameter values")
    out = {}
    for name, value in params.items():
        parameter = script.parameter(str(name))
        if parameter is None:
            known = ", ".join(p.name for p in script.parameters) or "none"
            raise AutomationError(
                f"{where}: unknown parameter {str(name)!r:.60} for script '{script.name}' "
                f"(it takes: {known})"
            )
        try:
            out[parameter.name] = parameter.check(value)
        except catalog.ParamError as exc:
            raise AutomationError(f"{where}: {exc}") from None
    return out


def _script(scripts: Mapping[str, catalog.Script], name: Any, where: str) -> catalog.Script:
    if not isinstance(name, str) or name not in scripts:
        raise AutomationError(f"{where}: unknown script {name!r:.60}; see GET /api/scripts")
    return scripts[name]


def _complete(script: catalog.Script, params: Mapping[str, Any], saved: Mapping[str, Any], where):
    """Refuse parameters that leave a required one without a value (given or saved)."""
    try:
        catalog.validate_params(script, {**saved, **params})
    except catalog.ParamError as exc:
        raise AutomationError(f"{where}: {exc}") from None


def check_standing_input(
    body: Mapping[str, Any],
    scripts: Mapping[str, catalog.Script],
    *,
    defaults_for: Callable[[catalog.Script], Mapping[str, Any]] = lambda _s: {},
    partial: bool = False,
) -> dict[str, Any]:
    """The fields of a standing request from an API body (all of them unless ``partial``, for a
    change), checked; AutomationError says what is wrong."""
    allowed = {"title", "instruments", "scripts", "scope", "min_coverage", "enabled"}
    unknown = sorted(str(k) for k in set(body) - allowed)
    if unknown:
        raise AutomationError(f"unknown field(s): {', '.join(unknown)[:200]}")
    if not partial and "scripts" not in body:
        raise AutomationError('\'scripts\' is required: [{"script": NAME, "params": {...}}]')
    out: dict[str, Any] = {}
    if "title" in body:
        out["title"] = _title(body["title"])
    if "instruments" in body:
        value = body["instruments"]
        if (
            not isinstance(value, list)
            or len(value) > MAX_INSTRUMENTS
            or not all(isinstance(v, str) and catalog.INSTRUMENT_RE.match(v) for v in value)
        ):
            raise AutomationError(
                "'instruments' must be a list of MISSION/INSTRUMENT names "
                "(GET /api/instruments), empty for any"
            )
        out["instruments"] = list(dict.fromkeys(value))
    if "scripts" in body:
        value = body["scripts"]
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_SCRIPTS_PER_REQUEST:
            raise AutomationError(
                f"'scripts' must be a list of 1 to {MAX_SCRIPTS_PER_REQUEST} "
                '{"script": NAME, "params": {...}} objects'
            )
        entries = []
        for i, entry in enumerate(value, start=1):
            where = f"scripts[{i}]"
            if not isinstance(entry, Mapping) or not set(entry) <= {"script", "params"}:
                raise AutomationError(f'{where} must be {{"script": NAME, "params": {{...}}}}')
            script = _script(scripts, entry.get("script"), where)
            params = check_params(script, entry.get("params"), f"{where}.params")
            _complete(script, params, defaults_for(script), where)
            entries.append({"script": script.name, "params": params})
        out["scripts"] = entries
    if "scope" in body:
        if body["scope"] not in SCOPES:
            raise AutomationError("'scope' must be 'new' (the new data only) or 'all'")
        out["scope"] = body["scope"]
    if "min_coverage" in body:
        value = body["min_coverage"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise AutomationError("'min_coverage' must be a fraction between 0 and 1")
        out["min_coverage"] = float(value)
    if "enabled" in body:
        out["enabled"] = _bool(body["enabled"], "enabled")
    return out


def check_cron(expression: Any) -> str:
    """A cron expression of 5 fields (minute hour day month weekday) or an @alias; seconds are
    not offered."""
    if not isinstance(expression, str) or len(expression) > 200:
        raise AutomationError("'cron' must be a cron expression such as '0 2 * * *' or '@daily'")
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text not in CRON_ALIASES:
            raise AutomationError(f"'cron': unknown alias {text!r:.40} ({', '.join(CRON_ALIASES)})")
        return text
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise AutomationError(
            f"'cron' must have 5 fields (minute hour day month weekday), e.g. '0 2 * * *', "
            f"not {text!r:.60}"
        )
    return text


def _timezone(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise AutomationError("'timezone' must be an IANA time zone name such as 'UTC'")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise AutomationError(f"'timezone': unknown time zone {value!r:.64}") from None
    return value


def check_schedule_input(
    body: Mapping[str, Any],
    scripts: Mapping[str, catalog.Script],
    *,
    min_interval: int,
    defaults_for: Callable[[catalog.Script], Mapping[str, Any]] = lambda _s: {},
    current: Schedule | None = None,
) -> dict[str, Any]:
    """The fields of a schedule from an API body (a change of ``current`` when given), checked;
    exactly one of ``cron`` and ``interval`` (seconds, at least ``min_interval``)."""
    allowed = {"title", "script", "params", "cron", "interval", "timezone", "enabled"}
    unknown = sorted(str(k) for k in set(body) - allowed)
    if unknown:
        raise AutomationError(f"unknown field(s): {', '.join(unknown)[:200]}")
    out: dict[str, Any] = {}
    if "title" in body:
        out["title"] = _title(body["title"])
    name = body.get("script", current.script if current else None)
    if name is None:
        raise AutomationError("'script' is required: a name from GET /api/scripts")
    script = _script(scripts, name, "script")
    out["script"] = script.name
    if "params" in body or current is None:
        out["params"] = check_params(script, body.get("params"))
    elif script.name != current.script:  # another script: the old parameters do not apply
        out["params"] = {}
    params = out.get("params", current.params if current else {})
    _complete(script, params, defaults_for(script), "params")
    if "cron" in body or "interval" in body or current is None:
        cron, interval = body.get("cron"), body.get("interval")
        if (cron is None) == (interval is None):
            raise AutomationError(
                "give either 'cron' (e.g. '0 2 * * *' for 02:00 every night) or 'interval' "
                "(seconds)"
            )
        if cron is not None:
            out["cron"], out["interval"] = check_cron(cron), None
        else:
            if isinstance(interval, bool) or not isinstance(interval, int):
                raise AutomationError("'interval' must be a whole number of seconds")
            if not min_interval <= interval <= MAX_INTERVAL:
                raise AutomationError(
                    f"'interval' must be between {min_interval} s (REGIO_SCHEDULE_MIN_INTERVAL) "
                    f"and {MAX_INTERVAL} s"
                )
            out["cron"], out["interval"] = None, interval
    if "timezone" in body:
        out["timezone"] = _timezone(body["timezone"])
    if "enabled" in body:
        out["enabled"] = _bool(body["enabled"], "enabled")
    return out


# --------------------------------------------------------------------------- standing: store


def create_standing(
    db: Path | str, session_id: str, owner: str, created_by: str, values: Mapping[str, Any]
) -> StandingRequest:
    """Store a new standing request (``values`` from ``check_standing_input``)."""
    stamp = now()
    request = StandingRequest(
        id=_new_id(), session_id=session_id, owner=owner or "", created_by=created_by or "",
        title=values.get("title", ""), instruments=list(values.get("instruments", [])),
        scripts=list(values["scripts"]), scope=values.get("scope", "new"),
        min_coverage=float(values.get("min_coverage", 0.0)),
        enabled=bool(values.get("enabled", True)), created=stamp, updated=stamp, last_runs=[],
    )  # fmt: skip
    with connect(db) as conn, sqlitedb.transaction(conn):
        count = conn.execute(
            "SELECT count(*) FROM standing_requests WHERE session_id = ?", [session_id]
        ).fetchone()[0]
        if count >= MAX_STANDING_PER_SESSION:
            raise AutomationError(
                f"a session has at most {MAX_STANDING_PER_SESSION} standing requests"
            )
        conn["standing_requests"].insert(_encode(asdict(request)))  # type: ignore[union-attr]
    return request


def _encode(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in values.items()}


def get_standing(db: Path | str, request_id: str) -> StandingRequest:
    if not Path(db).is_file():
        raise NotFound(request_id)
    with connect(db) as conn:
        row = conn.execute("SELECT * FROM standing_requests WHERE id = ?", [request_id]).fetchone()
    if row is None:
        raise NotFound(request_id)
    return StandingRequest.from_row(row)


def list_standing(
    db: Path | str, session_ids: Iterable[str] | None = None
) -> list[StandingRequest]:
    """Standing requests (of the given sessions; all when None), oldest first."""
    return [StandingRequest.from_row(r) for r in _rows(db, "standing_requests", session_ids)]


def _rows(db: Path | str, table: str, session_ids: Iterable[str] | None) -> list[Any]:
    if not Path(db).is_file():
        return []
    sql, args = f"SELECT * FROM {table}", []
    if session_ids is not None:
        args = list(session_ids)
        if not args:
            return []
        sql += f" WHERE session_id IN ({', '.join('?' * len(args))})"
    with connect(db) as conn:
        return conn.execute(sql + " ORDER BY created, id", args).fetchall()


def update_standing(db: Path | str, request_id: str, **changes: Any) -> StandingRequest:
    return StandingRequest.from_row(_update(db, "standing_requests", request_id, changes))


def _update(db: Path | str, table: str, item_id: str, changes: Mapping[str, Any]) -> Any:
    if not Path(db).is_file():
        raise NotFound(item_id)
    changes = {**changes, "updated": now()} if not _bookkeeping(changes) else dict(changes)
    with connect(db) as conn:
        if changes:
            sets = ", ".join(f"{k} = ?" for k in changes)
            conn.execute(
                f"UPDATE {table} SET {sets} WHERE id = ?", [*_encode(changes).values(), item_id]
            )
        row = conn.execute(f"SELECT * FROM {table} WHERE id = ?", [item_id]).fetchone()
    if row is None:
        raise NotFound(item_id)
    return row


def _bookkeeping(changes: Mapping[str, Any]) -> bool:
    """Changes made by the automation itself (not by a user): they leave ``updated`` alone."""
    return set(changes) <= {"last_triggered", "last_runs", "last_error", "last_fired",
                            "last_run_id"}  # fmt: skip


def delete_standing(db: Path | str, request_id: str) -> None:
    _delete(db, "standing_requests", request_id)


def _delete(db: Path | str, table: str, item_id: str) -> None:
    if not Path(db).is_file():
        raise NotFound(item_id)
    with connect(db) as conn:
        if conn.execute(f"DELETE FROM {table} WHERE id = ?", [item_id]).rowcount != 1:
            raise NotFound(item_id)


# ------------------------------------------------------------------------ standing: the data


def _advance_known(db: Path | str, current: Mapping[str, str]) -> set[str] | None:
    """The exposures of ``current`` (id -> checksum) that are new or changed since the last
    look, which becomes this one; None on the very first look (it only takes note)."""
    with connect(db) as conn, sqlitedb.transaction(conn):
        started = conn.execute("SELECT value FROM ingest_state WHERE key = 'known'").fetchone()
        known = dict(conn.execute("SELECT exposure_id, checksum FROM known_exposures").fetchall())
        fresh = {e for e, checksum in current.items() if known.get(e) != checksum}
        gone = [e for e in known if e not in current]
        conn.conn.executemany(
            "INSERT OR REPLACE INTO known_exposures (exposure_id, checksum) VALUES (?, ?)",
            [(e, current[e]) for e in fresh],
        )
        conn.conn.executemany(
            "DELETE FROM known_exposures WHERE exposure_id = ?", [(e,) for e in gone]
        )
        conn.execute(
            "INSERT OR REPLACE INTO ingest_state (key, value) VALUES ('known', ?)", [now()]
        )
    return fresh if started else None


def _indexed(index_dir: Path | str) -> dict[str, str] | None:
    """Exposure id -> checksum of everything in the index (None without an index)."""
    from indexer.index import Index, IndexNotFound

    try:
        index = Index.load(index_dir)
    except IndexNotFound:
        return None
    return index.exposure_checksums()


def take_note(db: Path | str, index_dir: Path | str) -> None:
    """Before the first standing request is stored: note what the index holds (nothing if there
    is no index yet), so the requests fire for data that arrives afterwards only."""
    if Path(db).is_file():
        with connect(db) as conn:
            if conn.execute("SELECT 1 FROM ingest_state WHERE key = 'known'").fetchone():
                return
    _advance_known(db, _indexed(index_dir) or {})


def check_standing(
    values: Mapping[str, Any], redis_conn: Any, *, reason: str = "ingest"
) -> list[runs.Run]:
    """Queue the runs of the standing requests that new data in the index fulfil (see the
    module docstring); returns the runs queued. Errors of one request are logged and kept in its
    ``last_error``; they never stop the others."""
    from app.archive import coverage_rows
    from app.sessions import SessionNotFound, SessionStore
    from indexer.index import Index, IndexNotFound

    db = db_path(values["SESSIONS"])
    try:
        index = Index.load(values["INDEX"])
    except IndexNotFound:
        return []
    current = index.exposure_checksums()
    fresh = _advance_known(db, current)
    if not fresh:
        return []
    seen = now()
    log.info("%d new or changed exposure(s) in the index (%s)", len(fresh), reason)
    requests = [r for r in list_standing(db) if r.enabled]
    store = SessionStore(values["SESSIONS"])
    scripts = catalog.load_catalog(values["SCRIPTS"]) if requests else {}
    launched: list[runs.Run] = []
    for request in requests:
        try:
            try:
                source, background = store.regions(request.session_id)
                record = store.record(request.session_id)
            except SessionNotFound:
                update_standing(db, request.id, last_error="the session no longer exists")
                continue
            problem = _owner_problem(values, record.get("owner"))
            if problem:
                update_standing(db, request.id, last_error=problem)
                continue
            rows = coverage_rows(index, source, background)
            wanted = [r for r in rows if request.takes(r)]
            new = [r for r in wanted if r["exposure_id"] in fresh]
            if not new:
                continue
            store.set_coverage(request.session_id, rows)  # the session shows the new data
            queued, errors = _serve(request, record, new, wanted, scripts, values, redis_conn,
                                    seen, index)  # fmt: skip
            launched += queued
            update_standing(
                db, request.id, last_triggered=seen, last_runs=[r.id for r in queued],
                last_error="; ".join(errors) or None,
            )  # fmt: skip
        except Exception as exc:  # one broken request must not stop the others
            log.exception("standing request %s failed", request.id)
            with contextlib.suppress(Exception):
                update_standing(db, request.id, last_error=f"{type(exc).__name__}: {exc}")
    return launched


def _owner_problem(values: Mapping[str, Any], owner: str | None) -> str | None:
    """Why runs cannot be started for the session owner ``owner`` (a disabled account)."""
    if values.get("AUTH") != "accounts" or not owner:
        return None
    from app import accounts

    try:
        user = accounts.get_user(accounts.db_path(values["SESSIONS"]), owner)
    except accounts.UserNotFound:
        return "the session's owner has no account any more"
    return None if user.is_active else "the session's owner's account is disabled"


def _serve(
    request: StandingRequest,
    record: Mapping[str, Any],
    new: list[dict[str, Any]],
    wanted: list[dict[str, Any]],
    scripts: Mapping[str, catalog.Script],
    values: Mapping[str, Any],
    redis_conn: Any,
    seen: str,
    index: Any,
) -> tuple[list[runs.Run], list[str]]:
    """Queue each script of a request on the data it takes; (runs, errors). ``index`` (the
    ``indexer.index.Index`` that found the new data) gives the files' pixel WCS, so launching
    opens no data file, and its generation goes to the trigger detail."""
    from app import launch
    from app.sessions import SessionStore

    new_ids = [r["exposure_id"] for r in new]
    queued, errors = [], []
    for entry in request.scripts:
        script = scripts.get(entry["script"])
        if script is None:
            errors.append(f"{entry['script']}: the script is no longer installed")
            continue
        base = new if request.scope == "new" else wanted
        chosen = [r["exposure_id"] for r in base if script.accepts.accepts(r)]
        if not set(chosen) & set(new_ids):
            continue  # none of the new data is of a kind this script takes
        detail = {
            "kind": "standing", "request": request.id, "title": request.title,
            "scope": request.scope, "new_exposures": new_ids, "seen": seen,
            "index_generation": index.manifest.get("generation"),
        }  # fmt: skip
        try:
            run = launch.launch(
                SessionStore(values["SESSIONS"]), runs.db_path(values["SESSIONS"]), redis_conn,
                scripts, request.session_id, script.name, entry.get("params") or {},
                owner=record.get("owner") or "", trigger=request.trigger,
                trigger_detail=detail, exposures=chosen, index=index,
            )  # fmt: skip
        except launch.LaunchError as exc:
            errors.append(f"{script.name}: {exc}")
            continue
        log.info(
            "standing request %s: queued run %s of %s on %d exposure(s)",
            request.id, run.id, script.name, len(chosen),
        )  # fmt: skip
        queued.append(run)
    return queued, errors


# -------------------------------------------------------------------------- schedules: store


def create_schedule(
    db: Path | str, session_id: str, owner: str, created_by: str, values: Mapping[str, Any]
) -> Schedule:
    """Store a new schedule (``values`` from ``check_schedule_input``)."""
    stamp = now()
    schedule = Schedule(
        id=_new_id(), session_id=session_id, owner=owner or "", created_by=created_by or "",
        title=values.get("title", ""), script=values["script"], params=dict(values["params"]),
        cron=values.get("cron"), interval=values.get("interval"),
        timezone=values.get("timezone", "UTC"), enabled=bool(values.get("enabled", True)),
        created=stamp, updated=stamp,
    )  # fmt: skip
    with connect(db) as conn, sqlitedb.transaction(conn):
        count = conn.execute(
            "SELECT count(*) FROM schedules WHERE session_id = ?", [session_id]
        ).fetchone()[0]
        if count >= MAX_SCHEDULES_PER_SESSION:
            raise AutomationError(f"a session has at most {MAX_SCHEDULES_PER_SESSION} schedules")
        conn["schedules"].insert(_encode(asdict(schedule)))  # type: ignore[union-attr]
    return schedule


def get_schedule(db: Path | str, schedule_id: str) -> Schedule:
    if not Path(db).is_file():
        raise NotFound(schedule_id)
    with connect(db) as conn:
        row = conn.execute("SELECT * FROM schedules WHERE id = ?", [schedule_id]).fetchone()
    if row is None:
        raise NotFound(schedule_id)
    return Schedule.from_row(row)


def list_schedules(db: Path | str, session_ids: Iterable[str] | None = None) -> list[Schedule]:
    """Schedules (of the given sessions; all when None), oldest first."""
    return [Schedule.from_row(r) for r in _rows(db, "schedules", session_ids)]


def update_schedule(db: Path | str, schedule_id: str, **changes: Any) -> Schedule:
    """Change a schedule. A new timing, or a schedule enabled again, starts afresh from now:
    the ticks it missed meanwhile are not fired."""
    if not _bookkeeping(changes):
        current = get_schedule(db, schedule_id)
        retimed = any(k in changes and changes[k] != getattr(current, k)
                      for k in ("cron", "interval", "timezone"))  # fmt: skip
        if retimed or (changes.get("enabled") is True and not current.enabled):
            changes.setdefault("last_fired", now())
    return Schedule.from_row(_update(db, "schedules", schedule_id, changes))


def delete_schedule(db: Path | str, schedule_id: str) -> None:
    _delete(db, "schedules", schedule_id)


# ------------------------------------------------------------------------- schedules: timing


def pending_tick(schedule: Schedule, when: dt.datetime) -> dt.datetime:
    """The tick the schedule fires at next, seen at ``when`` (aware): the latest tick missed
    since its last firing (or its creation), when one was, else the next one to come.

    A cron schedule ticks in its time zone (``0 2 * * *`` with ``Europe/Paris``: 02:00 in Paris);
    an interval schedule every ``interval`` seconds after its last tick (or its creation), so a
    late firing does not make it drift."""
    last = parse_time(schedule.last_fired or schedule.created)
    if schedule.interval:
        step = dt.timedelta(seconds=schedule.interval)
        missed = math.floor((when - last) / step)
        return last + step * max(missed, 1)
    tz = ZoneInfo(schedule.timezone)
    previous = croniter(schedule.cron, when.astimezone(tz)).get_prev(dt.datetime)
    if previous > last:
        return previous.astimezone(dt.UTC)
    return (
        croniter(schedule.cron, max(when, last).astimezone(tz))
        .get_next(dt.datetime)
        .astimezone(dt.UTC)
    )


def claim_tick(db: Path | str, schedule_id: str, tick: dt.datetime) -> bool:
    """Record that the schedule fires at ``tick``; False when it already fired at or after it
    (another cron process did) or is gone or disabled."""
    stamp = iso(tick)
    with connect(db) as conn:
        return (
            conn.execute(
                "UPDATE schedules SET last_fired = ? WHERE id = ? AND enabled = 1 "
                "AND (last_fired IS NULL OR last_fired < ?)",
                [stamp, schedule_id, stamp],
            ).rowcount
            == 1
        )


def fire_schedule(
    values: Mapping[str, Any], schedule_id: str, tick: dt.datetime, redis_conn: Any
) -> runs.Run | None:
    """Fire a schedule at ``tick``: queue its run on the session's selection (``app.launch``)
    with ``trigger="schedule:<id>"``. Nothing happens if the tick was already claimed; a run
    that cannot be launched (the selection changed, the script is gone) is recorded in the
    schedule's ``last_error``. Returns the run queued, if any."""
    from app import launch
    from app.sessions import SessionNotFound, SessionStore

    db = db_path(values["SESSIONS"])
    if not claim_tick(db, schedule_id, tick):
        return None
    schedule = get_schedule(db, schedule_id)
    store = SessionStore(values["SESSIONS"])
    detail = {
        "kind": "schedule", "schedule": schedule.id, "title": schedule.title,
        "tick": iso(tick), "fired": now(), "cron": schedule.cron, "interval": schedule.interval,
        "timezone": schedule.timezone,
    }  # fmt: skip
    try:
        record = store.record(schedule.session_id)
        problem = _owner_problem(values, record.get("owner"))
        if problem:
            raise launch.LaunchError(problem)
        run = launch.launch(
            store, runs.db_path(values["SESSIONS"]), redis_conn,
            catalog.load_catalog(values["SCRIPTS"]), schedule.session_id, schedule.script,
            schedule.params, owner=record.get("owner") or "", trigger=schedule.trigger,
            trigger_detail=detail,
        )  # fmt: skip
    except SessionNotFound:
        update_schedule(db, schedule.id, last_error="the session no longer exists")
        return None
    except launch.LaunchError as exc:
        log.warning("schedule %s could not launch %s: %s", schedule.id, schedule.script, exc)
        update_schedule(db, schedule.id, last_error=str(exc))
        return None
    update_schedule(db, schedule.id, last_run_id=run.id, last_error=None)
    log.info("schedule %s: queued run %s of %s (tick %s)", schedule.id, run.id, run.script,
             iso(tick))  # fmt: skip
    return run


# ------------------------------------------------------------------------------ saved defaults


def user_scope(user_id: str | None) -> str:
    """The scope of a user's saved defaults (the site's without a user: single-user mode)."""
    return f"user:{user_id}" if user_id else SITE


def set_defaults(
    db: Path | str, scope: str, script: catalog.Script, params: Any, by: str = ""
) -> dict[str, Any]:
    """Save default values for some parameters of ``script`` in ``scope`` (``SITE`` or
    ``user_scope(id)``), replacing the ones saved before; an empty object removes them."""
    checked = check_params(script, params)
    with connect(db) as conn:
        if checked:
            conn.execute(
                "INSERT OR REPLACE INTO saved_defaults (scope, script, params, updated, "
                "updated_by) VALUES (?, ?, ?, ?, ?)",
                [scope, script.name, json.dumps(checked), now(), by or ""],
            )
        else:
            conn.execute(
                "DELETE FROM saved_defaults WHERE scope = ? AND script = ?", [scope, script.name]
            )
    return checked


def list_defaults(db: Path | str, scopes: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{scope: {script: {"params", "updated", "updated_by"}}}`` for the scopes asked."""
    scopes = list(scopes)
    out: dict[str, dict[str, Any]] = {scope: {} for scope in scopes}
    if not Path(db).is_file() or not scopes:
        return out
    with connect(db) as conn:
        rows = conn.execute(
            f"SELECT * FROM saved_defaults WHERE scope IN ({', '.join('?' * len(scopes))}) "
            "ORDER BY script",
            scopes,
        ).fetchall()
    for row in rows:
        out[row["scope"]][row["script"]] = {
            "params": json.loads(row["params"]),
            "updated": row["updated"],
            "updated_by": row["updated_by"],
        }
    return out


def saved_defaults(db: Path | str, owner: str | None, script: catalog.Script) -> dict[str, Any]:
    """The saved default values of ``script`` for runs of ``owner``: the site's, overridden by
    the owner's; values the script no longer takes (its manifest changed) are left out."""
    if not Path(db).is_file():  # nothing saved yet: do not create the database for a lookup
        return {}
    scopes = [SITE] + ([user_scope(owner)] if owner else [])
    found = list_defaults(db, scopes)
    merged: dict[str, Any] = {}
    for scope in scopes:
        merged.update((found[scope].get(script.name) or {}).get("params", {}))
    usable = {}
    for name, value in merged.items():
        parameter = script.parameter(name)
        try:
            if parameter is not None:
                usable[name] = parameter.check(value)
        except catalog.ParamError:
            log.warning("saved default %s=%r of %s is no longer valid", name, value, script.name)
    return usable


def with_defaults(
    scripts_json: list[dict[str, Any]],
    scripts: Mapping[str, catalog.Script],
    db: Path | str,
    owner: str | None,
) -> list[dict[str, Any]]:
    """``GET /api/scripts`` entries with ``owner``'s saved defaults (``saved_defaults``) as the
    parameters' ``default`` (the launch form shows them); the manifest's stays in
    ``manifest_default``."""
    for entry in scripts_json:
        script = scripts.get(entry.get("name"))
        saved = saved_defaults(db, owner, script) if script is not None else {}
        for parameter in entry.get("parameters", []):
            if parameter["name"] in saved:
                if "default" in parameter:
                    parameter["manifest_default"] = parameter["default"]
                parameter["default"] = saved[parameter["name"]]
                parameter["required"] = False
                parameter["saved_default"] = True
    return scripts_json
