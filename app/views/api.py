"""The JSON API: what the page uses, and what curl and Python users call.

Views are thin: parse the request, call a plain module, shape the answer. Every error is JSON
``{"error", "message", "status"}`` (see ``create_app``); every response carries ``X-Regio-Version``.
The OpenAPI document (``/api/openapi.json``) is built in ``app.openapi``; a test checks that every
route here is documented there.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request, url_for

from app import __version__, accounts, auth, bodies, jobs, sessions, shapes
from app.archive import coverage_rows, instruments_json, load_index, public_rows
from app.sessions import SelectionError, SessionNotFound, SessionStore, TitleError
from indexer import limits
from indexer.index import IndexNotFound

bp = Blueprint("api", __name__, url_prefix="/api")


def settings() -> dict[str, Any]:
    return current_app.extensions["regio.settings"]


def session_store() -> SessionStore:
    return SessionStore(settings()["SESSIONS"])


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 4xx saying what is wrong with it.

    Parsed by ``app.bodies.parse_json`` within the limits of ``indexer.limits`` (nesting, number
    of values, numbers, control characters) before anything is built from it."""
    if not request.is_json:
        abort(415, description="send a JSON body with Content-Type: application/json")
    try:
        body = bodies.parse_json(request.get_data(cache=True))
    except bodies.InputError as exc:
        abort(400, description=str(exc))
    if not isinstance(body, dict):
        abort(400, description=f"the body must be a JSON object, not {_json_type(body)}")
    return body


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "true or false"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


#: The fields of a regions request, JSON or multipart.
REGION_FIELDS = frozenset({"source", "background", "title", "view", "frame"})


