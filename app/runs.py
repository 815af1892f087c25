"""Run records and run folders: the only code that knows the ``runs`` table and a run's files.

The record (SQLite, ``<REGIO_SESSIONS>/regio.db``) is the source of truth about a run; RQ only
executes it (``app.jobs``). The database lives on the file system the hosts share, so it uses the
default rollback journal (WAL needs shared memory, which network file systems do not offer) and a
busy timeout; every connection is short-lived.

Phases are the IVOA UWS vocabulary::

    QUEUED ──► EXECUTING ──► COMPLETED
       │           ├───────► ERROR
       └───────────┴───────► ABORTED      (and QUEUED ──► ERROR when the queue loses it)

A terminal phase (COMPLETED, ERROR, ABORTED) is final. ``update`` applies a change in one
conditional statement (``... WHERE phase IN (legal sources)``), so concurrent writers (workers,
web processes, reconcilers on several hosts) never overwrite a final phase.

A run folder (the sessions module chooses where it is)::

    <run_dir>/input.json        what the script reads (see scripts/regio_kit.py)
    <run_dir>/log.txt           the script's stdout+stderr, plus the runner's own "[regio] ..." lines
    <run_dir>/output/           products, described by output/products.json
    <run_dir>/provenance.json   script, version, params, Regio version, input checksums, times, host
    <run_dir>/bundle.zip        products, log, input, provenance and regions: made once, when the
                                run ends (``finish``), and served as a file

The script writes in its run folder (``app.sandbox``), so nothing in it is trusted: every file
Regio reads, serves or zips from a run folder is opened without following symbolic links, at any
level, and must be a regular file inside the folder (``open_run_file``); the log and the
provenance are written the same way (``open_log``, ``append_log``, ``write_provenance``). A
symbolic link a script leaves (``log.txt -> instance/secret_key``) is never followed: it reads as
no file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import sqlite3
import stat
import string
import time
import zipfile
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import IO, Any

import sqlite_utils

from app import db as sqlitedb
from app import plumbing

QUEUED = "QUEUED"
EXECUTING = "EXECUTING"
COMPLETED = "COMPLETED"
ERROR = "ERROR"
ABORTED = "ABORTED"
PHASES = (QUEUED, EXECUTING, COMPLETED, ERROR, ABORTED)
TERMINAL = frozenset({COMPLETED, ERROR, ABORTED})
# the phases each phase can be reached from
SOURCES: dict[str, frozenset[str]] = {
    QUEUED: frozenset(),
    EXECUTING: frozenset({QUEUED}),
    COMPLETED: frozenset({EXECUTING}),
    ERROR: frozenset({QUEUED, EXECUTING}),
    ABORTED: frozenset({QUEUED, EXECUTING}),
}

DB_NAME = "regio.db"
INPUT, LOG, OUTPUT, PROVENANCE, BUNDLE = (
    "input.json",
    "log.txt",
    "output",
    "provenance.json",
    "bundle.zip",
)
PRODUCTS_MANIFEST = "products.json"
LOG_TAIL_LINES = 20
MAX_LOG_CHUNK = 1 << 20  # bytes returned by one read_log call
MAX_PRODUCTS = 2000
MAX_DEPTH = 32  # folder levels of output/ looked at for products

log = logging.getLogger("regio.runs")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO a script left in place of a file must not block the reader
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_APPEND_FLAGS = (
    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
)

_ID_ALPHABET = string.ascii_lowercase + string.digits
_JSON_COLUMNS = ("params", "stages", "trigger_detail")
#: What started a run: a user (``manual``), a standing request (``standing:<id>``) or a schedule
#: (``schedule:<id>``); ``app.automation`` starts the last two.
TRIGGER_KINDS = ("manual", "standing", "schedule")


class RunNotFound(KeyError):
    """No run with this id."""


class ClientKeyTaken(ValueError):
    """Another run of the session already holds this client key (``create``): ``run_id``."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"the client key already names run {run_id}")
        self.run_id = run_id


class PhaseError(ValueError):
    """The change is not allowed from the run's current phase (a final phase, or a lost race)."""


