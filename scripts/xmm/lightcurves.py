"""OGIP light curves (OGIP/93-003): binned source and background rates on the good time.

Bins of ``TIMEDEL`` start at the first good time of the CCDs under the source region; bins with
no good time are not written. For bin ``i``:

- ``FRACEXP`` = fraction of the bin in good time, averaged over the CCDs under the source
  region with their live-area weights;
- exposure = ``FRACEXP x TIMEDEL`` corrected for dead time (the CCDs' live fractions), so that the
  exposures of all bins add up to the spectrum's EXPOSURE;
- ``COUNTS`` = source events in the band (``CHANMIN <= PI <= CHANMAX``; PI in eV for EPIC, the
  PI channel for ACIS);
- ``BACKV`` = background counts / background exposure x BACKSCAL_src / BACKSCAL_bkg, ``BACKE``
  its Poisson error;
- ``RATE`` = COUNTS / exposure - BACKV (net), ``ERROR`` = both Poisson errors in quadrature
  (``sqrt(max(N, 1))`` for the counts, so empty bins keep a finite error);
- ``QUALITY`` = 1 when FRACEXP is below the threshold (kept, flagged, shown apart in previews;
  the threshold and the number of such bins are in the header, FEXPMIN and NLOWEXP).

``TIME`` is the bin centre (``TIMEPIXR = 0.5``), seconds since ``MJDREF`` (TT, ``TIMEREF``
as in the event list).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from xmm import gti as gtimod
from xmm.pipeline import EventObservation
from xmm.spectra import add_card, fit_comments, gti_hdu


@dataclass
class LightCurve:
    time: NDArray  # bin centres [s]
    timedel: float
    counts: NDArray
    exposure: NDArray  # live exposure per bin [s]
    fracexp: NDArray
    rate: NDArray
    error: NDArray
    backv: NDArray
    backe: NDArray
    quality: NDArray
    gti: NDArray
    chan: tuple[int, int]
    fexpmin: float

    @property
    def good(self) -> NDArray[np.bool_]:
        return self.quality == 0


def _exposure(obs: EventObservation, name: str, edges: NDArray) -> tuple[NDArray, NDArray]:
    """(live exposure [s], FRACEXP) of each bin for region ``name``."""
    width = np.diff(edges)
    live = np.zeros(len(width))
    frac = np.zeros(len(width))
    for ccd, w in obs.areas[name].weights().items():
        good = gtimod.overlap_with_bins(obs.good_time[ccd], edges)
        frac += w * good / width
        live += w * good * obs.events.ccds[ccd].live_fraction
    return live, frac


def light_curve(
    obs: EventObservation, band_ev: tuple[int, int], timedel: float, fexpmin: float
) -> LightCurve:
    """The light curve of the source region of ``obs`` (net of the background if there is one)."""
    gti = obs.region_gti("source")
    n = max(1, int(np.ceil((gti[-1, 1] - gti[0, 0]) / timedel)))
    edges = gti[0, 0] + timedel * np.arange(n + 1)
    lo, hi = band_ev
    src = obs.selected["source"]
    in_band = (src.pi >= lo) & (src.pi <= hi)
    counts = np.histogram(src.time[in_band], edges)[0]
    exposure, frac = _exposure(obs, "source", edges)
    backv = np.zeros(n)
    backe = np.zeros(n)
    if "background" in obs.regions:
        bkg = obs.selected["background"]
        b_in = (bkg.pi >= lo) & (bkg.pi <= hi)
        b_counts = np.histogram(bkg.time[b_in], edges)[0]
        b_exp, _ = _exposure(obs, "background", edges)
        scale = obs.areas["source"].total / obs.areas["background"].total
        with np.errstate(divide="ignore", invalid="ignore"):
            backv = np.where(b_exp > 0, scale * b_counts / b_exp, 0.0)
            backe = np.where(b_exp > 0, scale * np.sqrt(np.maximum(b_counts, 1)) / b_exp, 0.0)
    keep = exposure > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        gross = np.where(keep, counts / exposure, 0.0)
        gross_err = np.where(keep, np.sqrt(np.maximum(counts, 1)) / exposure, 0.0)
    centres = 0.5 * (edges[:-1] + edges[1:])
    return LightCurve(
        time=centres[keep],
        timedel=timedel,
        counts=counts[keep],
        exposure=exposure[keep],
        fracexp=frac[keep],
        rate=(gross - backv)[keep],
        error=np.hypot(gross_err, backe)[keep],
        backv=backv[keep],
        backe=backe[keep],
        quality=(frac[keep] < fexpmin).astype(np.int16),
        gti=gti,
        chan=(lo, hi),
        fexpmin=fexpmin,
    )


def write_lightcurve(
    path: Path, lc: LightCurve, keywords: dict[str, Any], cards: list[tuple], pi_unit: str = "eV"
) -> None:
    """RATE table (TIME, RATE, ERROR, COUNTS, BACKV, BACKE, FRACEXP, QUALITY) and a GTI table.

    ``pi_unit`` says what a PI value is in the CHANMIN/CHANMAX comments (EPIC eV, ACIS channel).
    """
    cols = [
        fits.Column(name="TIME", format="D", unit="s", array=lc.time),
        fits.Column(name="RATE", format="E", unit="count/s", array=lc.rate),
        fits.Column(name="ERROR", format="E", unit="count/s", array=lc.error),
        fits.Column(name="COUNTS", format="J", unit="count", array=lc.counts),
        fits.Column(name="BACKV", format="E", unit="count/s", array=lc.backv),
        fits.Column(name="BACKE", format="E", unit="count/s", array=lc.backe),
        fits.Column(name="FRACEXP", format="E", array=lc.fracexp),
        fits.Column(name="QUALITY", format="I", array=lc.quality),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name="RATE")
    h = hdu.header
    for key in ("TELESCOP", "INSTRUME", "FILTER", "OBS_ID", "OBJECT", "DATE-OBS", "DATE-END",
                "RA_PNT", "DEC_PNT", "PA_PNT", "SUBMODE"):  # fmt: skip
        if keywords.get(key) is not None:
            h[key] = keywords[key]
    h["HDUCLASS"] = ("OGIP", "format conforms to OGIP standard")
    h["HDUCLAS1"] = ("LIGHTCURVE", "light curve dataset (OGIP/93-003)")
    h["HDUCLAS2"] = (
        "NET" if lc.backv.any() else "TOTAL",
        "background subtracted" if lc.backv.any() else "gross",
    )
    h["HDUCLAS3"] = ("RATE", "stored as count/s")
    h["HDUVERS"] = ("1.1.0", "version of format")
    h["TIMESYS"] = (keywords.get("TIMESYS", "TT"), "time system")
    h["MJDREF"] = (float(keywords.get("MJDREF", 50814.0)), "[d] MJD of the time origin")
    h["TIMEREF"] = (keywords.get("TIMEREF", "LOCAL"), "reference location of the times")
    h["TIMEUNIT"] = ("s", "unit of TIME, TSTART, TSTOP, TIMEDEL")
    h["TIMEZERO"] = (0.0, "[s] clock correction")
    h["TIMEPIXR"] = (0.5, "TIME is the centre of the bin")
    h["TIMEDEL"] = (lc.timedel, "[s] bin size")
    h["TSTART"] = (float(lc.gti[0, 0]), "[s] start of the first good time")
    h["TSTOP"] = (float(lc.gti[-1, 1]), "[s] end of the last good time")
    h["TELAPSE"] = (float(lc.gti[-1, 1] - lc.gti[0, 0]), "[s] TSTOP - TSTART")
    h["ONTIME"] = (gtimod.total(lc.gti), "[s] good time")
    h["EXPOSURE"] = (float(lc.exposure.sum()), "[s] live exposure of the bins")
    h["CHANTYPE"] = ("PI", "channel type")
    h["CHANMIN"] = (lc.chan[0], f"lowest PI ({pi_unit}) in the band")
    h["CHANMAX"] = (lc.chan[1], f"highest PI ({pi_unit}) in the band")
    h["FEXPMIN"] = (lc.fexpmin, "bins with FRACEXP below this have QUALITY 1")
    h["NLOWEXP"] = (int(np.count_nonzero(lc.quality)), "number of low-exposure bins")
    primary = fits.PrimaryHDU()
    for card in cards:
        for header in (primary.header, h):
            add_card(header, card)
    gti = gti_hdu(lc.gti, "GTI", None, keywords)
    for x in (primary, hdu, gti):
        fit_comments(x.header)
    fits.HDUList([primary, hdu, gti]).writeto(path, overwrite=True, checksum=True)
