"""Synthetic XMM-Newton EPIC archive: event lists that look like PPS products, plus ground truth.

Part of the demo archive (``demo.archive``, ``python -m indexer sample``): :func:`generate_archive`
writes, per observation, ``OUT_DIR/<obsid>/`` with the three imaging-mode
event lists as the XMM archive names them (gzip FITS, byte-reproducible for a given seed)::

    P<obsid>M1S001MIEVLI0000.FTZ   EMOS1, PrimeFullWindow, 2.6 s frames
    P<obsid>M2S002MIEVLI0000.FTZ   EMOS2, PrimeFullWindow, 2.6 s frames
    P<obsid>PNS003PIEVLI0000.FTZ   EPN,   PrimeFullWindow (full frame), 73.4 ms frames

Each file has a primary header, ``EVENTS`` (TIME, RAWX, RAWY, DETX, DETY, X, Y, PHA, PI, FLAG,
PATTERN, CCDNR; pn also PAT_ID, PAT_SEQ; column types and the X/Y column WCS as SAS writes them),
one ``STDGTInn`` per live CCD and one ``BADPIXnn`` per live CCD. Dead CCDs (MOS1 CCD6 since
2005-03-09, CCD3 since 2012-12-11) have no events and no extensions, as in real files.

What is simulated (all rates are multiplied by ``events_scale``)
----------------------------------------------------------------
- Camera geometry from :mod:`demo.epic_geometry` (CCDs, chip gaps, circular field of view, roll
  by ``PA_PNT``, exact TAN projection). Photons falling in gaps, on dead CCDs or outside the
  field of view are lost.
- Telescope: energy-dependent effective area per camera (:func:`effective_area`; pn about 1.65x
  MOS at 1.5 keV, the MOS telescopes share their light with the RGS), energy-dependent vignetting
  (:func:`vignetting`), King-profile PSF (``PSF_KING``: FWHM 5" MOS, 6" pn, beta 1.5, truncated
  at 5'), Gaussian energy resolution (:func:`resolution_sigma_ev`: FWHM ~80 eV at 1 keV and
  ~135 eV at 6 keV) into PI [eV], clipped to the legal PI range (MOS 0-11999, pn 0-20479).
- Sources (``FIELDS``): point sources with absorbed power-law spectra (photo-electric
  absorption ``exp(-NH sigma(E))``, ``sigma = 2.4e-22 (E/keV)^(-8/3) cm^2``) or a thermal-like
  spectrum (bremsstrahlung ``E^-1.4 exp(-E/kT)`` plus a Gaussian Fe XXV line at 6.7 keV), one
  beta-model cluster (``S(r) ~ (1 + (r/r_c)^2)^(-3 beta + 1/2)``, r_c 45", beta 2/3, thermal with
  Fe line), a periodic source (sinusoidal, period 2400 s), a flaring star (fast rise, exponential
  decay) and seed-dependent faint point sources. Normalisations are energy fluxes 0.5-10 keV.
- Backgrounds: sky (cosmic X-ray background power law plus a 0.2 keV Galactic foreground,
  vignetted), quiescent particle background (flat over the whole CCD area, including the
  corners outside the field of view, not vignetted, hard continuum with Al K / Si K (MOS) or
  Cu K / Ni K (pn) fluorescence lines), soft-proton flares (observations with ``flares``: power
  law, mildly vignetted, peak 10-12 keV PATTERN==0 rates ~0.5 (MOS) / ~1.5 (pn) counts/s, above
  the SAS screening thresholds 0.35 / 0.4), and flickering (hot) pixels.
- Event grades and flags: PATTERN drawn from ``PATTERN_CLASSES``; a fraction ``RANDOM_FLAG_PROB``
  gets ``IN_BAD_FRAME`` (0x20000); position-dependent flags: ``CLOSE_TO_CCD_BORDER`` (0x2, outer
  raw pixel row/column; harmless for MOS ``#XMMEA_EM``, rejected by pn ``FLAG==0``),
  ``ON_BADPIX`` (0x200000; bad column segments listed in BADPIXnn), ``FLICKERING`` (0x8000, hot
  pixel events), ``OUT_OF_FOV`` (0x10000). The standard filters are MOS
  ``(FLAG & 0x766ba000)==0 && PATTERN<=12`` and pn ``FLAG==0 && PATTERN<=4``; among events
  without position-dependent flag bits (``POSITIONAL_FLAGS``) they keep the fraction
  ``RANDOM_PASS_PROB[camera]`` (0.951 MOS, 0.931 pn); all in all 10-20% of the events go.
- Time: seconds since MJDREF 50814.0 (1998-01-01 TT); DATE-OBS/DATE-END are UTC. Good time
  intervals per camera with telemetry gaps, plus an extra gap on one CCD per camera; event times
  respect the GTIs of their CCD and are quantised to frame centres (2.6 s MOS, 73.4 ms pn). Live
  time is ONTIME x 0.981 (MOS) or x 0.999 (pn); source and background counts scale with it.

``truth.json``
--------------
::

    {
      "format": "regio-sample-truth", "version": 1, "seed": S, "events_scale": F,
      "mjdref": 50814.0, "timesys": "TT", "radius_arcsec": 30.0,
      "standard_filters": {camera: expression},
      "random_pass_probability": {camera: p},   # see RANDOM_PASS_PROB
      "positional_flag_bits": int,              # see POSITIONAL_FLAGS
      "fields": [{"name", "object", "ra", "dec"}],
      "observations": [{
          "obsid", "field", "object", "ra_pnt", "dec_pnt", "pa_pnt" [deg], "filter",
          "date_obs", "date_end" [UTC ISO], "tstart", "tstop" [s, MET],
          "soft_proton_flares": [{"t_peak" [s MET], "sigma" [s], "peak_rate": {camera: cts/s}}],
          "cameras": {camera: {
              "file": "<obsid>/P...FTZ", "tstart", "tstop", "frame_time" [s],
              "gti": [[start, stop], ...]           # common to all CCDs [s]
              "ccd_gaps": {ccd: [[start, stop]]}    # extra gaps of single CCDs [s]
              "ontime": {ccd: s}, "livetime": {ccd: s}, "exposure": s (central CCD live time),
              "live_ccds": [...], "dead_ccds": [...],
              "events": n_written, "events_passing_standard_filters": n}}}],
      "sources": [{
          "id", "field", "name", "kind": "point" | "extended" | "variable",
          "ra", "dec" [deg], "flux_0.5_10keV" [erg/cm2/s],
          "spectrum": {"model": "powerlaw", "gamma", "nh" [cm-2]} |
                      {"model": "thermal", "kt" [keV], "nh", "fe_line_ew" [keV]},
          "extent": {"model": "beta", "r_core_arcsec", "beta"} (extended only),
          "variability": {"model": "periodic", "period" [s], "amplitude", "t_ref" [s MET]} |
                         {"model": "flare", "amplitude", "rise" [s], "decay" [s],
                          "t_peak": {obsid: s MET}} (variable only),
          "expected": {obsid: {camera: {
              "offaxis_arcmin", "ccd" (0 = gap / off the detector),
              "counts_r30": expected source counts passing the standard filters in a 30" circle,
              "other_sources_counts_r30": expected counts of the other injected sources (PSF
                  wings, cluster emission) in the same circle,
              "background_per_arcsec2": expected background counts per arcsec^2 passing the
                  standard filters at the source position (sky + particles + soft protons),
              "background_counts_r30": the same integrated over the live, unflagged part of the
                  30" circle}}}}]
    }

Only observations whose field of view reaches a source appear under its ``expected``.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from demo import epic_geometry as geo
from indexer.instruments.xmm_epic import STANDARD_FILTERS, XMMEA_EM

# --- constants ----------------------------------------------------------------------------

MJDREF = 50814.0  # [d] 1998-01-01T00:00:00 TT
MET_EPOCH_UTC = datetime(1998, 1, 1)
# TT - UTC [s] (32.184 s + TAI - UTC leap seconds), enough for XMM's lifetime.
_TT_MINUS_UTC = [
    (datetime(1999, 1, 1), 64.184),
    (datetime(2006, 1, 1), 65.184),
    (datetime(2009, 1, 1), 66.184),
    (datetime(2012, 7, 1), 67.184),
    (datetime(2015, 7, 1), 68.184),
    (datetime(2017, 1, 1), 69.184),
]
_TT_MINUS_UTC_1998 = 63.184

FRAME_TIME = {"EMOS1": 2.6, "EMOS2": 2.6, "EPN": 0.0734}  # [s] full-frame integration time
LIVE_FRACTION = {"EMOS1": 0.981, "EMOS2": 0.981, "EPN": 0.999}
PI_MAX = {"EMOS1": 11999, "EMOS2": 11999, "EPN": 20479}  # legal PI range [eV]
PHA_GAIN = {"EMOS1": 3.26, "EMOS2": 3.26, "EPN": 5.0}  # [eV / ADU]
E_MIN_KEV = 0.15
E_MAX_KEV = {"EMOS1": 12.0, "EMOS2": 12.0, "EPN": 20.0}
E_STEP_KEV = 0.005
INSTRUMENT_CODE = {"EMOS1": "M1S001MIEVLI", "EMOS2": "M2S002MIEVLI", "EPN": "PNS003PIEVLI"}
EXPIDSTR = {"EMOS1": "S001", "EMOS2": "S002", "EPN": "S003"}
CENTRAL_CCD = {"EMOS1": 1, "EMOS2": 1, "EPN": 4}

# PSF: King profile  PSF(r) ~ (1 + (r/r_c)^2)^(-beta);  FWHM = 2 r_c sqrt(2^(1/beta) - 1).
PSF_BETA = 1.5
PSF_FWHM_ARCSEC = {"EMOS1": 5.0, "EMOS2": 5.0, "EPN": 6.0}
PSF_KING = {
    cam: (fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / PSF_BETA) - 1.0)), PSF_BETA)
    for cam, fwhm in PSF_FWHM_ARCSEC.items()
}  # camera -> (r_core [arcsec], beta)
PSF_RMAX_ARCSEC = 300.0
CLUSTER_RMAX_ARCSEC = 360.0
RADIUS_ARCSEC = 30.0

# Standard filters and flags.
FLAG_CLOSE_TO_CCD_BORDER = 0x2
FLAG_FLICKERING = 0x8000
FLAG_OUT_OF_FOV = 0x10000
FLAG_IN_BAD_FRAME = 0x20000
FLAG_ON_BADPIX = 0x200000
POSITIONAL_FLAGS = FLAG_CLOSE_TO_CCD_BORDER | FLAG_FLICKERING | FLAG_OUT_OF_FOV | FLAG_ON_BADPIX
RANDOM_FLAG_PROB = 0.02  # IN_BAD_FRAME, independent of position
# PATTERN classes: (probability, possible values); the last class fails the standard filter.
PATTERN_CLASSES: dict[str, list[tuple[float, tuple[int, ...]]]] = {
    "EMOS1": [
        (0.64, (0,)),
        (0.24, (1, 2, 3, 4)),
        (0.09, tuple(range(5, 13))),
        (0.03, tuple(range(26, 32))),
    ],
    "EMOS2": [
        (0.64, (0,)),
        (0.24, (1, 2, 3, 4)),
        (0.09, tuple(range(5, 13))),
        (0.03, tuple(range(26, 32))),
    ],
    "EPN": [(0.70, (0,)), (0.25, (1, 2, 3, 4)), (0.05, tuple(range(5, 13)))],
}
RANDOM_PASS_PROB = {
    cam: round(sum(p for p, _ in classes[:-1]) * (1.0 - RANDOM_FLAG_PROB), 6)
    for cam, classes in PATTERN_CLASSES.items()
}  # probability that an event without positional flags passes the standard filter

# Backgrounds (before events_scale).
CXB_NORM = 10.5  # photons / cm^2 / s / sr / keV at 1 keV (cosmic X-ray background)
CXB_GAMMA = 1.42
FOREGROUND_SB = 1.0e-12  # erg / cm^2 / s / deg^2 in 0.5-2 keV, kT = 0.2 keV thermal
ARCSEC2_PER_SR = (180.0 / np.pi * 3600.0) ** 2
PARTICLE_RATE = {"EMOS1": 1.2e-3, "EMOS2": 1.2e-3, "EPN": 3.5e-3}  # counts/s/arcmin^2 of CCD
SOFT_PROTON_GAMMA = 0.7
SOFT_PROTON_QUIESCENT = {"EMOS1": 0.05, "EMOS2": 0.05, "EPN": 0.15}  # counts/s over the FOV
SOFT_PROTON_PEAK = {"EMOS1": 15.0, "EMOS2": 15.0, "EPN": 45.0}  # counts/s over the FOV
HOT_PIXEL_RATE = 0.003  # counts/s per flickering pixel
KEV_TO_ERG = 1.602176634e-9

# --- the sky -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSpec:
    """A declared source: offset from the field centre [arcmin, East/North], flux, spectrum."""

    name: str
    d_east: float
    d_north: float
    flux: float  # erg/cm^2/s, 0.5-10 keV
    spectrum: dict[str, Any]
    kind: str = "point"
    extent: dict[str, Any] | None = None
    variability: dict[str, Any] | None = None


@dataclass(frozen=True)
class FieldSpec:
    name: str
    obj: str
    ra: float
    dec: float
    observer: str
    sources: tuple[SourceSpec, ...]
    faint_sources: int = 6


def _pl(gamma: float, nh: float) -> dict[str, Any]:
    return {"model": "powerlaw", "gamma": gamma, "nh": nh}


def _th(kt: float, nh: float, ew: float) -> dict[str, Any]:
    return {"model": "thermal", "kt": kt, "nh": nh, "fe_line_ew": ew}


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(
        "CL0958",
        "CL J0958.3-1104",
        149.5920,
        -11.0700,
        "Dr A. Cluster",
        (
            SourceSpec(
                "cluster core",
                0.0,
                0.0,
                8e-12,
                _th(5.0, 4e20, 0.35),
                kind="extended",
                extent={"model": "beta", "r_core_arcsec": 45.0, "beta": 2.0 / 3.0},
            ),
            SourceSpec("AGN 1", 6.2, 3.1, 2.0e-12, _pl(1.8, 4e20)),
            SourceSpec("AGN 2", -4.0, -7.5, 1.2e-12, _pl(2.0, 1e21)),
        ),
    ),
    FieldSpec(
        "PKS0000",
        "PKS J0000+0213",
        0.0050,
        2.2200,
        "Dr B. Quasar",
        (
            SourceSpec("QSO", 0.0, 0.0, 4.0e-12, _pl(1.7, 3e20)),
            SourceSpec("west AGN", -5.5, 2.0, 1.0e-12, _pl(1.9, 3e20)),
        ),
    ),
    FieldSpec(
        "NCP0412",
        "NCP J0412+8712",
        63.0000,
        87.2000,
        "Dr C. Polaris",
        (
            SourceSpec("polar AGN", 1.5, -2.0, 2.5e-12, _pl(1.9, 6e20)),
            SourceSpec("polar star", -7.0, 4.0, 8e-13, _th(1.0, 1e20, 0.05)),
        ),
    ),
    FieldSpec(
        "IP1745",
        "XMMU J1745.2-2851",
        266.3000,
        -28.8600,
        "Dr D. Pulsar",
        (
            SourceSpec(
                "intermediate polar",
                0.0,
                0.0,
                6e-12,
                _pl(1.2, 8e21),
                kind="variable",
                variability={"model": "periodic", "period": 2400.0, "amplitude": 0.6, "t_ref": 0.0},
            ),
            SourceSpec("GC star", 5.0, -5.0, 1.0e-12, _th(2.0, 5e21, 0.3)),
        ),
    ),
    FieldSpec(
        "DEEP0332",
        "DEEP J0332-2748",
        53.1200,
        -27.8100,
        "Dr E. Deep",
        (
            SourceSpec(
                "flare star",
                3.0,
                -2.5,
                1.0e-12,
                _th(1.5, 1e20, 0.1),
                kind="variable",
                variability={"model": "flare", "amplitude": 12.0, "rise": 300.0, "decay": 1500.0},
            ),
            SourceSpec("deep AGN", -2.0, 4.0, 1.5e-12, _pl(1.9, 1e20)),
        ),
        faint_sources=12,
    ),
    FieldSpec(
        "ORI0535",
        "ORION J0535-0523",
        83.8200,
        -5.3900,
        "Dr F. Trapezium",
        (
            SourceSpec("young star 1", 0.5, 0.8, 3.0e-12, _th(2.5, 2e21, 0.2)),
            SourceSpec("young star 2", -3.0, -1.0, 1.5e-12, _th(1.2, 2e21, 0.1)),
        ),
    ),
)


@dataclass(frozen=True)
class ObservationSpec:
    """A declared observation: field index, start (UTC), duration [s], roll, pointing offset."""

    obsid: str
    field: int
    date_obs: str
    duration: float
    pa: float
    d_east: float = 0.0  # pointing offset from the field centre [arcmin]
    d_north: float = 0.0
    filter: str = "Thin1"
    flares: tuple[tuple[float, float, float], ...] = ()  # (time fraction, sigma [s], relative peak)


# The first observations cover every case early, so that small archives keep them all.
OBSERVATIONS: tuple[ObservationSpec, ...] = (
    ObservationSpec("0112230101", 0, "2002-05-10T06:12:30", 25000, 290.0, 0.3, -0.2),
    ObservationSpec("0405120201", 1, "2006-12-20T14:03:10", 20000, 75.0, -0.4, 0.1),
    ObservationSpec("0723450101", 2, "2014-03-02T01:45:00", 30000, 200.0, 0.5, 0.5, "Medium"),
    ObservationSpec("0153360101", 3, "2003-09-15T22:10:40", 35000, 260.0, 0.0, 0.4),
    ObservationSpec("0551230301", 0, "2008-11-22T10:30:00", 30000, 115.0, -1.5, 1.0),
    ObservationSpec(
        "0604560101",
        4,
        "2010-01-25T03:00:00",
        40000,
        60.0,
        0.2,
        0.3,
        "Thin1",
        ((0.30, 500.0, 1.0), (0.72, 900.0, 0.6)),
    ),
    ObservationSpec("0781230201", 1, "2016-07-03T19:20:00", 15000, 250.0, 1.2, -0.6),
    ObservationSpec("0843210101", 2, "2019-10-08T08:08:08", 20000, 330.0, -2.0, 1.0),
    ObservationSpec(
        "0670110201",
        3,
        "2011-03-28T12:00:00",
        25000,
        85.0,
        0.8,
        -0.8,
        "Medium",
        ((0.5, 400.0, 0.8),),
    ),
    ObservationSpec("0203450401", 4, "2004-07-12T16:45:00", 30000, 240.0, -1.0, -1.0),
    ObservationSpec("0312340101", 5, "2005-09-05T05:05:05", 20000, 100.0, 0.0, 0.0, "Thick"),
    ObservationSpec("0881230101", 0, "2021-05-30T21:00:00", 10000, 300.0, 0.6, 0.9),
)


def _extra_observation(index: int, seed: int) -> ObservationSpec:
    """Observation number ``index`` (0-based, beyond the declared list): a new epoch of a field."""
    rng = np.random.default_rng([seed, 7001, index])
    start = datetime(2000, 3, 1) + timedelta(days=float(rng.uniform(0, 365.25 * 23)))
    start = start.replace(microsecond=0)
    return ObservationSpec(
        obsid=f"09{index:06d}01",
        field=index % len(FIELDS),
        date_obs=start.isoformat(),
        duration=float(np.round(rng.uniform(10000, 40000), -2)),
        pa=float(np.round(rng.uniform(0, 360), 1)),
        d_east=float(np.round(rng.uniform(-2, 2), 2)),
        d_north=float(np.round(rng.uniform(-2, 2), 2)),
        filter=str(rng.choice(["Thin1", "Medium", "Thick"])),
    )


def observation_specs(n: int, seed: int) -> list[ObservationSpec]:
    """The first ``n`` observations: the declared list, then extra epochs of the same fields."""
    specs = list(OBSERVATIONS[:n])
    specs += [_extra_observation(i, seed) for i in range(len(OBSERVATIONS), n)]
    return specs


# --- physics: spectra, effective area, vignetting, resolution ---------------------------------


def energy_grid(camera: str) -> NDArray[np.float64]:
    """Bin edges of the photon-energy grid [keV] used to sample energies for ``camera``."""
    return np.arange(E_MIN_KEV, E_MAX_KEV[camera] + E_STEP_KEV / 2, E_STEP_KEV)


def absorption(energy_kev: NDArray[np.float64], nh: float) -> NDArray[np.float64]:
    """Photo-electric transmission ``exp(-NH sigma(E))``, ``sigma = 2.4e-22 E^(-8/3) cm^2`` (E keV)."""
    return np.exp(-nh * 2.4e-22 * energy_kev ** (-8.0 / 3.0))


def photon_spectrum(
    energy_kev: NDArray[np.float64], spectrum: dict[str, Any]
) -> NDArray[np.float64]:
    """Un-normalised photon spectrum dN/dE at ``energy_kev`` for a ``spectrum`` dict (see truth)."""
    e = energy_kev
    if spectrum["model"] == "powerlaw":
        shape = e ** (-spectrum["gamma"])
    elif spectrum["model"] == "thermal":
        kt = spectrum["kt"]
        shape = e ** (-1.4) * np.exp(-e / kt)  # bremsstrahlung with an approximate Gaunt factor
        ew = spectrum.get("fe_line_ew", 0.0)
        if ew > 0:
            e_line, sigma = 6.7, 0.03  # Fe XXV K alpha [keV]
            cont = 6.7 ** (-1.4) * np.exp(-6.7 / kt)
            shape = shape + ew * cont * np.exp(-0.5 * ((e - e_line) / sigma) ** 2) / (
                np.sqrt(2 * np.pi) * sigma
            )
    else:
        raise ValueError(f"unknown spectral model {spectrum['model']!r}")
    return shape * absorption(e, spectrum.get("nh", 0.0))


def normalised_spectrum(
    energy_kev: NDArray[np.float64], spectrum: dict[str, Any], flux: float
) -> NDArray[np.float64]:
    """Photon spectrum [photons/cm^2/s/keV] with energy flux ``flux`` [erg/cm^2/s] in 0.5-10 keV."""
    fine = np.arange(0.5, 10.0, 0.001) + 0.0005
    energy_flux = np.sum(fine * photon_spectrum(fine, spectrum)) * 0.001 * KEV_TO_ERG
    return photon_spectrum(energy_kev, spectrum) * (flux / energy_flux)


def effective_area(camera: str, energy_kev: NDArray[np.float64]) -> NDArray[np.float64]:
    """On-axis effective area [cm^2] of mirror + filter + CCD (plausible analytic model).

    Mirror: 1475 cm^2 at low energy, ``1/(1 + (E/7.5 keV)^2.5)`` high-energy fall-off, Au M edge
    (x0.85 above 2.2 keV). MOS: 56% of the light (the rest goes to the RGS gratings), front-
    illuminated CCD with soft cut-off ``1 - exp(-(E/0.55 keV)^3)``, Si K edge (x0.8 above 1.84 keV) and thin depletion layer
    (``exp(-(E/11 keV)^2)``). pn: back-illuminated, QE 0.92 ``(1 - exp(-(E/0.35 keV)^3))``, ``exp(-(E/25 keV)^2)``.
    """
    e = np.asarray(energy_kev, dtype=float)
    mirror = 1475.0 / (1.0 + (e / 7.5) ** 2.5) * np.where(e > 2.2, 0.85, 1.0)
    if camera == "EPN":
        qe = 0.92 * (1.0 - np.exp(-((e / 0.35) ** 3))) * np.exp(-((e / 25.0) ** 2))
        return mirror * qe
    qe = (
        (1.0 - np.exp(-((e / 0.55) ** 3)))
        * np.where(e > 1.84, 0.8, 1.0)
        * np.exp(-((e / 11.0) ** 2))
    )
    return 0.56 * mirror * qe


def vignetting(
    offaxis_arcmin: NDArray[np.float64] | float, energy_kev: NDArray[np.float64] | float
) -> Any:
    """Vignetting factor ``exp(-(theta/theta0(E))^2)``, ``theta0 = max(18 - 0.6 E/keV, 9)`` arcmin."""
    theta0 = np.maximum(18.0 - 0.6 * np.asarray(energy_kev, dtype=float), 9.0)
    return np.exp(-((np.asarray(offaxis_arcmin, dtype=float) / theta0) ** 2))


def soft_proton_vignetting(offaxis_arcmin: NDArray[np.float64] | float) -> Any:
    """Soft protons are focused less sharply than X-rays: ``1 - 0.3 (theta/15')^2``."""
    return 1.0 - 0.3 * (np.asarray(offaxis_arcmin, dtype=float) / 15.0) ** 2


def resolution_sigma_ev(camera: str, energy_ev: NDArray[np.float64]) -> NDArray[np.float64]:
    """Gaussian energy resolution sigma [eV]: read noise (MOS 20 eV, pn 25 eV) plus Fano noise.

    ``sigma^2 = noise^2 + F w E`` with Fano factor F = 0.12 and w = 3.65 eV per electron pair:
    FWHM ~80 eV at 1 keV and ~135 eV at 6 keV.
    """
    noise = 25.0 if camera == "EPN" else 20.0
    return np.sqrt(noise**2 + 0.12 * 3.65 * np.maximum(energy_ev, 0.0))


def particle_spectrum(camera: str, energy_kev: NDArray[np.float64]) -> NDArray[np.float64]:
    """Quiescent particle background (counts/keV, shape): flat hard continuum plus fluorescence."""
    e = energy_kev
    shape = e ** (-0.2)
    lines = (
        [(1.487, 0.4), (1.740, 0.25)]
        if camera != "EPN"
        else [(8.04, 0.8), (7.47, 0.3), (8.9, 0.15)]
    )
    for e_line, strength in lines:
        shape = shape + strength * np.exp(-0.5 * ((e - e_line) / 0.02) ** 2) / (
            np.sqrt(2 * np.pi) * 0.02
        )
    return shape


# --- pieces of an observation --------------------------------------------------------------


def _tt_minus_utc(when: datetime) -> float:
    value = _TT_MINUS_UTC_1998
    for since, offset in _TT_MINUS_UTC:
        if when >= since:
            value = offset
    return value


def utc_to_met(when: datetime) -> float:
    """UTC datetime -> XMM mission elapsed time [s since MJDREF 50814.0 TT]."""
    # MJDREF is 1998-01-01T00:00:00 *TT*: MET = (UTC calendar seconds since 1998-01-01) + (TT - UTC)
    return (when - MET_EPOCH_UTC).total_seconds() + _tt_minus_utc(when)


def met_to_utc(met: float) -> datetime:
    """XMM mission elapsed time [s, TT] -> UTC datetime (to the second)."""
    guess = MET_EPOCH_UTC + timedelta(seconds=met)
    utc = guess - timedelta(seconds=_tt_minus_utc(guess))
    return utc.replace(microsecond=0)


@dataclass
class CameraTimes:
    """Good time intervals of one camera, aligned to its frames [s, MET]."""

    tstart: float
    tstop: float
    frame: float
    gti: list[tuple[float, float]]
    ccd_gaps: dict[int, list[tuple[float, float]]]
    bins_lo: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    bins_hi: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        lo, hi = [], []
        for start, stop in self.gti:
            edges = np.append(np.arange(start, stop, 10.0), stop)
            lo.append(edges[:-1])
            hi.append(edges[1:])
        self.bins_lo = np.concatenate(lo)
        self.bins_hi = np.concatenate(hi)

    def ccd_gti(self, ccd: int) -> list[tuple[float, float]]:
        """GTIs of one CCD: the camera GTIs minus that CCD's extra gaps."""
        out = list(self.gti)
        for a, b in self.ccd_gaps.get(ccd, []):
            nxt = []
            for s, e in out:
                if e <= a or s >= b:
                    nxt.append((s, e))
                    continue
                if s < a:
                    nxt.append((s, a))
                if e > b:
                    nxt.append((b, e))
            out = nxt
        return out

    def in_ccd_gap(self, ccd: NDArray[np.int64], t: NDArray[np.float64]) -> NDArray[np.bool_]:
        bad = np.zeros(len(t), dtype=bool)
        for c, gaps in self.ccd_gaps.items():
            for a, b in gaps:
                bad |= (ccd == c) & (t >= a) & (t < b)
        return bad

    def gap_fraction(self, ccd: int, profile: Callable[[NDArray], NDArray]) -> float:
        """Fraction of a time profile's mass (over the camera GTIs) in that CCD's extra gaps."""
        w = profile(0.5 * (self.bins_lo + self.bins_hi)) * (self.bins_hi - self.bins_lo)
        mid = 0.5 * (self.bins_lo + self.bins_hi)
        in_gap = self.in_ccd_gap(np.full(len(mid), ccd), mid)
        return float(w[in_gap].sum() / w.sum())


def _align(t: float, t0: float, frame: float, up: bool) -> float:
    k = (t - t0) / frame
    k = np.ceil(k - 1e-9) if up else np.floor(k + 1e-9)
    return float(t0 + k * frame)


def _camera_times(
    camera: str,
    t_obs: float,
    duration: float,
    gaps: list[tuple[float, float]],
    ccd_gap: tuple[int, float, float],
) -> CameraTimes:
    frame = FRAME_TIME[camera]
    # MOS starts first; pn starts ~ 1.2 ks later (its set-up), all end together.
    t0 = t_obs + (60.0 if camera != "EPN" else 1200.0)
    t1 = t_obs + duration - 40.0
    tstart = t0
    tstop = _align(t1, t0, frame, up=False)
    gti: list[tuple[float, float]] = []
    cursor = tstart
    for a, b in gaps:
        a_al, b_al = _align(a, t0, frame, up=False), _align(b, t0, frame, up=True)
        if a_al > cursor:
            gti.append((cursor, a_al))
        cursor = max(cursor, b_al)
    if tstop > cursor:
        gti.append((cursor, tstop))
    ccd, a, b = ccd_gap
    ccd_gaps = {ccd: [(_align(a, t0, frame, up=False), _align(b, t0, frame, up=True))]}
    return CameraTimes(tstart, tstop, frame, gti, ccd_gaps)


def _frame_quantise(t: NDArray[np.float64], times: CameraTimes) -> NDArray[np.float64]:
    k = np.floor((t - times.tstart) / times.frame)
    return times.tstart + (k + 0.5) * times.frame


# --- bad pixels -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BadPixels:
    """Bad column segments and flickering pixels of a camera (fixed, as a property of the camera)."""

    table: dict[int, NDArray]  # ccd -> rows (RAWX, RAWY, TYPE, YEXTENT, BADFLAG)
    mask: dict[int, NDArray[np.bool_]]  # ccd -> (nx+1, ny+1) bool, True on a bad pixel
    hot: dict[int, list[tuple[int, int]]]  # ccd -> flickering pixels


def bad_pixels(camera: str) -> BadPixels:
    """The bad pixels of ``camera``: 0-2 dead column segments and 0-2 hot pixels per CCD."""
    rng = np.random.default_rng([4242, geo.CAMERAS.index(camera)])
    nx, ny = geo.RAW_SHAPE[camera]
    table, mask, hot = {}, {}, {}
    for ccd in geo.ccd_numbers(camera):
        m = np.zeros((nx + 1, ny + 1), dtype=bool)
        rows = []
        for _ in range(int(rng.integers(0, 3))):
            x = int(rng.integers(2, nx))
            y0 = int(rng.integers(1, ny // 2))
            ext = int(rng.integers(ny // 8, ny - y0))
            m[x, y0 : y0 + ext] = True
            rows.append((x, y0, 3, ext, 2))
        hot[ccd] = []
        for _ in range(int(rng.integers(0, 3))):
            x, y = int(rng.integers(2, nx)), int(rng.integers(2, ny))
            m[x, y] = True
            rows.append((x, y, 1, 1, 2))
            hot[ccd].append((x, y))
        table[ccd] = np.array(rows, dtype=np.int64).reshape(-1, 5)
        mask[ccd] = m
    return BadPixels(table, mask, hot)


_BAD_PIXELS = {cam: bad_pixels(cam) for cam in geo.CAMERAS}


def positional_flags(
    camera: str,
    ccd: NDArray[np.int64],
    rawx: NDArray[np.int64],
    rawy: NDArray[np.int64],
    r_arcmin: NDArray,
) -> NDArray[np.int32]:
    """FLAG bits that depend on where an event falls (border, bad pixel, outside the FOV)."""
    nx, ny = geo.RAW_SHAPE[camera]
    flags = np.zeros(len(ccd), dtype=np.int32)
    border = (rawx <= 1) | (rawx >= nx) | (rawy <= 1) | (rawy >= ny)
    flags[border] |= FLAG_CLOSE_TO_CCD_BORDER
    bp = _BAD_PIXELS[camera]
    for c, m in bp.mask.items():
        sel = ccd == c
        if sel.any():
            on_bad = m[rawx[sel], rawy[sel]]
            idx = np.flatnonzero(sel)[on_bad]
            flags[idx] |= FLAG_ON_BADPIX
    flags[r_arcmin > geo.FOV_RADIUS_ARCMIN[camera]] |= FLAG_OUT_OF_FOV
    return flags


def passes_positional(camera: str, flags: NDArray[np.int32]) -> NDArray[np.bool_]:
    """Whether position-dependent flags let an event through the standard filter."""
    if camera == "EPN":
        return flags == 0
    return (flags & XMMEA_EM) == 0


# --- event components ----------------------------------------------------------------------


@dataclass
class Component:
    """One contribution to an event list, as an inhomogeneous Poisson process.

    ``rate`` [counts/s] times ``profile(t)`` (dimensionless) is the expected rate before
    spatial losses (gaps, dead CCDs, FOV) and thinning; ``sample(rng, n)`` returns focal-plane
    positions [arcmin] and energies [keV] of ``n`` candidate events plus a keep mask.
    """

    name: str
    rate: float
    profile: Callable[[NDArray[np.float64]], NDArray[np.float64]]
    sample: Callable[[np.random.Generator, int], tuple[NDArray, NDArray, NDArray, NDArray]]
    fixed_flags: int = 0


def _flat(t: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.ones_like(t)


def _inverse_cdf_sampler(edges: NDArray[np.float64], density: NDArray[np.float64]):
    cdf = np.concatenate([[0.0], np.cumsum(density * np.diff(edges))])
    cdf /= cdf[-1]

    def draw(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
        return np.interp(rng.random(n), cdf, edges)

    return draw


def _king_radius(
    u: NDArray[np.float64], r_core: float, beta: float, r_max: float
) -> NDArray[np.float64]:
    """Inverse of the enclosed fraction of a King/beta profile truncated at ``r_max`` [arcsec]."""
    f_max = 1.0 - (1.0 + (r_max / r_core) ** 2) ** (1.0 - beta)
    return r_core * np.sqrt((1.0 - u * f_max) ** (1.0 / (1.0 - beta)) - 1.0)


def _king_offsets(rng: np.random.Generator, n: int, r_core: float, beta: float, r_max: float):
    r = _king_radius(rng.random(n), r_core, beta, r_max) / 60.0  # arcmin
    phi = rng.uniform(0.0, 2 * np.pi, n)
    return r * np.cos(phi), r * np.sin(phi)


def _variability_profile(var: dict[str, Any] | None, t_peak: float | None):
    if var is None:
        return _flat
    if var["model"] == "periodic":
        period, amp, t_ref = var["period"], var["amplitude"], var["t_ref"]
        return lambda t: 1.0 + amp * np.sin(2 * np.pi * (t - t_ref) / period)
    if var["model"] == "flare":
        amp, rise, decay = var["amplitude"], var["rise"], var["decay"]

        def flare(t: NDArray[np.float64]) -> NDArray[np.float64]:
            dt = t - t_peak
            shape = np.where(
                dt < 0, np.exp(-0.5 * (dt / rise) ** 2), np.exp(-np.maximum(dt, 0) / decay)
            )
            return 1.0 + amp * shape

        return flare
    raise ValueError(f"unknown variability {var['model']!r}")


# --- the generator --------------------------------------------------------------------------


@dataclass
class Source:
    id: str
    field: int
    spec: SourceSpec
    ra: float
    dec: float


def field_sources(seed: int) -> list[Source]:
    """All injected sources: the declared ones plus seed-dependent faint point sources."""
    out: list[Source] = []
    for fi, f in enumerate(FIELDS):
        specs = list(f.sources)
        rng = np.random.default_rng([seed, 5000 + fi])
        for k in range(f.faint_sources):
            r = 13.0 * np.sqrt(rng.random())
            phi = rng.uniform(0, 2 * np.pi)
            flux = float(10 ** rng.uniform(-14.3, -13.0))
            gamma = float(np.round(rng.uniform(1.5, 2.2), 2))
            specs.append(
                SourceSpec(
                    f"faint {k + 1}", r * np.cos(phi), r * np.sin(phi), flux, _pl(gamma, 3e20)
                )
            )
        for k, s in enumerate(specs):
            ra, dec = geo.tan_deproject(s.d_east / 60.0, s.d_north / 60.0, f.ra, f.dec)
            out.append(Source(f"{f.name}-{k + 1:02d}", fi, s, float(ra), float(dec)))
    return out


@dataclass
class Observation:
    spec: ObservationSpec
    field: FieldSpec
    ra_pnt: float
    dec_pnt: float
    pa_pnt: float
    t_obs: float
    times: dict[str, CameraTimes]
    flares: list[dict[str, Any]]
    flare_star_peak: float


def _observation(spec: ObservationSpec, seed: int) -> Observation:
    f = FIELDS[spec.field]
    ra, dec = geo.tan_deproject(spec.d_east / 60.0, spec.d_north / 60.0, f.ra, f.dec)
    ra_pnt, dec_pnt = round(float(ra), 6), round(float(dec), 6)
    t_obs = utc_to_met(datetime.fromisoformat(spec.date_obs))
    rng = np.random.default_rng([seed, 6000, int(spec.obsid)])
    # one or two telemetry gaps common to all cameras
    gaps = []
    for _ in range(int(rng.integers(1, 3))):
        a = t_obs + rng.uniform(0.15, 0.85) * spec.duration
        gaps.append((a, a + rng.uniform(200.0, 800.0)))
    gaps.sort()
    times = {}
    for cam in geo.CAMERAS:
        live = geo.live_ccds(cam, spec.date_obs)
        outer = [c for c in live if c != CENTRAL_CCD[cam]]
        ccd = int(rng.choice(outer))
        a = t_obs + rng.uniform(0.1, 0.8) * spec.duration
        times[cam] = _camera_times(
            cam, t_obs, spec.duration, gaps, (ccd, a, a + rng.uniform(150.0, 400.0))
        )
    flares = [
        {"t_peak": round(t_obs + frac * spec.duration, 3), "sigma": sigma, "relative_peak": peak}
        for frac, sigma, peak in spec.flares
    ]
    flare_star_peak = round(t_obs + 0.4 * spec.duration, 3)
    return Observation(
        spec, f, ra_pnt, dec_pnt, float(spec.pa), t_obs, times, flares, flare_star_peak
    )


class ObservationModel:
    """Rates, spatial and spectral samplers of every component for one camera of an observation."""

    def __init__(self, obs: Observation, camera: str, sources: list[Source], scale: float):
        self.obs, self.camera, self.scale = obs, camera, scale
        self.times = obs.times[camera]
        self.dead = geo.dead_ccds(camera, obs.spec.date_obs)
        self.live = [c for c in geo.ccd_numbers(camera) if c not in self.dead]
        edges = energy_grid(camera)
        self.edges = edges
        self.e_mid = 0.5 * (edges[:-1] + edges[1:])
        self.de = np.diff(edges)
        self.area = effective_area(camera, self.e_mid)
        self.r_core, self.beta = PSF_KING[camera]
        self.sources = [
            (s, *geo.sky_to_focal(s.ra, s.dec, obs.ra_pnt, obs.dec_pnt, obs.pa_pnt))
            for s in sources
        ]
        self.sources = [(s, float(x), float(y)) for s, x, y in self.sources]
        self.fov = geo.FOV_RADIUS_ARCMIN[camera]
        self.components = self._components()

    # -- helpers
    def source_profile(self, src: Source):
        return _variability_profile(src.spec.variability, self.obs.flare_star_peak)

    def source_rate(self, src: Source, theta: float) -> tuple[float, NDArray]:
        """Count rate [counts/s, whole PSF, before losses] and folded spectrum density."""
        dens = normalised_spectrum(self.e_mid, src.spec.spectrum, src.spec.flux) * self.area
        dens = dens * vignetting(theta, self.e_mid)
        return float(np.sum(dens * self.de)) * self.scale, dens

    def sky_density(self) -> NDArray:
        """Sky background photons per second per arcsec^2 per keV on axis, before vignetting."""
        cxb = CXB_NORM * self.e_mid ** (-CXB_GAMMA) * absorption(self.e_mid, 3e20) / ARCSEC2_PER_SR
        fg = normalised_spectrum(self.e_mid, _th(0.2, 0.0, 0.0), 1.0)
        fine = np.arange(0.5, 2.0, 0.001) + 0.0005
        fg_band = (
            np.sum(fine * normalised_spectrum(fine, _th(0.2, 0.0, 0.0), 1.0)) * 0.001 * KEV_TO_ERG
        )
        fg = fg * FOREGROUND_SB / fg_band / 3600.0**2
        return (cxb + fg) * self.area * self.scale

    def sp_spectrum(self) -> NDArray:
        return self.e_mid ** (-SOFT_PROTON_GAMMA)

    def sp_profile(self):
        q = SOFT_PROTON_QUIESCENT[self.camera]
        peak = SOFT_PROTON_PEAK[self.camera]
        flares = [(f["t_peak"], f["sigma"], f["relative_peak"] * peak) for f in self.obs.flares]

        def profile(t: NDArray[np.float64]) -> NDArray[np.float64]:
            out = np.full_like(t, q)
            for tp, sig, amp in flares:
                out += amp * np.exp(-0.5 * ((t - tp) / sig) ** 2)
            return out

        return profile

    def ccd_area_arcmin2(self) -> float:
        return sum(
            (r[1] - r[0]) * (r[3] - r[2])
            for c, r in geo.CCD_LAYOUT[self.camera].items()
            if c in self.live
        )

    # -- components
    def _components(self) -> list[Component]:
        comps: list[Component] = []
        fov = self.fov
        for src, x0, y0 in self.sources:
            theta = float(np.hypot(x0, y0))
            if theta > fov + CLUSTER_RMAX_ARCSEC / 60.0:
                continue
            rate, dens = self.source_rate(src, theta)
            draw_e = _inverse_cdf_sampler(self.edges, dens)
            ext = src.spec.extent

            def sample(rng, n, x0=x0, y0=y0, draw_e=draw_e, ext=ext):
                dx, dy = _king_offsets(rng, n, self.r_core, self.beta, PSF_RMAX_ARCSEC)
                if ext is not None:
                    cx, cy = _king_offsets(
                        rng, n, ext["r_core_arcsec"], 3 * ext["beta"] - 0.5, CLUSTER_RMAX_ARCSEC
                    )
                    dx, dy = dx + cx, dy + cy
                return x0 + dx, y0 + dy, draw_e(rng, n), np.ones(n, dtype=bool)

            comps.append(Component(f"source {src.id}", rate, self.source_profile(src), sample))

        # sky background: uniform on the sky over the FOV disc, thinned by vignetting
        sky = self.sky_density()
        disc_arcsec2 = np.pi * (fov * 60.0) ** 2
        draw_sky = _inverse_cdf_sampler(self.edges, sky)

        def sample_sky(rng, n):
            r = fov * np.sqrt(rng.random(n))
            phi = rng.uniform(0, 2 * np.pi, n)
            e = draw_sky(rng, n)
            keep = rng.random(n) < vignetting(r, e)
            return r * np.cos(phi), r * np.sin(phi), e, keep

        comps.append(
            Component(
                "sky background", float(np.sum(sky * self.de)) * disc_arcsec2, _flat, sample_sky
            )
        )

        # soft protons: in the FOV, mildly vignetted, power law
        draw_sp = _inverse_cdf_sampler(self.edges, self.sp_spectrum())

        def sample_sp(rng, n):
            r = fov * np.sqrt(rng.random(n))
            phi = rng.uniform(0, 2 * np.pi, n)
            keep = rng.random(n) < soft_proton_vignetting(r)
            return r * np.cos(phi), r * np.sin(phi), draw_sp(rng, n), keep

        comps.append(Component("soft protons", self.scale, self.sp_profile(), sample_sp))

        # quiescent particle background: uniform over the live CCDs' whole area
        rects = np.array([geo.CCD_LAYOUT[self.camera][c] for c in self.live])
        areas = (rects[:, 1] - rects[:, 0]) * (rects[:, 3] - rects[:, 2])
        draw_p = _inverse_cdf_sampler(self.edges, particle_spectrum(self.camera, self.e_mid))

        def sample_particles(rng, n):
            k = rng.choice(len(rects), n, p=areas / areas.sum())
            x = rng.uniform(rects[k, 0], rects[k, 1])
            y = rng.uniform(rects[k, 2], rects[k, 3])
            return x, y, draw_p(rng, n), np.ones(n, dtype=bool)

        comps.append(
            Component(
                "particle background",
                PARTICLE_RATE[self.camera] * areas.sum() * self.scale,
                _flat,
                sample_particles,
            )
        )

        # flickering pixels
        hot = [
            (c, x, y)
            for c, pix in _BAD_PIXELS[self.camera].hot.items()
            if c in self.live
            for x, y in pix
        ]
        if hot:
            hot_arr = np.array(hot)

            def sample_hot(rng, n):
                k = rng.integers(0, len(hot_arr), n)
                c, rx, ry = hot_arr[k, 0], hot_arr[k, 1], hot_arr[k, 2]
                x, y = _raw_to_focal(
                    self.camera, c, rx + rng.random(n) - 1.0, ry + rng.random(n) - 1.0
                )
                e = rng.uniform(0.2, 0.6, n)
                return x, y, e, np.ones(n, dtype=bool)

            comps.append(
                Component(
                    "flickering pixels",
                    HOT_PIXEL_RATE * len(hot) * self.scale,
                    _flat,
                    sample_hot,
                    FLAG_FLICKERING,
                )
            )
        return comps


def _raw_to_focal(
    camera: str, ccd: NDArray, rawx_f: NDArray, rawy_f: NDArray
) -> tuple[NDArray, NDArray]:
    """Inverse of :func:`geometry.focal_to_raw` for fractional raw positions (0-based pixels)."""
    layout = geo.CCD_LAYOUT[camera]
    rects = np.array([layout[int(c)] for c in ccd])
    xmin, xmax, ymin, ymax = rects.T
    nx, ny = geo.RAW_SHAPE[camera]
    fu, fv = rawx_f / nx, rawy_f / ny
    if camera == "EPN":
        along = fv
        fx = np.where(xmin >= 0, 1.0 - along, along)
        fy = fu
    elif camera == "EMOS2":
        fx, fy = fv, 1.0 - fu
    else:
        fx, fy = fu, fv
    return xmin + fx * (xmax - xmin), ymin + fy * (ymax - ymin)


# --- writing --------------------------------------------------------------------------------

MOS_COLUMNS = [
    ("TIME", "D", "s", ">f8"),
    ("RAWX", "I", "PIXELS", ">i2"),
    ("RAWY", "I", "PIXELS", ">i2"),
    ("DETX", "I", "pixel", ">i2"),
    ("DETY", "I", "pixel", ">i2"),
    ("X", "J", "pixel", ">i4"),
    ("Y", "J", "pixel", ">i4"),
    ("PHA", "I", "CHAN", ">i2"),
    ("PI", "I", "CHAN", ">i2"),
    ("FLAG", "J", None, ">i4"),
    ("PATTERN", "B", None, "u1"),
    ("CCDNR", "B", None, "u1"),
]
PN_COLUMNS = [
    *MOS_COLUMNS[:11],
    ("PAT_ID", "I", None, ">i2"),
    ("PAT_SEQ", "B", None, "u1"),
    ("CCDNR", "B", None, "u1"),
]


def _columns(camera: str):
    return PN_COLUMNS if camera == "EPN" else MOS_COLUMNS


def _simulate_slice(
    model: ObservationModel,
    rng: np.random.Generator,
    lo: NDArray,
    hi: NDArray,
) -> NDArray:
    """Events of all components in the time bins [lo, hi) of one slice, as a FITS-row array."""
    cam, obs, times = model.camera, model.obs, model.times
    mid, width = 0.5 * (lo + hi), hi - lo
    parts = []
    for comp in model.components:
        w = comp.profile(mid) * width
        expected = comp.rate * LIVE_FRACTION[cam] * w.sum()
        n = int(rng.poisson(expected))
        if n == 0:
            continue
        x, y, e, keep = comp.sample(rng, n)
        cdf = np.cumsum(w)
        k = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(w) - 1)
        t = lo[k] + rng.random(n) * width[k]
        ccd = geo.ccd_of(cam, x, y, fov=comp.name != "particle background")
        keep &= (ccd > 0) & ~np.isin(ccd, list(model.dead))
        keep &= ~times.in_ccd_gap(ccd, t)
        if not keep.any():
            continue
        parts.append((x[keep], y[keep], e[keep], t[keep], ccd[keep], comp.fixed_flags))
    dtype = np.dtype([(name, fmt) for name, _, _, fmt in _columns(cam)])
    if not parts:
        return np.zeros(0, dtype=dtype)
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    e = np.concatenate([p[2] for p in parts])
    t = np.concatenate([p[3] for p in parts])
    ccd = np.concatenate([p[4] for p in parts])
    fixed = np.concatenate([np.full(len(p[0]), p[5], dtype=np.int32) for p in parts])
    n = len(x)
    t = _frame_quantise(t, times)
    rawx, rawy = geo.focal_to_raw(cam, ccd, x, y)
    flags = positional_flags(cam, ccd, rawx, rawy, np.hypot(x, y)) | fixed
    flags[rng.random(n) < RANDOM_FLAG_PROB] |= FLAG_IN_BAD_FRAME
    classes = PATTERN_CLASSES[cam]
    cls = rng.choice(len(classes), n, p=[p for p, _ in classes])
    pattern = np.zeros(n, dtype=np.uint8)
    for i, (_, values) in enumerate(classes):
        sel = cls == i
        pattern[sel] = rng.choice(values, int(sel.sum()))
    e_ev = e * 1000.0
    pi = np.clip(
        np.rint(e_ev + rng.normal(0.0, 1.0, n) * resolution_sigma_ev(cam, e_ev)), 0, PI_MAX[cam]
    )
    pha = np.clip(np.rint(pi / PHA_GAIN[cam]), 0, 4095)
    detx, dety = geo.focal_to_det(cam, x, y)
    sx, sy = geo.focal_to_sky_pixels(x, y, obs.pa_pnt)
    order = np.argsort(t, kind="stable")
    rows = np.zeros(n, dtype=dtype)
    rows["TIME"] = t
    rows["RAWX"], rows["RAWY"] = rawx, rawy
    rows["DETX"], rows["DETY"] = np.rint(detx), np.rint(dety)
    rows["X"], rows["Y"] = np.rint(sx), np.rint(sy)
    rows["PHA"], rows["PI"] = pha, pi
    rows["FLAG"] = flags
    rows["PATTERN"] = pattern
    rows["CCDNR"] = ccd
    return rows[order]


def _common_header(obs: Observation, camera: str) -> list[tuple[str, Any, str]]:
    spec = obs.spec
    times = obs.times[camera]
    date_obs = met_to_utc(times.tstart).isoformat()
    date_end = met_to_utc(times.tstop).isoformat()
    return [
        ("DATAMODE", "IMAGING", "Instrument mode (IMAGING or TIMING)"),
        ("TELESCOP", "XMM", "XMM mission"),
        ("INSTRUME", camera, "EPIC pn Instrument" if camera == "EPN" else "EPIC MOS Instrument"),
        ("OBS_ID", spec.obsid, "Observation Identifier"),
        ("EXP_ID", spec.obsid + EXPIDSTR[camera][1:], "Exposure Identifier"),
        ("DATE-OBS", date_obs, "Start time of exposure"),
        ("DATE-END", date_end, "End time of exposure"),
        ("OBS_MODE", "POINTING", "Observation mode (pointing or slew)"),
        ("REVOLUT", int((obs.t_obs - 6.3e7) / 172800.0), "Revolution number"),
        ("OBJECT", obs.field.obj, "Name of observed object"),
        ("OBSERVER", obs.field.observer, "Name of observer"),
        ("RA_OBJ", obs.field.ra, "[deg] RA of target"),
        ("DEC_OBJ", obs.field.dec, "[deg] Dec of target"),
        ("RA_NOM", obs.field.ra, "[deg] RA of nominal boresight"),
        ("DEC_NOM", obs.field.dec, "[deg] Dec of nominal boresight"),
        ("EXPIDSTR", EXPIDSTR[camera], "Exposure ID"),
        ("FILTER", spec.filter, "Filter ID"),
        ("SUBMODE", "PrimeFullWindow", "Guest Observer mode"),
        ("EQUINOX", 2000.0, "Equinox for sky coordinate x/y axes"),
        ("RADECSYS", "FK5", "World coord. system for this file"),
        *_ref_keywords(obs),
        ("AVRG_PNT", "MEDIAN", "Meaning of PNT values (mean or median)"),
        ("RA_PNT", obs.ra_pnt, "[deg] Actual (mean) pointing RA of the optical axis"),
        ("DEC_PNT", obs.dec_pnt, "[deg] Actual (mean) pointing Dec of the optical axis"),
        ("PA_PNT", obs.pa_pnt, "[deg] Actual (mean) measured position angle"),
    ]


def _ref_keywords(obs: Observation) -> list[tuple[str, Any, str]]:
    out = []
    for axis, ctype, crval, cdelt in (
        ("X", "RA---TAN", obs.ra_pnt, -geo.SKY_PIXEL_DEG),
        ("Y", "DEC--TAN", obs.dec_pnt, geo.SKY_PIXEL_DEG),
    ):
        out += [
            (f"REF{axis}CTYP", ctype, "WCS Coord. type: tangent plane projection"),
            (f"REF{axis}CRPX", geo.SKY_REF_PIXEL, "WCS axis reference pixel of projected image"),
            (f"REF{axis}CRVL", crval, f"[deg] WCS coord. at {axis} axis ref. pixel"),
            (f"REF{axis}CDLT", cdelt, f"[deg/pix] WCS {axis} increment at ref. pixel"),
            (f"REF{axis}LMIN", 1, "WCS minimum legal QPOE projected image axis value"),
            (
                f"REF{axis}LMAX",
                geo.SKY_PIXEL_MAX,
                "WCS maximum legal QPOE projected image axis value",
            ),
            (f"REF{axis}CUNI", "deg", f"WCS Physical units of {axis} axis"),
        ]
    return out


def _time_keywords(times: CameraTimes) -> list[tuple[str, Any, str]]:
    return [
        ("TSTART", times.tstart, "[s] Start time of first frame"),
        ("TSTOP", times.tstop, "[s] End time of last frame"),
        ("TIMEUNIT", "s", "All times in s unless specified otherwise"),
        ("TIMESYS", "TT", "XMM time will be TT (Terrestrial Time)"),
        ("MJDREF", MJDREF, "[d] 1998-01-01T00:00:00 (TT) expressed in MJD"),
        ("TIMEREF", "LOCAL", "Reference location of photon arrival times"),
        ("TASSIGN", "SATELLITE", "Location of time assignment"),
        ("TIMEZERO", 0.0, "[s] Clock correction (if not zero)"),
        ("CLOCKAPP", True, "Clock correction applied"),
        ("TELAPSE", times.tstop - times.tstart, "[s] Full time interval for the exposure"),
    ]


def _gti_sum(gti: Sequence[tuple[float, float]]) -> float:
    return float(sum(b - a for a, b in gti))


def _events_header(
    obs: Observation, camera: str, n_rows: int, ontime: dict[int, float]
) -> fits.Header:
    cols = []
    for name, form, unit, _ in _columns(camera):
        cols.append(fits.Column(name=name, format=form, unit=unit, array=np.zeros(0)))
    hdu = fits.BinTableHDU.from_columns(cols, nrows=0)
    h = hdu.header
    h["EXTNAME"] = ("EVENTS", "CCD/node specific event list")
    times = obs.times[camera]
    for key, value, comment in _time_keywords(times):
        h[key] = (value, comment)
    h["DET_SYST"] = (2, "System for camera coordinates")
    for key, value, comment in _common_header(obs, camera):
        h[key] = (value, comment)
    h["SLCTEXPR"] = (STANDARD_FILTERS[camera], "Standard filter for this camera")
    for bit, name in (
        (1, "CLOSE_TO_CCD_BORDER"),
        (15, "FLICKERING"),
        (16, "OUT_OF_FOV"),
        (17, "IN_BAD_FRAME"),
        (21, "ON_BADPIX"),
    ):
        h[f"XMMEA_{bit}"] = (f"(FLAG & {hex(1 << bit)}) != 0", name)
    if camera != "EPN":
        h["XMMEA_EM"] = ("(FLAG & 0x766ba000) == 0", "Select good MOS events")
    live = LIVE_FRACTION[camera]
    for ccd, on in ontime.items():
        h[f"ONTIME{ccd:02d}"] = (on, "Sum of GTIs for a particular CCD")
    for ccd, on in ontime.items():
        h[f"LIVETI{ccd:02d}"] = (on * live, "Live time for a particular CCD")
    central = CENTRAL_CCD[camera]
    h["ONTIME"] = (ontime[central], "Sum of GTIs for central CCD")
    h["LIVETIME"] = (ontime[central] * live, "Live time for the central CCD")
    h["EXPOSURE"] = (ontime[central] * live, "[s] Exposure (live time of the central CCD)")
    idx = {name: i + 1 for i, (name, *_rest) in enumerate(_columns(camera))}
    nx, ny = geo.RAW_SHAPE[camera]
    for name, lo, hi in (("RAWX", 1, nx), ("RAWY", 1, ny)):
        h[f"TLMIN{idx[name]}"] = (lo, f"Legal minimum for {name}")
        h[f"TLMAX{idx[name]}"] = (hi, f"Legal maximum for {name}")
    for name, ctype in (("DETX", "DETX_ANG"), ("DETY", "DETY_ANG")):
        i = idx[name]
        h[f"TLMIN{i}"] = (-20500, f"Legal minimum for {name}")
        h[f"TLMAX{i}"] = (20500, f"Legal maximum for {name}")
        h[f"TCRPX{i}"] = (0, f"Center for {name}")
        h[f"TCTYP{i}"] = ctype
        h[f"TCRVL{i}"] = 0.0
        h[f"TCDLT{i}"] = (geo.SKY_PIXEL_DEG, f"[degrees] Pixel size for {name}")
        h[f"TCUNI{i}"] = ("deg", f"Physical unit for {name}")
    for name, ctype, crval, cdelt in (
        ("X", "RA---TAN", obs.ra_pnt, -geo.SKY_PIXEL_DEG),
        ("Y", "DEC--TAN", obs.dec_pnt, geo.SKY_PIXEL_DEG),
    ):
        i = idx[name]
        h[f"TNULL{i}"] = (-99999999, "Null value of the column")
        h[f"TLMIN{i}"] = (1, "minimum legal QPOE projected image value")
        h[f"TLMAX{i}"] = (geo.SKY_PIXEL_MAX, "maximum legal QPOE projected image value")
        h[f"TCRPX{i}"] = (geo.SKY_REF_PIXEL, "axis reference pixel of projected image")
        h[f"TCTYP{i}"] = (ctype, "Coord. type: tangent plane projection")
        h[f"TCRVL{i}"] = (crval, "[deg] coord. at axis ref. pixel")
        h[f"TCDLT{i}"] = (cdelt, "[deg/pix] increment at ref. pixel")
        h[f"TCUNI{i}"] = ("deg", "Physical units of axis")
    h[f"TLMIN{idx['PHA']}"] = (0, "Legal minimum for PHA")
    h[f"TLMAX{idx['PHA']}"] = (4095, "Legal maximum for PHA")
    h[f"TLMIN{idx['PI']}"] = (0, "Legal minimum for PI")
    h[f"TLMAX{idx['PI']}"] = (PI_MAX[camera], "Legal maximum for PI")
    h[f"TLMIN{idx['PATTERN']}"] = (0, "Minimum for PATTERN")
    h[f"TLMAX{idx['PATTERN']}"] = (31 if camera != "EPN" else 12, "Maximum for PATTERN")
    h[f"TLMIN{idx['CCDNR']}"] = (1, "Minimum for CCDNR")
    h[f"TLMAX{idx['CCDNR']}"] = (12 if camera == "EPN" else 7, "Maximum for CCDNR")
    h["NAXIS2"] = n_rows
    return _fit_comments(h)


def _fit_comments(h: fits.Header) -> fits.Header:
    """Shorten comments that would not fit on their 80-character card (as SAS does)."""
    for card in h.cards:
        if not card.comment or card.keyword in ("COMMENT", "HISTORY", ""):
            continue
        room = 80 - len(fits.Card(card.keyword, card.value).image.rstrip()) - 3
        if len(card.comment) > room:
            h.comments[card.keyword] = card.comment[: max(room, 0)]
    return h


def _primary_header(obs: Observation, camera: str) -> fits.Header:
    h = fits.Header()
    h["SIMPLE"] = True
    h["BITPIX"] = 8
    h["NAXIS"] = 0
    h["EXTEND"] = True
    h["CREATOR"] = ("demo.xmm_epic (Regio synthetic archive)", "name of code that created file")
    # a fixed processing date, derived from the observation (never "now")
    h["DATE"] = (
        met_to_utc(obs.times[camera].tstop + 3 * 86400.0).isoformat() + ".000",
        "creation date",
    )
    h["LONGSTRN"] = "OGIP 1.0"
    for key, value, comment in _common_header(obs, camera):
        h[key] = (value, comment)
    h["CONTENT"] = (
        "EPIC PN IMAGING MODE EVENT LIST" if camera == "EPN" else "EPIC MOS IMAGING MODE EVENT LIST"
    )
    h["ORIGIN"] = ("Regio synthetic data", "not a real observation")
    return _fit_comments(h)


def _extension_hdus(obs: Observation, camera: str, live: list[int]) -> list[fits.BinTableHDU]:
    times = obs.times[camera]
    base = [
        ("TELESCOP", "XMM", "XMM mission"),
        ("INSTRUME", camera, ""),
        ("OBS_ID", obs.spec.obsid, "Observation Identifier"),
        ("EXPIDSTR", EXPIDSTR[camera], "Exposure ID"),
        ("FILTER", obs.spec.filter, "Filter ID"),
        ("CCDMODE", "PrimeFullWindow", "Readout submode"),
        ("FRMTIME", FRAME_TIME[camera] * 1000.0, "[ms] Frame integration time"),
    ]
    hdus = []
    bp = _BAD_PIXELS[camera]
    for ccd in live:
        rows = bp.table[ccd]
        cols = [
            fits.Column(name=name, format="I", array=rows[:, i].astype(np.int16))
            for i, name in enumerate(("RAWX", "RAWY", "TYPE", "YEXTENT", "BADFLAG"))
        ]
        hdu = fits.BinTableHDU.from_columns(cols, name=f"BADPIX{ccd:02d}")
        for key, value, comment in base:
            hdu.header[key] = (value, comment)
        hdu.header["CCDID"] = (ccd, "Numerical identifier of the CCD")
        _fit_comments(hdu.header)
        hdus.append(hdu)
    for ccd in live:
        gti = times.ccd_gti(ccd)
        arr = np.array(gti, dtype=float).reshape(-1, 2)
        cols = [
            fits.Column(name="START", format="D", unit="s", array=arr[:, 0]),
            fits.Column(name="STOP", format="D", unit="s", array=arr[:, 1]),
        ]
        hdu = fits.BinTableHDU.from_columns(cols, name=f"STDGTI{ccd:02d}")
        h = hdu.header
        for key, value, comment in base:
            h[key] = (value, comment)
        h["CCDID"] = (ccd, "Numerical identifier of the CCD")
        h["HDUCLASS"] = ("OGIP", "File conforms to OGIP/GSFC conventions")
        h["HDUCLAS1"] = ("GTI", "File contains Good Time Intervals")
        h["HDUCLAS2"] = ("STANDARD", "File contains Good Time Intervals")
        for key, value, comment in _time_keywords(times):
            h[key] = (value, comment)
        h["NUMGTI"] = (len(gti), "Number of good time intervals")
        h["ONTIME"] = (_gti_sum(gti), f"[s] Total good time for CCD {ccd}")
        h["LIVETIME"] = (
            _gti_sum(gti) * LIVE_FRACTION[camera],
            f"[s] Dead-time corrected on time for CCD {ccd}",
        )
        _fit_comments(hdu.header)
        hdus.append(hdu)
    return hdus


CHUNK_EVENTS = 1_000_000  # expected events per simulated time slice (bounds memory)


def write_event_list(
    path: Path, obs: Observation, camera: str, sources: list[Source], scale: float, seed: int
) -> tuple[int, int]:
    """Simulate and write one event list; returns (events written, events passing the filters)."""
    model = ObservationModel(obs, camera, sources, scale)
    times = model.times
    lo, hi = times.bins_lo, times.bins_hi
    mid, width = 0.5 * (lo + hi), hi - lo
    per_bin = sum(c.rate * LIVE_FRACTION[camera] * c.profile(mid) * width for c in model.components)
    cum = np.cumsum(per_bin)
    n_slices = max(1, int(np.ceil(cum[-1] / CHUNK_EVENTS)))
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, n_slices) / n_slices)
    bounds = [0, *cuts.tolist(), len(lo)]
    n_rows, n_pass = 0, 0
    xr = [np.iinfo(np.int32).max, np.iinfo(np.int32).min]
    with tempfile.TemporaryFile(dir=path.parent) as spool:
        for k in range(len(bounds) - 1):
            a, b = bounds[k], bounds[k + 1]
            if b <= a:
                continue
            rng = np.random.default_rng([seed, int(obs.spec.obsid), geo.CAMERAS.index(camera), k])
            rows = _simulate_slice(model, rng, lo[a:b], hi[a:b])
            spool.write(rows.tobytes())
            n_rows += len(rows)
            if camera == "EPN":
                n_pass += int(np.count_nonzero((rows["FLAG"] == 0) & (rows["PATTERN"] <= 4)))
            else:
                n_pass += int(
                    np.count_nonzero(((rows["FLAG"] & XMMEA_EM) == 0) & (rows["PATTERN"] <= 12))
                )
            if len(rows):
                xr = [min(xr[0], int(rows["X"].min())), max(xr[1], int(rows["X"].max()))]
        ontime = {c: _gti_sum(times.ccd_gti(c)) for c in model.live}
        primary = fits.PrimaryHDU(header=_primary_header(obs, camera))
        ev_header = _events_header(obs, camera, n_rows, ontime)
        exts = fits.HDUList([fits.PrimaryHDU(), *_extension_hdus(obs, camera, model.live)])
        buf = io.BytesIO()
        exts.writeto(buf)
        ext_bytes = buf.getvalue()[2880:]  # drop the empty primary HDU
        buf = io.BytesIO()
        fits.HDUList([primary]).writeto(buf)
        spool.seek(0)
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        ):
            gz.write(buf.getvalue())
            gz.write(ev_header.tostring().encode("ascii"))
            shutil.copyfileobj(spool, gz, 1 << 22)
            row_bytes = n_rows * np.dtype([(n, f) for n, _, _, f in _columns(camera)]).itemsize
            gz.write(b"\0" * (-row_bytes % 2880))
            gz.write(ext_bytes)
    return n_rows, n_pass


# --- ground truth ---------------------------------------------------------------------------


def _polar_grid(n_r: int = 160, n_phi: int = 96):
    """Quasi-random points (fractions u of an enclosed-fraction CDF, angles) for PSF integrals."""
    u = (np.arange(n_r) + 0.5) / n_r
    phi = 2 * np.pi * (np.arange(n_phi) + 0.5) / n_phi
    return np.meshgrid(u, phi, indexing="ij")


def _live_unflagged(model: ObservationModel, x: NDArray, y: NDArray) -> NDArray:
    """Weight (0 or 1) of focal positions: on a live CCD, inside the FOV, no rejecting flag."""
    cam = model.camera
    x, y = np.ravel(x), np.ravel(y)
    ccd = geo.ccd_of(cam, x, y, fov=True)
    ok = (ccd > 0) & ~np.isin(ccd, list(model.dead))
    safe = np.where(ok, ccd, model.live[0])
    rawx, rawy = geo.focal_to_raw(cam, safe, x, y)
    ok &= passes_positional(cam, positional_flags(cam, safe, rawx, rawy, np.hypot(x, y)))
    return ok, safe


def _time_weights(model: ObservationModel, profile, ccd_arr: NDArray) -> tuple[float, NDArray]:
    """Integral of a time profile over the camera GTIs [s] and, per position, the fraction of it
    that falls in the GTIs of the CCD there (CCD-specific gaps)."""
    times = model.times
    mid = 0.5 * (times.bins_lo + times.bins_hi)
    total = float(np.sum(profile(mid) * (times.bins_hi - times.bins_lo)))
    frac = {c: 1.0 - times.gap_fraction(c, profile) for c in set(ccd_arr.ravel().tolist())}
    return total, np.vectorize(frac.get, otypes=[float])(ccd_arr)


def _mc_offsets(model: ObservationModel, src: Source) -> tuple[NDArray, NDArray]:
    """Fixed Monte-Carlo sample of a source's photon offsets (PSF, plus beta model) [arcmin]."""
    rng = np.random.default_rng(12345)
    n = 60000
    dx, dy = _king_offsets(rng, n, model.r_core, model.beta, PSF_RMAX_ARCSEC)
    ext = src.spec.extent
    if ext is not None:
        cx, cy = _king_offsets(
            rng, n, ext["r_core_arcsec"], 3 * ext["beta"] - 0.5, CLUSTER_RMAX_ARCSEC
        )
        dx, dy = dx + cx, dy + cy
    return dx, dy


def _counts_in_circle(
    model: ObservationModel, src: Source, xs: float, ys: float, cx: float, cy: float
) -> float:
    """Expected counts of ``src`` (at focal xs, ys) passing the standard filters in the 30" circle
    centred on (cx, cy) [arcmin]: PSF (and beta-model) integral over the live, unflagged detector,
    times the time profile over the GTIs of the CCDs hit, live time and pattern/flag selection."""
    cam = model.camera
    radius = RADIUS_ARCSEC / 60.0
    rate, _ = model.source_rate(src, float(np.hypot(xs, ys)))
    if src.spec.extent is None and (xs, ys) == (cx, cy):
        # quasi-random polar grid over the enclosed-fraction CDF of the King profile
        ug, pg = _polar_grid()
        r_core, beta = model.r_core, model.beta
        f_max = 1.0 - (1.0 + (PSF_RMAX_ARCSEC / r_core) ** 2) ** (1.0 - beta)
        f_in = (1.0 - (1.0 + (RADIUS_ARCSEC / r_core) ** 2) ** (1.0 - beta)) / f_max
        r = _king_radius(ug * f_in, r_core, beta, PSF_RMAX_ARCSEC) / 60.0
        ok, ccd = _live_unflagged(model, xs + r * np.cos(pg), ys + r * np.sin(pg))
        total, tw = _time_weights(model, model.source_profile(src), ccd)
        frac = f_in * float(np.mean(ok * tw))
    else:
        dx, dy = _mc_offsets(model, src)
        x, y = xs + dx, ys + dy
        inside = np.hypot(x - cx, y - cy) <= radius
        if not inside.any():
            return 0.0
        ok, ccd = _live_unflagged(model, x[inside], y[inside])
        total, tw = _time_weights(model, model.source_profile(src), ccd)
        frac = float(np.sum(ok * tw)) / len(dx)
    return rate * LIVE_FRACTION[cam] * total * frac * RANDOM_PASS_PROB[cam]


def _expected_for_source(
    model: ObservationModel, src: Source, x0: float, y0: float
) -> dict[str, Any]:
    cam = model.camera
    theta = float(np.hypot(x0, y0))
    live = LIVE_FRACTION[cam]
    times = model.times
    mid = 0.5 * (times.bins_lo + times.bins_hi)
    width = times.bins_hi - times.bins_lo
    p_random = RANDOM_PASS_PROB[cam]
    radius = RADIUS_ARCSEC / 60.0

    counts = _counts_in_circle(model, src, x0, y0, x0, y0)
    # photons of the other injected sources (PSF wings, cluster emission) in the same circle
    others = 0.0
    for other, xo, yo in model.sources:
        if other is src:
            continue
        reach = (CLUSTER_RMAX_ARCSEC if other.spec.extent else PSF_RMAX_ARCSEC) / 60.0 + radius
        if np.hypot(xo - x0, yo - y0) < reach:
            others += _counts_in_circle(model, other, xo, yo, x0, y0)

    # background density at the source position (per arcsec^2, passing the filters)
    e = model.e_mid
    sky = float(np.sum(model.sky_density() * vignetting(theta, e) * model.de))
    flat_total = float(np.sum(width))
    sp_total = float(np.sum(model.sp_profile()(mid) * width))
    disc = np.pi * (model.fov * 60.0) ** 2
    sp = model.scale * float(soft_proton_vignetting(theta)) / disc
    particle = PARTICLE_RATE[cam] * model.scale / 3600.0
    ccd0 = int(geo.ccd_of(cam, x0, y0)[()])
    alive0 = ccd0 > 0 and ccd0 not in model.dead
    tf = {}
    # background in the circle: uniform grid of 0.5" cells
    step = 0.5 / 60.0
    g = np.arange(-radius + step / 2, radius, step)
    gx, gy = np.meshgrid(g, g)
    in_c = np.hypot(gx, gy) <= radius
    bx, by = x0 + gx[in_c], y0 + gy[in_c]
    ok, ccd = _live_unflagged(model, bx, by)
    for c in set(ccd.tolist()):
        tf[c] = (
            1.0 - times.gap_fraction(c, _flat),
            1.0 - times.gap_fraction(c, model.sp_profile()),
        )
    tflat = np.array([tf[c][0] for c in ccd])
    tsp = np.array([tf[c][1] for c in ccd])
    dens_cells = live * p_random * ((sky + particle) * flat_total * tflat + sp * sp_total * tsp)
    bkg_counts = float(np.sum(ok * dens_cells)) * (0.5**2)
    if alive0:
        f0, s0 = tf.get(ccd0) or (
            1.0 - times.gap_fraction(ccd0, _flat),
            1.0 - times.gap_fraction(ccd0, model.sp_profile()),
        )
        bkg_density = live * p_random * ((sky + particle) * flat_total * f0 + sp * sp_total * s0)
    else:
        bkg_density = 0.0
    return {
        "offaxis_arcmin": round(theta, 4),
        "ccd": ccd0 if alive0 else 0,
        "counts_r30": round(counts, 3),
        "other_sources_counts_r30": round(others, 3),
        "background_per_arcsec2": float(f"{bkg_density:.6g}"),
        "background_counts_r30": round(bkg_counts, 3),
    }


def _source_truth(src: Source, flare_peaks: dict[str, float]) -> dict[str, Any]:
    s = src.spec
    out: dict[str, Any] = {
        "id": src.id,
        "field": FIELDS[src.field].name,
        "name": s.name,
        "kind": s.kind,
        "ra": round(src.ra, 8),
        "dec": round(src.dec, 8),
        "flux_0.5_10keV": s.flux,
        "spectrum": dict(s.spectrum),
    }
    if s.extent is not None:
        out["extent"] = dict(s.extent)
    if s.variability is not None:
        var = dict(s.variability)
        if var["model"] == "flare":
            var["t_peak"] = flare_peaks
        out["variability"] = var
    out["expected"] = {}
    return out


# --- the archive ----------------------------------------------------------------------------

TRUTH_NAME = "truth.json"


def event_file_name(obsid: str, camera: str) -> str:
    """Archive (PPS) name of an imaging event list, e.g. ``P0112230101M1S001MIEVLI0000.FTZ``."""
    return f"P{obsid}{INSTRUMENT_CODE[camera]}0000.FTZ"


def generate_archive(
    out_dir: Path | str,
    observations: int = 12,
    seed: int = 1,
    events_scale: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Write a synthetic EPIC archive to ``out_dir`` and return its ground truth.

    ``observations`` >= 1 observations (the first 12 are a declared list over 6 fields; more are
    extra epochs), random streams from ``seed``, every rate multiplied by ``events_scale`` (> 0).
    The truth (see the module docstring) is also written to ``out_dir/truth.json``. The same
    arguments give byte-identical files.
    """
    if observations < 1:
        raise ValueError("observations must be >= 1")
    if not events_scale > 0:
        raise ValueError("events_scale must be > 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = field_sources(seed)
    specs = observation_specs(observations, seed)
    truth: dict[str, Any] = {
        "format": "regio-sample-truth",
        "version": 1,
        "generator": "demo.xmm_epic",
        "seed": seed,
        "events_scale": events_scale,
        "mjdref": MJDREF,
        "timesys": "TT",
        "radius_arcsec": RADIUS_ARCSEC,
        "standard_filters": STANDARD_FILTERS,
        "random_pass_probability": RANDOM_PASS_PROB,
        "positional_flag_bits": POSITIONAL_FLAGS,
        "fields": [{"name": f.name, "object": f.obj, "ra": f.ra, "dec": f.dec} for f in FIELDS],
        "observations": [],
        "sources": [],
    }
    built = [_observation(spec, seed) for spec in specs]
    flare_peaks = {o.spec.obsid: o.flare_star_peak for o in built if o.field.name == "DEEP0332"}
    src_truth = {s.id: _source_truth(s, dict(flare_peaks)) for s in sources}
    for obs in built:
        spec = obs.spec
        obs_dir = out / spec.obsid
        obs_dir.mkdir(exist_ok=True)
        field_srcs = [s for s in sources if s.field == spec.field]
        entry: dict[str, Any] = {
            "obsid": spec.obsid,
            "field": obs.field.name,
            "object": obs.field.obj,
            "ra_pnt": obs.ra_pnt,
            "dec_pnt": obs.dec_pnt,
            "pa_pnt": obs.pa_pnt,
            "filter": spec.filter,
            "date_obs": met_to_utc(min(t.tstart for t in obs.times.values())).isoformat(),
            "date_end": met_to_utc(max(t.tstop for t in obs.times.values())).isoformat(),
            "tstart": min(t.tstart for t in obs.times.values()),
            "tstop": max(t.tstop for t in obs.times.values()),
            "soft_proton_flares": [
                {
                    "t_peak": f["t_peak"],
                    "sigma": f["sigma"],
                    "peak_rate": {
                        c: f["relative_peak"] * SOFT_PROTON_PEAK[c] * events_scale
                        for c in geo.CAMERAS
                    },
                }
                for f in obs.flares
            ],
            "cameras": {},
        }
        counts_msg = []
        for cam in geo.CAMERAS:
            name = event_file_name(spec.obsid, cam)
            n_rows, n_pass = write_event_list(
                obs_dir / name, obs, cam, field_srcs, events_scale, seed
            )
            times = obs.times[cam]
            dead = sorted(geo.dead_ccds(cam, spec.date_obs))
            live = [c for c in geo.ccd_numbers(cam) if c not in dead]
            ontime = {str(c): _gti_sum(times.ccd_gti(c)) for c in live}
            entry["cameras"][cam] = {
                "file": f"{spec.obsid}/{name}",
                "tstart": times.tstart,
                "tstop": times.tstop,
                "frame_time": times.frame,
                "gti": [list(g) for g in times.gti],
                "ccd_gaps": {str(c): [list(g) for g in gaps] for c, gaps in times.ccd_gaps.items()},
                "ontime": ontime,
                "livetime": {c: v * LIVE_FRACTION[cam] for c, v in ontime.items()},
                "exposure": ontime[str(CENTRAL_CCD[cam])] * LIVE_FRACTION[cam],
                "live_ccds": live,
                "dead_ccds": dead,
                "events": n_rows,
                "events_passing_standard_filters": n_pass,
            }
            counts_msg.append(f"{cam} {n_rows}")
            model = ObservationModel(obs, cam, field_srcs, events_scale)
            for src, x0, y0 in model.sources:
                if np.hypot(x0, y0) > model.fov + RADIUS_ARCSEC / 60.0:
                    continue
                exp = _expected_for_source(model, src, x0, y0)
                src_truth[src.id]["expected"].setdefault(spec.obsid, {})[cam] = exp
        truth["observations"].append(entry)
        if progress is not None:
            progress(
                f"{spec.obsid} {obs.field.obj} ({spec.date_obs[:10]}, {spec.duration / 1000:.0f} ks): "
                + ", ".join(counts_msg)
                + " events"
            )
    truth["sources"] = [src_truth[s.id] for s in sources]
    (out / TRUTH_NAME).write_text(json.dumps(truth, indent=1, sort_keys=False) + "\n")
    return truth
