"""Regions as the web app receives and stores them: viewer JSON shapes and DS9 text.

The viewer sends a list of JSON shapes in ICRS degrees::

    {"type": "circle",  "ra": 149.59, "dec": -11.06, "radius": 0.0167}
    {"type": "annulus", "ra": ..., "dec": ..., "inner": 0.03, "outer": 0.06}
    {"type": "ellipse", "ra": ..., "dec": ..., "width": 0.02, "height": 0.01, "angle": 30}
    {"type": "box",     "ra": ..., "dec": ..., "width": 0.02, "height": 0.01, "angle": 30}
    {"type": "polygon", "vertices": [[ra, dec], [ra, dec], [ra, dec], ...]}

with ``"exclude": true`` for a DS9 exclusion (``-circle(...)``). Sizes are full widths and heights
(DS9's convention), radii are radii, angles are DS9 angles in degrees. Users may also give DS9 text
in any sky frame of ``indexer.shapes.DS9_FRAMES`` (converted to ICRS there, by ``validate``; the
frame it was written in is kept as the user's frame, and :func:`to_ds9` writes a region back in
it). Parsing, validation and frames of the shapes themselves belong to ``indexer.shapes``; this
module converts between the formats, both ways, and checks a region's size against the site's
limit (:func:`check_span`, the setting ``REGIO_REGION_MAX_DEG``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import astropy.units as u
import numpy as np
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

from indexer.limits import (
    MAX_NUMBER_MAGNITUDE,
    MAX_POLYGON_VERTICES,
    MAX_REGION_VERTICES,
    MAX_SHAPES,
)
from indexer.shapes import (
    DS9_FRAMES,
    RegionError,
    from_icrs,
    is_included,
    parse_ds9_frame,
    span,
    validate,
)

__all__ = [
    "DS9_FRAMES",
    "RegionError",
    "check_span",
    "from_json",
    "parse",
    "parse_frame",
    "to_ds9",
    "to_json",
    "to_physical_ds9",
]

#: The fields of each viewer shape type (besides ``type`` and ``exclude``).
FIELDS: dict[str, frozenset[str]] = {
    "circle": frozenset({"ra", "dec", "radius"}),
    "annulus": frozenset({"ra", "dec", "inner", "outer"}),
    "ellipse": frozenset({"ra", "dec", "width", "height", "angle"}),
    "box": frozenset({"ra", "dec", "width", "height", "angle"}),
    "polygon": frozenset({"vertices"}),
}


def _show(value: Any) -> str:
    """A short description of a value for a message (never the whole of a huge value)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER_MAGNITUDE:
        return f"an integer of {value.bit_length()} bits"
    return f"{value!r:.60}" if isinstance(value, int | float | str) else type(value).__name__


def _number(value: Any, what: str) -> float:
    """A finite JSON number of at most ``MAX_NUMBER_MAGNITUDE`` as a float (no bool, no text).

    Large integers are compared as integers, so ``10**400`` is refused, not overflowed."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RegionError(f"{what} must be a number (degrees), got {_show(value)}")
    if not abs(value) <= MAX_NUMBER_MAGNITUDE:  # also refuses NaN
        raise RegionError(
            f"{what} must be a finite number (degrees) of magnitude at most "
            f"{MAX_NUMBER_MAGNITUDE:.3g}, got {_show(value)}"
        )
    return float(value)


def _field(shape: dict, key: str, where: str) -> float:
    return _number(shape.get(key), f"{where}: '{key}'")


def _size(shape: dict, key: str, where: str) -> u.Quantity:
    value = _field(shape, key, where)
    if value <= 0:
        raise RegionError(f"{where}: '{key}' must be positive, got {value}")
    return value * u.deg


def _dec_in_range(dec: float | np.ndarray, where: str) -> None:
    bad = ~((np.asarray(dec) >= -90) & (np.asarray(dec) <= 90))
    if np.any(bad):
        value = float(np.atleast_1d(dec)[np.flatnonzero(bad)[0]])
        raise RegionError(f"{where}: dec must be between -90 and 90 degrees, got {value}")


def _centre(shape: dict, where: str) -> tuple[float, float]:
    """A shape's checked centre (RA in [0, 360), Dec) [deg]."""
    ra, dec = _field(shape, "ra", where), _field(shape, "dec", where)
    _dec_in_range(dec, where)
    return ra % 360, dec


