"""``POST /api/regions/convert``: a region checked and written in another DS9 frame.

The page imports and exports DS9 files through it (the server is the authority on frames): a
DS9 text in any frame of ``indexer.shapes.DS9_FRAMES`` or a list of viewer shapes comes in, the
ICRS viewer shapes, the DS9 text in the asked frame (by default the text's own), the region's
centre and its size across go out. The region passes the same checks, size limit included
(``REGIO_REGION_MAX_DEG``), as one given to a session; nothing is stored.
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify

from app import shapes
from app.views.api import json_body, settings
from indexer import shapes as sky

bp = Blueprint("frames", __name__, url_prefix="/api")


@bp.post("/regions/convert")
def convert():
    """``{"region": DS9 text or viewer shapes, "frame": "galactic"}`` -> ``{"shapes", "frame",
    "ds9", "centre": {"ra", "dec"}, "frame_centre": {"lon", "lat"}, "span"}`` (ICRS degrees
    but ``frame_centre``, the centre in ``frame``; ``span``: degrees across)."""
    body = json_body()
    unknown = set(body) - {"region", "frame"}
    if unknown:
        abort(
            400,
            description=f"unknown field(s): {', '.join(sorted(str(n)[:40] for n in unknown)[:10])}",
        )
    region = body.get("region")
    if region in (None, "", []) or not isinstance(region, str | list):
        abort(400, description="'region' is required: a DS9 region string or a list of shapes")
    try:
        frame = None if body.get("frame") is None else shapes.check_frame(body["frame"])
        regions, own = shapes.parse_frame(region, settings()["REGION_MAX_DEG"])
        frame = frame or own or "icrs"
        centre = sky.centre(regions)
        shown = centre.transform_to(sky.DS9_FRAMES[frame]).spherical
        answer = {
            "shapes": shapes.to_json(regions),
            "frame": frame,
            "ds9": shapes.to_ds9(regions, frame),
            "centre": {"ra": float(centre.ra.deg), "dec": float(centre.dec.deg)},
            "frame_centre": {"lon": float(shown.lon.deg), "lat": float(shown.lat.deg)},
            "span": float(sky.span(regions).deg),
        }
    except shapes.RegionError as exc:
        abort(400, description=f"region: {exc}")
    return jsonify(answer)
