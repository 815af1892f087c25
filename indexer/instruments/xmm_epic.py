"""XMM-Newton EPIC (MOS1, MOS2, pn): event lists and exposure maps.

Recognition (by header, never by file name): a FITS file (plain or gzip, e.g. PPS ``.FTZ``) with
``TELESCOP = 'XMM'`` and ``INSTRUME`` one of ``EMOS1``, ``EMOS2``, ``EPN`` is

- an **event list** (kind ``events``) when it has an ``EVENTS`` table with ``X``, ``Y`` and
  ``CCDNR`` columns and a celestial column WCS on ``X``/``Y`` (``TCTYPn``/``TCRVLn``/...);
- an **exposure map** (kind ``exposure-map``) when its primary HDU is a 2-D image with a
  celestial WCS and ``CONTENT`` says ``EXPOSURE MAP`` (SAS ``eexpmap``).

Footprint from an event list: events with a valid sky position (not ``TNULL``, inside
``TLMIN..TLMAX``, and without the ``OUT_OF_FOV`` flag bit 0x10000) are grouped by ``CCDNR``. For
each CCD with at least ``MIN_EVENTS_PER_CCD`` events, isolated events are dropped (those in a
``HULL_BIN_ARCSEC`` bin with no occupied neighbour bin: stray or mis-located events), and the
convex hull of the others, in the list's own X/Y sky-pixel frame, is the CCD's outline (EPIC
CCDs are rectangles clipped by the circular field of view, so convex). The outlines go to the
sky with the X/Y column WCS and become one MOC (``MOC.from_polygons``: great-circle edges,
indistinguishable from the TAN straight lines for 10' CCD edges). Chip gaps and dead or
switched-off CCDs (no events) stay out of the MOC.

Footprint from an exposure map: the centres of pixels with exposure > 0 (4.35" pixels for SAS
maps), through the image WCS, to ``MOC.from_lonlat`` at the index depth: a cell is in the MOC
when at least one exposed pixel centre falls in it.

Standard event filters (SAS): MOS ``#XMMEA_EM`` = ``(FLAG & 0x766ba000) == 0`` with
``PATTERN <= 12``; pn ``FLAG == 0`` with ``PATTERN <= 4`` (``STANDARD_FILTERS``). PI is in eV.
"""

from __future__ import annotations

from typing import Any

import astropy.units as u
import numpy as np
from astropy.io import fits
from mocpy import MOC

from indexer.instruments import Camera, Footprint, Instrument, register
from indexer.instruments._base import (
    NotRecognisedError,
    as_float,
    chip_outlines_moc,
    column_wcs,
    events_hdu,
    first,
    header_text,
    image_wcs,
    valid_sky_positions,
)

CAMERAS: tuple[str, ...] = ("EMOS1", "EMOS2", "EPN")
#: CCDs with fewer events than this are left out of the footprint (not enough to outline them).
MIN_EVENTS_PER_CCD: int = 20
#: Bin size used to find isolated events before the hull [arcsec].
HULL_BIN_ARCSEC: float = 20.0
OUT_OF_FOV_FLAG: int = 0x10000
#: SAS ``#XMMEA_EM``: the FLAG bits a good MOS event must not have.
XMMEA_EM: int = 0x766BA000
#: Standard filters per camera as (FLAG mask that must be zero, largest PATTERN).
STANDARD_FLAG_MASK: dict[str, int] = {"EMOS1": XMMEA_EM, "EMOS2": XMMEA_EM, "EPN": 0xFFFFFFFF}
STANDARD_MAX_PATTERN: dict[str, int] = {"EMOS1": 12, "EMOS2": 12, "EPN": 4}
STANDARD_FILTERS: dict[str, str] = {
    "EMOS1": "(FLAG & 0x766ba000)==0 && PATTERN<=12",
    "EMOS2": "(FLAG & 0x766ba000)==0 && PATTERN<=12",
    "EPN": "FLAG==0 && PATTERN<=4",
}


