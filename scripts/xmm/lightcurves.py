"""OGIP light curves (OGIP/93-003) in the evselect convention, plus an exposure-corrected net curve.

Bins of ``TIMEDEL`` lie on one grid for every light curve of a run (``anchor`` + k TIMEDEL,
the anchor being the earliest good time of all the run's lists), so the curves of MOS1, MOS2 and
pn of an observation share their bin edges and can be summed bin by bin. Bins with no good time
under the source region are not written. For bin ``i``:

- ``FRACEXP`` = fraction of the bin in good time, averaged over the CCDs under the source region
  with their live-area weights (evselect's FRACEXP: no dead-time correction in it);
- ``COUNTS`` = source events in the band (``CHANMIN <= PI <= CHANMAX``; PI in eV for EPIC, the
  PI channel for ACIS);

The first table, ``RATE``, is what SAS ``evselect`` writes and what stingray and XRONOS read:

- ``RATE`` = COUNTS / TIMEDEL (gross, *not* corrected for FRACEXP or dead time: the reader
  corrects by FRACEXP itself), ``ERROR`` = sqrt(COUNTS) / TIMEDEL;
- ``BACKV`` = the background counts expected in the source region in the bin / TIMEDEL (the
  background region's counts x BACKSCAL ratio x the two regions' exposure ratio in the bin),
  ``BACKE`` its Poisson error, so that ``RATE - BACKV`` is the net rate in the same convention.

The second table, ``NETRATE``, is the exposure-corrected net curve (clearly labelled, HDUCLAS2
'NET'): ``NET_RATE`` = COUNTS / exposure - background rate scaled to the source area, where
exposure = FRACEXP x TIMEDEL x the CCDs' live fraction (the bins' exposures add up to the
spectrum's EXPOSURE); ``NET_ERROR`` both Poisson errors in quadrature (``sqrt(max(N, 1))`` for
the counts); ``EXPOSURE`` per bin; ``QUALITY`` = 1 when FRACEXP is below the threshold (kept,
flagged, shown apart in previews; FEXPMIN and NLOWEXP in the header).

``TIME`` is the bin centre (``TIMEPIXR = 0.5``), seconds since ``MJDREF`` in the event list's
``TIMESYS`` and ``TIMEREF`` (EPIC: TT, LOCAL = spacecraft). With ``barycentre``, event times and
good time are first converted to barycentric TDB with astropy (ERFA's built-in ephemeris, no
download; the spacecraft is taken at the geocentre, as XMM's orbit file is not read: times are
good to +-0.4 s, the light travel time across XMM's orbit): ``TIMESYS = 'TDB'``,
``TIMEREF = 'SOLARSYSTEM'``, ``MJDREF`` then in TDB.
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

#: Grid step [s] of the barycentric correction, linearly interpolated in between (the error of
#: the interpolation is below 1e-7 s).
BARY_GRID = 60.0


@dataclass
class LightCurve:
    time: NDArray  # bin centres [s]
    timedel: float
    counts: NDArray
    exposure: NDArray  # live exposure per bin [s]
    fracexp: NDArray
    rate: NDArray  # COUNTS / TIMEDEL
    error: NDArray  # sqrt(COUNTS) / TIMEDEL
    backv: NDArray  # background counts expected in the source region / TIMEDEL
    backe: NDArray
    net_rate: NDArray  # exposure-corrected net rate
    net_error: NDArray
    bkg_rate: NDArray  # exposure-corrected background rate scaled to the source area
    quality: NDArray
    gti: NDArray
    chan: tuple[int, int]
    fexpmin: float
    timesys: str = "TT"
    timeref: str = "LOCAL"
    bary_radec: tuple[float, float] | None = None  # where the times were barycentred to

    @property
    def good(self) -> NDArray[np.bool_]:
        return self.quality == 0


class Barycentre:
    """Spacecraft TT times [s since MJDREF] -> barycentric TDB times [s since MJDREF (TDB)]."""

    def __init__(self, ra: float, dec: float, mjdref: float):
        from astropy.coordinates import EarthLocation, SkyCoord
        from astropy.time import Time

        self.source = SkyCoord(ra, dec, unit="deg")
        self.radec = (float(ra), float(dec))
        self.mjdref = mjdref
        self._time, self._geo = Time, EarthLocation.from_geocentric(0, 0, 0, unit="m")

    def __call__(self, t: NDArray) -> NDArray:
        t = np.asarray(t, dtype=np.float64)
        if t.size == 0:
            return t.copy()
        lo, hi = float(t.min()), float(t.max())
        grid = np.arange(lo, hi + BARY_GRID, BARY_GRID) if hi > lo else np.array([lo])
        tt = self._time(self.mjdref, grid / 86400.0, format="mjd", scale="tt", location=self._geo)
        ltt = tt.light_travel_time(self.source, kind="barycentric", ephemeris="builtin")
        ref = self._time(self.mjdref, format="mjd", scale="tdb")
        bary = ((tt.tdb + ltt) - ref).to_value("s")
        shift = bary - grid
        return t + (np.interp(t, grid, shift) if len(grid) > 1 else shift[0])


def _exposure(obs: EventObservation, name: str, edges: NDArray, gti_of) -> tuple[NDArray, NDArray]:
    """(live exposure [s], FRACEXP) of each bin for region ``name``."""
    width = np.diff(edges)
    live = np.zeros(len(width))
    frac = np.zeros(len(width))
    for ccd, w in obs.areas[name].weights().items():
        good = gtimod.overlap_with_bins(gti_of(ccd), edges)
        frac += w * good / width
        live += w * good * obs.events.ccds[ccd].live_fraction
    return live, frac


def grid_anchor(observations: list[EventObservation]) -> float:
    """The run's common bin origin: the earliest good time under any source region."""
    return min(float(obs.region_gti("source")[0, 0]) for obs in observations)


