"""The JSON API: what the page uses, and what curl and Python users call. Errors are JSON."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, jsonify
from rq import Worker

from app import __version__
from app.archive import IndexMissing, load_index

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/health")
def health():
    """Service status: version, Redis reachable, RQ workers alive, index size."""
    conn = current_app.extensions["regio.redis"]
    try:
        conn.ping()
        workers = [w.name for w in Worker.all(connection=conn)]
        redis_ok = True
    except Exception as exc:  # a down Redis is a status to report, not a crash
        redis_ok, workers = False, []
        current_app.logger.warning("redis unreachable: %s", exc)
    try:
        index = load_index(current_app.extensions["regio.settings"]).stats()
    except IndexMissing as exc:
        index = {"error": str(exc)}
    ok = redis_ok and "error" not in index
    return jsonify(version=__version__, ok=ok, redis=redis_ok, workers=workers, index=index), (
        200 if ok else 503
    )


@bp.get("/observations")
def observations():
    """Every indexed (observation, camera) with its metadata."""
    try:
        index = load_index(current_app.extensions["regio.settings"])
    except IndexMissing as exc:
        abort(503, description=str(exc))
    return jsonify(index.observations())