def _check_counts(shapes: Any) -> None:
    """Refuse a list of shapes over the counts of ``indexer.limits`` before building anything:
    the number of shapes, the vertices of each polygon and of all of them, unknown fields."""
    if not isinstance(shapes, list):
        raise RegionError("a region must be a list of shapes or a DS9 string")
    if len(shapes) > MAX_SHAPES:
        raise RegionError(f"too many shapes: {len(shapes)} (max {MAX_SHAPES})")
    total = 0
    for number, shape in enumerate(shapes, start=1):
        where = f"shape {number}"
        if not isinstance(shape, dict):
            raise RegionError(f"{where} must be an object with a 'type', got {_show(shape)}")
        kind = shape.get("type")
        if not isinstance(kind, str) or kind not in FIELDS:
            raise RegionError(
                f"{where}: unknown type {_show(kind)} (circle, annulus, ellipse, box or polygon)"
            )
        unknown = set(shape) - FIELDS[kind] - {"type", "exclude"}
        if unknown:
            names = ", ".join(sorted(repr(str(k)[:40]) for k in unknown)[:5])
            raise RegionError(f"{where}: unknown field(s) for a {kind}: {names}")
        if "exclude" in shape and not isinstance(shape["exclude"], bool):
            raise RegionError(
                f"{where}: 'exclude' must be true or false, got {_show(shape['exclude'])}"
            )
        if kind == "polygon":
            vertices = shape.get("vertices")
            if not isinstance(vertices, list):
                raise RegionError(f"{where}: 'vertices' must be a list of [ra, dec] pairs")
            if len(vertices) < 3:
                raise RegionError(
                    f"{where}: a polygon needs at least 3 vertices (got {len(vertices)})"
                )
            if len(vertices) > MAX_POLYGON_VERTICES:
                raise RegionError(
                    f"{where}: too many polygon vertices: {len(vertices)} "
                    f"(max {MAX_POLYGON_VERTICES})"
                )
            total += len(vertices)
    if total > MAX_REGION_VERTICES:
        raise RegionError(
            f"too many polygon vertices in the region: {total} (max {MAX_REGION_VERTICES})"
        )


