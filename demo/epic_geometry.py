"""EPIC camera geometry: CCD layouts, focal plane <-> sky, dead CCDs.

Coordinate frames used here (all angles on the sky; the focal plane is treated as flat):

focal plane ``(x, y)``
    Arcminutes from the boresight (the pointing direction ``RA_PNT``/``DEC_PNT``), *before* the
    roll. The axes are those of the EPIC MOS1 detector frame (SAS ``DETX``/``DETY``, 0.05" per
    DET pixel), so for MOS1 ``DETX = x * 1200`` and ``DETY = y * 1200``. MOS2 is mounted rotated by
    90 degrees (its ``DETX`` runs along ``-y``, ``DETY`` along ``+x``); the pn CCDs are long along
    ``x``. This matches real SAS event lists, where fitting sky X/Y against DETX/DETY gives a pure
    rotation by ``PA_PNT`` (with the sky X axis flipped, see below).

standard coordinates ``(xi, eta)``
    Gnomonic (TAN) projection plane tangent at the pointing: ``xi`` towards East, ``eta``
    towards North (degrees or arcmin as stated). With ``PA = PA_PNT`` (degrees, East of North)::

        xi  =  x cos(PA) + y sin(PA)
        eta = -x sin(PA) + y cos(PA)

    i.e. the focal ``+y`` axis points at position angle ``PA`` on the sky. Sky pixels of an event
    list (``X``/``Y`` columns, 0.05" per pixel, ``TCRPX`` 25921, ``TCDLT`` -/+ 1/72000 deg) are
    ``X = 25921 - xi/TCDLT``, ``Y = 25921 + eta/TCDLT``: X grows towards the West.

sky ``(RA, Dec)``
    ICRS/FK5 degrees. The TAN projection formulas below are exact (no small-angle
    approximation), valid across RA = 0/360 and close to the poles; they agree with
    ``astropy.wcs.WCS`` for ``RA---TAN``/``DEC--TAN`` to numerical precision.

CCD layouts (approximate, after the XMM-Newton Users Handbook, Sect. 3.3.1 and real SAS files):

- MOS (``EMOS1``, ``EMOS2``): 7 front-illuminated CCDs of 600 x 600 pixels of 1.1" (10.9' a
  side). CCD1 is centred on the boresight; CCD3 and CCD6 sit to its +x and -x sides, CCDs 2/7
  below and 4/5 above it, shifted by half a chip in x (as in real DETX/DETY ranges). Chip gaps are
  10" around CCD1 and 8" between outer chips. The field of view is clipped by a circle of radius
  ``FOV_RADIUS_ARCMIN`` (the outer CCDs extend beyond it).
- pn (``EPN``): 12 back-illuminated CCDs of 64 x 200 pixels of 4.1" (4.4' x 13.6'), long along
  ``x``, in two rows of six stacked along ``y``: CCDs 1-6 (quadrants 0 and 1) at ``x > 0``,
  CCDs 7-12 (quadrants 2 and 3) at ``x < 0``, ordered so that the array is symmetric under a
  180 degree rotation (CCD ``k`` opposite CCD ``k + 6``). Gaps are 6" between CCDs. The
  boresight falls on CCD 4, close to its corner, as on the real camera.

Dead CCDs: MOS1 CCD6 is lost since 2005-03-09 (micrometeoroid, revolution 961) and MOS1 CCD3
since 2012-12-11 (revolution 2382).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

import numpy as np
from numpy.typing import ArrayLike, NDArray

CAMERAS: tuple[str, ...] = ("EMOS1", "EMOS2", "EPN")

#: Sky pixel size of the event-list X/Y and DETX/DETY columns [deg] (0.05 arcsec).
SKY_PIXEL_DEG: float = 1.38888888888889e-05
#: Reference pixel of the event-list X/Y columns (TCRPX); legal range is 1..51840.
SKY_REF_PIXEL: int = 25921
SKY_PIXEL_MAX: int = 51840

#: Physical CCD pixel sizes [arcsec] and CCD sizes [pixels] (RAWX, RAWY).
RAW_PIXEL_ARCSEC: dict[str, float] = {"EMOS1": 1.1, "EMOS2": 1.1, "EPN": 4.1}
RAW_SHAPE: dict[str, tuple[int, int]] = {"EMOS1": (600, 600), "EMOS2": (600, 600), "EPN": (64, 200)}

#: Radius of the circular field of view (the filter-wheel / baffle edge) [arcmin].
FOV_RADIUS_ARCMIN: dict[str, float] = {"EMOS1": 14.4, "EMOS2": 14.4, "EPN": 15.0}

# --- CCD rectangles in the focal plane -------------------------------------------------------

MOS_CCD_ARCMIN: float = 10.9  # sensitive area of 600 x 1.1" pixels, as in SAS DET ranges
PN_CCD_ARCMIN: tuple[float, float] = (13.6, 4.4)  # long side (x), short side (y)
MOS_GAP_CENTRAL_ARCMIN: float = 10.0 / 60.0
MOS_GAP_OUTER_ARCMIN: float = 8.0 / 60.0
PN_GAP_ARCMIN: float = 6.0 / 60.0
# pn boresight: position of the optical axis relative to the centre of the CCD array [arcmin];
# it falls on CCD 4, near the corner it shares with CCDs 3, 9 and 10.
PN_BORESIGHT_OFFSET_ARCMIN: tuple[float, float] = (0.6, -0.4)

Rect = tuple[float, float, float, float]  # xmin, xmax, ymin, ymax [arcmin]


def _mos_layout_det() -> dict[int, Rect]:
    """MOS CCD rectangles in the camera's own DET frame [arcmin]."""
    s, gc, go = MOS_CCD_ARCMIN, MOS_GAP_CENTRAL_ARCMIN, MOS_GAP_OUTER_ARCMIN
    h = s / 2.0
    inner = h + gc  # inner edge of an outer CCD
    return {
        1: (-h, h, -h, h),
        2: (go / 2, go / 2 + s, -inner - s, -inner),
        3: (inner, inner + s, -h, h),
        4: (go / 2, go / 2 + s, inner, inner + s),
        5: (-go / 2 - s, -go / 2, inner, inner + s),
        6: (-inner - s, -inner, -h, h),
        7: (-go / 2 - s, -go / 2, -inner - s, -inner),
    }


