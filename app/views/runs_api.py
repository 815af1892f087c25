"""The JSON API of scripts and runs: launch, follow (log, server-sent events), cancel, products.

Plain modules do the work: ``app.launch`` (checks and queues a run), ``app.catalog`` (scripts),
``app.runs`` (records, run folders), ``app.jobs`` (the queue). Views parse and shape.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
from flask import Blueprint, Response, abort, current_app, jsonify, request, send_file, url_for

from app import auth, automation, bodies, catalog, jobs, launch, runs
from app.archive import load_index
from app.sessions import SessionNotFound
from app.views.api import json_body, load_session, session_store, settings
from indexer.index import IndexNotFound

bp = Blueprint("runs_api", __name__, url_prefix="/api")

#: Seconds between two looks at the log and the record while a stream is open.
STREAM_POLL = 0.25
#: Seconds between keep-alive comments on an idle stream (proxies close silent connections).
STREAM_KEEPALIVE = 15.0
#: Bytes of log a stream reads at once; it lets the other streams run between two reads.
STREAM_CHUNK = 64 * 1024
#: Seconds after which a stream reads its run's record again even if the database looks unchanged.
STREAM_RECORD_REFRESH = 5.0
#: Seconds a stream counts for its user without a refresh: the streams of a killed web process
#: stop counting after this long (open streams refresh every third of it).
STREAM_LEASE = 60.0
#: Streams woken at once when their run changed, and the pause between two such batches.
WAKE_BATCH = 50
WAKE_PAUSE = 0.002


def db_path():
    return runs.db_path(settings()["SESSIONS"])


def redis_conn():
    return current_app.extensions["regio.redis"]


def scripts() -> dict[str, catalog.Script]:
    return catalog.load_catalog(settings()["SCRIPTS"])


def get_run(run_id: str, needed: str = "read") -> runs.Run:
    """The run, if the request may ``needed`` its session (404 when it may not see it)."""
    try:
        run = runs.get(db_path(), run_id)
    except (runs.RunNotFound, ValueError):
        abort(404, description=f"no run {run_id!s:.40}")
    try:
        record = session_store().record(run.session_id)
    except SessionNotFound:
        abort(404, description=f"no run {run_id!s:.40}")
    auth.require(record, needed)
    return run


def run_json(run: runs.Run) -> dict[str, Any]:
    out = run.to_json()
    out["queue_position"] = (
        runs.queue_position(run, redis_conn()) if run.phase == runs.QUEUED else None
    )
    out["links"] = {
        "self": url_for("runs_api.get_run_view", run_id=run.id),
        "session": url_for("api.get_session", session_id=run.session_id),
        "log": url_for("runs_api.run_log", run_id=run.id),
        "events": url_for("runs_api.run_events", run_id=run.id),
        "products": url_for("runs_api.run_products", run_id=run.id),
        "bundle": url_for("runs_api.run_bundle", run_id=run.id),
        "cancel": url_for("runs_api.cancel_run", run_id=run.id),
    }
    return out


@bp.get("/scripts")
def list_scripts():
    """The scripts users can run: name, title, documentation, parameters, products, accepted
    data. With ``?session=ID``, only those that accept every exposure the session selects.
    Parameters show the saved defaults (``app.automation.with_defaults``) of the session's
    owner (without a session: the user's)."""
    available = scripts()
    session_id = request.args.get("session")
    owner = auth.owner_id()  # whose saved defaults the form shows: the session owner's
    if session_id is None:
        chosen = [available[n] for n in sorted(available)]
    else:
        owner = load_session(session_id).get("owner")  # 404 when the user may not see it
        chosen = launch.fitting_scripts(available, session_store().selected_rows(session_id))
    defaults_db = automation.db_path(settings()["SESSIONS"])
    return jsonify(automation.with_defaults([s.to_json() for s in chosen], available,
                                            defaults_db, owner))  # fmt: skip


def _pixel_wcs_index():
    """The index, whose pixel WCS saves a launch from opening files (None: the files are read)."""
    try:
        return load_index(settings())
    except IndexNotFound:
        return None


@bp.post("/sessions/<session_id>/runs")
def create_run(session_id: str):
    """Queue a run of a script on the session's regions and selected observations (202).

    With a ``client_key`` (a fresh random string per intended run), the key names one run of the
    session: the same key and request again answer that run (200), another request with the key
    is refused (422)."""
    record = load_session(session_id, "write")  # 404 / 403 first
    body = json_body()
    unknown = set(body) - {"script", "params", "client_key"}
    if unknown:
        abort(400, description=f"unknown field(s): {', '.join(sorted(unknown)):.200}")
    asked = (session_store(), db_path(), redis_conn(), scripts(), session_id)
    what = (body.get("script"), body.get("params"))
    owner, index = record.get("owner") or "", _pixel_wcs_index()
    created = True
    try:
        if "client_key" not in body:
            run = launch.launch(*asked, *what, owner, index=index)
        else:
            key = body["client_key"]
            run, created = launch.launch_once(*asked, *what, owner, client_key=key, index=index)
    except launch.LaunchError as exc:
        abort(400, description=str(exc))
    except launch.ClientKeyReused as exc:
        abort(422, description=str(exc))
    response = jsonify(run_json(run))  # the record as stored: no second read of the database
    response.status_code = 202 if created else 200
    response.headers["Location"] = url_for("runs_api.get_run_view", run_id=run.id)
    return response


@bp.get("/sessions/<session_id>/runs")
def list_session_runs(session_id: str):
    """The runs of a session, newest first, each with the exposures it ran on (``exposures``,
    from its input file; null when unreadable): the page's history re-runs on them."""
    load_session(session_id)
    out = []
    for run in runs.list_runs(db_path(), session_id):
        entry = run_json(run)
        entry["exposures"] = runs.input_exposures(run.run_dir)
        out.append(entry)
    return jsonify(out)


@bp.get("/runs/<run_id>")
def get_run_view(run_id: str):
    """A run: phase, stage, progress, queue position, times, exit code, error."""
    return jsonify(run_json(get_run(run_id)))


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str):
    """Cancel a queued or running run (its processes are killed); 409 if it has ended."""
    run = get_run(run_id, "write")
    if run.terminal:
        abort(409, description=f"the run has already ended ({run.phase})")
    run = jobs.cancel(run.id, db_path(), redis_conn(), wait=5.0)
    return jsonify(run_json(run)), 200 if run.terminal else 202


