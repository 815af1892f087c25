"""EPIC files -> metadata and footprint MOC.

Recognition (by header, never by file name): a FITS file (plain or gzip, e.g. PPS ``.FTZ``) with
``TELESCOP = 'XMM'`` and ``INSTRUME`` one of ``EMOS1``, ``EMOS2``, ``EPN`` is

- an **event list** when it has an ``EVENTS`` table with ``X``, ``Y`` and ``CCDNR`` columns and a
  celestial column WCS on ``X``/``Y`` (``TCTYPn``/``TCRVLn``/``TCRPXn``/``TCDLTn``);
- an **exposure map** when its primary HDU is a 2-D image with a celestial WCS and ``CONTENT``
  says ``EXPOSURE MAP`` (SAS ``eexpmap``).

Anything else raises :class:`NotEpicError`; unreadable/corrupt files raise :class:`UnreadableError`.

Footprint from an event list: events with a valid sky position (not ``TNULL``, inside
``TLMIN..TLMAX``, and without the ``OUT_OF_FOV`` flag bit 0x10000 when a ``FLAG`` column exists)
are grouped by ``CCDNR``. For each CCD with at least ``MIN_EVENTS_PER_CCD`` events, isolated
events are dropped (those in a ``HULL_BIN_ARCSEC`` bin with no occupied neighbour bin: stray or
mis-located events), and the convex hull of the others, in the list's own X/Y sky-pixel frame,
is the CCD's outline (EPIC CCDs are rectangles clipped by the circular field of view, so convex).
The outlines go to the sky with the X/Y column WCS and become one MOC (``MOC.from_polygons``:
great-circle edges, indistinguishable from the TAN straight lines for 10' CCD edges). Chip gaps
and dead or switched-off CCDs (no events) stay out of the MOC.

Footprint from an exposure map: the centres of pixels with exposure > 0 (4.35" pixels for SAS
maps), through the image WCS, to ``MOC.from_lonlat`` at the index depth: a cell is in the MOC when
at least one exposed pixel centre falls in it.

Index depth: HEALPix order 13 (``INDEX_DEPTH``): cells of 25.8" (0.43'), so a 1' feature (a dead
CCD's edge, the rim of the field of view, the gap between pn quadrants) spans two or more cells,
while XMM's 6-10" chip gaps between CCDs stay below a cell (they are recorded as covered, which
is what a region query wants: a region straddling a gap still falls on the camera). Measured on
the real RXCJ0958 data set (camera MOCs from event lists and exposure maps):

=====  =========  ================  ===========================  ==========================
order  cell size  ranges per MOC    MOC set bytes (8 B a range)  area of a MOS MOC (arcmin2)
=====  =========  ================  ===========================  ==========================
12     51.5"      50-65             ~0.5 kB                      ~670 (edges blurred by 1')
13     25.8"      112-129           ~1 kB                        ~645
14     12.9"      245-311           ~2.3 kB                      ~630
=====  =========  ================  ===========================  ==========================

(pi x 14.4'^2 = 651 arcmin2; the 2006 MOS1 MOC, with CCD6 dead, is ~555 arcmin2 at order 13.)
A MOC 2.0 FITS file is 8,640 bytes at order 13 (three 2,880-byte FITS blocks; JSON ~3 kB).
Order 14 doubles the size for detail the event outlines (built from ~2,000 events per CCD) do
not have; order 12 blurs the edges by a full arcminute. For the 42,000 camera MOCs of an
archive-size synthetic catalogue, order 13 gives ~5 M ranges and a 48 MB MOC set.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from mocpy import MOC
from scipy.spatial import ConvexHull, QhullError

#: HEALPix order of the camera MOCs (cells of 25.8 arcsec); see the module docstring.
INDEX_DEPTH: int = 13
EPIC_CAMERAS: tuple[str, ...] = ("EMOS1", "EMOS2", "EPN")
#: CCDs with fewer events than this are left out of the footprint (not enough to outline them).
MIN_EVENTS_PER_CCD: int = 20
#: Bin size used to find isolated events before the hull [arcsec].
HULL_BIN_ARCSEC: float = 20.0
OUT_OF_FOV_FLAG: int = 0x10000

_GZIP_MAGIC = b"\x1f\x8b"
_FITS_MAGIC = b"SIMPLE  ="
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".ftz", ".fits.gz", ".fit.gz", ".fts.gz")


class FootprintError(ValueError):
    """The file cannot be indexed; ``str(exc)`` says why in one line."""


class NotEpicError(FootprintError):
    """A readable FITS file that is not an EPIC event list or exposure map."""


class UnreadableError(FootprintError):
    """Not FITS, or corrupt / truncated FITS."""


@dataclass
class Footprint:
    """What one EPIC file contributes: metadata (``store.EXPOSURE_COLUMNS`` names) and its MOC."""

    meta: dict[str, Any]
    moc: MOC


def looks_like_fits(path: Path) -> bool:
    """True if ``path`` has a FITS-like name or starts like FITS / gzip (content, not name)."""
    if path.name.lower().endswith(FITS_SUFFIXES):
        return True
    try:
        with path.open("rb") as stream:
            head = stream.read(len(_FITS_MAGIC))
    except OSError:
        return False
    return head.startswith(_GZIP_MAGIC) or head == _FITS_MAGIC


def read_footprint(path: Path, depth: int = INDEX_DEPTH) -> Footprint:
    """Recognise an EPIC file by its headers and compute its metadata and footprint MOC.

    ``depth``: HEALPix order of the MOC. Raises :class:`NotEpicError` or :class:`UnreadableError`.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False) as hdul:
                hdul.verify("silentfix+ignore")
                footprint = _read_hdul(hdul, depth)
        except FootprintError:
            raise
        except Exception as exc:  # astropy raises OSError, ValueError, TypeError, EOFError...
            raise UnreadableError(f"unreadable FITS file: {_one_line(exc)}") from None
    for warning in caught:
        message = _one_line(warning.message)
        if "truncated" in message.lower():
            raise UnreadableError(f"corrupt FITS file: {message}")
    return footprint


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


