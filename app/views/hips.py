"""The viewer's sky background: the HiPS folder ``<REGIO_INDEX>/hips`` (``indexer.hips``) at
``/hips/<name>``, for Aladin Lite (``/hips`` is the survey URL).

Only HiPS file names are served (``properties``, ``Moc.fits``, ``Norder{k}/Allsky.{ext}``,
``Norder{k}/Dir{D}/Npix{N}.{ext}``). The page gives Aladin the survey URL without a trailing
slash, so tiles are asked for as ``/hips/Norder..``; ``/hips//<name>`` (what Aladin asked for when
the URL ended with a slash, as pages cached before that change still do) is served too, without
a redirect. Anything else, a path with ``..``, or an absent file is a
short plain-text 404 without a look at the disk beyond the file itself. Aladin asks for tiles
that do not exist as a matter of course, so these 404s stay cheap and are not logged.

Caching: tiles, Allsky and the MOC may be cached for ``TILE_MAX_AGE`` seconds (with ETag and
Last-Modified for revalidation); ``properties`` is revalidated on each load, so a rebuilt HiPS
(new ``hips_release_date``) shows up at the next page load.
"""

from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, Response, current_app, send_from_directory
from werkzeug.exceptions import NotFound

from indexer.hips import HIPS_FOLDER

bp = Blueprint("hips", __name__)

#: Seconds a browser may keep a tile without asking again.
TILE_MAX_AGE: int = 3600

_NAME = re.compile(
    r"(?:properties|Moc\.fits|Norder\d{1,2}/Allsky\.(?:png|jpg)"
    r"|Norder\d{1,2}/Dir\d{1,12}/Npix\d{1,15}\.(?:png|jpg|fits))"
)
_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "fits": "application/fits",
}


def _not_found() -> Response:
    return Response("not found\n", status=404, mimetype="text/plain")


@bp.get("/hips/<path:name>")
@bp.get("/hips//<path:name>", merge_slashes=False)  # survey URL "/hips/" (old pages): no redirect
def hips_file(name: str) -> Response:
    """A file of the HiPS folder, or a plain 404."""
    if not _NAME.fullmatch(name):
        return _not_found()
    folder = Path(current_app.extensions["regio.settings"]["INDEX"]) / HIPS_FOLDER
    if name == "properties":
        mimetype, max_age = "text/plain; charset=utf-8", 0
    else:
        mimetype, max_age = _TYPES[name.rsplit(".", 1)[1]], TILE_MAX_AGE
    try:
        response = send_from_directory(folder, name, mimetype=mimetype, max_age=max_age)
    except NotFound:
        return _not_found()
    if max_age == 0:
        response.cache_control.no_cache = True
    return response
