"""HTML pages. Thin: each view asks a plain module for data and renders a template."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from app.archive import IndexMissing, load_index, observations_by_obsid

bp = Blueprint("pages", __name__)


@bp.get("/")
def home():
    settings = current_app.extensions["regio.settings"]
    try:
        index = load_index(settings)
    except IndexMissing as exc:
        return render_template("home.html", observations=[], stats=None, problem=str(exc)), 503
    observations = observations_by_obsid(index.observations())
    return render_template(
        "home.html", observations=observations, stats=index.stats(), problem=None
    )
