"""Automation and review: the runs dashboard (page and API), marks and comments on products,
standing requests, schedules and saved default parameters.

Plain modules do the work: ``app.review`` (run search, marks, comments, the bundle's
``review.json``), ``app.automation`` (standing requests, schedules, saved defaults). Access
follows the sessions' (``app.auth``): reading needs read access to the session, marking and
commenting write access, standing requests and schedules are the owner's (and staff's), the
site's saved defaults are staff's.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, render_template, request, url_for

from app import accounts, auth, automation, review, runs
from app.sessions import SessionNotFound
from app.views.api import json_body, load_session, session_store, settings
from app.views.runs_api import db_path, get_run, run_json, scripts

bp = Blueprint("automation", __name__)


def automation_db():
    return automation.db_path(settings()["SESSIONS"])


def review_db():
    return review.db_path(settings()["SESSIONS"])


def me() -> tuple[str, str]:
    """(user id, display name) of whoever makes a change ('' and 'local user' without
    accounts)."""
    user = auth.current_user()
    if user is None or not auth.accounts_enabled():
        return "", "local user"
    return user.id, user.name or user.email


def visible_session_ids() -> list[str] | None:
    """The sessions whose runs the user may see (None: every session)."""
    if not auth.accounts_enabled():
        return None
    user = auth.current_user()
    if user is not None and user.is_staff:
        return None
    return [r["id"] for r in auth.visible_sessions(session_store().list())]


def _titles() -> dict[str, str]:
    return {r["id"]: r.get("title") or "" for r in auth.visible_sessions(session_store().list())}


# ------------------------------------------------------------------------------ the dashboard


@bp.get("/runs")
def runs_page():
    """The runs dashboard: runs across the user's sessions, filters, products and their review."""
    user = auth.current_user()
    return render_template(
        "runs.html",
        can_edit_site=not auth.accounts_enabled() or bool(user and user.is_staff),
    )


def dashboard_run(run: runs.Run, counts: dict[str, int], titles: dict[str, str]) -> dict:
    out = run_json(run)
    products = runs.list_products(run.run_dir)
    out["session_title"] = titles.get(run.session_id, "")
    out["duration"] = review.duration(run)
    out["products"] = {"count": len(products), **counts}
    out["links"]["page"] = url_for("pages.session_page", session_id=run.session_id) + (
        f"?run={run.id}"
    )
    out["links"]["review"] = url_for("automation.get_review", run_id=run.id)
    return out


@bp.get("/api/runs")
def list_runs():
    """Runs across the sessions the user may see, newest first, filtered by session, script,
    phase, trigger and date; with product counts (and how many are marked), duration, links."""
    try:
        filters = review.check_filters(request.args)
    except review.ReviewError as exc:
        abort(400, description=str(exc))
    visible = visible_session_ids()
    if filters.get("session") and visible is not None and filters["session"] not in visible:
        abort(404, description=f"no session {filters['session']:.40}")
    found, total = review.search_runs(db_path(), visible, filters)
    counts = review.summaries(review_db(), [r.id for r in found])
    titles = _titles()
    return jsonify(
        {
            "runs": [dashboard_run(r, counts[r.id], titles) for r in found],
            "total": total,
            "limit": filters["limit"],
            "offset": filters["offset"],
            "sessions": [{"id": k, "title": v} for k, v in titles.items()],
            "scripts": sorted(set(review.scripts_run(db_path(), visible)) | set(scripts())),
        }
    )


# ------------------------------------------------------------------------- marks and comments


def _ended(run: runs.Run) -> None:
    if not run.terminal:
        abort(409, description=f"the run has not ended ({run.phase}): review it when it has")


def _rebundle(run: runs.Run) -> None:
    try:
        extra = session_store().region_files(run.session_id)
    except SessionNotFound:
        extra = {}
    try:
        review.rebundle(review_db(), run, extra)
    except (OSError, ValueError) as exc:  # the review is stored; the bundle is made on demand
        from flask import current_app

        current_app.logger.warning("the bundle of run %s could not be made: %s", run.id, exc)


@bp.get("/api/runs/<run_id>/review")
def get_review(run_id: str):
    """The run's products with their marks (valid / rejected, who, when) and comments."""
    run = get_run(run_id)
    data = review.review(review_db(), run)
    level = auth.session_level(session_store().record(run.session_id))
    data["can_review"] = accounts.at_least(level, "write") and run.terminal
    return jsonify(data)


@bp.put("/api/runs/<run_id>/review/marks")
def put_mark(run_id: str):
    """Mark a product ``{"product": FILE, "mark": "valid" | "rejected" | null}``."""
    run = get_run(run_id, "write")
    _ended(run)
    body = json_body()
    if set(body) != {"product", "mark"}:
        abort(
            400,
            description='the body must be {"product": FILE, "mark": "valid" | "rejected" | null}',
        )
    user_id, name = me()
    try:
        mark = review.set_mark(review_db(), run, body["product"], body["mark"], user_id, name)
    except review.ReviewError as exc:
        abort(400, description=str(exc))
    except review.NotFound as exc:
        abort(404, description=str(exc))
    _rebundle(run)
    return jsonify({"product": body["product"], "mark": mark})