def light_curve(
    obs: EventObservation,
    band_ev: tuple[int, int],
    timedel: float,
    fexpmin: float,
    anchor: float | None = None,
    barycentre: Barycentre | None = None,
) -> LightCurve:
    """The light curve of the source region of ``obs`` (with the background's, if any), on the
    grid ``anchor + k timedel`` (``anchor`` None: the source region's first good time)."""

    def convert(t: NDArray) -> NDArray:
        return barycentre(t) if barycentre is not None else t

    def gti_of(ccd: int) -> NDArray:
        g = obs.good_time[ccd]
        return gtimod.as_gti(convert(g.ravel()).reshape(-1, 2)) if len(g) else g

    gti = gtimod.union(*(gti_of(c) for c in obs.areas["source"].weights()))
    origin = float(gti[0, 0]) if anchor is None else float(convert(np.array([anchor]))[0])
    first = int(np.floor((gti[0, 0] - origin) / timedel))
    n = max(1, int(np.ceil((gti[-1, 1] - origin) / timedel)) - first)
    edges = origin + timedel * (first + np.arange(n + 1))
    lo, hi = band_ev
    src = obs.selected["source"]
    in_band = (src.pi >= lo) & (src.pi <= hi)
    counts = np.histogram(convert(src.time[in_band]), edges)[0]
    exposure, frac = _exposure(obs, "source", edges, gti_of)
    backv = np.zeros(n)
    backe = np.zeros(n)
    bkg_rate = np.zeros(n)
    bkg_rate_err = np.zeros(n)
    if "background" in obs.regions:
        bkg = obs.selected["background"]
        b_in = (bkg.pi >= lo) & (bkg.pi <= hi)
        b_counts = np.histogram(convert(bkg.time[b_in]), edges)[0]
        b_exp, _ = _exposure(obs, "background", edges, gti_of)
        scale = obs.areas["source"].total / obs.areas["background"].total
        with np.errstate(divide="ignore", invalid="ignore"):
            on = b_exp > 0
            bkg_rate = np.where(on, scale * b_counts / b_exp, 0.0)
            bkg_rate_err = np.where(on, scale * np.sqrt(np.maximum(b_counts, 1)) / b_exp, 0.0)
            # the background counts expected in the source region for the source's exposure
            backv = bkg_rate * exposure / timedel
            backe = np.where(on, scale * np.sqrt(b_counts) / b_exp, 0.0) * exposure / timedel
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
        rate=counts[keep] / timedel,
        error=np.sqrt(counts[keep]) / timedel,
        backv=backv[keep],
        backe=backe[keep],
        net_rate=(gross - bkg_rate)[keep],
        net_error=np.hypot(gross_err, bkg_rate_err)[keep],
        bkg_rate=bkg_rate[keep],
        quality=(frac[keep] < fexpmin).astype(np.int16),
        gti=gti,
        chan=(lo, hi),
        fexpmin=fexpmin,
        timesys="TDB" if barycentre is not None else "TT",
        timeref="SOLARSYSTEM" if barycentre is not None else "LOCAL",
        bary_radec=None if barycentre is None else barycentre.radec,
    )


def _time_keywords(h: fits.Header, lc: LightCurve, keywords: dict[str, Any]) -> None:
    bary = lc.timeref == "SOLARSYSTEM"
    h["TIMESYS"] = (lc.timesys if bary else keywords.get("TIMESYS", "TT"), "time system")
    h["MJDREF"] = (float(keywords.get("MJDREF", 50814.0)), f"[d] MJD ({h['TIMESYS']}) of time 0")
    h["TIMEREF"] = (
        lc.timeref if bary else keywords.get("TIMEREF", "LOCAL"),
        "times at the solar-system barycentre" if bary else "reference location of the times",
    )
    h["TASSIGN"] = ("SATELLITE", "location of time assignment")
    h["TIMEUNIT"] = ("s", "unit of TIME, TSTART, TSTOP, TIMEDEL")
    h["TIMEZERO"] = (0.0, "[s] clock correction")
    h["TIMEPIXR"] = (0.5, "TIME is the centre of the bin")
    h["TIMEDEL"] = (lc.timedel, "[s] bin size")
    h["TSTART"] = (float(lc.gti[0, 0]), "[s] start of the first good time")
    h["TSTOP"] = (float(lc.gti[-1, 1]), "[s] end of the last good time")
    h["TELAPSE"] = (float(lc.gti[-1, 1] - lc.gti[0, 0]), "[s] TSTOP - TSTART")
    h["ONTIME"] = (gtimod.total(lc.gti), "[s] good time")
    if bary and lc.bary_radec is not None:
        h["BARYCORR"] = (True, "barycentred with astropy (built-in ephemeris)")
        h["RA_BARY"] = (lc.bary_radec[0], "[deg] RA the times are barycentred to")
        h["DEC_BARY"] = (lc.bary_radec[1], "[deg] Dec the times are barycentred to")
        h["COMMENT"] = "spacecraft taken at the geocentre for the barycentring: +-0.4 s"