def _vertices(vertices: list, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A polygon's checked ``[ra, dec]`` pairs as arrays (RA in [0, 360)) [deg]."""
    ra = np.empty(len(vertices))
    dec = np.empty(len(vertices))
    for i, vertex in enumerate(vertices):
        if not isinstance(vertex, list | tuple) or len(vertex) != 2:
            raise RegionError(f"{where}: vertex {i + 1} must be an [ra, dec] pair (degrees)")
        ra[i] = _number(vertex[0], f"{where}: vertex {i + 1} ra")
        dec[i] = _number(vertex[1], f"{where}: vertex {i + 1} dec")
    _dec_in_range(dec, where)
    return ra % 360, dec


def _checked(shape: dict, number: int) -> dict[str, Any]:
    """The numbers of one shape, checked (sizes in degrees, positions as arrays)."""
    where = f"shape {number}"
    kind = shape["type"]
    if kind == "polygon":
        return {"kind": kind, "vertices": _vertices(shape["vertices"], where)}
    sizes = {"circle": ("radius",), "annulus": ("inner", "outer")}.get(kind, ("width", "height"))
    out = {"kind": kind, "centre": _centre(shape, where)}
    out |= {key: _size(shape, key, where) for key in sizes}
    if kind in ("ellipse", "box"):
        out["angle"] = (_field(shape, "angle", where) if "angle" in shape else 0.0) * u.deg
    return out


def _build(checked: dict[str, Any], centre: SkyCoord | None) -> SkyRegion:
    kind = checked["kind"]
    if kind == "circle":
        return CircleSkyRegion(centre, checked["radius"])
    if kind == "annulus":
        return CircleAnnulusSkyRegion(centre, checked["inner"], checked["outer"])
    if kind in ("ellipse", "box"):
        cls = EllipseSkyRegion if kind == "ellipse" else RectangleSkyRegion
        return cls(centre, checked["width"], checked["height"], checked["angle"])
    ra, dec = checked["vertices"]
    return PolygonSkyRegion(SkyCoord(ra * u.deg, dec * u.deg, frame="icrs"))


def from_json(shapes: Any) -> Regions:
    """Viewer JSON shapes -> validated ICRS ``Regions``. Raises ``RegionError`` with a message.

    Counts and fields are checked for every shape before the first sky coordinate is built;
    then the centres are made as one vectorised ``SkyCoord`` (a tenth of the cost of one each)
    and every polygon as one."""
    _check_counts(shapes)
    checked = [_checked(shape, number) for number, shape in enumerate(shapes, start=1)]
    with_centre = [c for c in checked if "centre" in c]
    if with_centre:
        ra, dec = np.array([c["centre"] for c in with_centre]).T
        centres = iter(SkyCoord(ra * u.deg, dec * u.deg, frame="icrs"))
    built = []
    for number, (shape, item) in enumerate(zip(shapes, checked, strict=True), start=1):
        try:
            region = _build(item, next(centres) if "centre" in item else None)
        except (ValueError, TypeError) as exc:  # regions' own checks, e.g. inner >= outer radius
            raise RegionError(f"shape {number}: {exc}") from None
        region.meta["include"] = 0 if shape.get("exclude") else 1
        built.append(region)
    return validate(built)


def parse(value: Any, max_deg: float | None = None) -> Regions:
    """A region given either as DS9 text or as a list of viewer JSON shapes, in ICRS; larger
    than ``max_deg`` across (when given) is refused (:func:`check_span`)."""
    return parse_frame(value, max_deg)[0]


def parse_frame(value: Any, max_deg: float | None = None) -> tuple[Regions, str | None]:
    """:func:`parse`, and the DS9 frame the text was written in (None for viewer shapes, which
    are ICRS degrees and say nothing of the user's frame)."""
    if isinstance(value, str):
        regions, frame = parse_ds9_frame(value)
    else:
        regions, frame = from_json(value), None
    if max_deg is not None:
        check_span(regions, max_deg)
    return regions, frame


def check_span(regions: Regions, max_deg: float) -> None:
    """Refuse a region larger than ``max_deg`` degrees across (``indexer.shapes.span``: a
    circle's diameter, a box's diagonal, the distance across several shapes)."""
    size = _lone_shape_span(regions)
    if size is None:
        size = span(regions).deg
    if size > max_deg:
        raise RegionError(
            f"the region is {size:.3g}° across, larger than the {max_deg:g}° this site allows "
            "(REGIO_REGION_MAX_DEG): draw a smaller region"
        )


def _lone_shape_span(regions: Iterable[SkyRegion]) -> float | None:
    """:func:`span` in degrees of a region that is one included circle, annulus, ellipse or box
    (most requests), from its sizes alone: its own diameter or diagonal. The general
    computation goes through astropy's coordinates (~6 ms a region); None for other regions."""
    shapes = list(regions)
    if len(shapes) != 1 or not is_included(shapes[0]):
        return None
    shape = shapes[0]
    if isinstance(shape, CircleSkyRegion):
        half = shape.radius.to_value(u.deg)
    elif isinstance(shape, CircleAnnulusSkyRegion):
        half = max(shape.inner_radius.to_value(u.deg), shape.outer_radius.to_value(u.deg))
    elif isinstance(shape, RectangleSkyRegion):
        half = float(np.hypot(shape.width.to_value(u.deg), shape.height.to_value(u.deg)) / 2)
    elif isinstance(shape, EllipseSkyRegion):
        half = max(shape.width.to_value(u.deg), shape.height.to_value(u.deg)) / 2
    else:
        return None
    return min(2 * float(half), 360.0)


def check_frame(frame: Any) -> str:
    """A DS9 frame name as given by a user (case-insensitive), or a ``RegionError``."""
    name = frame.strip().lower() if isinstance(frame, str) else None
    if name not in DS9_FRAMES:
        raise RegionError(f"'frame' must be one of {', '.join(DS9_FRAMES)}, got {_show(frame)}")
    return name


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


def to_ds9(regions: Iterable[SkyRegion], frame: str = "icrs") -> str:
    """ICRS ``Regions`` -> a DS9 region file in ``frame`` (a ``DS9_FRAMES`` key; degrees),
    every shape converted to it (``indexer.shapes.from_icrs``)."""
    frame = check_frame(frame)
    converted = [from_icrs(shape, frame) for shape in validate(list(regions))]
    return (
        f"# Region file format: DS9 (written by Regio)\n{frame}\n"
        + "\n".join(_ds9_lines(converted))
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
