"""Chandra ACIS (ACIS-I, ACIS-S): level-2 event lists.

Recognition (by header, never by file name): a FITS file (plain or gzip, e.g. the archive's
``acisf<obsid>N00<v>_evt2.fits.gz``) with ``TELESCOP = 'CHANDRA'`` and ``INSTRUME = 'ACIS'`` (in
the primary header or, failing that, the first extension) is an ACIS file. It is indexed as an
**event list** (kind ``events``) when it has an ``EVENTS`` table with ``x``, ``y`` and
``ccd_id`` columns (any case: CIAO writes them in lower case) and a celestial column WCS on
``x``/``y``. Level-1 lists (``CONTENT = 'EVT1'``: unfiltered, superseded by the level-2 list of
the same observation) and ACIS files without such a table (aspect solutions, bad-pixel files,
images) are reported and skipped. A truncated file (a gzip stream that ends early, whose lost
HDUs astropy drops without a warning, or a plain file that is not a whole number of 2880-byte
blocks) is reported as unreadable rather than as a file without events.

Camera: the array at the aimpoint, from the SIM translation stage position ``SIM_Z`` (nominal
ACIS-I -233.6 mm, ACIS-S -190.1 mm): from ``SIM_Z_MIN_ACIS_MM`` (-260) to ``SIM_Z_THRESHOLD_MM``
(-210) is ACIS-I, from there to ``SIM_Z_MAX_ACIS_MM`` (-160) ACIS-S. Without a usable ``SIM_Z``
(missing, or outside the ACIS range), the chip with the most events decides: ``ccd_id`` 0-3
(I0-I3) is ACIS-I, 4-9 (S0-S5) ACIS-S. A file is one camera even when chips of the other array
are on (ACIS-I observations often keep S2/S3, ACIS-S ones I2/I3): the camera says where the
target is.

Footprint: events with a valid sky position (finite, inside ``TLMIN..TLMAX``, not ``TNULL``) are
grouped by ``ccd_id``. For each chip with at least ``MIN_EVENTS_PER_CHIP`` (50) events, isolated
events are dropped (those in a ``HULL_BIN_ARCSEC`` (20") bin with no occupied neighbour bin) and
the convex hull of the others, in the list's x/y sky-pixel frame, is the chip's outline (a chip
is a 1024 x 1024 square of 0.492" pixels, 8.4' a side, blurred on the sky by the 16"
peak-to-peak dither: convex). The outlines go to the sky with the x/y column WCS and become one
MOC (``MOC.from_polygons``: great-circle edges, indistinguishable from TAN straight lines for 8'
chip edges). Chips switched off have no events and stay out; the 18" gaps between chips, half
filled by the dither, stay below the 25.8" cells of the index (order 13) and count as covered.

Why these numbers: the ACIS background alone gives of order 0.1 (front-illuminated) to 0.3
(back-illuminated) counts/s a chip, so a chip that was on holds a hundred events or more per ks;
50 events (below 1 event/arcmin^2) are too few to outline a chip and count as no data. A 20"
bin (40 sky pixels) is larger than the dither, so the events along a chip's dithered edge
always have neighbours, and small (4%) against the 8.4' chip: with 14 events/arcmin^2 (1000
events a chip) an event has ~12 expected neighbours in its 8 surrounding bins, and only a
genuinely stray event is dropped.

Standard event filters (as CIAO applies them to make a level-2 list): ASCA grade in
``GOOD_GRADES`` = {0, 2, 3, 4, 6} and ``status == 0`` (every bit of the 32-bit ``status``
column clear, ``STATUS_FILTER``) when the list has a ``status`` column. astropy reads the ``32X``
status column as ``(n, 32)`` booleans and the streaming ``indexer.hips.EventReader`` as ``(n, 4)``
bytes; :func:`standard_filter` accepts both. Energies: the ``energy`` column [eV] when present,
else ``PI`` channels x ``PI_CHANNEL_EV`` (14.6 eV; channel k covers
``[(k-1) x 14.6, k x 14.6)`` eV, ``PI_CHANNELS`` 1..1024).
"""

