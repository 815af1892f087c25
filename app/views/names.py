"""``GET /api/resolve?name=...``: where an object name is (the page's target box).

Thin view over ``app.names``: the archive's ``OBJECT`` names first, CDS Sesame second when the
site set ``REGIO_SESAME_URL``. 400 for a bad name, 404 when nobody knows it.
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, request

from app import names
from app.views.api import settings

bp = Blueprint("names", __name__, url_prefix="/api")


@bp.get("/resolve")
def resolve():
    """``{"name", "ra", "dec", "source": "archive" | "sesame", "matches": [...]}`` (ICRS
    degrees; ``matches``: the archive's names matching, best first, with their exposures)."""
    try:
        return jsonify(names.resolve(settings(), request.args.get("name")))
    except names.BadName as exc:
        abort(400, description=str(exc))
    except names.UnknownName as exc:
        abort(404, description=str(exc))
    except FileNotFoundError:
        abort(503, description="no index: build one with 'python -m indexer build'")