@dataclass
class Run:
    """One run record. ``params`` and ``stages`` are decoded JSON; times are ISO 8601 UTC."""

    id: str
    session_id: str
    owner: str
    script: str
    script_version: str
    params: dict[str, Any]
    run_dir: str
    phase: str = QUEUED
    stage: str | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    progress_done: int | None = None
    progress_total: int | None = None
    stage_count: int | None = None  # stages announced up front (manifest or a [STAGES] n line)
    created: str = ""
    started: str | None = None
    ended: str | None = None
    exit_code: int | None = None
    error: str | None = None
    failing_stage: str | None = None
    log_tail: str | None = None
    time_limit: int | None = None
    job_id: str | None = None
    worker: str | None = None
    host: str | None = None
    pid: int | None = None
    requeues: int = 0
    log_dropped: int | None = None  # bytes of the script's output beyond REGIO_LOG_MAX_BYTES
    trigger: str = "manual"  # manual | standing:<id> | schedule:<id> (TRIGGER_KINDS)
    trigger_detail: dict[str, Any] | None = None  # what the trigger saw (new exposures, tick)
    client_key: str | None = None  # the launch's client key (unique in its session)
    request_digest: str | None = None  # sha256 of what that launch asked (script, params)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    @property
    def path(self) -> Path:
        return Path(self.run_dir)

    def to_json(self) -> dict[str, Any]:
        """The record as the API shows it (no file system paths, no process ids)."""
        out = asdict(self)
        for private in ("run_dir", "pid", "requeues", "request_digest"):
            out.pop(private)
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Run:
        values = {f.name: row[f.name] for f in fields(cls) if f.name in row.keys()}  # noqa: SIM118
        for name in _JSON_COLUMNS:
            if isinstance(values.get(name), str):
                values[name] = json.loads(values[name])
        return cls(**values)


