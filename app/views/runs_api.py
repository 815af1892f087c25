"""The JSON API of scripts and runs: launch, follow (log, server-sent events), cancel, products.

Plain modules do the work: ``app.launch`` (checks and queues a run), ``app.catalog`` (scripts),
``app.runs`` (records, run folders), ``app.jobs`` (the queue). Views parse and shape.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request, send_file, url_for

from app import auth, bodies, catalog, jobs, launch, runs
from app.sessions import SessionNotFound
from app.views.api import json_body, load_session, session_store, settings

bp = Blueprint("runs_api", __name__, url_prefix="/api")

#: Seconds between two looks at the log and the record while a stream is open.
STREAM_POLL = 0.25
#: Seconds between keep-alive comments on an idle stream (proxies close silent connections).
STREAM_KEEPALIVE = 15.0


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
    data. With ``?session=ID``, only those that accept every exposure the session selects."""
    available = scripts()
    session_id = request.args.get("session")
    if session_id is None:
        chosen = [available[n] for n in sorted(available)]
    else:
        load_session(session_id)  # 404 when the user may not see it
        chosen = launch.fitting_scripts(available, session_store().selected_rows(session_id))
    return jsonify([s.to_json() for s in chosen])


@bp.post("/sessions/<session_id>/runs")
def create_run(session_id: str):
    """Queue a run of a script on the session's regions and selected observations."""
    record = load_session(session_id, "write")  # 404 / 403 first
    body = json_body()
    unknown = set(body) - {"script", "params"}
    if unknown:
        abort(400, description=f"unknown field(s): {', '.join(sorted(unknown)):.200}")
    try:
        run = launch.launch(
            session_store(),
            db_path(),
            redis_conn(),
            scripts(),
            session_id,
            body.get("script"),
            body.get("params"),
            owner=record.get("owner") or "",
        )
    except launch.LaunchError as exc:
        abort(400, description=str(exc))
    response = jsonify(run_json(runs.get(db_path(), run.id)))
    response.status_code = 202
    response.headers["Location"] = url_for("runs_api.get_run_view", run_id=run.id)
    return response


@bp.get("/sessions/<session_id>/runs")
def list_session_runs(session_id: str):
    """The runs of a session, newest first."""
    load_session(session_id)
    return jsonify([run_json(r) for r in runs.list_runs(db_path(), session_id)])


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


def event_stream(path, run_id: str, offset: int) -> Iterator[str]:
    """Server-sent events of a run: ``log`` (one per line; id = byte offset after it), ``state``
    (phase, stage, progress: sent at start and on every change) and ``end`` once the run has
    ended and its log is drained. Resuming with ``Last-Event-ID`` continues after that line."""
    last_state = None
    last_sent = time.monotonic()
    yield "retry: 2000\n\n"
    while True:
        run = runs.get(path, run_id)
        state = _state(run)
        if state != last_state:
            yield _sse("state", state, offset)
            last_state, last_sent = state, time.monotonic()
        text, new_offset = runs.read_log(run.run_dir, offset)
        start = offset
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n") and not run.terminal:
                break  # a line still being written: wait for its end
            offset += len(line.encode())
            yield _sse("log", line.rstrip("\n"), offset)
            last_sent = time.monotonic()
        if new_offset - start >= runs.MAX_LOG_CHUNK:
            continue  # a full chunk: more of the log is waiting, read on at once
        if run.terminal and offset >= new_offset:
            yield _sse("end", state, offset)
            return
        if time.monotonic() - last_sent > STREAM_KEEPALIVE:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        time.sleep(STREAM_POLL)


@bp.get("/runs/<run_id>/events")
def run_events(run_id: str):
    """Server-sent events: log lines, state changes, end. Resumes from ``Last-Event-ID``."""
    run = get_run(run_id)
    resume = request.headers.get("Last-Event-ID") or request.args.get("offset") or "0"
    resume = str(_offset_arg(resume, "Last-Event-ID (or 'offset')"))
    stream = event_stream(db_path(), run.id, int(resume))
    response = Response(stream, mimetype="text/event-stream")
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