def _offset_arg(raw: str | None = None, name: str = "'offset'") -> int:
    """A byte offset argument (``?offset=`` by default) in ASCII digits, else a 400 (see
    ``app.bodies.byte_offset``: ``str.isdigit`` also accepts '²', which ``int`` refuses)."""
    try:
        return bodies.byte_offset(request.args.get("offset", "0") if raw is None else raw, name)
    except bodies.InputError as exc:
        abort(400, description=str(exc))


@bp.get("/runs/<run_id>/log")
def run_log(run_id: str):
    """The log from a byte offset (text/plain); ``X-Next-Offset`` says where to continue."""
    run = get_run(run_id)
    text, next_offset = runs.read_log(run.run_dir, _offset_arg())
    response = Response(text, mimetype="text/plain")
    response.headers["X-Next-Offset"] = str(next_offset)
    response.headers["X-Run-Phase"] = run.phase
    return response


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    body = "".join(f"data: {line}\n" for line in payload.split("\n"))
    return f"{head}event: {event}\n{body}\n"


def _state(run: runs.Run) -> dict[str, Any]:
    return {
        "phase": run.phase,
        "stage": run.stage,
        "stages": [s.get("name") for s in run.stages],
        "progress": [run.progress_done, run.progress_total],
        "error": run.error,
    }