def regions_body() -> dict[str, Any]:
    """A regions request: a JSON object, or a multipart form whose ``source`` / ``background``
    are DS9 region files (or text fields) and ``title`` a text field."""
    if request.mimetype != "multipart/form-data":
        return json_body()
    names = set(request.form) | set(request.files)
    if names - REGION_FIELDS:
        unknown = ", ".join(sorted(str(n)[:40] for n in names - REGION_FIELDS)[:10])
        abort(400, description=f"unknown field(s): {unknown}")
    body: dict[str, Any] = dict(request.form.items())
    for name, upload in request.files.items():
        data = upload.read(limits.MAX_REGION_FILE_BYTES + 1)
        if len(data) > limits.MAX_REGION_FILE_BYTES:
            abort(
                413,
                description=f"the {name} region file is larger than "
                f"{limits.MAX_REGION_FILE_BYTES} bytes",
            )
        try:
            body[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            abort(400, description=f"the {name} region file is not text (UTF-8)")
    return body


def index_or_503():
    try:
        return load_index(settings())
    except IndexNotFound as exc:
        abort(503, description=str(exc))


def parse_regions(body: dict[str, Any]):
    """Source and background regions from a body (DS9 strings or viewer JSON shapes) or a 400,
    in ICRS, each at most ``REGIO_REGION_MAX_DEG`` across; and the user's DS9 frame: the body's
    ``frame``, else the source's DS9 frame, else None (viewer shapes: the session's is kept)."""
    unknown = set(body) - REGION_FIELDS
    if unknown:
        names = ", ".join(sorted(str(n)[:40] for n in unknown)[:10])
        abort(400, description=f"unknown field(s): {names}")
    for name in ("source", "background"):
        if not isinstance(body.get(name), str | list | None):
            abort(
                400,
                description=f"'{name}' must be a DS9 region string or a list of shapes, "
                f"not {_json_type(body[name])}",
            )
    if body.get("source") in (None, "", []):
        abort(400, description="'source' is required: a DS9 region string or a list of shapes")
    max_deg = settings()["REGION_MAX_DEG"]
    try:
        frame = None if body.get("frame") is None else shapes.check_frame(body["frame"])
    except shapes.RegionError as exc:
        abort(400, description=str(exc))
    try:
        source, source_frame = shapes.parse_frame(body["source"], max_deg)
    except shapes.RegionError as exc:
        abort(400, description=f"source region: {exc}")
    background, background_frame = None, None
    if body.get("background") not in (None, "", []):
        try:
            background, background_frame = shapes.parse_frame(body["background"], max_deg)
        except shapes.RegionError as exc:
            abort(400, description=f"background region: {exc}")
    return source, background, frame or source_frame or background_frame


class _NamingIndex:
    """The index as ``coverage_rows`` queries it, with query errors naming the region."""

    def __init__(self, index, source) -> None:
        self.index, self.source = index, source

    def query(self, region):
        try:
            return self.index.query(region)
        except shapes.RegionError as exc:
            name = "source" if region is self.source else "background"
            abort(400, description=f"{name} region: {exc}")


def covering_rows(source, background) -> list[dict[str, Any]]:
    """The exposures covering the regions (``coverage_rows``), or a 400 for a region that
    passes validation but has no coverage to query: its exclusions remove all of it at the
    index's resolution, or it is too large for it (``indexer.limits.MAX_MOC_OUTLINE_CELLS``)."""
    return coverage_rows(_NamingIndex(index_or_503(), source), source, background)


def load_session(session_id: str, needed: str = "read") -> dict[str, Any]:
    """The session record, if the request may ``needed`` it (404 when it may not even see it)."""
    try:
        record = session_store().get(session_id)
    except SessionNotFound:
        abort(404, description=f"no session {session_id!s:.40}")
    record["access"] = auth.require(record, needed)
    return record


def session_json(session_id: str, needed: str = "read") -> dict[str, Any]:
    record = load_session(session_id, needed)
    record["coverage"] = public_rows(record.get("coverage") or [])
    record["url"] = url_for("api.get_session", session_id=session_id, _external=False)
    return record


@bp.get("/health")
def health():
    """Service status: version, Redis reachable, RQ workers alive, index size, and the children
    of ``make run``'s supervisor (each one running or restarting, its pid and restarts; null when
    the web server was started otherwise)."""
    from app.service import read_status

    conn = current_app.extensions["regio.redis"]
    try:
        conn.ping()
        workers = jobs.worker_names(conn)
        redis_ok = True
    except Exception as exc:  # a down Redis is a status to report, not a crash
        redis_ok, workers = False, []
        current_app.logger.warning("redis unreachable: %s", exc)
    try:
        index = load_index(settings()).stats()
    except IndexNotFound as exc:
        index = {"error": str(exc)}
    ok = redis_ok and "error" not in index
    supervisor = read_status(settings()["INSTANCE"])
    body = {
        "version": __version__,
        "ok": ok,
        "redis": redis_ok,
        "workers": workers,
        "index": index,
        "children": supervisor["children"] if supervisor else None,
    }
    return jsonify(body), 200 if ok else 503


@bp.get("/instruments")
def list_instruments():
    """The instruments the index knows: mission, data kinds, cameras in display order, colours."""
    return jsonify(instruments_json())


#: Exposures per page of ``GET /api/observations``: by default, and at most.
OBSERVATIONS_PAGE = 1000
OBSERVATIONS_PAGE_MAX = 10_000


def _page_limit(name: str, default: int, most: int) -> int:
    """The query parameter ``name`` as a page size from 1 to ``most`` (``default`` when absent),
    or a 400."""
    text = request.args.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= most):
        abort(400, description=f"'{name}' must be an integer from 1 to {most}, not {text[:40]!r}")
    return int(text)


@bp.get("/observations")
def observations():
    """The indexed exposures (observation and camera) with their metadata, by (mission, obsid,
    camera), one page at a time: ``limit`` rows after the exposure id ``after``, of ``mission``
    only if given. ``Link: <...>; rel="next"`` names the next page when rows follow;
    ``X-Total-Count`` is the number of exposures matching (all pages)."""
    limit = _page_limit("limit", OBSERVATIONS_PAGE, OBSERVATIONS_PAGE_MAX)
    after, mission = request.args.get("after"), request.args.get("mission") or None
    index = index_or_503()
    try:
        rows, following = index.exposures_page(after, limit, mission)
    except ValueError as exc:
        abort(400, description=f"'after': {exc}")
    response = jsonify(public_rows(rows))
    response.headers["X-Total-Count"] = str(index.count_exposures(mission))
    if following is not None:
        url = url_for("api.observations", limit=limit, mission=mission, after=following)
        response.headers["Link"] = f'<{url}>; rel="next"'
    return response