from __future__ import annotations

from typing import Any

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
    valid_sky_positions,
)

#: ACIS sky pixel (x, y columns) [arcsec]; also the chip pixel (24 um at the 10.07 m focus).
SKY_PIXEL_ARCSEC: float = 0.492
#: Sky pixel size [deg], the ``TCDLTn`` of x (negative) and y (positive).
SKY_PIXEL_DEG: float = SKY_PIXEL_ARCSEC / 3600.0
#: Width of one PI channel [eV] (PI = 1 + floor(energy / 14.6 eV)).
PI_CHANNEL_EV: float = 14.6
#: The PI channels (``TLMIN``/``TLMAX`` 1..1024 of the pi column).
PI_CHANNELS: tuple[int, int] = (1, 1024)
#: ASCA grades CIAO keeps (0 single, 2 vertical split, 3/4 left/right split, 6 L and quad).
GOOD_GRADES: tuple[int, ...] = (0, 2, 3, 4, 6)
STATUS_FILTER: str = "status=0"
STANDARD_FILTER: str = "grade=0,2,3,4,6 && status=0"
#: ``ccd_id`` of the ACIS-I (I0-I3) and ACIS-S (S0-S5) chips.
ACIS_I_CHIPS: tuple[int, ...] = (0, 1, 2, 3)
ACIS_S_CHIPS: tuple[int, ...] = (4, 5, 6, 7, 8, 9)
CHIP_NAMES: dict[int, str] = {
    **{c: f"I{c}" for c in ACIS_I_CHIPS},
    **{c: f"S{c - 4}" for c in ACIS_S_CHIPS},
}
#: Nominal SIM_Z [mm] with the aimpoint on ACIS-I (I3) and on ACIS-S (S3).
SIM_Z_NOMINAL_MM: dict[str, float] = {"ACIS-I": -233.6, "ACIS-S": -190.1}
#: SIM_Z below this [mm] puts the aimpoint on ACIS-I, above it on ACIS-S.
SIM_Z_THRESHOLD_MM: float = -210.0
#: SIM_Z outside this range [mm] is not an ACIS position (HRC-I +127, HRC-S +250): ignored.
SIM_Z_MIN_ACIS_MM: float = -260.0
SIM_Z_MAX_ACIS_MM: float = -160.0
#: Chips with fewer events than this are left out of the footprint (see the module docstring).
MIN_EVENTS_PER_CHIP: int = 50
#: Bin size used to find isolated events before the hull [arcsec] (see the module docstring).
HULL_BIN_ARCSEC: float = 20.0

CAMERA_NAMES: tuple[str, ...] = ("ACIS-I", "ACIS-S")


def camera_from_sim_z(sim_z: float | None) -> str | None:
    """``ACIS-I`` or ``ACIS-S`` from ``SIM_Z`` [mm]; None when missing or not an ACIS position."""
    if sim_z is None or not np.isfinite(sim_z):
        return None
    if not SIM_Z_MIN_ACIS_MM <= sim_z <= SIM_Z_MAX_ACIS_MM:
        return None
    return "ACIS-I" if sim_z < SIM_Z_THRESHOLD_MM else "ACIS-S"


def camera_from_chips(ccd_id: np.ndarray) -> str | None:
    """``ACIS-I`` or ``ACIS-S``: the array of the chip with the most events (ties: the lower
    ``ccd_id``); None without events on chips 0-9."""
    ccd = np.asarray(ccd_id, dtype=np.int64).ravel()
    ccd = ccd[(ccd >= 0) & (ccd <= 9)]
    if len(ccd) == 0:
        return None
    busiest = int(np.argmax(np.bincount(ccd, minlength=10)))
    return "ACIS-I" if busiest in ACIS_I_CHIPS else "ACIS-S"