@bp.post("/api/runs/<run_id>/review/comments")
def post_comment(run_id: str):
    """Comment on a product ``{"product": FILE, "text": ...}`` (``product`` null: the run)."""
    run = get_run(run_id, "write")
    _ended(run)
    body = json_body()
    if not set(body) <= {"product", "text"} or "text" not in body:
        abort(400, description='the body must be {"product": FILE or null, "text": "..."}')
    user_id, name = me()
    try:
        comment = review.add_comment(
            review_db(), run, body.get("product"), body["text"], user_id, name
        )
    except review.ReviewError as exc:
        abort(400, description=str(exc))
    except review.NotFound as exc:
        abort(404, description=str(exc))
    _rebundle(run)
    return jsonify(comment), 201


@bp.delete("/api/runs/<run_id>/review/comments/<comment_id>")
def delete_comment(run_id: str, comment_id: str):
    """Remove a comment: its author, or the session's owner (and staff)."""
    run = get_run(run_id, "write")
    _ended(run)
    try:
        comment = review.get_comment(review_db(), run.id, comment_id)
    except review.NotFound as exc:
        abort(404, description=str(exc))
    level = auth.session_level(session_store().record(run.session_id))
    if level != "owner" and comment["author"] != me()[0]:
        abort(403, description="only its author or the session's owner may remove a comment")
    review.delete_comment(review_db(), run.id, comment_id)
    _rebundle(run)
    return "", 204


# --------------------------------------------------------------------------- standing requests


def _owner_defaults(record: dict[str, Any]):
    db = automation_db()
    return lambda script: automation.saved_defaults(db, record.get("owner"), script)


def _standing(request_id: str, needed: str) -> tuple[automation.StandingRequest, dict]:
    try:
        item = automation.get_standing(automation_db(), request_id)
        record = load_session(item.session_id, needed)
    except (automation.NotFound, SessionNotFound):
        abort(404, description=f"no standing request {request_id!s:.40}")
    return item, record


def standing_json(item: automation.StandingRequest) -> dict[str, Any]:
    out = item.to_json()
    out["links"] = {
        "self": url_for("automation.get_standing", request_id=item.id),
        "session": url_for("api.get_session", session_id=item.session_id),
        "runs": url_for("automation.list_runs", trigger=item.trigger),
    }
    return out


@bp.get("/api/standing-requests")
def list_all_standing():
    """The standing requests of every session the user may see."""
    items = automation.list_standing(automation_db(), visible_session_ids())
    return jsonify([standing_json(i) for i in items])


@bp.get("/api/sessions/<session_id>/standing-requests")
def list_session_standing(session_id: str):
    """The standing requests of a session."""
    load_session(session_id)
    return jsonify(
        [standing_json(i) for i in automation.list_standing(automation_db(), [session_id])]
    )


@bp.post("/api/sessions/<session_id>/standing-requests")
def create_standing(session_id: str):
    """Make the session a standing request: whenever new data of ``instruments`` cover its source
    region, run ``scripts`` on the new data (``scope`` "new") or on all of it ("all")."""
    record = load_session(session_id, "owner")
    try:
        values = automation.check_standing_input(
            json_body(), scripts(), defaults_for=_owner_defaults(record)
        )
        automation.take_note(automation_db(), settings()["INDEX"])
        item = automation.create_standing(
            automation_db(), session_id, record.get("owner") or "", me()[0], values
        )
    except automation.AutomationError as exc:
        abort(400, description=str(exc))
    response = jsonify(standing_json(item))
    response.status_code = 201
    response.headers["Location"] = url_for("automation.get_standing", request_id=item.id)
    return response


@bp.get("/api/standing-requests/<request_id>")
def get_standing(request_id: str):
    """A standing request: what it waits for, what it runs, when it last fired."""
    return jsonify(standing_json(_standing(request_id, "read")[0]))


@bp.patch("/api/standing-requests/<request_id>")
def patch_standing(request_id: str):
    """Change a standing request (any of its fields; ``enabled`` false pauses it)."""
    item, record = _standing(request_id, "owner")
    try:
        values = automation.check_standing_input(
            json_body(), scripts(), defaults_for=_owner_defaults(record), partial=True
        )
    except automation.AutomationError as exc:
        abort(400, description=str(exc))
    if values:
        item = automation.update_standing(automation_db(), item.id, **values)
    return jsonify(standing_json(item))


@bp.delete("/api/standing-requests/<request_id>")
def delete_standing(request_id: str):
    item, _record = _standing(request_id, "owner")
    automation.delete_standing(automation_db(), item.id)
    return "", 204


# -------------------------------------------------------------------------------- schedules


def _schedule(schedule_id: str, needed: str) -> tuple[automation.Schedule, dict]:
    try:
        item = automation.get_schedule(automation_db(), schedule_id)
        record = load_session(item.session_id, needed)
    except (automation.NotFound, SessionNotFound):
        abort(404, description=f"no schedule {schedule_id!s:.40}")
    return item, record