def standard_filter(camera: str, flag: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Mask of the events passing the SAS standard filter of ``camera`` (``STANDARD_FILTERS``)."""
    mask = np.int64(STANDARD_FLAG_MASK[camera])
    return ((np.asarray(flag).astype(np.int64) & mask) == 0) & (
        np.asarray(pattern) <= STANDARD_MAX_PATTERN[camera]
    )


@register
class XmmEpic(Instrument):
    key = "xmm-epic"
    mission = "XMM"
    name = "EPIC"
    title = "XMM-Newton EPIC"
    kinds = ("events", "exposure-map")
    cameras = (
        Camera("EMOS1", "MOS1", "#e6550d"),
        Camera("EMOS2", "MOS2", "#31a354"),
        Camera("EPN", "pn", "#756bb1"),
    )
    imaging_columns = ("PI", "FLAG", "PATTERN")
    field_radius_arcmin = 16.0  # the 15' field of view and a margin
    energy_range_kev = (0.2, 12.0)  # EPIC's calibrated band (PI in eV)

    def _identity(self, hdul: fits.HDUList) -> tuple[str, str]:
        primary = hdul[0].header
        telescope, camera = header_text(primary, "TELESCOP"), header_text(primary, "INSTRUME")
        if (telescope != "XMM" or camera not in CAMERAS) and len(hdul) > 1:
            header = hdul[1].header
            telescope = str(header.get("TELESCOP", telescope)).strip()
            camera = str(header.get("INSTRUME", camera)).strip()
        return telescope, camera

    def recognise(self, hdul: fits.HDUList) -> bool:
        telescope, camera = self._identity(hdul)
        return telescope == "XMM" and camera in CAMERAS

    def describe(self, hdul: fits.HDUList, depth: int) -> Footprint:
        _, camera = self._identity(hdul)
        primary = hdul[0].header
        events = events_hdu(hdul, "CCDNR")
        if events is not None:
            meta = metadata(primary, events.header, kind="events")
            meta["n_events"] = int(events.header.get("NAXIS2", 0))
            moc = events_moc(events, depth)
        elif _is_expmap(hdul[0]):
            meta = metadata(primary, primary, kind="exposure-map")
            meta["n_events"] = None
            moc = expmap_moc(hdul[0], depth)
        else:
            raise NotRecognisedError(
                f"{camera} file is neither an event list (EVENTS table with X, Y, CCDNR and a "
                "sky column WCS) nor an exposure map"
            )
        if moc.empty():
            raise NotRecognisedError(f"{camera} file has no usable sky positions (empty footprint)")
        return Footprint(meta=meta, moc=moc)

    def imaging_mask(self, camera: str, columns: dict[str, np.ndarray]) -> np.ndarray:
        flag, pattern = columns.get("FLAG"), columns.get("PATTERN")
        keep = np.ones(len(columns["PI"]), dtype=bool)
        if flag is not None:
            keep &= (flag.astype(np.int64) & STANDARD_FLAG_MASK[camera]) == 0
        if pattern is not None:
            keep &= pattern <= STANDARD_MAX_PATTERN[camera]
        return keep

    def energy_ev(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return columns["PI"]  # EPIC PI is in eV


def _is_expmap(hdu: fits.PrimaryHDU) -> bool:
    header = hdu.header
    if header.get("NAXIS") != 2 or "EXPOSURE MAP" not in str(header.get("CONTENT", "")).upper():
        return False
    return image_wcs(header).has_celestial


def metadata(primary: fits.Header, header: fits.Header, kind: str = "events") -> dict[str, Any]:
    """Index metadata from the primary and data-HDU headers of an EPIC file.

    ``exposure`` [s] is the live time of the central CCD (``LIVETIME``) when given, else
    ``ONTIME`` or, for exposure maps, ``EXPOSURE`` (SAS: the largest per-CCD on-time).
    ``ra_pnt``/``dec_pnt``/``pa_pnt`` [deg] are the mean pointing and position angle.
    """
    headers = (header, primary)
    obsid = first(headers, "OBS_ID")
    if not obsid:
        raise NotRecognisedError("EPIC file without OBS_ID")
    return {
        "mission": "XMM",
        "obsid": str(obsid),
        "camera": first(headers, "INSTRUME"),
        "instrument": "EPIC",
        "kind": kind,
        "object": first(headers, "OBJECT"),
        "observer": first(headers, "OBSERVER"),
        "date_obs": first(headers, "DATE-OBS"),
        "date_end": first(headers, "DATE-END"),
        "exposure": as_float(first(headers, "LIVETIME", "ONTIME", "EXPOSURE")),
        "ra_pnt": as_float(first(headers, "RA_PNT", "REFXCRVL", "RA_NOM")),
        "dec_pnt": as_float(first(headers, "DEC_PNT", "REFYCRVL", "DEC_NOM")),
        "pa_pnt": as_float(first(headers, "PA_PNT")),
        "filter": first(headers, "FILTER"),
        "submode": first(headers, "SUBMODE"),
        "source": "events" if kind == "events" else "expmap",
    }


def events_moc(hdu: fits.BinTableHDU, depth: int) -> MOC:
    """Footprint MOC of an EPIC event list: per-CCD outlines of its events (see module doc)."""
    x, y, good = valid_sky_positions(hdu)
    if "FLAG" in {name.upper() for name in hdu.columns.names}:
        good &= (np.asarray(hdu.data["FLAG"], dtype=np.int64) & OUT_OF_FOV_FLAG) == 0
    ccd = np.asarray(hdu.data["CCDNR"], dtype=int)
    return chip_outlines_moc(
        x[good],
        y[good],
        ccd[good],
        column_wcs(hdu.header),
        depth,
        min_events=MIN_EVENTS_PER_CCD,
        bin_arcsec=HULL_BIN_ARCSEC,
    )


def expmap_moc(hdu: fits.PrimaryHDU | fits.ImageHDU, depth: int) -> MOC:
    """Footprint MOC of an exposure map: cells holding an exposed (> 0) pixel centre."""
    data = np.asarray(hdu.data, dtype=float)
    rows, cols = np.nonzero(np.isfinite(data) & (data > 0))
    if len(rows) == 0:
        return MOC.new_empty(depth)
    lon, lat = image_wcs(hdu.header).all_pix2world(cols, rows, 0)
    return MOC.from_lonlat(lon * u.deg, lat * u.deg, max_norder=depth)
