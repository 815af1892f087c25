"""HTML pages. Thin: each view asks a plain module for data and renders a template.

- ``/``: the tool (sky viewer, region editor, observation selector, process control, products)
  for a new session; ``/sessions/<id>``: the same page with a session loaded (shareable URL).
- ``/sessions``: the user's sessions (titles, last activity, run counts, links to runs, delete).
  ``/archive``: the indexed observations, a page at a time (``?after=MISSION:OBSID``).
  ``/favicon.ico``: the SVG icon.
- ``/runs/<id>/plot/<file>``: the arrays of a spectrum or light curve product, for the page's
  interactive plots (``app.plots`` reads the OGIP files); ``?min_counts=N`` regroups a spectrum.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from flask import Blueprint, abort, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from app import auth, plots, runs
from app.archive import load_index, observations_by_obsid
from app.sessions import overview
from app.views.api import load_session, session_store
from app.views.runs_api import db_path, get_run
from indexer.index import IndexNotFound

bp = Blueprint("pages", __name__)


def _survey() -> str:
    """The viewer's background: a remote survey if configured, else the archive's own HiPS."""
    return current_app.extensions["regio.settings"]["SURVEY"] or "/hips"  # no trailing slash


@bp.get("/")
def home():
    return render_template("tool.html", session_id="", survey=_survey(), access="owner")


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico whatever the page links: the SVG icon (public)."""
    response = current_app.send_static_file("favicon.svg")
    response.cache_control.max_age = 86400
    return response


@bp.get("/sessions/<session_id>")
def session_page(session_id: str):
    record = load_session(session_id)
    return render_template(
        "tool.html", session_id=session_id, survey=_survey(), access=record["access"]
    )


@bp.get("/sessions")
def sessions():
    """The user's sessions: title (editable with write access), last activity, run counts by
    phase with links to the newest runs, and a delete button (owner or staff)."""
    entries = []
    for record in auth.visible_sessions(session_store().list()):
        entry = overview(record, runs.list_runs(db_path(), record["id"]))
        entry["access"] = auth.session_level(record)
        entries.append(entry)
    entries.sort(key=lambda e: e["last_activity"], reverse=True)
    return render_template("sessions.html", sessions=entries, phases=runs.PHASES)


#: Observations per page of ``/archive``: by default, and at most (``?per_page=``).
ARCHIVE_PAGE = 200
ARCHIVE_PAGE_MAX = 1000


@bp.get("/archive")
def archive():
    """One page of the indexed observations in (mission, obsid) order: ``per_page`` after the
    observation ``after`` (``MISSION:OBSID``), with links to the next and the first page."""
    settings = current_app.extensions["regio.settings"]
    try:
        index = load_index(settings)
    except IndexNotFound as exc:
        return render_template("archive.html", observations=[], stats=None, problem=str(exc)), 503
    after = request.args.get("after")
    per_page = request.args.get("per_page", str(ARCHIVE_PAGE))
    if not (per_page.isascii() and per_page.isdigit() and 1 <= int(per_page) <= ARCHIVE_PAGE_MAX):
        problem = f"per_page must be an integer from 1 to {ARCHIVE_PAGE_MAX}, not {per_page[:40]!r}"
        return render_template("archive.html", observations=[], stats=None, problem=problem), 400
    try:
        rows, following = index.observations_page(after, int(per_page))
    except ValueError as exc:
        problem = f"after: {exc}"
        return render_template("archive.html", observations=[], stats=None, problem=problem), 400
    observations = sorted(observations_by_obsid(rows), key=lambda o: (o["mission"], o["obsid"]))
    return render_template(
        "archive.html",
        observations=observations,
        stats=index.stats(),
        problem=None,
        following=following,
        show_first=after is not None,
        per_page=None if int(per_page) == ARCHIVE_PAGE else int(per_page),
    )


@bp.get("/runs/<run_id>/plot/<path:name>")
def product_plot(run_id: str, name: str):
    """Arrays to plot a spectrum (rate per keV vs energy, source and scaled background, grouped
    to ``min_counts`` counts a bin) or a light curve (rate vs time, background, good times).
    Refusals are JSON like the API's (the page reads the message)."""
    try:
        return _plot(run_id, name)
    except HTTPException as exc:
        if exc.response is not None or exc.code is None:  # a redirect to sign in, say
            raise
        return jsonify(error=exc.name, message=exc.description, status=exc.code), exc.code


def _plot(run_id: str, name: str):
    run = get_run(run_id)
    try:
        min_counts = plots.parse_min_counts(request.args.get("min_counts"))
    except ValueError as exc:
        abort(400, description=str(exc))
    folder = PurePosixPath(name).parent
    try:
        stream = runs.open_product(run.run_dir, name)
    except ValueError as exc:
        abort(400, description=str(exc))
    except FileNotFoundError:
        abort(404, description=f"no product {name!s:.100} in run {run.id}")

    def sibling(other: str):
        return runs.open_product(run.run_dir, (folder / other).as_posix())

    with stream:
        try:
            return jsonify(plots.from_fits(stream, sibling, min_counts))
        except plots.NotPlottable as exc:
            abort(400, description=str(exc))
