"""Helpers the instrument modules share: errors, header look-ups, column WCS, event outlines.

Not an instrument (the leading ``_`` keeps the registry from loading it as one).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from mocpy import MOC
from scipy.spatial import ConvexHull, QhullError


class FootprintError(ValueError):
    """The file cannot be indexed; ``str(exc)`` says why in one line."""


class NotRecognisedError(FootprintError):
    """A readable FITS file that no registered instrument recognises (or not a usable one)."""


class UnreadableError(FootprintError):
    """Not FITS, or corrupt / truncated FITS."""


def first(headers: tuple[fits.Header, ...], *keys: str) -> Any:
    """The first non-empty value of ``keys`` (in order) over ``headers`` (in order)."""
    for key in keys:
        for header in headers:
            value = header.get(key)
            if value is not None and value != "":
                return value.strip() if isinstance(value, str) else value
    return None


def as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def header_text(header: fits.Header, key: str) -> str:
    return str(header.get(key, "")).strip()


def column_numbers(header: fits.Header) -> dict[str, int]:
    """``{column name (upper case): 1-based column number}`` of a table header."""
    return {
        str(header.get(f"TTYPE{i}", "")).strip().upper(): i
        for i in range(1, int(header.get("TFIELDS", 0)) + 1)
    }


def column_wcs(header: fits.Header) -> WCS | None:
    """The celestial WCS of the X/Y columns of an event table (1-based pixels), or None.

    Column names are matched in any case (XMM writes ``X``, Chandra ``x``).
    """
    columns = column_numbers(header)
    if "X" not in columns or "Y" not in columns:
        return None
    ix, iy = columns["X"], columns["Y"]
    keys = [f"{k}{i}" for i in (ix, iy) for k in ("TCTYP", "TCRVL", "TCRPX", "TCDLT")]
    if any(key not in header for key in keys):
        return None
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = [header[f"TCTYP{ix}"], header[f"TCTYP{iy}"]]
    wcs.wcs.crval = [header[f"TCRVL{ix}"], header[f"TCRVL{iy}"]]
    wcs.wcs.crpix = [header[f"TCRPX{ix}"], header[f"TCRPX{iy}"]]
    wcs.wcs.cdelt = [header[f"TCDLT{ix}"], header[f"TCDLT{iy}"]]
    return wcs if wcs.has_celestial else None


def image_wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # SAS DATE-OBS/RADECSYS fixes
        return WCS(header).celestial


def column_limits(header: fits.Header, name: str) -> tuple[float, float, int | None]:
    """``(TLMIN, TLMAX, TNULL)`` of a column (infinite limits and None when absent)."""
    i = column_numbers(header)[name.upper()]
    return (
        float(header.get(f"TLMIN{i}", -np.inf)),
        float(header.get(f"TLMAX{i}", np.inf)),
        header.get(f"TNULL{i}"),
    )


def events_hdu(hdul: fits.HDUList, chip_column: str) -> fits.BinTableHDU | None:
    """The ``EVENTS`` table with X, Y, ``chip_column`` and a sky column WCS, or None."""
    for hdu in hdul[1:]:
        if hdu.name != "EVENTS" or not isinstance(hdu, fits.BinTableHDU):
            continue
        names = {name.upper() for name in hdu.columns.names}
        if {"X", "Y", chip_column.upper()} <= names and column_wcs(hdu.header) is not None:
            return hdu
    return None


def valid_sky_positions(hdu: fits.BinTableHDU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, good)``: the X/Y columns and the mask of finite values inside TLMIN..TLMAX and
    not TNULL."""
    header, data = hdu.header, hdu.data
    x = np.asarray(data["X"], dtype=float)
    y = np.asarray(data["Y"], dtype=float)
    good = np.isfinite(x) & np.isfinite(y)
    for name, values in (("X", x), ("Y", y)):
        low, high, null = column_limits(header, name)
        good &= (values >= low) & (values <= high)
        if null is not None:
            good &= values != null
    return x, y, good


def robust_hull(x: np.ndarray, y: np.ndarray, bin_size: float) -> np.ndarray | None:
    """Convex hull (``(k, 2)`` vertices, counter-clockwise) of points after dropping isolated ones.

    A point is isolated when its ``bin_size`` bin (same units as x, y) has no occupied neighbour
    among the 8 around it. Returns None if fewer than 3 non-collinear points remain.
    """
    ix = np.floor((x - x.min()) / bin_size).astype(np.int64) + 1
    iy = np.floor((y - y.min()) / bin_size).astype(np.int64) + 1
    occupied = np.zeros((ix.max() + 2, iy.max() + 2), dtype=np.int32)
    np.add.at(occupied, (ix, iy), 1)
    present = (occupied > 0).astype(np.int32)
    neighbours = sum(
        np.roll(np.roll(present, dx, axis=0), dy, axis=1)
        for dx in (-1, 0, 1)
        for dy in (-1, 0, 1)
        if dx or dy
    )
    keep = neighbours[ix, iy] > 0
    points = np.column_stack([x[keep], y[keep]])
    if len(points) < 3:
        return None
    try:
        hull = ConvexHull(points)
    except QhullError:
        return None
    return points[hull.vertices]


def outlines_moc(outlines: list[np.ndarray], wcs: WCS, depth: int) -> MOC:
    """Union MOC of pixel-frame polygons (1-based FITS pixels) mapped to the sky with ``wcs``."""
    vertices = []
    for outline in outlines:
        lon, lat = wcs.all_pix2world(outline[:, 0], outline[:, 1], 1)
        vertices.append(SkyCoord(lon % 360.0, lat, unit="deg", frame="icrs"))
    mocs = MOC.from_polygons(vertices, max_depth=depth, n_threads=1)
    return mocs[0] if len(mocs) == 1 else mocs[0].union(*mocs[1:])


def chip_outlines_moc(
    x: np.ndarray,
    y: np.ndarray,
    chip: np.ndarray,
    wcs: WCS,
    depth: int,
    *,
    min_events: int,
    bin_arcsec: float,
) -> MOC:
    """Footprint of an event list: the union of per-chip convex outlines of its events.

    Chips with fewer than ``min_events`` events are left out (not enough to outline them);
    isolated events (no occupied neighbour ``bin_arcsec`` bin) are dropped before the hull.
    Chips are convex (rectangles, possibly clipped by a circular field stop), so the hulls
    follow them; gaps between chips and chips without events stay out of the MOC.
    """
    pixel_arcsec = abs(float(wcs.wcs.cdelt[0])) * 3600.0
    outlines = []
    for number in np.unique(chip):
        selected = chip == number
        if selected.sum() < min_events:
            continue
        outline = robust_hull(x[selected], y[selected], bin_arcsec / pixel_arcsec)
        if outline is not None:
            outlines.append(outline)
    if not outlines:
        return MOC.new_empty(depth)
    return outlines_moc(outlines, wcs, depth)
