"""Soft-proton flare screening exactly as the SAS thread applies it.

The thread::

    evselect table=EVENTS withrateset=yes rateset=rate.fits maketimecolumn=yes
             timebinsize=100 makeratecolumn=yes
             expression='#XMMEA_EM && (PI>10000) && (PATTERN==0)'          (MOS)
             expression='#XMMEA_EP && (PI in [10000:12000]) && (PATTERN==0)' (pn)
    tabgtigen table=rate.fits expression='RATE<=0.35' gtiset=gti.fits       (pn: 0.4)

reproduced here:

- the events: the whole camera, ``PATTERN == 0``, the PI band above, and the camera's flag
  expression: ``#XMMEA_EM`` (MOS) / ``#XMMEA_EP`` (pn) as the event list's own header defines
  them (keywords ``XMMEA_EM`` / ``XMMEA_EP``, e.g. ``'(FLAG & 0x766ba000) == 0'``), else the SAS
  values ``0x766ba000`` / ``0xfa000c``;
- the bins: ``timebinsize`` (100 s) wide, on the grid of the list's good time: the first bin
  starts at the start of the camera's first good-time interval (the union of the CCDs' GTIs),
  and every bin edge is that start plus a whole number of bins;
- the rate: ``RATE = COUNTS / TIMEDEL`` (evselect's rate column: counts over the full bin
  width, whatever part of the bin is in good time, so a part-filled bin is never inflated);
- the good time: tabgtigen's, the union of the bins with ``RATE <= threshold`` (0.35 counts/s
  MOS, 0.4 counts/s pn), then intersected with each CCD's own good time.

Lists whose headers show they were already screened (an evselect selection on a GTI file,
``GTI(file,TIME)``, in ``SLCTEXPR`` or the ``XPROCn`` history, or ESAS ``espfilt``/``mos-filter``/
``pn-filter``) are not screened again unless asked (:func:`already_screened`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from indexer.instruments.xmm_epic import XMMEA_EM
from xmm import gti as gtimod

THRESHOLD = {"EMOS1": 0.35, "EMOS2": 0.35, "EPN": 0.4}  # counts/s
PI_RANGE = {"EMOS1": (10001, None), "EMOS2": (10001, None), "EPN": (10000, 12000)}  # eV
#: SAS ``#XMMEA_EP`` when the list's header does not define it.
XMMEA_EP = 0xFA000C
FLAG_KEYWORD = {"EMOS1": "XMMEA_EM", "EMOS2": "XMMEA_EM", "EPN": "XMMEA_EP"}
DEFAULT_FLAG_MASK = {"EMOS1": XMMEA_EM, "EMOS2": XMMEA_EM, "EPN": XMMEA_EP}
EXPRESSION = {
    "EMOS1": "#XMMEA_EM && (PI>10000) && (PATTERN==0)",
    "EMOS2": "#XMMEA_EM && (PI>10000) && (PATTERN==0)",
    "EPN": "#XMMEA_EP && (PI in [10000:12000]) && (PATTERN==0)",
}
_MASK_RE = re.compile(r"^\(\s*FLAG\s*&\s*(0x[0-9a-fA-F]+)\s*\)\s*==\s*0$")
_SCREENED_RE = re.compile(r"\bgti\s*\(|espfilt|mos-filter|pn-filter|tabgtigen", re.IGNORECASE)


def flag_mask(camera: str, header: fits.Header | None = None) -> int:
    """The FLAG bits ``#XMMEA_EM``/``#XMMEA_EP`` reject, from the list's header if it says."""
    if header is not None:
        text = str(header.get(FLAG_KEYWORD[camera], "")).strip()
        m = _MASK_RE.match(text)
        if m:
            return int(m.group(1), 16)
    return DEFAULT_FLAG_MASK[camera]


def high_energy_singles(
    camera: str, pi: NDArray, pattern: NDArray, flag: NDArray, mask: int | None = None
) -> NDArray:
    """Mask of the events that enter the flare light curve."""
    lo, hi = PI_RANGE[camera]
    mask = DEFAULT_FLAG_MASK[camera] if mask is None else mask
    sel = (pattern == 0) & ((flag.astype(np.int64) & mask) == 0)
    sel &= pi >= lo
    if hi is not None:
        sel &= pi <= hi
    return sel


def already_screened(*headers: fits.Header) -> str | None:
    """Why the headers say the list was already flare-screened (None: no sign of it)."""
    for header in headers:
        texts = {"SLCTEXPR": str(header.get("SLCTEXPR", ""))}
        texts.update({k: str(v) for k, v in header.items() if re.fullmatch(r"XPROC\d+", k)})
        texts["CREATOR"] = str(header.get("CREATOR", ""))
        for key, text in texts.items():
            m = _SCREENED_RE.search(text)
            if m:
                start = max(0, m.start() - 20)
                return f"{key} records '...{text[start : m.end() + 30].strip()}...'"
    return None


@dataclass
class FlareCurve:
    """The high-energy single events of a camera, binned once the good time is known."""

    camera: str
    bin_size: float = 100.0
    times: list[NDArray] = field(default_factory=list)

    def add(self, times: NDArray) -> None:
        self.times.append(np.asarray(times, dtype=np.float64))

    def binned(self, camera_gti: NDArray) -> tuple[NDArray, NDArray]:
        """``(edges, counts)`` on the grid of the camera's good time (see module docstring)."""
        gti = gtimod.as_gti(camera_gti)
        if len(gti) == 0:
            return np.zeros(1), np.zeros(0, np.int64)
        start, stop = float(gti[0, 0]), float(gti[-1, 1])
        n = max(1, int(np.ceil((stop - start) / self.bin_size - 1e-9)))
        edges = start + self.bin_size * np.arange(n + 1)
        t = np.concatenate(self.times) if self.times else np.zeros(0)
        k = np.floor((t - start) / self.bin_size).astype(np.int64)
        k = k[(t >= start) & (k < n)]
        return edges, np.bincount(k, minlength=n)

    def rates(self, camera_gti: NDArray) -> tuple[NDArray, NDArray]:
        """``(edges, RATE)``: COUNTS / TIMEDEL, as evselect's rate column."""
        edges, counts = self.binned(camera_gti)
        return edges, counts / self.bin_size

    def good_time(self, camera_gti: NDArray, threshold: float | None = None) -> NDArray:
        """tabgtigen ``RATE <= threshold``: the union of the bins at or below it."""
        limit = THRESHOLD[self.camera] if threshold is None else threshold
        edges, rate = self.rates(camera_gti)
        ok = rate <= limit
        return gtimod.as_gti(np.column_stack([edges[:-1][ok], edges[1:][ok]]))