@bp.get("/coverage")
def coverage():
    """The union of the archive's coverage as MOC JSON, small enough for the viewer."""
    return jsonify(index_or_503().coverage_moc_json())


@bp.get("/exposures/<exposure_id>/moc")
def exposure_moc(exposure_id: str):
    """One exposure's footprint as MOC JSON (``MISSION:OBSID:CAMERA``)."""
    try:
        return jsonify(index_or_503().exposure_moc_json(exposure_id))
    except KeyError:
        abort(404, description=f"no exposure {exposure_id!s:.60} in the index")


@bp.post("/sessions")
def create_session():
    """A new session from a source (and optional background) region; finds the coverage.

    The regions come as DS9 strings or viewer shapes in a JSON body, or as DS9 files in a
    multipart form (fields ``source``, ``background``)."""
    body = regions_body()
    title = bodies.one_line(body.get("title", ""), "title")  # the cheap checks first
    source, background, frame = parse_regions(body)
    rows = covering_rows(source, background)
    session_id = session_store().create(
        source, background, owner=auth.owner_id(), title=title, frame=frame, rows=rows
    )  # with its coverage: the folder appears complete, one rename
    response = jsonify(session_json(session_id))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_session", session_id=session_id)
    return response


@bp.get("/sessions")
def list_sessions():
    """The sessions the user may see (own and shared; all for staff), newest first."""
    return jsonify(auth.visible_sessions(session_store().list()))


@bp.get("/sessions/<session_id>")
def get_session(session_id: str):
    """A session: regions, covering observations per camera with metadata, selection."""
    return jsonify(session_json(session_id))


@bp.patch("/sessions/<session_id>")
def patch_session(session_id: str):
    """Change the session's title: ``{"title": "..."}`` (one line, at most 200 characters)."""
    load_session(session_id, "write")
    body = json_body()
    if set(body) != {"title"}:
        abort(400, description='the body must be {"title": "..."}')
    try:
        session_store().set_title(session_id, body["title"])
    except TitleError as exc:
        abort(400, description=str(exc))
    return jsonify(session_json(session_id))


@bp.delete("/sessions/<session_id>")
def delete_session(session_id: str):
    """Delete the session, its run folders and run records (owner or staff); 409 while a run
    is queued or running or a standing request or schedule uses it."""
    load_session(session_id, "owner")
    try:
        sessions.delete_session(session_store(), session_id, settings()["SESSIONS"])
    except sessions.SessionBusy as exc:
        abort(409, description=str(exc))
    except SessionNotFound:
        abort(404, description=f"no session {session_id!s:.40}")
    return "", 204


@bp.put("/sessions/<session_id>/regions")
def put_regions(session_id: str):
    """Replace the regions; the coverage is found again and the selection pruned to it."""
    load_session(session_id, "write")  # 404 / 403 before anything else
    body = regions_body()
    source, background, frame = parse_regions(body)
    rows = covering_rows(source, background)
    store = session_store()
    store.set_regions(session_id, source, background, frame)
    store.set_coverage(session_id, rows)
    return jsonify(session_json(session_id))


@bp.put("/sessions/<session_id>/selection")
def put_selection(session_id: str):
    """Replace the selection: ``{"exposures": ["MISSION:OBSID:CAMERA", ...]}`` (the older form
    ``{"observations": [{"obsid": ..., "camera": ...}, ...]}`` is still accepted)."""
    load_session(session_id, "write")
    body = json_body()
    if set(body) not in ({"exposures"}, {"observations"}):
        abort(400, description='the body must be {"exposures": ["MISSION:OBSID:CAMERA", ...]}')
    store = session_store()
    try:
        exposures = body.get("exposures")
        if "observations" in body:
            exposures = store.legacy_selection(session_id, body["observations"])
        store.set_selection(session_id, exposures)
    except SelectionError as exc:
        abort(400, description=str(exc))
    return jsonify(session_json(session_id))


