"""Sky regions: DS9 strings -> ``regions`` objects (ICRS) -> MOCs.

This module owns region parsing and validation for the whole project (the indexer CLI and the
web app, which adds Aladin-JSON input on top of the same objects).

Supported DS9 shapes, in sky coordinates only: ``circle``, ``ellipse``, ``box``, ``polygon``,
``annulus`` (one inner and one outer radius). Several shapes may be given; shapes prefixed with
``-`` (DS9 exclusions, e.g. ``-circle(...)``) are subtracted from the union of the others.

Conversion to a MOC (mocpy, ICRS, HEALPix NESTED):

- circle -> ``MOC.from_cone``; annulus -> ``MOC.from_ring``;
- ellipse -> ``MOC.from_elliptical_cone`` (a circle when both axes are equal);
- polygon -> ``MOC.from_polygon``: mocpy joins the vertices by **great circles**, while ``regions``
  (and DS9) join them by straight lines in the projection plane. For arcminute-size polygons the
  two differ by far less than a HEALPix cell at the depths used here (a 1 degree edge bulges by
  ~0.5"); for a 5 degree edge, by ~13";
- box -> a 4-vertex polygon whose corners are placed exactly on the sky (spherical offsets from
  the centre along the box axes), so its edges are great circles too.

The DS9 ``angle`` of ellipses and boxes is measured counter-clockwise from the RA axis (West, as
shown with North up and East left); the position angle of the box/ellipse ``height`` axis East of
North is therefore equal to ``angle`` (and that of the ``width`` axis is ``angle + 90``).

Frames: every DS9 sky frame the ``regions`` 0.12 parser reads (:data:`DS9_FRAMES`: ``icrs``,
``fk5``/``j2000``, ``fk4``/``b1950``, ``galactic``, ``ecliptic``) is converted to ICRS by
:func:`validate`, the one gate every region passes, so that everything after it (MOCs, session
files, runs) sees ICRS shapes only: centres and polygon vertices are transformed, and the angle of
ellipses and boxes is turned by the position angle of the frame's North at the shape's centre
(:func:`north_angle`); sizes are kept. :func:`from_icrs` turns an ICRS shape back into a frame
(for DS9 files written in the frame the user chose); :func:`parse_ds9_frame` also says in which
frame the text was written.

All cells that the shape touches are kept (mocpy's default), so a region smaller than one cell
still gives a non-empty MOC.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable

import astropy.units as u
import numpy as np
from astropy.coordinates import (
    FK4,
    FK5,
    ICRS,
    Angle,
    BarycentricMeanEcliptic,
    BaseCoordinateFrame,
    Galactic,
    SkyCoord,
    SphericalRepresentation,
    UnitSphericalRepresentation,
)
from astropy.utils.exceptions import AstropyUserWarning
from mocpy import MOC
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
    MAX_DS9_STATEMENTS,
    MAX_MOC_OUTLINE_CELLS,
    MAX_NUMBER_CHARS,
    MAX_POLYGON_VERTICES,
    MAX_REGION_VERTICES,
    MAX_SHAPES,
    MAX_TEXT_CHARS,
)

#: Default MOC depth of a region (HEALPix order 15: cells of 6.4 arcsec).
DEFAULT_DEPTH: int = 15

SHAPES = (
    CircleSkyRegion,
    EllipseSkyRegion,
    RectangleSkyRegion,
    PolygonSkyRegion,
    CircleAnnulusSkyRegion,
)
SHAPE_NAMES = "circle, ellipse, box, polygon, annulus"


#: The DS9 sky frames (as written in region files) and the astropy frames the ``regions``
#: parser gives them; ``j2000`` and ``b1950`` are read as ``fk5`` and ``fk4``.
DS9_FRAMES: dict[str, BaseCoordinateFrame] = {
    "icrs": ICRS(),
    "fk5": FK5(equinox="J2000"),
    "fk4": FK4(equinox="B1950", obstime="B1950"),
    "galactic": Galactic(),
    "ecliptic": BarycentricMeanEcliptic(equinox="J2000"),
}
#: A step along a frame's meridian, to find the direction of its North [deg].
_NORTH_STEP_DEG = 1e-4


class RegionError(ValueError):
    """A region that cannot be used; ``str(exc)`` is a one-line message meant for the user."""


def _one_line(text: object, max_chars: int = 200) -> str:
    """A message on one line of at most ``max_chars`` characters (parsers quote whole lines)."""
    line = " ".join(str(text).split())
    return line if len(line) <= max_chars else line[: max_chars - 3] + "..."


#: Characters that never belong in DS9 text: C0 controls but tab and line ends, DEL, C1
#: controls, and lone UTF-16 surrogates (which a JSON "\ud800" escape can produce).
_DS9_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LONG_NUMBER = re.compile(f"[0-9]{{{MAX_NUMBER_CHARS + 1},}}")
#: The first word of a DS9 statement, as the ``regions`` parser finds it.
_DS9_WORD = re.compile(r"#? *[+-]?([a-zA-Z0-9]+)")
_DS9_SEPARATORS = re.compile(r"[\s,()]+")
#: Every shape name DS9 knows (the ``regions`` parser builds or skips each).
_DS9_SHAPE_NAMES = frozenset(
    [
        "circle",
        "ellipse",
        "box",
        "annulus",
        "polygon",
        "line",
        "point",
        "text",
        "composite",
        "vector",
        "ruler",
        "compass",
        "projection",
        "panda",
        "epanda",
        "bpanda",
    ]
)


def _prescan_ds9(text: str) -> None:
    """Refuse DS9 text over the limits before the ``regions`` parser (~40 us per number) runs.

    Counts statements, shapes, polygon vertices and numbers the way the parser splits them
    (lines and ``;``; comments skipped), so that whatever passes parses in a few tens of ms.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise RegionError(f"region text too long: {len(text)} characters (max {MAX_TEXT_CHARS})")
    bad = _DS9_FORBIDDEN.search(text)
    if bad:
        raise RegionError(
            f"control character U+{ord(bad.group()):04X} at character {bad.start() + 1}: "
            "a DS9 region is plain text"
        )
    long = _LONG_NUMBER.search(text)
    if long:
        raise RegionError(
            f"a number of more than {MAX_NUMBER_CHARS} digits at character {long.start() + 1}"
        )
    statements = text.count("\n") + text.count(";") + 1
    if statements > MAX_DS9_STATEMENTS:
        raise RegionError(
            f"too many lines and ';'-separated statements: {statements} (max {MAX_DS9_STATEMENTS})"
        )
    shapes = vertices = 0
    for statement in re.split("[\n;]", text):
        statement = statement.strip()
        if statement.startswith("#") and not statement.startswith(("# text(", "# composite(")):
            continue
        word = _DS9_WORD.match(statement)
        name = word.group(1).lower() if word else ""
        if name not in _DS9_SHAPE_NAMES:
            continue  # a frame, a 'global' line, or something the parser will refuse
        params = statement[word.end() :].split("#", 1)[0]
        values = sum(1 for value in _DS9_SEPARATORS.split(params) if value)
        if name == "polygon":
            shapes += 1
            corners = math.ceil(values / 2)
            if corners > MAX_POLYGON_VERTICES:
                raise RegionError(
                    f"shape {shapes}: too many polygon vertices: {corners} "
                    f"(max {MAX_POLYGON_VERTICES})"
                )
            vertices += corners
        elif name == "annulus":
            shapes += max(1, values - 3)  # annulus(ra, dec, r1, ..., rn): n - 1 annuli
        elif name in ("ellipse", "box"):
            shapes += max(1, (values - 3) // 2)  # elliptical or box annuli: pairs of sizes
        else:
            shapes += 1
        if shapes > MAX_SHAPES:
            raise RegionError(f"too many shapes: more than {MAX_SHAPES}")
        if vertices > MAX_REGION_VERTICES:
            raise RegionError(
                f"too many polygon vertices in the region: more than {MAX_REGION_VERTICES}"
            )


def parse_ds9(text: str) -> Regions:
    """Parse a DS9 region string into validated sky regions in ICRS (see :func:`validate`).

    Raises :class:`RegionError` for syntax errors, pixel coordinates (no WCS to convert them),
    unsupported shapes, non-positive sizes, polygons with fewer than 3 vertices, empty input,
    control characters and input over the limits of ``indexer.limits`` (checked before parsing).
    """
    return parse_ds9_frame(text)[0]


def parse_ds9_frame(text: str) -> tuple[Regions, str]:
    """Like :func:`parse_ds9`, and the DS9 frame (a :data:`DS9_FRAMES` key) the text's first
    included shape was written in: the frame the user works in."""
    if not isinstance(text, str):
        raise RegionError(f"a DS9 region must be text, not {type(text).__name__}")
    _prescan_ds9(text)
    if not text.strip():
        raise RegionError('empty region: give at least one shape, e.g. icrs;circle(RA,Dec,R")')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parsed = Regions.parse(text, format="ds9")
        except Exception as exc:  # the parser raises ValueError, TypeError, its own errors...
            raise RegionError(f"cannot parse DS9 region: {_one_line(exc)}") from None
    for warning in caught:
        if issubclass(warning.category, AstropyUserWarning):
            message = _one_line(warning.message)
            if "coordinate frame was not found" in message or '"physical"' in message:
                raise RegionError(
                    "no coordinate system before the shape: start with e.g. 'icrs;' "
                    "(pixel coordinates need an image WCS and are not accepted here)"
                )
            raise RegionError(f"cannot parse DS9 region: {message}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    frames = [ds9_frame(shape) for shape in parsed if isinstance(shape, SkyRegion)]
    included = [
        ds9_frame(shape) for shape in parsed if isinstance(shape, SkyRegion) and is_included(shape)
    ]
    valid = validate(parsed)
    return valid, (included or frames or ["icrs"])[0]


def ds9_frame(shape: SkyRegion) -> str:
    """The DS9 name (a :data:`DS9_FRAMES` key) of a sky shape's frame; ``icrs`` for any other."""
    coords = shape.vertices if isinstance(shape, PolygonSkyRegion) else shape.center
    frame = coords.frame
    for name, known in DS9_FRAMES.items():
        if frame.name == known.name:
            return name
    return "icrs"


def _frame(name: str) -> BaseCoordinateFrame:
    try:
        return DS9_FRAMES[name]
    except (KeyError, TypeError):
        raise RegionError(
            f"unknown frame {str(name)[:40]!r}: one of {', '.join(DS9_FRAMES)}"
        ) from None


def north_angle(centre: SkyCoord) -> Angle:
    """Position angle, East of North in ICRS, of the North of ``centre``'s own frame at
    ``centre``: what turns a DS9 angle in that frame into the same angle in ICRS (both frames
    have East to the left of North, so angles add)."""
    north = centre.directional_offset_by(0 * u.deg, _NORTH_STEP_DEG * u.deg)
    return centre.icrs.position_angle(north.icrs).to(u.deg)


def to_icrs(shape: SkyRegion) -> SkyRegion:
    """One sky shape in ICRS: centre or vertices transformed, ellipse and box angles turned by
    :func:`north_angle`, sizes kept; the same object when it already is ICRS."""
    return _convert(shape, ICRS())


def from_icrs(shape: SkyRegion, frame: str) -> SkyRegion:
    """An ICRS sky shape in the DS9 frame ``frame`` (a :data:`DS9_FRAMES` key), the inverse of
    :func:`to_icrs`; the angle is written as DS9 measures it in that frame."""
    return _convert(shape, _frame(frame))


def _convert(shape: SkyRegion, target: BaseCoordinateFrame) -> SkyRegion:
    if isinstance(shape, PolygonSkyRegion):
        if shape.vertices.frame.name == target.name:
            return shape
        out = PolygonSkyRegion(shape.vertices.transform_to(target))
    else:
        centre = shape.center
        if centre.frame.name == target.name:
            return shape
        moved = centre.transform_to(target)
        moved = SkyCoord(moved.frame.realize_frame(moved.represent_as(UnitSphericalRepresentation)))
        if isinstance(shape, EllipseSkyRegion | RectangleSkyRegion):
            # the angle from the old frame's North, plus (ICRS) the old North's position angle,
            # minus the new North's: the same direction on the sky
            turn = north_angle(centre) - north_angle(moved)
            angle = Angle((Angle(shape.angle) + turn).to_value(u.deg) % 360.0, u.deg)
            out = type(shape)(moved, shape.width, shape.height, angle)
        elif isinstance(shape, CircleSkyRegion):
            out = CircleSkyRegion(moved, shape.radius)
        elif isinstance(shape, CircleAnnulusSkyRegion):
            out = CircleAnnulusSkyRegion(moved, shape.inner_radius, shape.outer_radius)
        else:
            return shape  # refused by validation
    out.meta = shape.meta.copy() if shape.meta is not None else out.meta
    out.visual = shape.visual.copy() if shape.visual is not None else out.visual
    return out


def is_included(region: SkyRegion) -> bool:
    """False for DS9 exclusions (``-circle(...)``); shapes built in Python are included."""
    return bool(region.meta.get("include", True)) if region.meta is not None else True


def validate(regions: Regions | Iterable[SkyRegion]) -> Regions:
    """Check shapes, sizes and limits; return the regions as a ``Regions`` list.

    Raises :class:`RegionError` with a user-readable message on the first problem. A
    ``Regions`` this function returned is not checked again (a query validates its region in
    every step): its shapes are taken as not changed since.
    """
    if isinstance(regions, Regions) and getattr(regions, _VALIDATED, None) == _identity(regions):
        return regions
    shapes = list(regions)
    if not shapes:
        raise RegionError("empty region: no shape found")
    if len(shapes) > MAX_SHAPES:
        raise RegionError(f"too many shapes: {len(shapes)} (max {MAX_SHAPES})")
    vertices = 0
    for number, shape in enumerate(shapes, start=1):
        if isinstance(shape, PolygonSkyRegion):
            n = shape.vertices.size
            if n > MAX_POLYGON_VERTICES:
                raise RegionError(
                    f"shape {number}: too many polygon vertices: {n} (max {MAX_POLYGON_VERTICES})"
                )
            vertices += n
    if vertices > MAX_REGION_VERTICES:
        raise RegionError(
            f"too many polygon vertices in the region: {vertices} (max {MAX_REGION_VERTICES})"
        )
    for number, shape in enumerate(shapes, start=1):
        _validate_shape(shape, number)
    try:
        shapes = [to_icrs(shape) for shape in shapes]
    except (ValueError, TypeError) as exc:  # a transformation astropy cannot make
        raise RegionError(f"cannot convert the region to ICRS: {_one_line(exc)}") from None
    if not any(is_included(shape) for shape in shapes):
        raise RegionError("the region only has exclusions ('-shape'): add an included shape")
    valid = Regions(shapes)
    setattr(valid, _VALIDATED, _identity(valid))
    return valid


_VALIDATED = "_regio_validated"


def _identity(regions: Regions) -> tuple[int, ...]:
    """The shapes a ``Regions`` holds, by identity (a list changed since validation differs)."""
    return tuple(id(shape) for shape in regions)


def _validate_shape(shape: object, number: int) -> None:
    where = f"shape {number}"
    if not isinstance(shape, SkyRegion):
        kind = type(shape).__name__.replace("PixelRegion", "").lower() or "shape"
        if type(shape).__name__.endswith("PixelRegion"):
            raise RegionError(
                f"{where} ({kind}) is in pixel coordinates, which need an image WCS; "
                "give sky coordinates (e.g. 'icrs;circle(RA,Dec,R\")')"
            )
        raise RegionError(f"{where} is not a sky region ({type(shape).__name__})")
    if not isinstance(shape, SHAPES):
        kind = type(shape).__name__.replace("SkyRegion", "").lower()
        raise RegionError(f"{where}: unsupported shape '{kind}' (supported: {SHAPE_NAMES})")
    lon, lat = _icrs_deg(shape.vertices if isinstance(shape, PolygonSkyRegion) else shape.center)
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        raise RegionError(f"{where}: coordinates must be finite numbers")
    for name, size in _sizes(shape).items():
        value = float(size.to_value(u.deg))
        if not np.isfinite(value) or value <= 0:
            raise RegionError(f"{where}: {name} must be positive and finite (got {size})")
        if value > 180:
            raise RegionError(f"{where}: {name} must be at most 180 deg (got {size})")
    if isinstance(shape, PolygonSkyRegion):
        n = len(lon)
        if n < 3:
            raise RegionError(f"{where}: a polygon needs at least 3 vertices (got {n})")
        if _polygon_area_deg2(lon, lat) <= 1e-12:
            raise RegionError(f"{where}: the polygon has no area (repeated or aligned vertices)")
    if isinstance(shape, CircleAnnulusSkyRegion) and shape.inner_radius >= shape.outer_radius:
        raise RegionError(f"{where}: the annulus inner radius must be smaller than the outer one")


def _vertices(shape: PolygonSkyRegion) -> SkyCoord:
    return shape.vertices.icrs


def _icrs_deg(coords: SkyCoord) -> tuple[np.ndarray, np.ndarray]:
    """ICRS RA and Dec [deg] as 1-d arrays: read from the stored spherical data when already
    ICRS (no frame transformation, no representation change: ~1 us instead of ~10)."""
    if not isinstance(coords.frame, ICRS):
        coords = coords.icrs
    data = coords.frame.data
    if isinstance(data, UnitSphericalRepresentation | SphericalRepresentation):
        lon, lat = data.lon.to_value(u.deg), data.lat.to_value(u.deg)
    else:
        spherical = coords.frame.represent_as(UnitSphericalRepresentation)
        lon, lat = spherical.lon.to_value(u.deg), spherical.lat.to_value(u.deg)
    return np.atleast_1d(lon), np.atleast_1d(lat)


def _unit_vectors(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Unit vectors (N, 3) of ICRS positions given in degrees."""
    lon, lat = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def _polygon_area_deg2(lon: np.ndarray, lat: np.ndarray) -> float:
    """Area of a polygon (ICRS vertices [deg]) in the plane of spherical offsets from its centre
    (the normalised mean of its vertex unit vectors) [deg^2], by the shoelace formula. Plain
    numpy: the same numbers as ``SkyCoord.skyoffset_frame`` without building a frame."""
    xyz = _unit_vectors(lon, lat)
    mean = xyz.mean(axis=0)
    norm = np.linalg.norm(mean)
    centre = mean / norm if norm > 0 else xyz[0]
    lon0 = np.arctan2(centre[1], centre[0])
    lat0 = np.arcsin(np.clip(centre[2], -1.0, 1.0))
    # rotate the centre to (lon, lat) = (0, 0), North staying up: about z by -lon0, about y by lat0
    x1 = xyz[:, 0] * np.cos(lon0) + xyz[:, 1] * np.sin(lon0)
    y1 = -xyz[:, 0] * np.sin(lon0) + xyz[:, 1] * np.cos(lon0)
    x2 = x1 * np.cos(lat0) + xyz[:, 2] * np.sin(lat0)
    z2 = -x1 * np.sin(lat0) + xyz[:, 2] * np.cos(lat0)
    x = np.degrees(np.arctan2(y1, x2))
    y = np.degrees(np.arcsin(np.clip(z2, -1.0, 1.0)))
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _sizes(shape: SkyRegion) -> dict[str, Angle]:
    if isinstance(shape, CircleSkyRegion):
        return {"radius": Angle(shape.radius)}
    if isinstance(shape, CircleAnnulusSkyRegion):
        return {
            "inner radius": Angle(shape.inner_radius),
            "outer radius": Angle(shape.outer_radius),
        }
    if isinstance(shape, EllipseSkyRegion | RectangleSkyRegion):
        return {"width": Angle(shape.width), "height": Angle(shape.height)}
    return {}


def shape_moc(shape: SkyRegion, max_depth: int = DEFAULT_DEPTH) -> MOC:
    """The MOC of one validated sky shape (exclusion flag ignored), at ``max_depth``."""
    if isinstance(shape, PolygonSkyRegion):
        vertices = _vertices(shape)
        return MOC.from_polygon(vertices.ra, vertices.dec, max_depth=max_depth)
    centre = shape.center.icrs
    lon, lat = centre.ra, centre.dec
    if isinstance(shape, CircleSkyRegion):
        return MOC.from_cone(lon, lat, radius=Angle(shape.radius), max_depth=max_depth)
    if isinstance(shape, CircleAnnulusSkyRegion):
        return MOC.from_ring(
            lon,
            lat,
            internal_radius=Angle(shape.inner_radius),
            external_radius=Angle(shape.outer_radius),
            max_depth=max_depth,
        )
    if isinstance(shape, EllipseSkyRegion):
        width, height = Angle(shape.width) / 2, Angle(shape.height) / 2
        if np.isclose(width.deg, height.deg, rtol=1e-9, atol=0):
            return MOC.from_cone(lon, lat, radius=width, max_depth=max_depth)
        angle = Angle(shape.angle)
        a, b, pa = (height, width, angle) if height > width else (width, height, angle + 90 * u.deg)
        return MOC.from_elliptical_cone(
            lon, lat, a=a, b=b, pa=Angle(pa.deg % 180.0, u.deg), max_depth=max_depth
        )
    if isinstance(shape, RectangleSkyRegion):
        corners = box_corners(shape)
        return MOC.from_polygon(corners.ra, corners.dec, max_depth=max_depth)
    raise RegionError(f"unsupported shape {type(shape).__name__}")


def box_corners(box: RectangleSkyRegion) -> SkyCoord:
    """The 4 corners (ICRS) of a DS9 box, as spherical offsets from its centre along its axes."""
    centre = box.center.icrs
    half_w = Angle(box.width).deg / 2
    half_h = Angle(box.height).deg / 2
    pa_height = np.radians(Angle(box.angle).deg)
    east, north = np.sin(pa_height), np.cos(pa_height)  # unit vector of the height axis
    # the width axis is the height axis turned by +90 deg (East of North)
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    d_east = signs[:, 0] * half_w * north + signs[:, 1] * half_h * east
    d_north = -signs[:, 0] * half_w * east + signs[:, 1] * half_h * north
    offsets = SkyCoord(lon=d_east * u.deg, lat=d_north * u.deg, frame=centre.skyoffset_frame())
    return offsets.icrs


def to_moc(regions: Regions | Iterable[SkyRegion], max_depth: int = DEFAULT_DEPTH) -> MOC:
    """The MOC of a region: union of the included shapes minus the union of the exclusions.

    ``max_depth``: HEALPix order of the result (15 = 6.4" cells by default). Raises
    :class:`RegionError` if the shapes are invalid or nothing is left after the exclusions.
    """
    shapes = validate(regions)
    cell_deg = MOC.order_to_spatial_resolution(max_depth).to_value(u.deg)
    cells = sum(outline_deg(shape) for shape in shapes) / cell_deg
    if cells > MAX_MOC_OUTLINE_CELLS:
        raise RegionError(
            f"the region is too large for a coverage at {cell_deg * 3600:.3g} arcsec: its "
            f"outline crosses ~{cells:.0f} cells (max {MAX_MOC_OUTLINE_CELLS}); "
            "use fewer or smaller shapes"
        )
    included: list[MOC] = []
    excluded: list[MOC] = []
    for shape in shapes:
        try:
            moc = shape_moc(shape, max_depth)
        except RegionError:
            raise
        except Exception as exc:  # mocpy rejects degenerate polygons, etc.
            raise RegionError(
                f"cannot make a sky coverage from the region: {_one_line(exc)}"
            ) from None
        (included if is_included(shape) else excluded).append(moc)
    moc = _union(included)
    if excluded:
        moc = moc.difference(_union(excluded))
    if moc.empty():
        raise RegionError(
            f"the region is empty: its exclusions remove all of it at the MOC resolution "
            f"({MOC.order_to_spatial_resolution(max_depth).to_value(u.arcsec):.2g} arcsec)"
        )
    return moc


def outline_deg(shape: SkyRegion) -> float:
    """Length of a validated shape's outline on the sky [deg] (ellipses by Ramanujan's formula
    on the sines of their semi-axes; boxes by their four sides): what it costs to make its MOC,
    which grows with the cells along the outline."""

    def small_circle(radius_deg: float) -> float:
        return 360.0 * abs(np.sin(np.radians(radius_deg)))

    if isinstance(shape, PolygonSkyRegion):
        xyz = _unit_vectors(*_icrs_deg(shape.vertices))
        cosines = np.clip(np.einsum("ij,ij->i", xyz, np.roll(xyz, -1, axis=0)), -1.0, 1.0)
        return float(np.degrees(np.arccos(cosines)).sum())
    if isinstance(shape, CircleSkyRegion):
        return small_circle(Angle(shape.radius).deg)
    if isinstance(shape, CircleAnnulusSkyRegion):
        return small_circle(Angle(shape.inner_radius).deg) + small_circle(
            Angle(shape.outer_radius).deg
        )
    width, height = Angle(shape.width).deg, Angle(shape.height).deg
    if isinstance(shape, RectangleSkyRegion):
        return 2.0 * (width + height)
    a, b = (np.degrees(np.sin(np.radians(x / 2))) for x in (width, height))
    return float(np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b))))


def _union(mocs: list[MOC]) -> MOC:
    return mocs[0] if len(mocs) == 1 else mocs[0].union(*mocs[1:])


def _shape_centre_vector(shape: SkyRegion) -> np.ndarray:
    coords = _vertices(shape) if isinstance(shape, PolygonSkyRegion) else shape.center.icrs
    xyz = np.atleast_2d(coords.cartesian.xyz.value.T)
    mean = xyz.mean(axis=0)
    norm = np.linalg.norm(mean)
    return mean / norm if norm > 0 else xyz[0]


def centre(regions: Regions | Iterable[SkyRegion]) -> SkyCoord:
    """Centre (ICRS) of the included shapes: the normalised mean of their centre unit vectors.

    A shape's centre is its ``center``; a polygon's is the mean of its vertex unit vectors.
    """
    shapes = [shape for shape in validate(regions) if is_included(shape)]
    vectors = np.array([_shape_centre_vector(shape) for shape in shapes])
    mean = vectors.mean(axis=0)
    norm = np.linalg.norm(mean)
    return _vector_to_coord((mean / norm) if norm > 0 else vectors[0])


def _vector_to_coord(vector: np.ndarray) -> SkyCoord:
    x, y, z = vector
    lon = np.degrees(np.arctan2(y, x)) % 360.0
    lat = np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))
    return SkyCoord(ra=lon * u.deg, dec=lat * u.deg, frame="icrs")


def extent(regions: Regions | Iterable[SkyRegion]) -> Angle:
    """Largest angular half-size of the included shapes (circle radius, ellipse semi-major axis,
    annulus outer radius, box half-diagonal, polygon largest vertex distance from its centre)."""
    sizes = []
    for shape in validate(regions):
        if not is_included(shape):
            continue
        if isinstance(shape, PolygonSkyRegion):
            vertices = _vertices(shape)
            middle = _vector_to_coord(_shape_centre_vector(shape))
            sizes.append(middle.separation(vertices).deg.max())
        elif isinstance(shape, RectangleSkyRegion):
            sizes.append(np.hypot(Angle(shape.width).deg, Angle(shape.height).deg) / 2)
        elif isinstance(shape, EllipseSkyRegion):  # width and height are full axes
            sizes.append(max(Angle(shape.width).deg, Angle(shape.height).deg) / 2)
        else:
            sizes.append(max(size.deg for size in _sizes(shape).values()))
    return Angle(max(sizes), u.deg)


def span(regions: Regions | Iterable[SkyRegion]) -> Angle:
    """How large the included shapes are together: the diameter of the circle about their
    :func:`centre` that holds all of them (a circle's diameter, a box's diagonal, two small
    circles far apart: their distance plus their radii). Exclusions only take away, so they do
    not count. Plain numpy on the ICRS unit vectors (~50 us for a few shapes)."""
    shapes = [shape for shape in validate(regions) if is_included(shape)]
    points, halves, centres = [], [], []
    for shape in shapes:
        if isinstance(shape, PolygonSkyRegion):
            xyz = _unit_vectors(*_icrs_deg(shape.vertices))
            half = 0.0
        else:
            xyz = _unit_vectors(*_icrs_deg(shape.center))
            if isinstance(shape, RectangleSkyRegion):
                half = float(np.hypot(Angle(shape.width).deg, Angle(shape.height).deg) / 2)
            elif isinstance(shape, EllipseSkyRegion):  # width and height are full axes
                half = max(Angle(shape.width).deg, Angle(shape.height).deg) / 2
            else:  # radii
                half = max(size.deg for size in _sizes(shape).values())
        mean = xyz.mean(axis=0)
        norm = np.linalg.norm(mean)
        centres.append(mean / norm if norm > 0 else xyz[0])
        points.append(xyz)
        halves.append(half)
    mean = np.mean(centres, axis=0)
    norm = np.linalg.norm(mean)
    middle = mean / norm if norm > 0 else centres[0]
    reach = 0.0
    for xyz, half in zip(points, halves, strict=True):
        cross = np.linalg.norm(np.cross(xyz, middle), axis=-1)
        distance = np.degrees(np.arctan2(cross, xyz @ middle)).max()
        reach = max(reach, float(distance) + half)
    return Angle(min(2 * reach, 360.0), u.deg)