def _pn_layout() -> dict[int, Rect]:
    """pn CCD rectangles in the focal frame [arcmin] (long side along x)."""
    length, width = PN_CCD_ARCMIN
    g = PN_GAP_ARCMIN
    pitch = width + g
    # y centres of the six slots, bottom to top, symmetric about y = 0
    slots = [(i - 2.5) * pitch for i in range(6)]
    ox, oy = PN_BORESIGHT_OFFSET_ARCMIN
    layout: dict[int, Rect] = {}
    # row x > 0: CCDs 1..6 from top (+y) to bottom; row x < 0: CCDs 7..12 from bottom to top,
    # so that CCD k and CCD k+6 are related by a 180 degree rotation about the array centre.
    for i in range(6):
        yc_top = slots[5 - i]
        layout[1 + i] = (
            g / 2 - ox,
            g / 2 + length - ox,
            yc_top - width / 2 - oy,
            yc_top + width / 2 - oy,
        )
        yc_bot = -yc_top
        layout[7 + i] = (
            -g / 2 - length - ox,
            -g / 2 - ox,
            yc_bot - width / 2 - oy,
            yc_bot + width / 2 - oy,
        )
    return layout


def _rotate_mos2(rects: dict[int, Rect]) -> dict[int, Rect]:
    """MOS2 DET (u, v) sits at focal (x, y) = (v, -u): rotate its rectangles."""
    return {ccd: (ymin, ymax, -xmax, -xmin) for ccd, (xmin, xmax, ymin, ymax) in rects.items()}


#: CCD rectangles (xmin, xmax, ymin, ymax) in the focal frame [arcmin], per camera and CCDNR.
CCD_LAYOUT: dict[str, dict[int, Rect]] = {
    "EMOS1": _mos_layout_det(),
    "EMOS2": _rotate_mos2(_mos_layout_det()),
    "EPN": _pn_layout(),
}