@bp.put("/sessions/<session_id>/view")
def put_view(session_id: str):
    """Remember the viewer position: ``{"ra": deg, "dec": deg, "fov": deg}``."""
    load_session(session_id, "write")
    body = json_body()
    view = {}
    for key, low, high in (("ra", 0, 360), ("dec", -90, 90), ("fov", 1e-6, 360)):
        value = body.get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            abort(400, description=f"'{key}' must be a number between {low} and {high}")
        view[key] = float(value)
    session_store().set_view(session_id, view)
    return jsonify(session_json(session_id))


def _accounts_only() -> None:
    if not auth.accounts_enabled():
        abort(404, description="sharing needs accounts (REGIO_AUTH=accounts)")


@bp.get("/sessions/<session_id>/collaborators")
def list_collaborators(session_id: str):
    """Who else may read or change the session (owner only)."""
    _accounts_only()
    load_session(session_id, "owner")
    people = accounts.collaborators(auth.accounts_db(), session_id)
    return jsonify(
        [
            {"user_id": c.user.id, "email": c.user.email, "name": c.user.name, "role": c.role}
            for c in people
        ]
    )


@bp.post("/sessions/<session_id>/collaborators")
def add_collaborator(session_id: str):
    """Share the session with a user: ``{"email": ..., "role": "read" | "write"}``."""
    _accounts_only()
    load_session(session_id, "owner")
    body = json_body()
    if set(body) != {"email", "role"} or body["role"] not in accounts.ROLES:
        abort(400, description='the body must be {"email": "...", "role": "read" | "write"}')
    try:
        user = accounts.add_collaborator(
            auth.accounts_db(), session_id, body["email"], body["role"]
        )
    except accounts.UserNotFound:
        abort(400, description="no account with that e-mail address")
    except accounts.AccountError as exc:
        abort(400, description=str(exc))
    return jsonify({"user_id": user.id, "email": user.email, "role": body["role"]}), 201


@bp.delete("/sessions/<session_id>/collaborators/<user_id>")
def remove_collaborator(session_id: str, user_id: str):
    _accounts_only()
    load_session(session_id, "owner")
    if not accounts.remove_collaborator(auth.accounts_db(), session_id, user_id):
        abort(404, description="no such collaborator")
    return "", 204


@bp.get("/sessions/<session_id>/share-links")
def list_share_links(session_id: str):
    """The session's read-only links (their secrets are only shown when made)."""
    _accounts_only()
    load_session(session_id, "owner")
    links = accounts.list_share_links(auth.accounts_db(), session_id)
    return jsonify(
        [{"id": link.id, "created": link.created, "revoked": link.revoked} for link in links]
    )


@bp.post("/sessions/<session_id>/share-links")
def create_share_link(session_id: str):
    """A new read-only link to the session, usable without an account."""
    _accounts_only()
    load_session(session_id, "owner")
    secret = accounts.create_share_link(auth.accounts_db(), session_id, auth.current_user().id)
    url = auth.settings()["BASE_URL"].rstrip("/") + url_for("auth.open_share", secret=secret)
    return jsonify({"url": url, "secret": secret}), 201


@bp.delete("/sessions/<session_id>/share-links/<link_id>")
def revoke_share_link(session_id: str, link_id: str):
    _accounts_only()
    load_session(session_id, "owner")
    if not accounts.revoke_share_link(auth.accounts_db(), session_id, link_id):
        abort(404, description="no such share link")
    return "", 204


@bp.get("/openapi.json")
def openapi_document():
    """The OpenAPI document of this API."""
    from app.openapi import document

    return jsonify(document(__version__))