def _read_hdul(hdul: fits.HDUList, depth: int) -> Footprint:
    primary = hdul[0].header
    telescope = str(primary.get("TELESCOP", "")).strip()
    camera = str(primary.get("INSTRUME", "")).strip()
    events = _events_hdu(hdul)
    if telescope != "XMM" or camera not in EPIC_CAMERAS:
        header = events.header if events is not None else primary
        telescope = str(header.get("TELESCOP", telescope)).strip()
        camera = str(header.get("INSTRUME", camera)).strip()
    if telescope != "XMM" or camera not in EPIC_CAMERAS:
        raise NotEpicError(
            f"not an XMM EPIC file (TELESCOP={telescope or '-'}, INSTRUME={camera or '-'})"
        )
    if events is not None:
        meta = metadata(primary, events.header, source="events")
        meta["n_events"] = int(events.header.get("NAXIS2", 0))
        moc = events_moc(events, depth)
    elif _is_expmap(hdul[0]):
        meta = metadata(primary, primary, source="expmap")
        meta["n_events"] = None
        moc = expmap_moc(hdul[0], depth)
    else:
        raise NotEpicError(
            f"{camera} file is neither an event list (EVENTS table with X, Y, CCDNR and a sky "
            "column WCS) nor an exposure map"
        )
    if moc.empty():
        raise NotEpicError(f"{camera} file has no usable sky positions (empty footprint)")
    return Footprint(meta=meta, moc=moc)


def _events_hdu(hdul: fits.HDUList) -> fits.BinTableHDU | None:
    for hdu in hdul[1:]:
        if hdu.name != "EVENTS" or not isinstance(hdu, fits.BinTableHDU):
            continue
        names = {name.upper() for name in hdu.columns.names}
        if {"X", "Y", "CCDNR"} <= names and column_wcs(hdu.header) is not None:
            return hdu
    return None


def _is_expmap(hdu: fits.PrimaryHDU) -> bool:
    header = hdu.header
    if header.get("NAXIS") != 2 or "EXPOSURE MAP" not in str(header.get("CONTENT", "")).upper():
        return False
    return _image_wcs(header).has_celestial