def new_run_id() -> str:
    """A short random id, safe in URLs, file names and shells (12 lowercase letters and digits)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def db_path(sessions_dir: Path | str) -> Path:
    """Where the run database lives: ``<REGIO_SESSIONS>/regio.db``."""
    return Path(sessions_dir) / DB_NAME


# ---------------------------------------------------------------------------------- database


def _m1_create_runs(db: sqlite_utils.Database) -> None:
    db["runs"].create(  # type: ignore[union-attr]
        {
            "id": str,
            "session_id": str,
            "owner": str,
            "script": str,
            "script_version": str,
            "params": str,
            "run_dir": str,
            "phase": str,
            "stage": str,
            "stages": str,
            "progress_done": int,
            "progress_total": int,
            "created": str,
            "started": str,
            "ended": str,
            "exit_code": int,
            "error": str,
            "failing_stage": str,
            "log_tail": str,
            "time_limit": int,
            "job_id": str,
            "worker": str,
            "host": str,
            "pid": int,
            "requeues": int,
        },
        pk="id",
        not_null={"session_id", "script", "phase", "created", "run_dir"},
        defaults={"requeues": 0},
    )
    db["runs"].create_index(["session_id", "created"])
    db["runs"].create_index(["phase"])


def _m2_log_dropped(db: sqlite_utils.Database) -> None:
    db["runs"].add_column("log_dropped", int)  # type: ignore[union-attr]


def _m3_trigger(db: sqlite_utils.Database) -> None:
    runs_table = db["runs"]
    runs_table.add_column("trigger", str, not_null_default="manual")  # type: ignore[union-attr]
    runs_table.add_column("trigger_detail", str)  # type: ignore[union-attr]
    runs_table.create_index(["created"])  # the runs dashboard: newest first across sessions


def _m4_stage_count(db: sqlite_utils.Database) -> None:
    db["runs"].add_column("stage_count", int)  # type: ignore[union-attr]


def _m5_client_key(db: sqlite_utils.Database) -> None:
    """Idempotent launch: a client's key names at most one run per session (unique index; rows
    without a key do not conflict: NULLs are distinct)."""
    runs_table = db["runs"]
    runs_table.add_column("client_key", str)  # type: ignore[union-attr]
    runs_table.add_column("request_digest", str)  # type: ignore[union-attr]
    runs_table.create_index(["session_id", "client_key"], unique=True)  # type: ignore[union-attr]


# Append only: migration N brings the schema from version N-1 to N.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _m1_create_runs,
    _m2_log_dropped,
    _m3_trigger,
    _m4_stage_count,
    _m5_client_key,
)


def connect(path: Path | str) -> contextlib.AbstractContextManager[sqlite_utils.Database]:
    """A short-lived connection to the run database, created and migrated on first use."""
    return sqlitedb.connect(path, MIGRATIONS, what="run database")


def _encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


# ------------------------------------------------------------------------------------ records


def create(
    db_path: Path | str,
    run_dir: Path | str,
    *,
    session_id: str,
    script: Any,
    params: Mapping[str, Any],
    owner: str = "",
    regions: Mapping[str, Any] | None = None,
    observations: list[Mapping[str, Any]] | None = None,
    run_id: str | None = None,
    regio_version: str | None = None,
    trigger: str = "manual",
    trigger_detail: Mapping[str, Any] | None = None,
    client_key: str | None = None,
    request_digest: str | None = None,
) -> Run:
    """Make the run folder with its ``input.json`` and insert a QUEUED record.

    ``script`` is an ``app.catalog.Script`` and ``params`` its validated parameters
    (``catalog.validate_params``); ``regions`` and ``observations`` go to the input file as given.
    ``trigger`` says what started the run (``TRIGGER_KINDS``: ``manual``, ``standing:<id>``,
    ``schedule:<id>``) and ``trigger_detail`` what it saw (JSON). ``client_key`` (with the
    ``request_digest`` of what was asked) is unique in the session: when another run holds it,
    nothing is kept (the folder is removed) and :class:`ClientKeyTaken` names that run.
    """
    if trigger.partition(":")[0] not in TRIGGER_KINDS:
        raise ValueError(f"unknown trigger {trigger!r}")
    run_id = run_id or new_run_id()
    if regio_version is None:
        from app import __version__ as regio_version
    run_dir = Path(run_dir).resolve()
    (run_dir / OUTPUT).mkdir(parents=True, exist_ok=False)
    data = {
        "run_id": run_id,
        "session_id": session_id,
        "script": {"name": script.name, "version": script.version},
        "regio_version": regio_version,
        "params": dict(params),
        "regions": dict(regions or {}),
        "observations": [dict(o) for o in observations or []],
        "output_dir": str(run_dir / OUTPUT),
    }
    plumbing.write_json(run_dir / INPUT, data, default=str)
    run = Run(
        id=run_id,
        session_id=session_id,
        owner=owner,
        script=script.name,
        script_version=script.version,
        params=dict(params),
        run_dir=str(run_dir),
        created=plumbing.now(),
        time_limit=script.time_limit,
        stage_count=getattr(script, "stage_count", None),
        job_id=f"regio-run-{run_id}",
        trigger=trigger,
        trigger_detail=dict(trigger_detail) if trigger_detail is not None else None,
        client_key=client_key,
        request_digest=request_digest,
    )
    try:
        with connect(db_path) as db:
            db["runs"].insert({k: _encode(v) for k, v in asdict(run).items()})  # type: ignore[union-attr]
    except sqlite3.IntegrityError:
        holder = find_by_client_key(db_path, session_id, client_key) if client_key else None
        if holder is None:
            raise
        shutil.rmtree(run_dir, ignore_errors=True)
        raise ClientKeyTaken(holder.id) from None
    return run


def find_by_client_key(db_path: Path | str, session_id: str, client_key: str) -> Run | None:
    """The run of the session launched with this client key, if any."""
    with connect(db_path) as db:
        row = db.execute(
            "SELECT * FROM runs WHERE session_id = ? AND client_key = ?", [session_id, client_key]
        ).fetchone()
    return Run.from_row(row) if row is not None else None


def get(db_path: Path | str, run_id: str) -> Run:
    """The run with this id; RunNotFound if there is none."""
    with connect(db_path) as db:
        row = db.execute("SELECT * FROM runs WHERE id = ?", [run_id]).fetchone()
    if row is None:
        raise RunNotFound(run_id)
    return Run.from_row(row)


def list_runs(db_path: Path | str, session_id: str) -> list[Run]:
    """The runs of a session, newest first."""
    with connect(db_path) as db:
        rows = db.execute(
            "SELECT * FROM runs WHERE session_id = ? ORDER BY created DESC, id", [session_id]
        ).fetchall()
    return [Run.from_row(r) for r in rows]


class ActiveRuns(PhaseError):
    """The session has runs that are queued or running: it cannot be deleted."""


def delete_session_runs(
    db_path: Path | str, session_id: str, remove_files: Callable[[], None]
) -> int:
    """Delete the records of a session's runs, all of them or none; returns how many.

    Under the database's write lock (no worker can start, end or add a run meanwhile): refused
    with :class:`ActiveRuns` while a run is QUEUED or EXECUTING; else ``remove_files()`` is
    called (it takes the session's folder away; an exception from it keeps every record) and
    the records are deleted in the same transaction."""
    with connect(db_path) as db, sqlitedb.transaction(db):
        active = db.execute(
            "SELECT count(*) FROM runs WHERE session_id = ? AND phase IN (?, ?)",
            [session_id, QUEUED, EXECUTING],
        ).fetchone()[0]
        if active:
            raise ActiveRuns(
                f"the session has {active} queued or running run(s): cancel them or wait for "
                "them to end before deleting it"
            )
        remove_files()
        return db.execute("DELETE FROM runs WHERE session_id = ?", [session_id]).rowcount


def list_active(db_path: Path | str) -> list[Run]:
    """Every run not yet in a final phase (QUEUED or EXECUTING), oldest first."""
    with connect(db_path) as db:
        rows = db.execute(
            "SELECT * FROM runs WHERE phase IN (?, ?) ORDER BY created, id", [QUEUED, EXECUTING]
        ).fetchall()
    return [Run.from_row(r) for r in rows]


def update(
    db_path: Path | str,
    run_id: str,
    *,
    expect: Mapping[str, Any] | None = None,
    **changes: Any,
) -> Run:
    """Change a run's fields in one conditional statement; returns the updated run.

    With ``phase`` in ``changes`` the run must be in one of the phases it is legal to come from
    (``SOURCES``); without, it must not be in a final phase. ``expect`` adds equality conditions
    (``expect={"phase": "QUEUED"}``, ``{"requeues": 0}``). PhaseError if a condition does not
    hold, RunNotFound if there is no such run.
    """
    columns = {f.name for f in fields(Run)} - {"id"}
    unknown = (set(changes) | set(expect or {})) - columns
    if unknown or not changes:
        raise ValueError(f"nothing to update, or unknown run field(s): {sorted(unknown)}")
    phase = changes.get("phase")
    if phase is not None and phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}")
    allowed = SOURCES[phase] if phase else frozenset({QUEUED, EXECUTING})
    if not allowed:
        raise PhaseError(f"a run cannot go back to {phase}")
    where = ["id = ?", f"phase IN ({', '.join('?' * len(allowed))})"]
    args: list[Any] = [run_id, *sorted(allowed)]
    for key, value in (expect or {}).items():
        where.append(f"{key} IS ?")
        args.append(value)
    assignments = ", ".join(f"{key} = ?" for key in changes)
    values = [_encode(v) for v in changes.values()]
    with connect(db_path) as db:
        sql = f"UPDATE runs SET {assignments} WHERE {' AND '.join(where)}"
        applied = db.execute(sql, values + args).rowcount == 1
        row = db.execute("SELECT * FROM runs WHERE id = ?", [run_id]).fetchone()
    if row is None:
        raise RunNotFound(run_id)
    run = Run.from_row(row)
    if not applied:
        wanted = f"become {phase}" if phase else "change"
        raise PhaseError(f"run {run_id} is {run.phase}: it cannot {wanted} (expected {expect})")
    return run


def finish(
    db_path: Path | str,
    run_id: str,
    phase: str,
    *,
    expect: Mapping[str, Any] | None = None,
    bundle_files: Mapping[str, Path | str] | None = None,
    **changes: Any,
) -> Run:
    """Move a run to a final phase (``update``), with ``provenance.json`` written beforehand.

    Readers that see a final phase thus always find the provenance. With ``bundle_files`` (the
    runner, once the script and its descendants are gone) the bundle is made too, before the
    update, from the run folder plus those files (``bundle``'s ``extra_files``); without (a run
    cancelled while queued, one settled by the reconciler), any ``bundle.zip`` in the folder is
    removed, so a bundle is never one a script made: the web app makes it on first request.
    A bundle that cannot be made is logged and left to the web app.

    If the update loses a race (PhaseError), the provenance (and bundle) are written again from
    the record that won, then the error raised.
    """
    if phase not in TERMINAL:
        raise ValueError(f"{phase} is not a final phase")
    current = get(db_path, run_id)
    final = replace(current, phase=phase, **changes)
    write_provenance(final)
    _end_bundle(final.run_dir, bundle_files)
    try:
        return update(db_path, run_id, phase=phase, expect=expect, **changes)
    except PhaseError:
        winner = get(db_path, run_id)
        write_provenance(winner)
        _end_bundle(winner.run_dir, bundle_files)
        raise


def _end_bundle(run_dir: Path | str, bundle_files: Mapping[str, Path | str] | None) -> None:
    if bundle_files is None:
        _make_room(Path(run_dir) / BUNDLE)
        return
    try:
        bundle(run_dir, extra_files=bundle_files)
    except (OSError, ValueError, zipfile.LargeZipFile) as exc:
        log.warning("the bundle of %s could not be made: %s", run_dir, exc)
        with contextlib.suppress(OSError):
            _make_room(Path(run_dir) / BUNDLE)


def queue_position(run: Run, redis_conn: Any, queue_name: str = "regio") -> int | None:
    """How many runs are ahead of a QUEUED run in the queue (0: next); None if not waiting.

    Reads rq's queue list (``rq:queue:<name>``) directly so this module needs no rq import;
    ``tests/test_runs.py`` checks it against rq's own ``Job.get_position``.
    """
    if run.phase != QUEUED or not run.job_id:
        return None
    return redis_conn.lpos(f"rq:queue:{queue_name}", run.job_id)


# ---------------------------------------------------------------------------------- run folder


def _parts(name: str) -> tuple[str, ...]:
    """The components of a '/'-separated name relative to a run folder; ValueError for a name
    that is empty, absolute, or steps out with '..'."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise ValueError(f"invalid file name {name!r}")
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"invalid file name {name!r}: it must stay inside the run folder")
    return rel.parts