class _Records:
    """The run records the open streams of this web process follow, read once for all of them.

    A stream looks at its run four times a second; a thousand streams each reading SQLite every
    time would keep a core busy. A record is read again only when the database changed, and then
    once for every stream of that run. A change shows in the file's header: SQLite increments its
    file change counter (bytes 24-27) at every commit in rollback-journal mode (``app.db``); its
    size and modification time are compared too. The header is read at most every
    ``STREAM_POLL / 5`` seconds, and a record is read again after ``STREAM_RECORD_REFRESH``
    seconds whatever the header says. Under gevent the streams are greenlets of one thread;
    under gthread two threads at worst read the same record twice.
    """

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], tuple[Any, float, runs.Run]] = {}
        self._files: dict[str, tuple[float, Any]] = {}

    def _signature(self, path: str, now: float) -> Any:
        seen = self._files.get(path)
        if seen is not None and now - seen[0] < STREAM_POLL / 5:
            return seen[1]
        try:
            with open(path, "rb") as f:
                header = f.read(28)
                st = os.fstat(f.fileno())
            signature: Any = (header[24:28], st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            signature = None
        self._files[path] = (now, signature)
        return signature

    def get(self, path: Any, run_id: str) -> runs.Run:
        now = time.monotonic()
        key = (str(path), run_id)
        signature = self._signature(key[0], now)  # taken before the read: never newer than it
        hit = self._runs.get(key)
        if hit is not None and hit[0] == signature and now - hit[1] < STREAM_RECORD_REFRESH:
            return hit[2]
        run = runs.get(path, run_id)
        if len(self._runs) >= self.MAX_ENTRIES:
            self._runs = {k: v for k, v in self._runs.items() if now - v[1] < STREAM_RECORD_REFRESH}
        self._runs[key] = (signature, now, run)
        return run


_records = _Records()


class StreamSlot:
    """One live log stream counted against its user's ``REGIO_STREAMS_PER_USER``.

    The count lives in Redis (a sorted set per user, members expiring ``STREAM_LEASE`` seconds
    after their last refresh), so it holds across web processes and hosts, and the streams of a
    killed process stop counting by themselves. Redis unreachable: the stream is let through
    uncounted (a Redis outage must not cut the live logs, which do not need Redis).
    """

    _TAKE = """
    local now = tonumber(ARGV[1])
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
    if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
    redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
    return 1
    """

    def __init__(self, conn: Any, owner: str, limit: int) -> None:
        self.conn = conn
        self.key = f"regio:streams:{owner}"
        self.limit = limit
        self.member = secrets.token_hex(8)
        self.counted = False
        self.next_refresh = 0.0

    def take(self) -> bool:
        """Count this stream; False when the user already has ``limit`` streams open."""
        try:
            taken = self.conn.eval(
                self._TAKE, 1, self.key, time.time(), self.limit, STREAM_LEASE, self.member
            )
        except redis.RedisError as exc:
            current_app.logger.warning("live log streams not counted (Redis: %s)", exc)
            return True
        self.counted = bool(taken)
        self.next_refresh = time.monotonic() + STREAM_LEASE / 3
        return self.counted

    def refresh(self) -> None:
        """Extend the lease (at most every third of it); called by the open stream."""
        if not self.counted or time.monotonic() < self.next_refresh:
            return
        self.next_refresh = time.monotonic() + STREAM_LEASE / 3
        with contextlib.suppress(redis.RedisError):
            self.conn.zadd(self.key, {self.member: time.time() + STREAM_LEASE}, xx=True)
            self.conn.expire(self.key, int(STREAM_LEASE) + 1)

    def release(self) -> None:
        if self.counted:
            self.counted = False
            with contextlib.suppress(redis.RedisError):
                self.conn.zrem(self.key, self.member)


def _log_line(raw: bytes) -> str:
    """A log line as an SSE event carries it: decoded (U+FFFD for bytes that are not UTF-8) and
    shown as a terminal would (``50%\r60%`` is ``60%``): a carriage return ends an SSE line."""
    return raw.decode("utf-8", errors="replace").rstrip("\r").rsplit("\r", 1)[-1]


def _utf8_complete(data: bytes) -> int:
    """The length of ``data`` without an unfinished UTF-8 character at its end."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    decoder.decode(data, final=False)
    return len(data) - len(decoder.getstate()[0])


class _Watched:
    """A run the open streams of this process follow: what the watcher saw last (``seen``:
    version, record, log size, error; the version grows with every change) and the streams
    waiting for the next change."""

    def __init__(self, path: Any, run_id: str) -> None:
        self.path, self.run_id = path, run_id
        self.log_path = ""
        self.seen: tuple[int, runs.Run | None, int, Exception | None] = (0, None, 0, None)
        self.streams = 0
        self.waiters: set[threading.Event] = set()
        self._chunk: tuple[Any, tuple[str, int, bool]] | None = None

    def look(self) -> bool:
        """Read the record (``_records``) and the log's size; True if something changed."""
        version, old_run, old_size, old_error = self.seen
        try:
            run = _records.get(self.path, self.run_id)
            self.log_path = os.path.join(run.run_dir, runs.LOG)
            try:
                size = os.stat(self.log_path).st_size
            except OSError:
                size = 0
            error = None
        except Exception as exc:  # the run vanished, the database is locked...: tell the streams
            run, size, error = old_run, old_size, exc
        if run is old_run and size == old_size and (error is None) == (old_error is None):
            return False
        self.seen = (version + 1, run, size, error)
        return True

    def wake(self) -> None:
        """Wake the waiting streams, ``WAKE_BATCH`` at a time with a pause between: a thousand
        streams woken at once would all send before the web process answers anything else."""
        waiting = list(self.waiters)
        for start in range(0, len(waiting), WAKE_BATCH):
            if start:
                time.sleep(WAKE_PAUSE)
            for event in waiting[start : start + WAKE_BATCH]:
                event.set()

    def wait(self, event: threading.Event, version: int, timeout: float) -> None:
        """Wait until a change after ``version`` (or ``timeout`` seconds)."""
        event.clear()
        self.waiters.add(event)  # before looking at the version: a change now still wakes us
        try:
            if self.seen[0] == version:
                event.wait(timeout)
        finally:
            self.waiters.discard(event)

    def events(self, offset: int, size: int, terminal: bool) -> tuple[str, int, bool]:
        """The SSE text of the log from ``offset`` (at most ``STREAM_CHUNK`` bytes read), the
        offset after it, and whether a full chunk was read (more may follow at once). Streams that
        follow the run in step share one read."""
        key = (offset, size, terminal)
        if self._chunk is not None and self._chunk[0] == key:
            return self._chunk[1]
        data = b""
        if size > offset:
            with contextlib.suppress(FileNotFoundError), open(self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read(STREAM_CHUNK)
        *lines, rest = data.split(b"\n")
        out = []
        for raw in lines:
            offset += len(raw) + 1
            out.append(_sse("log", _log_line(raw), offset))
        full = len(data) == STREAM_CHUNK
        if rest and ((terminal and not full) or (full and not lines)):
            # the last line of an ended run's log, or a piece of a line longer than a chunk
            cut = len(rest) if not full else _utf8_complete(rest)
            offset += cut
            out.append(_sse("log", _log_line(rest[:cut]), offset))
        result = ("".join(out), offset, full)
        self._chunk = (key, result)
        return result


class _Watcher:
    """One loop per web process looks at every run its open streams follow, every
    ``STREAM_POLL`` seconds, and wakes a run's streams when its log grew or its record changed.

    A thousand streams of one run cost one ``stat`` and one record check per look, not a
    thousand; a stream wakes only when there is something to send (or a keep-alive is due). The
    loop is a thread (a greenlet under gevent), started with the first stream and ended with the
    last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], _Watched] = {}
        self._running = False

    def subscribe(self, path: Any, run_id: str) -> _Watched:
        with self._lock:
            watched = self._runs.get((str(path), run_id))
            if watched is None:
                watched = self._runs[(str(path), run_id)] = _Watched(path, run_id)
                watched.look()
            watched.streams += 1
            if not self._running:
                self._running = True
                threading.Thread(target=self._loop, name="regio-streams", daemon=True).start()
        return watched

    def unsubscribe(self, watched: _Watched) -> None:
        with self._lock:
            watched.streams -= 1
            if watched.streams <= 0:
                self._runs.pop((str(watched.path), watched.run_id), None)

    def _loop(self) -> None:
        while True:
            time.sleep(STREAM_POLL)
            with self._lock:
                if not self._runs:
                    self._running = False
                    return
                watched = list(self._runs.values())
            for one in [one for one in watched if one.look()]:
                one.wake()


_watcher = _Watcher()


def event_stream(path, run_id: str, offset: int, slot: StreamSlot | None = None) -> Iterator[str]:
    """Server-sent events of a run: ``log`` (one per line; id = byte offset after it), ``state``
    (phase, stage, progress: sent at start and on every change) and ``end`` once the run has
    ended and its log is drained. Resuming with ``Last-Event-ID`` continues after that line.

    Cheap enough for a thousand open streams per web process (``bench/streams.py``): a stream
    waits until its run changes (``_Watcher``: one look at the log's size and at the record per
    run every ``STREAM_POLL`` seconds, whatever the number of streams), reads the log only when it
    grew, at most ``STREAM_CHUNK`` bytes at a time (streams in step share the read), and sends
    what it read in one write. Under gevent the waits are cooperative. Lines are split on ``\\n`` only; a line longer than a chunk (the
    runner cuts longer ones) goes out in pieces.
    """
    watched = _watcher.subscribe(path, run_id)
    wakeup = threading.Event()
    try:
        yield "retry: 2000\n\n"
        last_run: runs.Run | None = None
        last_state = None
        last_sent = time.monotonic()
        seen: tuple[int, int] | None = None  # (version, offset) last handled
        while True:
            version, run, size, error = watched.seen
            if run is None:
                raise RuntimeError(f"run {run_id} cannot be read: {error}")
            out = []
            if run is not last_run:  # the record was read again: did the state change?
                last_run, state = run, _state(run)
                if state != last_state:
                    out.append(_sse("state", state, offset))
                    last_state = state
            more = False
            if seen != (version, offset) or run.terminal:
                text, offset, full = watched.events(offset, size, run.terminal)
                out.append(text)
                more = full and offset < size
            seen = (version, offset)
            if any(out):
                yield "".join(out)
                last_sent = time.monotonic()
            if more:
                time.sleep(0)  # let the other streams and requests run, then read on
                continue
            if run.terminal and offset >= size:
                yield _sse("end", last_state, offset)
                return
            if time.monotonic() - last_sent > STREAM_KEEPALIVE:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            if slot is not None:
                slot.refresh()
            wait = STREAM_KEEPALIVE - (time.monotonic() - last_sent)
            if slot is not None:
                wait = min(wait, STREAM_LEASE / 3)
            watched.wait(wakeup, version, max(0.01, wait))
    finally:
        _watcher.unsubscribe(watched)


def _stream_owner() -> str:
    """Whose streams a request's stream counts with: the user, else the client's address."""
    user = auth.current_user()
    return f"user:{user.id}" if user is not None else f"address:{auth.client_address()}"


@bp.get("/runs/<run_id>/events")
def run_events(run_id: str):
    """Server-sent events: log lines, state changes, end. Resumes from ``Last-Event-ID``.

    A user has at most ``REGIO_STREAMS_PER_USER`` streams open (429 beyond: the page then
    follows the run by polling it)."""
    run = get_run(run_id)
    resume = request.headers.get("Last-Event-ID") or request.args.get("offset") or "0"
    resume = str(_offset_arg(resume, "Last-Event-ID (or 'offset')"))
    limit = settings()["STREAMS_PER_USER"]
    slot = StreamSlot(redis_conn(), _stream_owner(), limit)
    if not slot.take():
        response = jsonify(
            error="Too Many Requests",
            message=f"you already have {limit} live log streams open (REGIO_STREAMS_PER_USER); "
            f"close one, or poll /api/runs/{run.id} and /api/runs/{run.id}/log",
            status=429,
        )
        response.status_code = 429
        response.headers["Retry-After"] = str(int(STREAM_LEASE / 6))
        return response
    stream = event_stream(db_path(), run.id, int(resume), slot)
    response = Response(stream, mimetype="text/event-stream")
    response.call_on_close(slot.release)  # also when the stream never started
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # tell nginx-like proxies not to buffer
    return response


@bp.get("/runs/<run_id>/products")
def run_products(run_id: str):
    """The products manifest of a run: file, kind, description, obsid, camera, size, ..."""
    run = get_run(run_id)
    products = runs.list_products(run.run_dir)
    for product in products:
        product["url"] = url_for("runs_api.run_product", run_id=run.id, name=product["file"])
    return jsonify(products)


def product_file(run_id: str, name: str):
    """The file of a product the request may read: 400 for a bad name or a symbolic link, 404
    when absent. To send it, ``run_product`` opens it without following links."""
    run = get_run(run_id)
    try:
        return runs.product_path(run.run_dir, name)
    except ValueError as exc:
        abort(400, description=str(exc))
    except FileNotFoundError:
        abort(404, description=f"no product {name!s:.100} in run {run.id}")


def send_open_file(f, download_name: str, as_attachment: bool) -> Response:
    """Send a file opened by ``app.runs`` (never re-opened by path, so no link is followed on
    the way), with its size, last-modified time, ETag and byte ranges."""
    info = os.fstat(f.fileno())
    response = send_file(
        f,
        download_name=download_name,
        as_attachment=as_attachment,
        max_age=0,
        conditional=False,
        etag=False,
        last_modified=info.st_mtime,
    )
    response.content_length = info.st_size
    response.set_etag(f"{info.st_ino:x}-{info.st_size:x}-{info.st_mtime_ns:x}")
    return response.make_conditional(
        request.environ, accept_ranges=True, complete_length=info.st_size
    )


@bp.get("/runs/<run_id>/products/<path:name>")
def run_product(run_id: str, name: str):
    """Download one product file (opened without following symbolic links)."""
    run = get_run(run_id)
    try:
        f = runs.open_product(run.run_dir, name)
    except ValueError as exc:
        abort(400, description=str(exc))
    except OSError:
        abort(404, description=f"no product {name!s:.100} in run {run.id}")
    return send_open_file(f, name.rsplit("/", 1)[-1], request.args.get("inline") != "1")


@bp.get("/runs/<run_id>/bundle.zip")
def run_bundle(run_id: str):
    """A zip of the run: products, log, input, provenance and the session's regions.

    Made once, when the run ends (``app.runs.finish``), and served as a file; 409 while the run
    goes on. A run that ended without its runner (cancelled while queued, settled by the
    reconciler) gets its bundle made here, on the first request."""
    run = get_run(run_id)
    if not run.terminal:
        abort(
            409, description=f"the run has not ended ({run.phase}): its bundle is made when it ends"
        )
    try:
        f = runs.open_bundle(run.run_dir)
    except (OSError, ValueError):
        try:
            extra = session_store().region_files(run.session_id)
        except SessionNotFound:
            extra = {}
        try:
            runs.bundle(run.run_dir, extra_files=extra)
            f = runs.open_bundle(run.run_dir)
        except (OSError, ValueError) as exc:
            abort(404, description=f"the bundle of run {run.id} cannot be made: {exc}")
    return send_open_file(f, f"regio-run-{run.id}.zip", as_attachment=True)