def write_lightcurve(
    path: Path, lc: LightCurve, keywords: dict[str, Any], cards: list[tuple], pi_unit: str = "eV"
) -> None:
    """``RATE`` (evselect convention), ``NETRATE`` (exposure-corrected net) and ``GTI`` tables.

    ``pi_unit`` says what a PI value is in the CHANMIN/CHANMAX comments (EPIC eV, ACIS channel).
    """
    rate = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="TIME", format="D", unit="s", array=lc.time),
            fits.Column(name="RATE", format="E", unit="count/s", array=lc.rate),
            fits.Column(name="ERROR", format="E", unit="count/s", array=lc.error),
            fits.Column(name="COUNTS", format="J", unit="count", array=lc.counts),
            fits.Column(name="FRACEXP", format="E", array=lc.fracexp),
            fits.Column(name="BACKV", format="E", unit="count/s", array=lc.backv),
            fits.Column(name="BACKE", format="E", unit="count/s", array=lc.backe),
        ],
        name="RATE",
    )
    net = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="TIME", format="D", unit="s", array=lc.time),
            fits.Column(name="NET_RATE", format="E", unit="count/s", array=lc.net_rate),
            fits.Column(name="NET_ERROR", format="E", unit="count/s", array=lc.net_error),
            fits.Column(name="BKG_RATE", format="E", unit="count/s", array=lc.bkg_rate),
            fits.Column(name="EXPOSURE", format="E", unit="s", array=lc.exposure),
            fits.Column(name="FRACEXP", format="E", array=lc.fracexp),
            fits.Column(name="QUALITY", format="I", array=lc.quality),
        ],
        name="NETRATE",
    )
    has_bkg = bool(lc.backv.any() or lc.bkg_rate.any())
    for hdu in (rate, net):
        h = hdu.header
        for key in ("TELESCOP", "INSTRUME", "FILTER", "OBS_ID", "OBJECT", "DATE-OBS", "DATE-END",
                    "RA_PNT", "DEC_PNT", "PA_PNT", "SUBMODE", "RA_OBJ", "DEC_OBJ", "EQUINOX",
                    "RADECSYS"):  # fmt: skip
            if keywords.get(key) is not None:
                h[key] = keywords[key]
        h["HDUCLASS"] = ("OGIP", "format conforms to OGIP standard")
        h["HDUCLAS1"] = ("LIGHTCURVE", "light curve dataset (OGIP/93-003)")
        h["HDUVERS"] = ("1.1.0", "version of format")
        h["HDUCLAS3"] = ("RATE", "stored as count/s")
        _time_keywords(h, lc, keywords)
        h["EXPOSURE"] = (float(lc.exposure.sum()), "[s] live exposure of the bins")
        h["CHANTYPE"] = ("PI", "channel type")
        h["CHANMIN"] = (lc.chan[0], f"lowest PI ({pi_unit}) in the band")
        h["CHANMAX"] = (lc.chan[1], f"highest PI ({pi_unit}) in the band")
    rate.header["HDUCLAS2"] = ("TOTAL", "gross: RATE = COUNTS/TIMEDEL (evselect)")
    rate.header["COMMENT"] = (
        "evselect convention: RATE = COUNTS/TIMEDEL, not corrected for FRACEXP or dead time; "
        "BACKV = background expected in the source region / TIMEDEL. The exposure-corrected "
        "net curve is the NETRATE table."
    )
    nh = net.header
    nh["HDUCLAS2"] = ("NET", "exposure-corrected, background subtracted")
    nh["FEXPMIN"] = (lc.fexpmin, "bins with FRACEXP below this have QUALITY 1")
    nh["NLOWEXP"] = (int(np.count_nonzero(lc.quality)), "number of low-exposure bins")
    nh["COMMENT"] = (
        "NET_RATE = COUNTS/EXPOSURE - BKG_RATE, EXPOSURE = FRACEXP x TIMEDEL x live fraction; "
        + ("BKG_RATE = background rate scaled to the source area" if has_bkg else "no background")
    )
    primary = fits.PrimaryHDU()
    for card in cards:
        for header in (primary.header, rate.header):
            add_card(header, card)
    gti = gti_hdu(lc.gti, "GTI", None, keywords)
    gti.header["TIMESYS"] = rate.header["TIMESYS"]
    gti.header["TIMEREF"] = rate.header["TIMEREF"]
    for x in (primary, rate, net, gti):
        fit_comments(x.header)
    fits.HDUList([primary, rate, net, gti]).writeto(path, overwrite=True, checksum=True)