def open_run_file(run_dir: Path | str, name: str) -> IO[bytes]:
    """Open the file ``name`` (relative, '/'-separated) of a run folder for reading, following
    no symbolic link on the way (each folder is opened with ``O_NOFOLLOW`` from the one above).

    ValueError: the name leaves the folder, or a symbolic link stands on its path;
    FileNotFoundError: no such file, or not a regular file (a folder, a FIFO, a device).
    """
    parts = _parts(name)
    folder = os.open(run_dir, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, _DIR_FLAGS, dir_fd=folder)
            except NotADirectoryError:
                _refuse_link(folder, part, name)
                raise FileNotFoundError(errno.ENOENT, "not a folder", name) from None
            os.close(folder)
            folder = inner
        try:
            fd = os.open(parts[-1], _READ_FLAGS, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ValueError(f"{name!r} is a symbolic link: it is not served") from None
            raise
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "not a regular file", name)
    return os.fdopen(fd, "rb")


def _refuse_link(folder: int, part: str, name: str) -> None:
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.lstat(part, dir_fd=folder).st_mode):
            raise ValueError(f"{name!r} leads through a symbolic link: it is not served")


def _open_outside(path: Path | str) -> IO[bytes]:
    """Open a file outside run folders (a session's region file) without following a symbolic
    link in its last component; FileNotFoundError unless it is a regular file."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileNotFoundError(errno.ENOENT, "a symbolic link", str(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path))
    return os.fdopen(fd, "rb")


def _make_room(path: Path) -> None:
    """Remove ``path`` unless it is missing: the runner's files (provenance, bundle) replace
    whatever a script left under their names (a folder, a link, a FIFO)."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def disarm(run_dir: Path | str, limit: int = 100_000) -> int:
    """Clear the set-user-ID and set-group-ID bits a script left on the files of its run folder
    (a script of a worker running as root could leave a set-user-ID-root program there for
    whoever can reach the folder); links are not followed. Returns how many files changed."""
    changed = 0
    todo = [Path(run_dir)]
    seen = 0
    while todo and seen < limit:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    todo.append(Path(entry.path))
                if info.st_mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISLNK(info.st_mode):
                    os.chmod(entry.path, stat.S_IMODE(info.st_mode) & ~0o6000)
                    changed += 1
            except OSError:
                continue
    return changed