def schedule_json(item: automation.Schedule) -> dict[str, Any]:
    out = item.to_json()
    out["links"] = {
        "self": url_for("automation.get_schedule", schedule_id=item.id),
        "session": url_for("api.get_session", session_id=item.session_id),
        "runs": url_for("automation.list_runs", trigger=item.trigger),
    }
    return out


@bp.get("/api/schedules")
def list_all_schedules():
    """The schedules of every session the user may see."""
    items = automation.list_schedules(automation_db(), visible_session_ids())
    return jsonify([schedule_json(i) for i in items])


@bp.get("/api/sessions/<session_id>/schedules")
def list_session_schedules(session_id: str):
    """The schedules of a session."""
    load_session(session_id)
    return jsonify(
        [schedule_json(i) for i in automation.list_schedules(automation_db(), [session_id])]
    )


@bp.post("/api/sessions/<session_id>/schedules")
def create_schedule(session_id: str):
    """Run a script periodically on the session's selection: ``cron`` ("0 2 * * *": 02:00 every
    night, in ``timezone``) or every ``interval`` seconds. Staff, or the session's owner."""
    record = load_session(session_id, "owner")
    try:
        values = automation.check_schedule_input(
            json_body(), scripts(), min_interval=settings()["SCHEDULE_MIN_INTERVAL"],
            defaults_for=_owner_defaults(record),
        )  # fmt: skip
        item = automation.create_schedule(
            automation_db(), session_id, record.get("owner") or "", me()[0], values
        )
    except automation.AutomationError as exc:
        abort(400, description=str(exc))
    response = jsonify(schedule_json(item))
    response.status_code = 201
    response.headers["Location"] = url_for("automation.get_schedule", schedule_id=item.id)
    return response


@bp.get("/api/schedules/<schedule_id>")
def get_schedule(schedule_id: str):
    """A schedule: its script, timing, next and last firing."""
    return jsonify(schedule_json(_schedule(schedule_id, "read")[0]))


@bp.patch("/api/schedules/<schedule_id>")
def patch_schedule(schedule_id: str):
    """Change a schedule (``enabled`` false pauses it; a new timing starts from now)."""
    item, record = _schedule(schedule_id, "owner")
    try:
        values = automation.check_schedule_input(
            json_body(), scripts(), min_interval=settings()["SCHEDULE_MIN_INTERVAL"],
            defaults_for=_owner_defaults(record), current=item,
        )  # fmt: skip
    except automation.AutomationError as exc:
        abort(400, description=str(exc))
    item = automation.update_schedule(automation_db(), item.id, **values)
    return jsonify(schedule_json(item))


@bp.delete("/api/schedules/<schedule_id>")
def delete_schedule(schedule_id: str):
    item, _record = _schedule(schedule_id, "owner")
    automation.delete_schedule(automation_db(), item.id)
    return "", 204


# --------------------------------------------------------------------------- saved defaults


def _can_edit_site() -> bool:
    user = auth.current_user()
    return not auth.accounts_enabled() or bool(user is not None and user.is_staff)


def _my_scope() -> str:
    return automation.user_scope(auth.owner_id())


@bp.get("/api/defaults")
def list_defaults():
    """Saved default parameters per script: the site's (staff) and the user's own."""
    mine = _my_scope()
    found = automation.list_defaults(automation_db(), {automation.SITE, mine})
    return jsonify(
        {
            "site": found[automation.SITE],
            "user": found[mine] if mine != automation.SITE else None,
            "can_edit_site": _can_edit_site(),
        }
    )


def _scope_arg(value: Any) -> str:
    if value not in (None, "user", "site"):
        abort(400, description="'scope' must be 'user' (your own) or 'site' (everyone's)")
    if value == "site":
        if not _can_edit_site():
            abort(403, description="only staff may change the site's defaults")
        return automation.SITE
    return _my_scope()


@bp.put("/api/defaults/<script_name>")
def put_defaults(script_name: str):
    """Save default values for some parameters of a script: ``{"params": {...}, "scope":
    "user" | "site"}``; the launch form and standing requests use them."""
    body = json_body()
    if not set(body) <= {"params", "scope"} or "params" not in body:
        abort(400, description='the body must be {"params": {...}, "scope": "user" | "site"}')
    scope = _scope_arg(body.get("scope"))
    available = scripts()
    if script_name not in available:
        abort(404, description=f"no script {script_name!s:.60}")
    try:
        params = automation.set_defaults(
            automation_db(), scope, available[script_name], body["params"], me()[0]
        )
    except automation.AutomationError as exc:
        abort(400, description=str(exc))
    return jsonify({"script": script_name, "scope": "site" if scope == automation.SITE else "user",
                    "params": params})  # fmt: skip


@bp.delete("/api/defaults/<script_name>")
def delete_defaults(script_name: str):
    """Forget the saved defaults of a script (``?scope=user`` or ``site``)."""
    scope = _scope_arg(request.args.get("scope"))
    available = scripts()
    if script_name not in available:
        abort(404, description=f"no script {script_name!s:.60}")
    automation.set_defaults(automation_db(), scope, available[script_name], {}, me()[0])
    return "", 204