def status_ok(status: np.ndarray) -> np.ndarray:
    """Mask of events whose ``status`` has no bit set.

    ``status``: one value per event (integers), or one row of bits / bytes per event as astropy
    (``(n, 32)`` booleans) or a raw reader (``(n, 4)`` bytes) gives a ``32X`` column.
    """
    values = np.asarray(status)
    if values.ndim == 1:
        return values == 0
    return ~np.any(values.reshape(len(values), -1) != 0, axis=1)


def standard_filter(grade: np.ndarray, status: np.ndarray | None = None) -> np.ndarray:
    """Mask of the events passing CIAO's standard filter (``STANDARD_FILTER``): ASCA grade in
    ``GOOD_GRADES`` and, when a status column is given, ``status == 0``."""
    keep = np.isin(np.asarray(grade), GOOD_GRADES)
    if status is not None:
        keep &= status_ok(status)
    return keep


def energy_from_pi(pi: np.ndarray) -> np.ndarray:
    """Energy [eV] of PI channels: ``PI x 14.6 eV`` (the top of the channel)."""
    return np.asarray(pi, dtype=float) * PI_CHANNEL_EV


@register
class ChandraAcis(Instrument):
    key = "chandra-acis"
    mission = "CHANDRA"
    name = "ACIS"
    title = "Chandra ACIS"
    kinds = ("events",)
    cameras = (
        Camera("ACIS-I", "ACIS-I", "#3182bd"),
        Camera("ACIS-S", "ACIS-S", "#de2d26"),
    )
    imaging_columns = ("ENERGY", "PI", "GRADE", "STATUS")
    #: the aimpoint (S3 or the I array) to the far corner of an outer S chip is about 28'
    field_radius_arcmin = 30.0
    energy_range_kev = (0.3, 10.0)  # ACIS's calibrated band
    pi_channel_ev = PI_CHANNEL_EV

    def _identity(self, hdul: fits.HDUList) -> tuple[str, str]:
        primary = hdul[0].header
        telescope, instrument = header_text(primary, "TELESCOP"), header_text(primary, "INSTRUME")
        if (telescope != "CHANDRA" or instrument != "ACIS") and len(hdul) > 1:
            header = hdul[1].header
            telescope = str(header.get("TELESCOP", telescope)).strip()
            instrument = str(header.get("INSTRUME", instrument)).strip()
        return telescope, instrument

    def recognise(self, hdul: fits.HDUList) -> bool:
        return self._identity(hdul) == ("CHANDRA", "ACIS")

    def describe(self, hdul: fits.HDUList, depth: int) -> Footprint:
        events = events_hdu(hdul, "CCD_ID")
        if events is None:
            raise NotRecognisedError(
                "ACIS file without an event list (EVENTS table with x, y, ccd_id and a sky "
                "column WCS)"
            )
        primary = hdul[0].header
        content = str(first((events.header, primary), "CONTENT") or "").upper()
        if content.startswith("EVT1"):
            raise NotRecognisedError(
                "ACIS level-1 event list (CONTENT=EVT1): index the level-2 list (evt2) instead"
            )
        x, y, ccd, good = _chip_positions(events)
        camera = camera_from_sim_z(as_float(first((events.header, primary), "SIM_Z")))
        camera = camera or camera_from_chips(ccd[good])
        if camera is None:
            raise NotRecognisedError("ACIS event list without SIM_Z and without events on a chip")
        meta = metadata(primary, events.header, camera)
        meta["n_events"] = int(events.header.get("NAXIS2", 0))
        moc = _outlines(events, x, y, ccd, good, depth)
        if moc.empty():
            raise NotRecognisedError(
                f"ACIS event list has no chip with {MIN_EVENTS_PER_CHIP} or more events "
                "with sky positions (empty footprint)"
            )
        return Footprint(meta=meta, moc=moc)

    def imaging_mask(self, camera: str, columns: dict[str, np.ndarray]) -> np.ndarray:
        """CIAO's standard filter (module docstring) on the columns present."""
        if "GRADE" in columns:
            return standard_filter(columns["GRADE"], columns.get("STATUS"))
        keep = np.ones(len(next(iter(columns.values()))), dtype=bool)
        return keep & status_ok(columns["STATUS"]) if "STATUS" in columns else keep

    def energy_ev(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Energies [eV]: the ``energy`` column, else ``PI x 14.6 eV``."""
        if "ENERGY" in columns:
            return np.asarray(columns["ENERGY"], dtype=float)
        if "PI" in columns:
            return energy_from_pi(columns["PI"])
        raise KeyError("ACIS events without an energy or pi column")


def metadata(primary: fits.Header, header: fits.Header, camera: str) -> dict[str, Any]:
    """Index metadata (without ``n_events``) from the primary and EVENTS headers of an ACIS list.

    ``exposure`` [s] is ``EXPOSURE`` (the dead-time corrected exposure of the aimpoint chip),
    else ``LIVETIME`` or ``ONTIME``. ``ra_pnt``/``dec_pnt`` [deg] are the mean pointing
    (``RA_PNT``/``DEC_PNT``, else the nominal ``RA_NOM``/``DEC_NOM``); ``pa_pnt`` [deg] is the
    roll angle (``ROLL_PNT``, else ``ROLL_NOM``). ``filter`` is the grating (``HETG``/``LETG``) or
    None without one; ``submode`` is ``"<READMODE> <DATAMODE>"`` (e.g. ``TIMED FAINT``).
    """
    headers = (header, primary)
    obsid = first(headers, "OBS_ID")
    if obsid is None or str(obsid).strip() == "":
        raise NotRecognisedError("ACIS event list without OBS_ID")
    grating = first(headers, "GRATING")
    modes = [first(headers, "READMODE"), first(headers, "DATAMODE")]
    submode = " ".join(str(m) for m in modes if m)
    return {
        "mission": "CHANDRA",
        "obsid": str(obsid).strip(),
        "camera": camera,
        "instrument": "ACIS",
        "kind": "events",
        "object": first(headers, "OBJECT"),
        "observer": first(headers, "OBSERVER"),
        "date_obs": first(headers, "DATE-OBS"),
        "date_end": first(headers, "DATE-END"),
        "exposure": as_float(first(headers, "EXPOSURE", "LIVETIME", "ONTIME")),
        "ra_pnt": as_float(first(headers, "RA_PNT", "RA_NOM")),
        "dec_pnt": as_float(first(headers, "DEC_PNT", "DEC_NOM")),
        "pa_pnt": as_float(first(headers, "ROLL_PNT", "ROLL_NOM")),
        "filter": None if grating is None or str(grating).upper() == "NONE" else str(grating),
        "submode": submode or None,
        "source": "events",
    }


def events_moc(hdu: fits.BinTableHDU, depth: int) -> MOC:
    """Footprint MOC of an ACIS event list: per-chip outlines of its events (module docstring)."""
    return _outlines(hdu, *_chip_positions(hdu), depth)


def _chip_positions(hdu: fits.BinTableHDU) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, ccd_id, good)``: sky pixels, chips and the mask of valid positions on chips 0-9."""
    x, y, good = valid_sky_positions(hdu)
    ccd = np.asarray(hdu.data["CCD_ID"], dtype=np.int64)
    good &= (ccd >= 0) & (ccd <= 9)
    return x, y, ccd, good


def _outlines(
    hdu: fits.BinTableHDU,
    x: np.ndarray,
    y: np.ndarray,
    ccd: np.ndarray,
    good: np.ndarray,
    depth: int,
) -> MOC:
    return chip_outlines_moc(
        x[good],
        y[good],
        ccd[good],
        column_wcs(hdu.header),
        depth,
        min_events=MIN_EVENTS_PER_CHIP,
        bin_arcsec=HULL_BIN_ARCSEC,
    )