def read_input(run_dir: Path | str) -> dict[str, Any]:
    with open_run_file(run_dir, INPUT) as f:
        return json.load(f)


def input_exposures(run_dir: Path | str) -> list[str] | None:
    """The exposure ids a run was given (its input file's observations), or None when the file
    cannot be read as written by ``create``."""
    try:
        data = read_input(run_dir)
        return [str(o["exposure_id"]) for o in data["observations"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_log(
    run_dir: Path | str, offset: int = 0, max_bytes: int = MAX_LOG_CHUNK
) -> tuple[str, int]:
    """The log text from byte ``offset`` and the offset to ask for next (live tailing).

    Never splits a UTF-8 character: an incomplete character at the end is left for the next call,
    and an offset inside a character skips to the next one. Bytes that are not UTF-8 (a script
    printing Latin-1) come out as U+FFFD. A log that is not a regular file (a symbolic link a
    script left) reads as no log.
    """
    if offset < 0:
        raise ValueError("the log offset must be >= 0")
    try:
        f = open_run_file(run_dir, LOG)
    except (OSError, ValueError):
        return "", 0
    with f:
        size = os.fstat(f.fileno()).st_size
        if offset >= size:
            return "", size
        f.seek(offset)
        data = f.read(max_bytes)
    start = 0
    while start < min(len(data), 3) and data[start] & 0xC0 == 0x80:  # inside a character
        start += 1
    end = len(data) - _incomplete_tail(data)
    return data[start:end].decode("utf-8", errors="replace"), offset + end


def _incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` are the start of an unfinished UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): is its character complete?
            return back if _utf8_length(byte) > back else 0
    return 0


def _utf8_length(lead: int) -> int:
    """Bytes in the UTF-8 character starting with byte ``lead`` (1 for ASCII or a stray byte)."""
    for length, shift, prefix in ((2, 5, 0b110), (3, 4, 0b1110), (4, 3, 0b11110)):
        if lead >> shift == prefix:
            return length
    return 1


def log_tail(run_dir: Path | str, lines: int = LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of the log (from its last ``max_bytes``)."""
    try:
        with open_run_file(run_dir, LOG) as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - max_bytes))
            data = f.read(max_bytes)
    except (OSError, ValueError):
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(deque(text.splitlines(), maxlen=lines))


def log_line(message: str) -> bytes:
    """A runner line of the log, ``[regio] message`` (the script's lines stay as it wrote them)."""
    return f"[regio] {message}\n".encode()


def _open_append(run_dir: Path | str) -> int:
    folder = os.open(run_dir, _DIR_FLAGS)
    try:
        fd = os.open(LOG, _APPEND_FLAGS, 0o644, dir_fd=folder)
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "not a regular file", LOG)
    return fd


def open_log(run_dir: Path | str) -> IO[bytes]:
    """The log opened for appending (unbuffered), created if missing, without following a
    symbolic link; whatever else stands under its name (a link, a folder) is replaced."""
    try:
        fd = _open_append(run_dir)
    except OSError as exc:  # ELOOP: a link; EISDIR: a folder; ENXIO: a FIFO; ENOENT: special
        bad = (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOENT)
        if exc.errno not in bad or not Path(run_dir).is_dir():
            raise
        log.warning("replacing a log that is not a regular file in %s: %s", run_dir, exc)
        _make_room(Path(run_dir) / LOG)
        fd = _open_append(run_dir)
    return os.fdopen(fd, "ab", buffering=0)


def append_log(run_dir: Path | str, message: str) -> None:
    """Append a runner line (``log_line``) to the log (``open_log``)."""
    with open_log(run_dir) as f:
        f.write(log_line(message))


def product_path(run_dir: Path | str, name: str) -> Path:
    """The file of product ``name`` (relative to ``output/``), checked as ``open_product`` does.

    ValueError for anything that could leave the output folder: an absolute path, ``..``, a
    symbolic link anywhere on its path; FileNotFoundError if there is no such regular file.
    Reading the path afterwards follows links again: serve a product with ``open_product``.
    """
    with open_product(run_dir, name):
        pass
    return Path(run_dir).resolve() / OUTPUT / PurePosixPath(name)


def open_product(run_dir: Path | str, name: str) -> IO[bytes]:
    """Open product ``name`` (relative to ``output/``) for reading (``open_run_file``).

    ValueError ("invalid product name") for a name leaving the output folder or a symbolic link
    on its path; FileNotFoundError if there is no such regular file.
    """
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise ValueError(f"invalid product name {name!r}")
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"invalid product name {name!r}: it must stay inside the output folder")
    try:
        return open_run_file(run_dir, f"{OUTPUT}/{rel.as_posix()}")
    except ValueError as exc:
        raise ValueError(f"invalid product name {name!r}: {exc}") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"no product {name!r}") from None
    except NotADirectoryError:
        raise FileNotFoundError(f"no product {name!r}") from None


def _product_size(run_dir: Path | str, name: str) -> int | None:
    try:
        with open_product(run_dir, name) as f:
            return os.fstat(f.fileno()).st_size
    except (OSError, ValueError):
        return None


def _output_files(run_dir: Path | str) -> list[tuple[str, int]]:
    """(name, size) of the regular files below ``output/``, sorted, never entering a symbolic
    link; at most ``MAX_PRODUCTS`` + 1 files and ``MAX_DEPTH`` levels are looked at."""
    found: list[tuple[tuple[str, ...], int]] = []
    todo: list[tuple[Path, tuple[str, ...]]] = [(Path(run_dir) / OUTPUT, ())]
    while todo and len(found) <= MAX_PRODUCTS:
        folder, prefix = todo.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            parts = (*prefix, entry.name)
            try:
                if entry.is_dir(follow_symlinks=False):
                    if len(parts) < MAX_DEPTH:
                        todo.append((Path(entry.path), parts))
                elif entry.is_file(follow_symlinks=False):
                    found.append((parts, entry.stat(follow_symlinks=False).st_size))
            except OSError:
                continue
    return [("/".join(parts), size) for parts, size in sorted(found)]


def list_products(run_dir: Path | str) -> list[dict[str, Any]]:
    """The run's products: the entries of ``output/products.json`` whose file exists, then any
    other file of the output folder as kind ``other`` (scripts not using the kit still list).
    Symbolic links and special files are not products."""
    declared: list[dict[str, Any]] = []
    try:
        with open_run_file(run_dir, f"{OUTPUT}/{PRODUCTS_MANIFEST}") as f:
            entries = json.load(f)
    except (OSError, ValueError):
        entries = []
    seen: set[str] = {PRODUCTS_MANIFEST}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            continue
        if entry["file"] in seen:
            continue
        size = _product_size(run_dir, entry["file"])
        if size is None:
            continue
        seen.add(entry["file"])
        declared.append({**entry, "size": size})
        if len(declared) >= MAX_PRODUCTS:
            break
    undeclared = [
        {"file": rel, "kind": "other", "description": "", "obsid": None, "camera": None}
        | {"size": size}
        for rel, size in _output_files(run_dir)
        if rel not in seen and not rel.endswith(".tmp")
    ]
    return (declared + undeclared)[:MAX_PRODUCTS]


def write_provenance(run: Run, **extra: Any) -> Path:
    """Write ``provenance.json``: what ran, on what, where and when (``extra`` keys are added).

    ``finish`` writes it whenever a run reaches a final phase."""
    from app import __version__

    try:
        data = read_input(run.run_dir)
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    keys = ("obsid", "camera", "path", "sha256", "checksum", "md5")
    observations = data.get("observations", [])
    observations = (
        [o for o in observations if isinstance(o, dict)] if isinstance(observations, list) else []
    )
    inputs = [{k: obs[k] for k in keys if k in obs} for obs in observations]
    record = {
        "run_id": run.id,
        "session_id": run.session_id,
        "script": {"name": run.script, "version": run.script_version},
        "params": run.params,
        "regio_version": __version__,
        "input_regio_version": data.get("regio_version"),
        "inputs": inputs,
        "phase": run.phase,
        "exit_code": run.exit_code,
        "error": run.error,
        "created": run.created,
        "started": run.started,
        "ended": run.ended,
        "host": run.host,
        "worker": run.worker,
        "log_dropped": run.log_dropped,
        **extra,
    }
    path = Path(run.run_dir) / PROVENANCE
    _make_room(path)
    plumbing.write_json(path, record, default=str)
    return path


def open_bundle(run_dir: Path | str) -> IO[bytes]:
    """Open the run's ``bundle.zip`` (``open_run_file``); FileNotFoundError when there is none
    (or an empty one)."""
    f = open_run_file(run_dir, BUNDLE)
    if os.fstat(f.fileno()).st_size == 0:
        f.close()
        raise FileNotFoundError(errno.ENOENT, "an empty bundle", BUNDLE)
    return f


def bundle(
    run_dir: Path | str,
    extra_files: Mapping[str, Path | str] | None = None,
    dest: Path | str | None = None,
    extra_data: Mapping[str, bytes] | None = None,
) -> Path:
    """A zip of the run: products, log, input, provenance, plus ``extra_files`` and
    ``extra_data``.

    ``extra_files`` maps names in the archive (``"regions/source.reg"``) to files (e.g. the
    session's regions); ``extra_data`` maps names to contents made by Regio, never read from the
    run folder (``review.json``: the products' marks and comments, ``app.review``). Everything
    sits under a top folder named after the run folder. Every member is opened without following
    symbolic links (``open_run_file``): a link or a file that vanished is left out. The zip is
    written to ``dest`` (default ``<run_dir>/bundle.zip``) atomically; returns its path.
    """
    run_dir = Path(run_dir)
    top = run_dir.name
    members: list[tuple[str, str]] = [(name, name) for name in (INPUT, LOG, PROVENANCE)]
    for product in list_products(run_dir):
        name = f"{OUTPUT}/{product['file']}"
        members.append((name, name))
    members.append((f"{OUTPUT}/{PRODUCTS_MANIFEST}", f"{OUTPUT}/{PRODUCTS_MANIFEST}"))
    extras: list[tuple[Path, str]] = []
    for arcname, path in (extra_files or {}).items():
        rel = PurePosixPath(arcname)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"invalid name in the bundle: {arcname!r}")
        extras.append((Path(path), rel.as_posix()))
    contents: list[tuple[bytes, str]] = []
    for arcname, content in (extra_data or {}).items():
        rel = PurePosixPath(arcname)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"invalid name in the bundle: {arcname!r}")
        contents.append((bytes(content), rel.as_posix()))
    dest = Path(dest) if dest else run_dir / BUNDLE
    _make_room(dest)
    with (
        plumbing.atomic_path(dest) as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf,
    ):
        for name, arcname in members:
            try:
                f = open_run_file(run_dir, name)
            except (OSError, ValueError):
                continue
            with f:
                _zip_member(zf, f, f"{top}/{arcname}")
        for path, arcname in extras:
            try:
                f = _open_outside(path)
            except OSError:
                continue
            with f:
                _zip_member(zf, f, f"{top}/{arcname}")
        for content, arcname in contents:
            member = zipfile.ZipInfo(f"{top}/{arcname}", date_time=time.localtime()[:6])
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            zf.writestr(member, content)
    return dest


def _zip_member(zf: zipfile.ZipFile, f: IO[bytes], arcname: str) -> None:
    """Copy an open file into the zip as ``arcname`` (streamed, never whole in memory)."""
    info = os.fstat(f.fileno())
    when = time.localtime(max(info.st_mtime, 315532800))[:6]  # zip dates start in 1980
    member = zipfile.ZipInfo(arcname, date_time=when)
    member.compress_type = zipfile.ZIP_DEFLATED
    member.external_attr = 0o644 << 16
    member.file_size = info.st_size
    with zf.open(member, "w", force_zip64=info.st_size > 1 << 30) as out:
        shutil.copyfileobj(f, out, 1 << 20)
