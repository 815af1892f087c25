"""Soft-proton flare screening from the high-energy single-event rate, as the SAS threads do.

Events over the whole camera passing the camera's FLAG filter with ``PATTERN == 0`` and high
energy (pn ``10000 <= PI <= 12000``; MOS ``PI > 10000``) are counted in ``bin_size`` bins (100 s)
from the start of the list. A bin's rate is its counts over the good time it contains (camera
GTI, the union of the CCDs); bins with less than ``MIN_BIN_FRACTION`` of good time use the full
bin length, to avoid huge rates from a few seconds. Good time is where ``RATE <= threshold``:
0.4 counts/s for pn, 0.35 counts/s for MOS (``tabgtigen expression='RATE<=0.35'``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from indexer.instruments.xmm_epic import STANDARD_FLAG_MASK
from xmm import gti as gtimod

THRESHOLD = {"EMOS1": 0.35, "EMOS2": 0.35, "EPN": 0.4}  # counts/s
PI_RANGE = {"EMOS1": (10001, None), "EMOS2": (10001, None), "EPN": (10000, 12000)}  # eV
MIN_BIN_FRACTION = 0.1
EXPRESSION = {
    "EMOS1": "#XMMEA_EM && (PI>10000) && (PATTERN==0)",
    "EMOS2": "#XMMEA_EM && (PI>10000) && (PATTERN==0)",
    "EPN": "#XMMEA_EP && (PI in [10000:12000]) && (PATTERN==0)",
}


def high_energy_singles(camera: str, pi: NDArray, pattern: NDArray, flag: NDArray) -> NDArray:
    """Mask of the events that enter the flare light curve."""
    lo, hi = PI_RANGE[camera]
    sel = (pattern == 0) & ((flag.astype(np.int64) & STANDARD_FLAG_MASK[camera]) == 0)
    sel &= pi >= lo
    if hi is not None:
        sel &= pi <= hi
    return sel


@dataclass
class FlareCurve:
    """High-energy counts in fixed bins, filled chunk by chunk."""

    camera: str
    edges: NDArray[np.float64]
    counts: NDArray[np.int64]

    @classmethod
    def empty(cls, camera: str, tstart: float, tstop: float, bin_size: float) -> FlareCurve:
        n = max(1, int(np.ceil((tstop - tstart) / bin_size)))
        edges = tstart + bin_size * np.arange(n + 1)
        return cls(camera, edges, np.zeros(n, dtype=np.int64))

    def add(self, times: NDArray) -> None:
        k = np.searchsorted(self.edges, times, side="right") - 1
        k = k[(k >= 0) & (k < len(self.counts))]
        self.counts += np.bincount(k, minlength=len(self.counts))

    def rates(self, camera_gti: NDArray) -> NDArray[np.float64]:
        """Rate [counts/s] of each bin over its good time."""
        width = np.diff(self.edges)
        good = gtimod.overlap_with_bins(camera_gti, self.edges)
        exposure = np.where(good >= MIN_BIN_FRACTION * width, good, width)
        return self.counts / exposure

    def good_time(self, camera_gti: NDArray, threshold: float | None = None) -> NDArray:
        """Intervals of the bins whose rate is at most ``threshold`` (camera default)."""
        limit = THRESHOLD[self.camera] if threshold is None else threshold
        ok = self.rates(camera_gti) <= limit
        return gtimod.as_gti(np.column_stack([self.edges[:-1][ok], self.edges[1:][ok]]))
