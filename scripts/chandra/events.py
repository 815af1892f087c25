"""ACIS level-2 event lists: headers, per-chip good time and dead-time correction, rows in chunks.

A file is an ACIS event list when its headers say ``TELESCOP = 'CHANDRA'`` and ``INSTRUME =
'ACIS'`` (the ``EVENTS`` header, else the primary) and its ``EVENTS`` table has the columns
``time``, ``ccd_id``, ``x``, ``y``, ``pi`` and ``grade`` (CIAO writes them in lower case; any
case is accepted); ``status`` (32 bits) is used when present. Level-1 lists (``CONTENT =
'EVT1'``) are refused: they are not filtered, use the level-2 list of the observation. Rows are
streamed in chunks by :class:`xmm.events.EventTable` (plain or gzip FITS).

Per chip (``ccd_id`` n), as the CIAO dictionary defines the time keywords:

- good time: the chip's GTI table, ``EXTNAME = 'GTI'`` with ``CCD_ID = n`` (``HDUNAME`` GTIn), one
  per chip as CIAO writes them; a chip with an ``ONTIMEn`` keyword but no GTI table gets
  ``TSTART..TSTOP``;
- live fraction: ``DTCOR``, the dead-time correction (``LIVTIMEn = DTCOR x ONTIMEn``, ``ONTIMEn``
  = the sum of the chip's GTIs); without ``DTCOR``, ``LIVTIMEn / ONTIMEn``; else 1;
- frame time: ``TIMEDEL`` [s] (``EXPTIME`` + the 0.04104 s frame transfer), default 3.24104 s
  (full frame, 3.2 s exposure).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from xmm import gti as gtimod
from xmm.events import CcdInfo, EventListError, EventTable

#: Frame time of the full-frame 3.2 s mode [s], used without a ``TIMEDEL`` keyword.
DEFAULT_FRAME_TIME = 3.24104


class AcisEventList(EventTable):
    """An ACIS level-2 event list opened for streaming (headers at once, rows on demand)."""

    required = ("time", "ccd_id", "x", "y", "pi", "grade")

    def _check(self) -> None:
        telescope = str(self.keyword("TELESCOP", "")).strip()
        instrument = str(self.keyword("INSTRUME", "")).strip()
        if (telescope, instrument) != ("CHANDRA", "ACIS"):
            raise EventListError(
                f"{self.path.name}: TELESCOP/INSTRUME {telescope!r}/{instrument!r} is not "
                "Chandra ACIS"
            )
        if str(self.keyword("CONTENT", "")).upper().startswith("EVT1"):
            raise EventListError(
                f"{self.path.name} is a level-1 ACIS event list (CONTENT=EVT1, not filtered): "
                "use the level-2 list (evt2) of the observation"
            )

    @property
    def has_status(self) -> bool:
        return "STATUS" in self.columns

    @property
    def has_chip_coordinates(self) -> bool:
        """Whether the events carry their chip pixel (``chipx``, ``chipy``), as archive lists do."""
        return "CHIPX" in self.columns and "CHIPY" in self.columns

    def _extension_key(self, name: str, header: fits.Header) -> str | None:
        if name == "GTI" and "CCD_ID" in header:
            return f"GTI{int(header['CCD_ID'])}"
        return None

    def _use_extensions(
        self, tables: dict[str, tuple[fits.Header, NDArray]], headers: list[fits.Header]
    ) -> None:
        self._frame_time = float(self.keyword("TIMEDEL", 0.0) or DEFAULT_FRAME_TIME)
        chips = {int(key[3:]) for key in tables} | {
            int(k[6:]) for k in self.header if re.fullmatch(r"ONTIME\d", k)
        }
        ccds = {}
        for chip in sorted(chips):
            table = tables.get(f"GTI{chip}")
            if table is not None:
                good = gtimod.as_gti(np.column_stack([table[1]["START"], table[1]["STOP"]]))
            else:
                good = gtimod.as_gti([[self.keyword("TSTART", 0.0), self.keyword("TSTOP", 0.0)]])
            ccds[chip] = CcdInfo(chip, good, min(self.live_fraction(chip), 1.0))
        self._ccds = ccds

    def live_fraction(self, chip: int) -> float:
        """Dead-time correction of a chip: ``DTCOR``, else ``LIVTIMEn / ONTIMEn``, else 1."""
        dtcor = self.keyword("DTCOR")
        if dtcor:
            return float(dtcor)
        on, live = self.keyword(f"ONTIME{chip}"), self.keyword(f"LIVTIME{chip}")
        return float(live) / float(on) if on and live else 1.0


#: Event-list keywords copied into the products (spectra, light curves, images), when present.
COPIED_KEYWORDS = (
    "MISSION", "TELESCOP", "INSTRUME", "DETNAM", "GRATING", "OBS_ID", "SEQ_NUM", "DS_IDENT",
    "OBJECT", "OBSERVER", "DATE-OBS", "DATE-END", "TSTART", "TSTOP", "MJDREF", "TIMESYS",
    "TIMEUNIT", "TIMEREF", "TIMEZERO", "READMODE", "DATAMODE", "CYCLE", "EXPTIME", "TIMEDEL",
    "DTCOR", "SIM_Z", "RA_PNT", "DEC_PNT", "ROLL_PNT", "RA_NOM", "DEC_NOM", "ROLL_NOM",
    "RA_TARG", "DEC_TARG", "EQUINOX", "RADESYS",
)  # fmt: skip


def event_keywords(events: AcisEventList) -> dict[str, Any]:
    """The ``COPIED_KEYWORDS`` the event list has."""
    values = {key: events.keyword(key) for key in COPIED_KEYWORDS}
    return {key: value for key, value in values.items() if value is not None}