#: Dates (inclusive) from which a CCD no longer delivers science data.
DEAD_CCD_SINCE: dict[str, dict[int, date]] = {
    "EMOS1": {6: date(2005, 3, 9), 3: date(2012, 12, 11)},
    "EMOS2": {},
    "EPN": {},
}


def _check_camera(camera: str) -> str:
    if camera not in CAMERAS:
        raise ValueError(f"unknown camera {camera!r}; expected one of {', '.join(CAMERAS)}")
    return camera


def ccd_numbers(camera: str) -> tuple[int, ...]:
    """The CCD numbers (``CCDNR``) of a camera: 1..7 for MOS, 1..12 for pn."""
    return tuple(sorted(CCD_LAYOUT[_check_camera(camera)]))


def ccd_corners_focal(camera: str, ccd: int) -> NDArray[np.float64]:
    """Corners of one CCD in the focal plane: (4, 2) array of (x, y) arcmin, counter-clockwise."""
    xmin, xmax, ymin, ymax = CCD_LAYOUT[_check_camera(camera)][ccd]
    return np.array([[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax]], dtype=float)


# --- projections ----------------------------------------------------------------------------


def tan_deproject(
    xi_deg: ArrayLike, eta_deg: ArrayLike, ra0: float, dec0: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gnomonic (TAN) standard coordinates [deg] about (ra0, dec0) [deg] -> (RA, Dec) [deg].

    RA is returned in [0, 360). Exact formulas, valid at any declination including the poles.
    """
    xi = np.radians(np.asarray(xi_deg, dtype=float))
    eta = np.radians(np.asarray(eta_deg, dtype=float))
    a0, d0 = np.radians(ra0), np.radians(dec0)
    denom = np.cos(d0) - eta * np.sin(d0)
    ra = a0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def tan_project(
    ra: ArrayLike, dec: ArrayLike, ra0: float, dec0: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(RA, Dec) [deg] -> gnomonic standard coordinates (xi East, eta North) [deg] about (ra0, dec0).

    Points more than 90 degrees from the tangent point have no TAN projection and give NaN.
    """
    a = np.radians(np.asarray(ra, dtype=float))
    d = np.radians(np.asarray(dec, dtype=float))
    a0, d0 = np.radians(ra0), np.radians(dec0)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(cos_c > 0, 1.0 / cos_c, np.nan)
    xi = np.cos(d) * np.sin(a - a0) * inv
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) * inv
    return np.degrees(xi), np.degrees(eta)