def _first(headers: tuple[fits.Header, ...], *keys: str) -> Any:
    for key in keys:
        for header in headers:
            value = header.get(key)
            if value is not None and value != "":
                return value.strip() if isinstance(value, str) else value
    return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def metadata(primary: fits.Header, header: fits.Header, source: str) -> dict[str, Any]:
    """Index metadata from the primary and data-HDU headers of an EPIC file.

    ``exposure`` [s] is the live time of the central CCD (``LIVETIME``) when given, else
    ``ONTIME`` or, for exposure maps, ``EXPOSURE`` (SAS: the largest per-CCD on-time).
    ``ra_pnt``/``dec_pnt``/``pa_pnt`` [deg] are the mean pointing and position angle.
    """
    headers = (header, primary)
    obsid = _first(headers, "OBS_ID")
    if not obsid:
        raise NotEpicError("EPIC file without OBS_ID")
    return {
        "mission": "XMM",
        "obsid": str(obsid),
        "camera": _first(headers, "INSTRUME"),
        "instrument": "EPIC",
        "object": _first(headers, "OBJECT"),
        "observer": _first(headers, "OBSERVER"),
        "date_obs": _first(headers, "DATE-OBS"),
        "date_end": _first(headers, "DATE-END"),
        "exposure": _float(_first(headers, "LIVETIME", "ONTIME", "EXPOSURE")),
        "ra_pnt": _float(_first(headers, "RA_PNT", "REFXCRVL", "RA_NOM")),
        "dec_pnt": _float(_first(headers, "DEC_PNT", "REFYCRVL", "DEC_NOM")),
        "pa_pnt": _float(_first(headers, "PA_PNT")),
        "filter": _first(headers, "FILTER"),
        "submode": _first(headers, "SUBMODE"),
        "source": source,
    }


# --- footprints -------------------------------------------------------------------------------


def _column_numbers(header: fits.Header) -> dict[str, int]:
    """``{column name (upper case): 1-based column number}`` of a table header."""
    return {
        str(header.get(f"TTYPE{i}", "")).strip().upper(): i
        for i in range(1, int(header.get("TFIELDS", 0)) + 1)
    }


def column_wcs(header: fits.Header) -> WCS | None:
    """The celestial WCS of the X/Y columns of an event table, or None."""
    columns = _column_numbers(header)
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


def _image_wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # SAS DATE-OBS/RADECSYS fixes
        return WCS(header).celestial


def _column_limits(header: fits.Header, name: str) -> tuple[float, float, int | None]:
    i = _column_numbers(header)[name]
    return (
        float(header.get(f"TLMIN{i}", -np.inf)),
        float(header.get(f"TLMAX{i}", np.inf)),
        header.get(f"TNULL{i}"),
    )


def events_moc(hdu: fits.BinTableHDU, depth: int = INDEX_DEPTH) -> MOC:
    """Footprint MOC of an EPIC event list: per-CCD outlines of its events (see module doc)."""
    header = hdu.header
    wcs = column_wcs(header)
    data = hdu.data
    x = np.asarray(data["X"], dtype=float)
    y = np.asarray(data["Y"], dtype=float)
    ccd = np.asarray(data["CCDNR"], dtype=int)
    good = np.isfinite(x) & np.isfinite(y)
    for name, values in (("X", x), ("Y", y)):
        low, high, null = _column_limits(header, name)
        good &= (values >= low) & (values <= high)
        if null is not None:
            good &= values != null
    if "FLAG" in {name.upper() for name in hdu.columns.names}:
        good &= (np.asarray(data["FLAG"], dtype=np.int64) & OUT_OF_FOV_FLAG) == 0
    pixel_arcsec = abs(float(wcs.wcs.cdelt[0])) * 3600.0
    outlines = []
    for number in np.unique(ccd[good]):
        selected = good & (ccd == number)
        if selected.sum() < MIN_EVENTS_PER_CCD:
            continue
        outline = robust_hull(x[selected], y[selected], HULL_BIN_ARCSEC / pixel_arcsec)
        if outline is not None:
            outlines.append(outline)
    if not outlines:
        return MOC.new_empty(depth)
    return outlines_moc(outlines, wcs, depth)


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


def expmap_moc(hdu: fits.PrimaryHDU | fits.ImageHDU, depth: int = INDEX_DEPTH) -> MOC:
    """Footprint MOC of an exposure map: cells holding an exposed (> 0) pixel centre."""
    data = np.asarray(hdu.data, dtype=float)
    rows, cols = np.nonzero(np.isfinite(data) & (data > 0))
    if len(rows) == 0:
        return MOC.new_empty(depth)
    lon, lat = _image_wcs(hdu.header).all_pix2world(cols, rows, 0)
    return MOC.from_lonlat(lon * u.deg, lat * u.deg, max_norder=depth)
