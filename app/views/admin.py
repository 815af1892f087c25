"""The staff page: users, sessions, runs by state, the queue, workers alive, disk used; staff can
create users, grant or remove staff, disable accounts and cancel any run."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from app import accounts, jobs, runs
from app.auth import accounts_db, accounts_enabled, current_user, settings
from app.sessions import SessionStore

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def staff_only():
    user = current_user()
    if not accounts_enabled() or user is None or not user.is_staff:
        abort(404)


def folder_bytes(folder: Path) -> int:
    """Bytes used by the files below ``folder``."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while we walked
                total += os.lstat(os.path.join(root, name)).st_size
    return total


@bp.get("/")
def overview():
    values = settings()
    conn = current_app.extensions["regio.redis"]
    run_db = runs.db_path(values["SESSIONS"])
    with runs.connect(run_db) as db:
        by_phase = Counter(
            {
                row["phase"]: row["n"]
                for row in db.query("SELECT phase, count(*) AS n FROM runs GROUP BY phase")
            }
        )
        recent = [
            runs.Run.from_row(r)
            for r in db.query("SELECT * FROM runs ORDER BY created DESC LIMIT 50")
        ]
    return render_template(
        "admin.html",
        users=accounts.list_users(accounts_db()),
        sessions=len(SessionStore(values["SESSIONS"]).list()),
        by_phase={phase: by_phase.get(phase, 0) for phase in runs.PHASES},
        recent=recent,
        queue_length=jobs.queue_length(conn),
        workers=jobs.worker_names(conn),
        disk=folder_bytes(Path(values["SESSIONS"])),
    )


@bp.post("/users")
def create_user():
    form = request.form
    try:
        accounts.create_user(
            accounts_db(), form.get("email", ""), form.get("name", ""), form.get("password", ""),
            staff=form.get("staff") == "on",
        )  # fmt: skip
        flash(f"Account {form.get('email')} created.", "info")
    except accounts.AccountError as exc:
        flash(str(exc), "error")
    return redirect(url_for("admin.overview"))


@bp.post("/users/<user_id>")
def change_user(user_id: str):
    action = request.form.get("action")
    if user_id == current_user().id and action in ("disable", "unstaff"):
        flash("You cannot disable yourself or remove your own staff rights.", "error")
        return redirect(url_for("admin.overview"))
    try:
        if action in ("staff", "unstaff"):
            accounts.set_staff(accounts_db(), user_id, action == "staff")
        elif action in ("enable", "disable"):
            accounts.set_active(accounts_db(), user_id, action == "enable")
        else:
            abort(400, description="unknown action")
    except accounts.UserNotFound:
        abort(404)
    return redirect(url_for("admin.overview"))


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str):
    run_db = runs.db_path(settings()["SESSIONS"])
    try:
        run = jobs.cancel(run_id, run_db, current_app.extensions["regio.redis"], wait=5.0)
    except (runs.RunNotFound, ValueError):
        abort(404)
    flash(f"Run {run.id}: {run.phase}.", "info")
    return redirect(url_for("admin.overview"))