def focal_to_standard(
    x_arcmin: ArrayLike, y_arcmin: ArrayLike, pa_pnt: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Focal plane (x, y) [arcmin] -> standard coordinates (xi East, eta North) [arcmin]."""
    x = np.asarray(x_arcmin, dtype=float)
    y = np.asarray(y_arcmin, dtype=float)
    c, s = np.cos(np.radians(pa_pnt)), np.sin(np.radians(pa_pnt))
    return x * c + y * s, -x * s + y * c


def standard_to_focal(
    xi_arcmin: ArrayLike, eta_arcmin: ArrayLike, pa_pnt: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Standard coordinates (xi East, eta North) [arcmin] -> focal plane (x, y) [arcmin]."""
    xi = np.asarray(xi_arcmin, dtype=float)
    eta = np.asarray(eta_arcmin, dtype=float)
    c, s = np.cos(np.radians(pa_pnt)), np.sin(np.radians(pa_pnt))
    return xi * c - eta * s, xi * s + eta * c


def focal_to_sky(
    x_arcmin: ArrayLike, y_arcmin: ArrayLike, ra_pnt: float, dec_pnt: float, pa_pnt: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Focal plane (x, y) [arcmin] -> (RA, Dec) [deg] for a pointing (RA_PNT, DEC_PNT, PA_PNT) [deg]."""
    xi, eta = focal_to_standard(x_arcmin, y_arcmin, pa_pnt)
    return tan_deproject(xi / 60.0, eta / 60.0, ra_pnt, dec_pnt)


def sky_to_focal(
    ra: ArrayLike, dec: ArrayLike, ra_pnt: float, dec_pnt: float, pa_pnt: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(RA, Dec) [deg] -> focal plane (x, y) [arcmin] for a pointing (RA_PNT, DEC_PNT, PA_PNT) [deg]."""
    xi, eta = tan_project(ra, dec, ra_pnt, dec_pnt)
    return standard_to_focal(xi * 60.0, eta * 60.0, pa_pnt)


def focal_to_det(
    camera: str, x_arcmin: ArrayLike, y_arcmin: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Focal plane (x, y) [arcmin] -> the camera's DETX/DETY [0.05" pixels, float]."""
    x = np.asarray(x_arcmin, dtype=float) * 1200.0
    y = np.asarray(y_arcmin, dtype=float) * 1200.0
    if _check_camera(camera) == "EMOS2":
        return -y, x  # MOS2 is rotated by 90 degrees: DETX along -y, DETY along +x
    return x, y


def focal_to_raw(
    camera: str, ccd: ArrayLike, x_arcmin: ArrayLike, y_arcmin: ArrayLike
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Focal plane (x, y) [arcmin] on CCD ``ccd`` -> (RAWX, RAWY) CCD pixels (1-based).

    For MOS, RAWX runs along the camera's DETX and RAWY along DETY; for pn RAWY runs along the long
    side of the CCD (200 rows, read out at RAWY = 1 at the outer edge) and RAWX across it (64
    columns). Positions off the CCD are clipped to its edge.
    """
    camera = _check_camera(camera)
    ccd = np.asarray(ccd)
    x = np.asarray(x_arcmin, dtype=float)
    y = np.asarray(y_arcmin, dtype=float)
    layout = CCD_LAYOUT[camera]
    keys = np.array(sorted(layout))
    rects = np.array([layout[k] for k in keys])
    idx = np.searchsorted(keys, ccd)
    idx = np.clip(idx, 0, len(keys) - 1)
    xmin, xmax, ymin, ymax = (rects[idx, i] for i in range(4))
    fx = (x - xmin) / (xmax - xmin)  # 0..1 across the CCD along focal x
    fy = (y - ymin) / (ymax - ymin)
    nx, ny = RAW_SHAPE[camera]
    if camera == "EPN":
        # long side along focal x -> RAWY; read-out node at the outer (|x| large) end
        along = np.where(xmin >= 0, 1.0 - fx, fx)
        rawy = np.floor(along * ny) + 1
        rawx = np.floor(fy * nx) + 1
        return (
            np.clip(rawx, 1, nx).astype(np.int64),
            np.clip(rawy, 1, ny).astype(np.int64),
        )
    if camera == "EMOS2":
        fx, fy = 1.0 - fy, fx  # MOS2 DETX = -y, DETY = +x
    rawx = np.clip(np.floor(fx * nx) + 1, 1, nx).astype(np.int64)
    rawy = np.clip(np.floor(fy * ny) + 1, 1, ny).astype(np.int64)
    return rawx, rawy


def ccd_of(
    camera: str, x_arcmin: ArrayLike, y_arcmin: ArrayLike, fov: bool = True
) -> NDArray[np.int64]:
    """The CCD number under focal-plane positions (x, y) [arcmin]; 0 in chip gaps.

    With ``fov=True`` (default) positions outside the circular field of view
    (``FOV_RADIUS_ARCMIN``) also give 0. Dead CCDs are not taken into account here (see
    :func:`dead_ccds`).
    """
    x = np.asarray(x_arcmin, dtype=float)
    y = np.asarray(y_arcmin, dtype=float)
    out = np.zeros(np.broadcast(x, y).shape, dtype=np.int64)
    for ccd, (xmin, xmax, ymin, ymax) in CCD_LAYOUT[_check_camera(camera)].items():
        inside = (x >= xmin) & (x < xmax) & (y >= ymin) & (y < ymax)
        out[inside] = ccd
    if fov:
        out[np.hypot(x, y) > FOV_RADIUS_ARCMIN[camera]] = 0
    return out


def ccd_polygons(
    camera: str,
    ra_pnt: float,
    dec_pnt: float,
    pa_pnt: float,
    ccds: Iterable[int] | None = None,
) -> dict[int, NDArray[np.float64]]:
    """Sky corners of the CCDs of ``camera`` for a pointing.

    Parameters
    ----------
    camera: ``"EMOS1"``, ``"EMOS2"`` or ``"EPN"``.
    ra_pnt, dec_pnt: boresight (``RA_PNT``, ``DEC_PNT``) [deg].
    pa_pnt: position angle ``PA_PNT`` [deg, East of North] as in the XMM header.
    ccds: CCD numbers to return; ``None`` means all CCDs of the camera (dead ones included;
        subtract :func:`dead_ccds` for a given date).

    Returns
    -------
    ``{ccdnr: array of shape (4, 2)}`` with the (RA, Dec) [deg] of the full CCD rectangle's corners
    (RA in [0, 360); the corners of one CCD may straddle RA = 0/360). The corners are in a fixed
    order that is counter-clockwise in the focal plane. The circular field-of-view edge
    (``FOV_RADIUS_ARCMIN``) that clips the outer CCDs is not applied.
    """
    camera = _check_camera(camera)
    wanted = ccd_numbers(camera) if ccds is None else tuple(ccds)
    out: dict[int, NDArray[np.float64]] = {}
    for ccd in wanted:
        if ccd not in CCD_LAYOUT[camera]:
            raise ValueError(f"{camera} has no CCD {ccd}")
        corners = ccd_corners_focal(camera, ccd)
        ra, dec = focal_to_sky(corners[:, 0], corners[:, 1], ra_pnt, dec_pnt, pa_pnt)
        out[ccd] = np.column_stack([ra, dec])
    return out


def _parse_date(date_obs: str | date) -> date:
    if isinstance(date_obs, datetime):
        return date_obs.date()
    if isinstance(date_obs, date):
        return date_obs
    text = str(date_obs).strip()
    try:
        return datetime.fromisoformat(text[:10]).date()
    except ValueError as exc:
        raise ValueError(f"DATE-OBS {date_obs!r} is not an ISO date (YYYY-MM-DD...)") from exc


def dead_ccds(camera: str, date_obs: str | date) -> set[int]:
    """CCDs of ``camera`` that deliver no events at ``date_obs`` (ISO ``YYYY-MM-DD[Thh:mm:ss]``).

    MOS1 CCD6 is dead from 2005-03-09 on and MOS1 CCD3 from 2012-12-11 on; MOS2 and pn have none.
    """
    when = _parse_date(date_obs)
    return {ccd for ccd, since in DEAD_CCD_SINCE[_check_camera(camera)].items() if when >= since}


def live_ccds(camera: str, date_obs: str | date) -> tuple[int, ...]:
    """CCD numbers of ``camera`` that work at ``date_obs`` (see :func:`dead_ccds`)."""
    dead = dead_ccds(camera, date_obs)
    return tuple(c for c in ccd_numbers(camera) if c not in dead)


def sky_pixels(
    ra: ArrayLike, dec: ArrayLike, ra_pnt: float, dec_pnt: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(RA, Dec) [deg] -> event-list sky pixels (X, Y) (1-based, float) of the SAS column WCS.

    ``TCTYP`` RA---TAN/DEC--TAN, ``TCRPX`` 25921, ``TCRVL`` = pointing, ``TCDLT`` -/+ 0.05".
    """
    xi, eta = tan_project(ra, dec, ra_pnt, dec_pnt)
    return SKY_REF_PIXEL - xi / SKY_PIXEL_DEG, SKY_REF_PIXEL + eta / SKY_PIXEL_DEG


def focal_to_sky_pixels(
    x_arcmin: ArrayLike, y_arcmin: ArrayLike, pa_pnt: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Focal plane (x, y) [arcmin] -> event-list sky pixels (X, Y) (float), for any pointing.

    Exact: TAN-plane standard coordinates map linearly to the sky pixels of a column WCS whose
    reference value is the pointing.
    """
    xi, eta = focal_to_standard(x_arcmin, y_arcmin, pa_pnt)
    scale = 1.0 / (60.0 * SKY_PIXEL_DEG)
    return SKY_REF_PIXEL - xi * scale, SKY_REF_PIXEL + eta * scale
