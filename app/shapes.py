"""Regions as the web app receives and stores them: viewer JSON shapes and DS9 text.

The viewer sends a list of JSON shapes in ICRS degrees::

    {"type": "circle",  "ra": 149.59, "dec": -11.06, "radius": 0.0167}
    {"type": "annulus", "ra": ..., "dec": ..., "inner": 0.03, "outer": 0.06}
    {"type": "ellipse", "ra": ..., "dec": ..., "width": 0.02, "height": 0.01, "angle": 30}
    {"type": "box",     "ra": ..., "dec": ..., "width": 0.02, "height": 0.01, "angle": 30}
    {"type": "polygon", "vertices": [[ra, dec], [ra, dec], [ra, dec], ...]}

with ``"exclude": true`` for a DS9 exclusion (``-circle(...)``). Sizes are full widths and heights
(DS9's convention), radii are radii, angles are DS9 angles in degrees. Users may also give DS9 text
(any sky frame; converted to ICRS). Parsing and validation of the shapes themselves belong to
``indexer.shapes``; this module converts between the formats, both ways.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from regions import (
    CircleAnnulusSkyRegion,
    CircleSkyRegion,
    EllipseSkyRegion,
    PolygonSkyRegion,
    RectangleSkyRegion,
    Regions,
    SkyRegion,
)

from indexer.shapes import RegionError, is_included, parse_ds9, validate

__all__ = ["RegionError", "from_json", "parse", "to_ds9", "to_json", "to_physical_ds9"]

MAX_JSON_SHAPES = 100


def _number(shape: dict, key: str, where: str) -> float:
    value = shape.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RegionError(f"{where}: '{key}' must be a number (degrees), got {value!r}")
    return float(value)


def _size(shape: dict, key: str, where: str) -> u.Quantity:
    value = _number(shape, key, where)
    if value <= 0:
        raise RegionError(f"{where}: '{key}' must be positive, got {value}")
    return value * u.deg


def _centre(shape: dict, where: str) -> SkyCoord:
    ra, dec = _number(shape, "ra", where), _number(shape, "dec", where)
    if not -90 <= dec <= 90:
        raise RegionError(f"{where}: dec must be between -90 and 90 degrees, got {dec}")
    return SkyCoord(ra % 360 * u.deg, dec * u.deg, frame="icrs")


def _shape_from_json(shape: Any, number: int) -> SkyRegion:
    where = f"shape {number}"
    if not isinstance(shape, dict):
        raise RegionError(f"{where} must be an object with a 'type', got {shape!r:.60}")
    kind = shape.get("type")
    if kind == "circle":
        region = CircleSkyRegion(_centre(shape, where), _size(shape, "radius", where))
    elif kind == "annulus":
        region = CircleAnnulusSkyRegion(
            _centre(shape, where),
            _size(shape, "inner", where),
            _size(shape, "outer", where),
        )
    elif kind in ("ellipse", "box"):
        cls = EllipseSkyRegion if kind == "ellipse" else RectangleSkyRegion
        angle = _number(shape, "angle", where) if "angle" in shape else 0.0
        region = cls(
            _centre(shape, where),
            _size(shape, "width", where),
            _size(shape, "height", where),
            angle * u.deg,
        )
    elif kind == "polygon":
        vertices = shape.get("vertices")
        if not isinstance(vertices, list) or not all(
            isinstance(v, list | tuple) and len(v) == 2 for v in vertices
        ):
            raise RegionError(f"{where}: 'vertices' must be a list of [ra, dec] pairs")
        if len(vertices) < 3:
            raise RegionError(f"{where}: a polygon needs at least 3 vertices (got {len(vertices)})")
        points = [
            _centre({"ra": v[0], "dec": v[1]}, f"{where} vertex {i + 1}")
            for i, v in enumerate(vertices)
        ]
        region = PolygonSkyRegion(SkyCoord(points))
    else:
        raise RegionError(
            f"{where}: unknown type {kind!r} (circle, annulus, ellipse, box or polygon)"
        )
    region.meta["include"] = 0 if shape.get("exclude") else 1
    return region


def from_json(shapes: Any) -> Regions:
    """Viewer JSON shapes -> validated ICRS ``Regions``. Raises ``RegionError`` with a message."""
    if not isinstance(shapes, list):
        raise RegionError("a region must be a list of shapes or a DS9 string")
    if len(shapes) > MAX_JSON_SHAPES:
        raise RegionError(f"too many shapes: {len(shapes)} (max {MAX_JSON_SHAPES})")
    built = []
    for number, shape in enumerate(shapes, start=1):
        try:
            built.append(_shape_from_json(shape, number))
        except RegionError:
            raise
        except (ValueError, TypeError) as exc:  # regions' own checks, e.g. inner >= outer radius
            raise RegionError(f"shape {number}: {exc}") from None
    return validate(built)


def parse(value: Any) -> Regions:
    """A region given either as DS9 text or as a list of viewer JSON shapes."""
    if isinstance(value, str):
        return parse_ds9(value)
    return from_json(value)


def to_json(regions: Iterable[SkyRegion]) -> list[dict[str, Any]]:
    """ICRS ``Regions`` -> viewer JSON shapes (degrees)."""
    out = []
    for shape in regions:
        if isinstance(shape, PolygonSkyRegion):
            v = shape.vertices.icrs
            item = {
                "type": "polygon",
                "vertices": [
                    [float(a), float(d)] for a, d in zip(v.ra.deg, v.dec.deg, strict=True)
                ],
            }
        else:
            c = shape.center.icrs
            item = {"ra": float(c.ra.deg), "dec": float(c.dec.deg)}
            if isinstance(shape, CircleSkyRegion):
                item |= {"type": "circle", "radius": float(shape.radius.to_value(u.deg))}
            elif isinstance(shape, CircleAnnulusSkyRegion):
                item |= {
                    "type": "annulus",
                    "inner": float(shape.inner_radius.to_value(u.deg)),
                    "outer": float(shape.outer_radius.to_value(u.deg)),
                }
            else:
                item |= {
                    "type": "ellipse" if isinstance(shape, EllipseSkyRegion) else "box",
                    "width": float(shape.width.to_value(u.deg)),
                    "height": float(shape.height.to_value(u.deg)),
                    "angle": float(shape.angle.to_value(u.deg)),
                }
        if not is_included(shape):
            item["exclude"] = True
        out.append(item)
    return out


def _ds9_lines(regions: Iterable[Any]) -> list[str]:
    """One DS9 line per shape, exclusions written as DS9 does (``-circle(...)``)."""
    lines = []
    for shape in regions:
        text = Regions([shape]).serialize(format="ds9").strip().splitlines()[-1]
        body = text.split(" #", 1)[0].strip()
        lines.append(body if is_included(shape) else "-" + body)
    return lines


def to_ds9(regions: Iterable[SkyRegion]) -> str:
    """ICRS ``Regions`` -> a DS9 region file (``icrs`` frame, degrees)."""
    return (
        "# Region file format: DS9 (written by Regio)\nicrs\n"
        + "\n".join(_ds9_lines(regions))
        + "\n"
    )


def to_physical_ds9(regions: Iterable[SkyRegion], wcs: WCS) -> str:
    """The same shapes in an event list's X/Y sky pixels (DS9 ``physical``), via its column WCS."""
    regions = list(regions)
    pixel = [shape.to_pixel(wcs) for shape in regions]
    for pix, sky in zip(pixel, regions, strict=True):
        pix.meta["include"] = 1 if is_included(sky) else 0
    return (
        "# Region file format: DS9 (written by Regio)\nphysical\n"
        + "\n".join(_ds9_lines(pixel))
        + "\n"
    )
