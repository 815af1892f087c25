"""Regio web application: ``create_app(test_config=None)`` builds the Flask app.

Integration objects live in ``app.extensions`` (never module globals):

- ``app.extensions["regio.settings"]``: the settings mapping (see ``app.settings``);
- ``app.extensions["regio.redis"]``: the Redis connection shared with the workers.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
from flask import Flask, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from app import bodies
from app import settings as settings_mod
from indexer import limits

__version__ = "0.1.0"

TOO_LARGE = RequestEntityTooLarge.description  # Werkzeug's words for a body over the limit


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from defaults, ``REGIO_*`` environment variables, then ``test_config``.

    ``test_config`` maps setting names (without the ``REGIO_`` prefix) to values.
    """
    values = settings_mod.load(test_config)
    if not values["REDIS_URL"]:
        raise settings_mod.SettingError(
            "REGIO_REDIS_URL is not set: start the service with `make run` (which starts an "
            "embedded Redis) or point REGIO_REDIS_URL at a Redis server"
        )
    app = Flask(__name__, instance_path=str(values["INSTANCE"]))
    app.config["SECRET_KEY"] = values["SECRET_KEY"] or _instance_secret(Path(values["INSTANCE"]))
    # request sizes (indexer.limits): Werkzeug answers 413 before reading more
    app.config["MAX_CONTENT_LENGTH"] = limits.MAX_BODY_BYTES
    app.config["MAX_FORM_MEMORY_SIZE"] = limits.MAX_BODY_BYTES
    app.config["MAX_FORM_PARTS"] = limits.MAX_FORM_PARTS
    app.json = bodies.JSONProvider(app)  # request.get_json within the JSON limits
    # '//' in a path is data for the view to refuse (a product named '/etc/passwd'), not a
    # redirect to another URL
    app.url_map.merge_slashes = False
    app.extensions["regio.settings"] = values
    app.extensions["regio.redis"] = redis.Redis.from_url(values["REDIS_URL"])

    from app import auth
    from app.views import admin, api, pages, runs_api
    from app.views import auth as auth_views
    from app.views import automation as automation_views
    from app.views import frames as frames_views
    from app.views import hips as hips_views
    from app.views import names as names_views

    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(runs_api.bp)
    app.register_blueprint(auth_views.bp)
    app.register_blueprint(admin.bp)
    auth.init_app(app)
    app.register_blueprint(hips_views.bp)
    app.register_blueprint(automation_views.bp)
    app.register_blueprint(frames_views.bp)
    app.register_blueprint(names_views.bp)

    @app.after_request
    def add_version(response):
        response.headers["X-Regio-Version"] = __version__
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if isinstance(exc, RequestEntityTooLarge) and exc.description == TOO_LARGE:
            exc = RequestEntityTooLarge(
                description=f"the request is larger than {limits.MAX_BODY_BYTES} bytes "
                f"(or a form has more than {limits.MAX_FORM_PARTS} parts)"
            )
        if request.path.startswith("/api/"):
            return jsonify(error=exc.name, message=exc.description, status=exc.code), exc.code
        return exc

    @app.errorhandler(bodies.InputError)
    def input_error(exc: bodies.InputError):
        """A request part refused by ``app.bodies`` wherever it is read: 400 with the reason."""
        return http_error(BadRequest(description=str(exc)))

    @app.context_processor
    def inject_version() -> dict[str, str]:
        return {"regio_version": __version__}

    return app


def _instance_secret(instance: Path) -> str:
    """A random cookie-signing key kept in the instance folder, so restarts keep sessions valid."""
    path = instance / "secret_key"
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
