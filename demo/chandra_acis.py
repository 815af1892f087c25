"""Synthetic Chandra ACIS archive: level-2 event lists that look like CIAO products, plus truth.

Part of the demo archive (``demo.archive``, ``python -m indexer sample``): :func:`generate` writes
per observation ``OUT_DIR/<obsid>/acisf<obsid, 5 digits>N001_evt2.fits.gz`` (gzip FITS,
byte-reproducible for a given seed) with a primary header, ``EVENTS`` (time, ccd_id, node_id,
chipx, chipy, x, y, pha, energy, pi, grade, status; CIAO column names in lower case, ``status``
a ``32X`` bit column, the x/y column WCS as CIAO writes it: ``TCRPX`` 4096.5, ``TCDLT``
-/+0.492", ``TLMIN`` 0.5, ``TLMAX`` 8192.5) and one ``GTI`` extension per active chip (``CCD_ID``
keyword, ``HDUNAME`` ``GTI<ccd>``). Keywords as in archive evt2 files: ``TELESCOP``, ``INSTRUME``,
``DETNAM`` (active chips, e.g. ``ACIS-012367``), ``OBS_ID``, ``OBJECT``, ``OBSERVER``, ``DATE-OBS``
/ ``DATE-END`` (TT, as Chandra writes them), ``TSTART``/``TSTOP`` [s since ``MJDREF`` 50814 TT],
pointing ``RA_PNT``/``DEC_PNT``/``ROLL_PNT`` and ``*_NOM``, ``SIM_Z``, ``READMODE`` ``TIMED``,
``DATAMODE``, ``GRATING`` ``NONE``, ``EXPOSURE``/``LIVETIME``/``ONTIME`` (aimpoint chip),
per-chip ``ONTIMEn``/``LIVTIMEn``/``EXPOSURn`` and ``DTCOR``. ``DATACLAS`` is ``SIMULATED``.

What is simulated (all rates are multiplied by ``events_scale``)
----------------------------------------------------------------
- Focal plane (``CHIP_ORIGIN``, in 0.492" pixels, u to the right and v up): ACIS-I, chips I0-I3
  (``ccd_id`` 0-3) in a 2 x 2 array, I0 I1 above I2 I3; ACIS-S, S0-S5 (``ccd_id`` 4-9) in a row
  ``I_TO_S_GAP_PIX`` (2') below, S2/S3 under I2/I3. Chips are 1024 x 1024 pixels (8.4'),
  ``CHIP_GAP_PIX`` (18") apart. Aimpoints (``AIMPOINT``) on I3, 1' from its two inner edges,
  and on S3; ACIS-I observations run I0-I3, S2, S3 (``ACIS-012367``), ACIS-S ones I2, I3,
  S1-S4 (``ACIS-235678``), as six-chip observations do. Chip axes (chipx, chipy) follow (u, v) for
  every chip (real chips have their own orientations). The focal plane is rotated on the sky by
  ``ROLL_NOM`` (sky offsets = rotation by +roll of focal-plane offsets from the aimpoint).
- Dither: a Lissajous pattern of 8" amplitude, periods 1000 s and 707.1 s; a photon lands on a
  chip at its sky position minus the dither offset, and is put back on the sky exactly (perfect
  aspect), so chip edges and gaps are blurred by 16" on the sky as in real data.
- Sources: the sources of the XMM demo field the observation points at
  (``demo.xmm_epic.field_sources``: same positions, fluxes and spectra, constant in time), as
  point sources with a Gaussian PSF of sigma ``0.35" + 0.032" (theta/arcmin)^2`` (theta off-axis
  angle), or as a beta model for the cluster; photon energies 0.3-8 keV from the source spectrum
  times an analytic effective area (:func:`effective_area`: HRMA 800 cm^2 with a high-energy
  fall-off; front-illuminated chips, or back-illuminated S1/S3 softer, for ACIS-S observations);
  no vignetting, no pile-up.
- Background: flat on every active chip (``BACKGROUND_RATE``: 0.12 counts/s front-illuminated,
  0.35 back-illuminated), spectrum ``E^-0.3`` over 0.3-12 keV.
- Energy: ``energy`` [eV] with Gaussian resolution (sigma ``sqrt(30^2 + 0.44 E/eV)`` eV, ~95 eV
  FWHM at 1.5 keV), ``pi = 1 + floor(energy / 14.6 eV)`` clipped to 1..1024, ``pha`` at
  ``PHA_GAIN_EV`` (4.7 eV/ADU), ``node_id = (chipx - 1) // 256``.
- Grades and status: ASCA grades from ``GRADE_PROBABILITIES`` (95% in the good set {0, 2, 3, 4,
  6}, 5% bad grades 1, 5, 7) and a nonzero ``status`` (one of bits 4, 16-19 as CIAO numbers them,
  left to right) for ``BAD_STATUS_PROBABILITY`` (1%). Unlike archive evt2 files, already filtered
  by the pipeline, these keep the rejected events so that the standard filter
  ``grade=0,2,3,4,6 && status=0`` has work to do.
- Time: frames of 3.24104 s (``TIMEDEL``, event times at frame centres), ``DTCOR`` 0.98734 (41 ms
  transfer a frame); good time: the whole observation minus a common telemetry gap, plus an extra
  gap on one chip away from the aimpoint, GTIs aligned to frames. Events only fall in their
  chip's GTIs; live time = on time x DTCOR.

Truth (returned; ``demo.archive`` stores it under ``"chandra"`` in ``truth.json``)::

    {"format": "regio-chandra-truth", "version": 1, "seed", "events_scale",
     "standard_filter": "grade=0,2,3,4,6 && status=0",
     "observations": [{
        "obsid", "camera" (ACIS-I | ACIS-S), "path" (relative to OUT_DIR), "object", "field",
        "ra_pnt", "dec_pnt", "roll" [deg], "sim_z" [mm], "detnam", "chips" (active ccd_ids),
        "tstart", "tstop" [s MET], "gti": {ccd: [[start, stop], ...]}, "ontime": {ccd: s},
        "exposure" [s] (aimpoint chip live time),
        "chip_centres": {ccd: [ra, dec]} (all ten chips, active or not, without dither) [deg],
        "sources": [{"id", "kind", "ra", "dec", "counts" (events written)}],
        "events" (written), "standard_events" (passing the standard filter)}]}
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from demo.epic_geometry import tan_deproject, tan_project
from demo.xmm_epic import FIELDS, Source, field_sources, normalised_spectrum
from indexer.instruments.chandra_acis import (
    GOOD_GRADES,
    PI_CHANNEL_EV,
    PI_CHANNELS,
    SIM_Z_NOMINAL_MM,
    SKY_PIXEL_ARCSEC,
    SKY_PIXEL_DEG,
    STANDARD_FILTER,
)

# --- constants ----------------------------------------------------------------------------

MJDREF = 50814.0  # [d] 1998-01-01T00:00:00 TT
MET_EPOCH_TT = datetime(1998, 1, 1)
SKY_REF_PIXEL = 4096.5
SKY_PIXEL_MAX = 8192.5
CHIP_PIXELS = 1024
CHIP_GAP_PIX = 37.0  # 18.2"
I_TO_S_GAP_PIX = 250.0  # 2.05'
FRAME_TIME = 3.24104  # [s] full-frame TIMED exposure (3.2 s) + transfer (41 ms)
DTCOR = round(1.0 - 0.04104 / FRAME_TIME, 6)
PHA_GAIN_EV = 4.7  # [eV / ADU]
PHA_MAX = 36855
DITHER_ARCSEC = 8.0
DITHER_PERIODS = (1000.0, 707.1)  # [s] along u, v
BI_CHIPS = (5, 7)  # S1, S3: back-illuminated
BACKGROUND_RATE = {"FI": 0.12, "BI": 0.35}  # counts/s per chip, 0.3-12 keV
E_MIN_KEV, E_MAX_KEV, E_STEP_KEV = 0.3, 8.0, 0.005
GRADE_PROBABILITIES: dict[int, float] = {
    0: 0.55,
    2: 0.20,
    3: 0.07,
    4: 0.07,
    6: 0.06,
    1: 0.01,
    5: 0.01,
    7: 0.03,
}
BAD_STATUS_PROBABILITY = 0.01
STATUS_BITS = (4, 16, 17, 18, 19)
AIMPOINT_CHIP = {"ACIS-I": 3, "ACIS-S": 7}
ACTIVE_CHIPS = {"ACIS-I": (0, 1, 2, 3, 6, 7), "ACIS-S": (2, 3, 5, 6, 7, 8)}


def _chip_origins() -> dict[int, tuple[float, float]]:
    """Lower-left corner (u, v) [pixels] of every chip in the focal plane."""
    step, half = CHIP_PIXELS + CHIP_GAP_PIX, CHIP_GAP_PIX / 2
    origins = {
        0: (-CHIP_PIXELS - half, half),
        1: (half, half),
        2: (-CHIP_PIXELS - half, -CHIP_PIXELS - half),
        3: (half, -CHIP_PIXELS - half),
    }
    v_s = -CHIP_PIXELS - half - I_TO_S_GAP_PIX - CHIP_PIXELS
    for k in range(6):
        origins[4 + k] = ((k - 3) * step + half, v_s)
    return origins


CHIP_ORIGIN: dict[int, tuple[float, float]] = _chip_origins()
AIMPOINT: dict[str, tuple[float, float]] = {
    "ACIS-I": (CHIP_GAP_PIX / 2 + 120.0, -CHIP_GAP_PIX / 2 - 120.0),  # I3, 1' from the gaps
    "ACIS-S": (CHIP_ORIGIN[7][0] + 400.0, CHIP_ORIGIN[7][1] + 512.0),  # S3
}


@dataclass(frozen=True)
class ObservationSpec:
    """A declared observation: field (index in ``demo.xmm_epic.FIELDS``), camera, start (TT),
    duration [s], roll [deg], aimpoint offset from the field centre [arcmin, East/North]."""

    obsid: str
    field: int
    camera: str
    date_obs: str
    duration: float
    roll: float
    d_east: float = 0.0
    d_north: float = 0.0
    datamode: str = "VFAINT"


# One ACIS-I observation of the XMM cluster field, one ACIS-S across RA = 0, one near the pole.
OBSERVATIONS: tuple[ObservationSpec, ...] = (
    ObservationSpec("4213", 0, "ACIS-I", "2003-02-14T09:12:40", 20000.0, 62.0, 0.4, -0.3),
    ObservationSpec("11874", 1, "ACIS-S", "2010-08-21T17:40:00", 15000.0, 95.0, 0.0, 0.0, "FAINT"),
    ObservationSpec("16532", 2, "ACIS-I", "2015-05-03T03:20:00", 10000.0, 210.0, -0.5, 0.5),
)


def observation_specs(n: int, seed: int) -> list[ObservationSpec]:
    """The first ``n`` observations: the declared list, then seed-dependent extra ones."""
    specs = list(OBSERVATIONS[:n])
    for index in range(len(OBSERVATIONS), n):
        rng = np.random.default_rng([seed, 8001, index])
        start = datetime(2000, 1, 1) + timedelta(days=float(rng.uniform(0, 365.25 * 24)))
        specs.append(
            ObservationSpec(
                obsid=str(20000 + index),
                field=index % len(FIELDS),
                camera=("ACIS-I", "ACIS-S")[index % 2],
                date_obs=start.replace(microsecond=0).isoformat(),
                duration=float(np.round(rng.uniform(5000, 20000), -2)),
                roll=float(np.round(rng.uniform(0, 360), 1)),
                d_east=float(np.round(rng.uniform(-1, 1), 2)),
                d_north=float(np.round(rng.uniform(-1, 1), 2)),
            )
        )
    return specs


def event_file_name(obsid: str) -> str:
    """Archive name of a level-2 event list, e.g. ``acisf04213N001_evt2.fits.gz``."""
    return f"acisf{int(obsid):05d}N001_evt2.fits.gz"


# --- geometry -------------------------------------------------------------------------------


def _rotation(roll: float) -> tuple[float, float]:
    return float(np.cos(np.radians(roll))), float(np.sin(np.radians(roll)))


def focal_to_sky_pixels(
    u: NDArray, v: NDArray, camera: str, roll: float
) -> tuple[NDArray, NDArray]:
    """Focal-plane (u, v) [pixels] -> sky pixels (x, y) of the event list (no dither)."""
    c, s = _rotation(roll)
    du, dv = np.asarray(u) - AIMPOINT[camera][0], np.asarray(v) - AIMPOINT[camera][1]
    return SKY_REF_PIXEL + c * du - s * dv, SKY_REF_PIXEL + s * du + c * dv


def sky_pixels_to_focal(
    x: NDArray, y: NDArray, camera: str, roll: float
) -> tuple[NDArray, NDArray]:
    """Inverse of :func:`focal_to_sky_pixels`."""
    c, s = _rotation(roll)
    dx, dy = np.asarray(x) - SKY_REF_PIXEL, np.asarray(y) - SKY_REF_PIXEL
    return AIMPOINT[camera][0] + c * dx + s * dy, AIMPOINT[camera][1] - s * dx + c * dy


def radec_to_sky_pixels(ra: Any, dec: Any, ra0: float, dec0: float) -> tuple[NDArray, NDArray]:
    """(RA, Dec) [deg] -> sky pixels (x, y) of a list whose x/y WCS is TAN about (ra0, dec0)."""
    xi, eta = tan_project(ra, dec, ra0, dec0)
    return SKY_REF_PIXEL - xi / SKY_PIXEL_DEG, SKY_REF_PIXEL + eta / SKY_PIXEL_DEG


def sky_pixels_to_radec(x: Any, y: Any, ra0: float, dec0: float) -> tuple[NDArray, NDArray]:
    """Sky pixels (x, y) -> (RA, Dec) [deg] (exact TAN)."""
    xi = -(np.asarray(x, dtype=float) - SKY_REF_PIXEL) * SKY_PIXEL_DEG
    eta = (np.asarray(y, dtype=float) - SKY_REF_PIXEL) * SKY_PIXEL_DEG
    return tan_deproject(xi, eta, ra0, dec0)


def chip_of(u: NDArray, v: NDArray) -> NDArray[np.int64]:
    """``ccd_id`` of focal-plane positions [pixels]; -1 in the gaps and off the detector."""
    ccd = np.full(np.shape(u), -1, dtype=np.int64)
    for number, (u0, v0) in CHIP_ORIGIN.items():
        inside = (u >= u0) & (u < u0 + CHIP_PIXELS) & (v >= v0) & (v < v0 + CHIP_PIXELS)
        ccd[inside] = number
    return ccd


def dither(t: NDArray, tstart: float) -> tuple[NDArray, NDArray]:
    """Pointing offset (u, v) [pixels] at times ``t`` [s MET] (Lissajous pattern)."""
    amplitude = DITHER_ARCSEC / SKY_PIXEL_ARCSEC
    phase = 2 * np.pi * (np.asarray(t) - tstart)
    return (
        amplitude * np.sin(phase / DITHER_PERIODS[0]),
        amplitude * np.sin(phase / DITHER_PERIODS[1]),
    )


# --- physics ------------------------------------------------------------------------------


def effective_area(energy_kev: NDArray, back_illuminated: bool) -> NDArray:
    """On-axis effective area [cm^2] of HRMA + ACIS (plausible analytic model, not calibration).

    HRMA: ``800 / (1 + (E/5 keV)^3)``, Ir M edge (x0.85 above 2.1 keV). CCD: front-illuminated
    ``(1 - exp(-(E/0.9 keV)^3)) exp(-(E/12 keV)^2)`` (soft cut-off including the contamination
    layer), back-illuminated ``(1 - exp(-(E/0.6 keV)^3)) exp(-(E/8 keV)^2)``.
    """
    e = np.asarray(energy_kev, dtype=float)
    mirror = 800.0 / (1.0 + (e / 5.0) ** 3) * np.where(e > 2.1, 0.85, 1.0)
    soft, hard = (0.6, 8.0) if back_illuminated else (0.9, 12.0)
    return mirror * (1.0 - np.exp(-((e / soft) ** 3))) * np.exp(-((e / hard) ** 2))


def psf_sigma_arcsec(offaxis_arcmin: Any) -> Any:
    """Gaussian PSF sigma [arcsec] at an off-axis angle [arcmin]."""
    return 0.35 + 0.032 * np.asarray(offaxis_arcmin, dtype=float) ** 2


def _sampler(edges: NDArray, density: NDArray) -> Callable[[np.random.Generator, int], NDArray]:
    cdf = np.concatenate([[0.0], np.cumsum(density * np.diff(edges))])
    cdf /= cdf[-1]
    return lambda rng, n: np.interp(rng.random(n), cdf, edges)


def _beta_radius(u: NDArray, r_core: float, beta: float, r_max: float) -> NDArray:
    """Radius [arcsec] enclosing the fraction ``u`` of a beta model truncated at ``r_max``."""
    index = 3.0 * beta - 0.5  # S(r) ~ (1 + (r/rc)^2)^-index
    f_max = 1.0 - (1.0 + (r_max / r_core) ** 2) ** (1.0 - index)
    return r_core * np.sqrt((1.0 - u * f_max) ** (1.0 / (1.0 - index)) - 1.0)


# --- one observation ------------------------------------------------------------------------


@dataclass
class Observation:
    spec: ObservationSpec
    ra: float  # aimpoint (RA_NOM = RA_PNT) [deg]
    dec: float
    tstart: float  # [s MET]
    tstop: float
    gti: dict[int, list[tuple[float, float]]]

    @property
    def chips(self) -> tuple[int, ...]:
        return ACTIVE_CHIPS[self.spec.camera]

    def ontime(self, ccd: int) -> float:
        return float(sum(b - a for a, b in self.gti[ccd]))


def _observation(spec: ObservationSpec, seed: int) -> Observation:
    field = FIELDS[spec.field]
    ra, dec = tan_deproject(spec.d_east / 60.0, spec.d_north / 60.0, field.ra, field.dec)
    tstart = (datetime.fromisoformat(spec.date_obs) - MET_EPOCH_TT).total_seconds()
    frames = int(spec.duration // FRAME_TIME)
    tstop = tstart + frames * FRAME_TIME
    rng = np.random.default_rng([seed, 8100, int(spec.obsid)])

    def aligned_gap(length: float) -> tuple[float, float]:
        k = int(rng.integers(frames // 10, frames * 8 // 10))
        return tstart + k * FRAME_TIME, tstart + (k + int(length // FRAME_TIME)) * FRAME_TIME

    common = aligned_gap(rng.uniform(300.0, 700.0))
    others = [c for c in ACTIVE_CHIPS[spec.camera] if c != AIMPOINT_CHIP[spec.camera]]
    extra_chip = int(rng.choice(others))
    extra = aligned_gap(rng.uniform(150.0, 400.0))
    gti = {}
    for ccd in ACTIVE_CHIPS[spec.camera]:
        gaps = sorted([common, extra] if ccd == extra_chip else [common])
        intervals, cursor = [], tstart
        for a, b in gaps:
            if a > cursor:
                intervals.append((cursor, a))
            cursor = max(cursor, b)
        intervals.append((cursor, tstop))
        gti[ccd] = intervals
    return Observation(spec, round(float(ra), 6), round(float(dec), 6), tstart, tstop, gti)


def _frame_centre(obs: Observation, t: NDArray) -> NDArray:
    """Times [s MET] moved to the centre of their frame (GTIs are whole frames: they stay in)."""
    return obs.tstart + (np.floor((t - obs.tstart) / FRAME_TIME) + 0.5) * FRAME_TIME


def _in_gti(obs: Observation, ccd: NDArray, t: NDArray) -> NDArray[np.bool_]:
    keep = np.zeros(len(t), dtype=bool)
    for chip, intervals in obs.gti.items():
        for a, b in intervals:
            keep |= (ccd == chip) & (t >= a) & (t < b)
    return keep


def _simulate(
    obs: Observation, sources: list[Source], scale: float, seed: int
) -> tuple[dict[str, NDArray], list[int]]:
    """Events of one observation (columns, time-ordered) and the counts of each source."""
    spec, camera = obs.spec, obs.spec.camera
    rng = np.random.default_rng([seed, 8200, int(spec.obsid)])
    edges = np.arange(E_MIN_KEV, E_MAX_KEV + E_STEP_KEV / 2, E_STEP_KEV)
    mid, width = 0.5 * (edges[:-1] + edges[1:]), np.diff(edges)
    area = effective_area(mid, back_illuminated=camera == "ACIS-S")
    parts: list[tuple[NDArray, NDArray, NDArray, NDArray]] = []  # u, v (on chip), t, energy
    counts = []
    ax0, ay0 = SKY_REF_PIXEL, SKY_REF_PIXEL
    for src in sources:
        density = normalised_spectrum(mid, src.spec.spectrum, src.spec.flux) * area
        rate = float(np.sum(density * width)) * scale * DTCOR
        n = int(rng.poisson(rate * (obs.tstop - obs.tstart)))
        x0, y0 = radec_to_sky_pixels(src.ra, src.dec, obs.ra, obs.dec)
        theta = float(np.hypot(x0 - ax0, y0 - ay0)) * SKY_PIXEL_ARCSEC / 60.0
        if src.spec.kind == "extended" and src.spec.extent:
            ext = src.spec.extent
            r = _beta_radius(rng.random(n), ext["r_core_arcsec"], ext["beta"], 360.0)
            phi = rng.uniform(0.0, 2 * np.pi, n)
            off_x, off_y = r * np.cos(phi), r * np.sin(phi)
        else:
            off_x, off_y = rng.normal(0.0, psf_sigma_arcsec(theta), (2, n))
        x = x0 + off_x / SKY_PIXEL_ARCSEC
        y = y0 + off_y / SKY_PIXEL_ARCSEC
        t = _frame_centre(obs, rng.uniform(obs.tstart, obs.tstop, n))
        du, dv = dither(t, obs.tstart)
        u, v = sky_pixels_to_focal(x, y, camera, spec.roll)
        u, v = u - du, v - dv
        ccd = chip_of(u, v)
        keep = np.isin(ccd, obs.chips) & _in_gti(obs, ccd, t)
        energy = _sampler(edges, density)(rng, n)
        parts.append((u[keep], v[keep], t[keep], energy[keep]))
        counts.append(int(keep.sum()))
    edges_bg = np.arange(0.3, 12.0 + 1e-9, 0.01)
    background = _sampler(edges_bg, (0.5 * (edges_bg[:-1] + edges_bg[1:])) ** -0.3)
    for ccd in obs.chips:
        kind = "BI" if ccd in BI_CHIPS else "FI"
        n = int(rng.poisson(BACKGROUND_RATE[kind] * scale * DTCOR * obs.ontime(ccd)))
        u0, v0 = CHIP_ORIGIN[ccd]
        u = u0 + rng.uniform(0.0, CHIP_PIXELS, n)
        v = v0 + rng.uniform(0.0, CHIP_PIXELS, n)
        lengths = np.array([b - a for a, b in obs.gti[ccd]])
        which = rng.choice(len(lengths), n, p=lengths / lengths.sum())
        t = np.array([a for a, _ in obs.gti[ccd]])[which] + rng.random(n) * lengths[which]
        t = _frame_centre(obs, t)
        parts.append((u, v, t, background(rng, n)))
    u, v, t, e_kev = (np.concatenate([p[i] for p in parts]) for i in range(4))
    order = np.argsort(t, kind="stable")
    u, v, t, e_kev = u[order], v[order], t[order], e_kev[order]
    n = len(t)
    ccd = chip_of(u, v)
    chipx = np.clip(np.floor(u - np.array([CHIP_ORIGIN[c][0] for c in ccd])) + 1, 1, CHIP_PIXELS)
    chipy = np.clip(np.floor(v - np.array([CHIP_ORIGIN[c][1] for c in ccd])) + 1, 1, CHIP_PIXELS)
    du, dv = dither(t, obs.tstart)
    x, y = focal_to_sky_pixels(u + du, v + dv, camera, spec.roll)
    e_ev = e_kev * 1000.0
    energy = np.maximum(e_ev + rng.normal(0.0, 1.0, n) * np.sqrt(30.0**2 + 0.44 * e_ev), 1.0)
    grades = np.array(list(GRADE_PROBABILITIES))
    probabilities = np.array(list(GRADE_PROBABILITIES.values()))
    status = np.zeros((n, 32), dtype=bool)
    bad = np.flatnonzero(rng.random(n) < BAD_STATUS_PROBABILITY)
    status[bad, rng.choice(STATUS_BITS, len(bad))] = True
    columns = {
        "time": t,
        "ccd_id": ccd.astype(np.int16),
        "node_id": ((chipx - 1) // 256).astype(np.int16),
        "chipx": chipx.astype(np.int16),
        "chipy": chipy.astype(np.int16),
        "x": x.astype(np.float32),
        "y": y.astype(np.float32),
        "pha": np.clip(np.rint(energy / PHA_GAIN_EV + rng.normal(0, 2, n)), 1, PHA_MAX).astype(
            np.int32
        ),
        "energy": energy.astype(np.float32),
        "pi": np.clip(np.floor(energy / PI_CHANNEL_EV) + 1, *PI_CHANNELS).astype(np.int32),
        "grade": rng.choice(grades, n, p=probabilities / probabilities.sum()).astype(np.int16),
        "status": status,
    }
    return columns, counts


# --- writing --------------------------------------------------------------------------------

#: (name, TFORM, TUNIT, TLMIN, TLMAX, TNULL, comment)
COLUMNS: tuple[tuple[str, str, str | None, Any, Any, Any, str], ...] = (
    ("time", "1D", "s", None, None, None, "S/C TT corresponding to mid-exposure"),
    ("ccd_id", "1I", None, 0, 9, None, "CCD reporting event"),
    ("node_id", "1I", None, 0, 3, None, "CCD serial readout amplifier node"),
    ("chipx", "1I", "pixel", 1, 1024, None, "chip coordinates"),
    ("chipy", "1I", "pixel", 1, 1024, None, "chip coordinates"),
    ("x", "1E", "pixel", 0.5, SKY_PIXEL_MAX, None, "sky coordinates"),
    ("y", "1E", "pixel", 0.5, SKY_PIXEL_MAX, None, "sky coordinates"),
    ("pha", "1J", "adu", 0, PHA_MAX, 0, "total pulse height of event"),
    ("energy", "1E", "eV", 0.0, 1.0e6, None, "nominal energy of event (eV)"),
    ("pi", "1J", "chan", PI_CHANNELS[0], PI_CHANNELS[1], 0, "pulse invariant energy of event"),
    ("grade", "1I", None, 0, 7, None, "binned event grade"),
    ("status", "32X", None, None, None, None, "event status bits"),
)


def _tt(met: float) -> str:
    return (MET_EPOCH_TT + timedelta(seconds=round(met))).isoformat()


def _common_keywords(obs: Observation) -> list[tuple[str, Any, str]]:
    spec, field = obs.spec, FIELDS[obs.spec.field]
    aim = AIMPOINT_CHIP[spec.camera]
    return [
        ("ORIGIN", "Regio", "synthetic data, not a real observation"),
        ("CREATOR", "demo.chandra_acis", "tool that created this output"),
        ("DATE", _tt(obs.tstop + 2 * 86400.0), "Date and time of file creation"),
        ("CONTENT", "EVT2", "What data product"),
        ("HDUCLASS", "OGIP", ""),
        ("HDUCLAS1", "EVENTS", ""),
        ("HDUCLAS2", "ACCEPTED", ""),
        ("MISSION", "AXAF", "Mission"),
        ("TELESCOP", "CHANDRA", "Telescope"),
        ("INSTRUME", "ACIS", "Instrument"),
        ("DETNAM", "ACIS-" + "".join(str(c) for c in obs.chips), "Detector"),
        ("GRATING", "NONE", "Grating"),
        ("OBS_ID", spec.obsid, "Observation id"),
        ("OBJECT", field.obj, "Source name"),
        ("OBSERVER", field.observer, "Principal investigator"),
        ("DATACLAS", "SIMULATED", "synthetic data"),
        ("OBS_MODE", "POINTING", "Observation mode"),
        ("DATE-OBS", _tt(obs.tstart), "Observation start date"),
        ("DATE-END", _tt(obs.tstop), "Observation end date"),
        ("TIMESYS", "TT", "Time system"),
        ("MJDREF", MJDREF, "[d] MJD zero point for times"),
        ("TIMEZERO", 0.0, "[s] Clock correction"),
        ("TIMEUNIT", "s", "Time unit"),
        ("TIMEREF", "LOCAL", "Time reference (barycenter/local)"),
        ("TASSIGN", "SATELLITE", "Time assigned by clock"),
        ("CLOCKAPP", True, "default"),
        ("TIMEPIXR", 0.5, "default"),
        ("TIMEDEL", FRAME_TIME, "[s] timedel Lev1"),
        ("TSTART", obs.tstart, "[s] Observation start time (MET)"),
        ("TSTOP", obs.tstop, "[s] Observation end time (MET)"),
        ("RADESYS", "ICRS", ""),
        ("EQUINOX", 2000.0, ""),
        ("SIM_Z", SIM_Z_NOMINAL_MM[spec.camera], "[mm] SIM translation stage pos"),
        ("FOC_LEN", 10070.0, "[mm] HRMA focal length"),
        ("RA_PNT", obs.ra, "[deg] Pointing RA"),
        ("DEC_PNT", obs.dec, "[deg] Pointing Dec"),
        ("ROLL_PNT", spec.roll, "[deg] Pointing Roll"),
        ("RA_NOM", obs.ra, "[deg] Nominal RA"),
        ("DEC_NOM", obs.dec, "[deg] Nominal Dec"),
        ("ROLL_NOM", spec.roll, "[deg] Nominal Roll"),
        ("RA_TARG", field.ra, "[deg] Observer's specified target RA"),
        ("DEC_TARG", field.dec, "[deg] Observer's specified target Dec"),
        ("READMODE", "TIMED", "Read mode"),
        ("DATAMODE", spec.datamode, "Data mode"),
        ("EXPTIME", 3.2, "[s] CCD exposure time"),
        ("DTCOR", DTCOR, "Dead time correction"),
        ("ONTIME", obs.ontime(aim), "[s] Sum of GTIs"),
        ("LIVETIME", obs.ontime(aim) * DTCOR, "[s] Ontime multiplied by DTCOR"),
        ("EXPOSURE", obs.ontime(aim) * DTCOR, "[s] Total exposure, with all known corrections"),
    ]


def _chip_keywords(obs: Observation) -> list[tuple[str, Any, str]]:
    out = []
    for ccd in obs.chips:
        ontime = obs.ontime(ccd)
        out += [
            (f"ONTIME{ccd}", ontime, f"[s] Sum of GTIs for CCD {ccd}"),
            (f"LIVTIME{ccd}", ontime * DTCOR, f"[s] Livetime for CCD {ccd}"),
            (f"EXPOSUR{ccd}", ontime * DTCOR, f"[s] Exposure for CCD {ccd}"),
        ]
    return out


def _set(header: fits.Header, cards: list[tuple[str, Any, str]]) -> None:
    for key, value, comment in cards:
        room = 80 - len(fits.Card(key, value).image.rstrip()) - 3
        header[key] = (value, comment[: max(room, 0)])


def _events_hdu(obs: Observation, columns: dict[str, NDArray]) -> fits.BinTableHDU:
    cols = [
        fits.Column(name=name, format=form, unit=unit, array=columns[name])
        for name, form, unit, *_ in COLUMNS
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name="EVENTS")
    h = hdu.header
    for i, (name, _, _, low, high, null, comment) in enumerate(COLUMNS, start=1):
        h.comments[f"TTYPE{i}"] = comment
        if low is not None:
            h[f"TLMIN{i}"], h[f"TLMAX{i}"] = low, high
        if null is not None:
            h[f"TNULL{i}"] = null
        if name in ("x", "y"):
            ra_dec = name == "x"
            h[f"TCTYP{i}"] = "RA---TAN" if ra_dec else "DEC--TAN"
            h[f"TCRVL{i}"] = obs.ra if ra_dec else obs.dec
            h[f"TCRPX{i}"] = SKY_REF_PIXEL
            h[f"TCDLT{i}"] = -SKY_PIXEL_DEG if ra_dec else SKY_PIXEL_DEG
            h[f"TCUNI{i}"] = "deg"
    _set(h, [("HDUNAME", "EVENTS", "ASCDM block name")])
    _set(h, _common_keywords(obs) + _chip_keywords(obs))
    for k, (mtype, mform) in enumerate(
        (("chip", "chipx,chipy"), ("sky", "x,y"), ("EQPOS", "RA,DEC")), start=1
    ):
        _set(h, [(f"MTYPE{k}", mtype, "DM Keyword: Descriptor name."), (f"MFORM{k}", mform, "")])
    return hdu


def _gti_hdus(obs: Observation) -> list[fits.BinTableHDU]:
    hdus = []
    for version, ccd in enumerate(obs.chips, start=1):
        rows = np.array(obs.gti[ccd], dtype=float).reshape(-1, 2)
        hdu = fits.BinTableHDU.from_columns(
            [
                fits.Column(name="START", format="1D", unit="s", array=rows[:, 0]),
                fits.Column(name="STOP", format="1D", unit="s", array=rows[:, 1]),
            ],
            name="GTI",
            ver=version,
        )
        common = {k: (v, c) for k, v, c in _common_keywords(obs)}
        _set(
            hdu.header,
            [
                ("HDUNAME", f"GTI{ccd}", "ASCDM block name"),
                ("CCD_ID", ccd, "CCD for this table"),
                *[(k, *common[k]) for k in ("TELESCOP", "INSTRUME", "OBS_ID", "MJDREF")],
                *[(k, *common[k]) for k in ("TIMESYS", "TIMEUNIT", "TSTART", "TSTOP")],
                ("ONTIME", obs.ontime(ccd), "[s] Sum of GTIs"),
            ],
        )
        hdus.append(hdu)
    return hdus


def write_event_list(path: Path, obs: Observation, columns: dict[str, NDArray]) -> None:
    """Write one level-2 event list as gzip FITS (no time stamp: same bytes for the same data)."""
    primary = fits.PrimaryHDU()
    _set(primary.header, _common_keywords(obs))
    buffer = io.BytesIO()
    fits.HDUList([primary, _events_hdu(obs, columns), *_gti_hdus(obs)]).writeto(buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
    ):
        gz.write(buffer.getvalue())


def chip_centres(obs: Observation) -> dict[str, list[float]]:
    """(RA, Dec) [deg] of the centre of every chip (active or not) for the observation."""
    out = {}
    for ccd, (u0, v0) in CHIP_ORIGIN.items():
        x, y = focal_to_sky_pixels(
            u0 + CHIP_PIXELS / 2, v0 + CHIP_PIXELS / 2, obs.spec.camera, obs.spec.roll
        )
        ra, dec = sky_pixels_to_radec(x, y, obs.ra, obs.dec)
        out[str(ccd)] = [round(float(ra), 7), round(float(dec), 7)]
    return out


def generate(
    out_dir: Path | str,
    observations: int = 3,
    seed: int = 1,
    events_scale: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write ``observations`` (>= 0) ACIS level-2 event lists below ``out_dir``; return the truth.

    Random streams from ``seed``; every rate multiplied by ``events_scale`` (> 0). The same
    arguments give byte-identical files (see the module docstring).
    """
    if observations < 0:
        raise ValueError("observations must be >= 0")
    if not events_scale > 0:
        raise ValueError("events_scale must be > 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = field_sources(seed)
    truth: dict[str, Any] = {
        "format": "regio-chandra-truth",
        "version": 1,
        "generator": "demo.chandra_acis",
        "seed": seed,
        "events_scale": events_scale,
        "mjdref": MJDREF,
        "timesys": "TT",
        "standard_filter": STANDARD_FILTER,
        "good_grades": list(GOOD_GRADES),
        "observations": [],
    }
    for spec in observation_specs(observations, seed):
        obs = _observation(spec, seed)
        field_srcs = [s for s in sources if s.field == spec.field]
        columns, counts = _simulate(obs, field_srcs, events_scale, seed)
        name = f"{spec.obsid}/{event_file_name(spec.obsid)}"
        write_event_list(out / name, obs, columns)
        good = np.isin(columns["grade"], GOOD_GRADES) & ~columns["status"].any(axis=1)
        truth["observations"].append(
            {
                "obsid": spec.obsid,
                "camera": spec.camera,
                "path": name,
                "object": FIELDS[spec.field].obj,
                "field": FIELDS[spec.field].name,
                "ra_pnt": obs.ra,
                "dec_pnt": obs.dec,
                "roll": spec.roll,
                "sim_z": SIM_Z_NOMINAL_MM[spec.camera],
                "detnam": "ACIS-" + "".join(str(c) for c in obs.chips),
                "chips": list(obs.chips),
                "tstart": obs.tstart,
                "tstop": obs.tstop,
                "gti": {str(c): [list(g) for g in obs.gti[c]] for c in obs.chips},
                "ontime": {str(c): obs.ontime(c) for c in obs.chips},
                "exposure": obs.ontime(AIMPOINT_CHIP[spec.camera]) * DTCOR,
                "chip_centres": chip_centres(obs),
                "sources": [
                    {
                        "id": s.id,
                        "kind": s.spec.kind,
                        "ra": s.ra,
                        "dec": s.dec,
                        "counts": c,
                    }
                    for s, c in zip(field_srcs, counts, strict=True)
                ],
                "events": len(columns["time"]),
                "standard_events": int(good.sum()),
            }
        )
        if progress is not None:
            progress(
                f"chandra {spec.obsid} {FIELDS[spec.field].obj} ({spec.camera}, "
                f"{spec.date_obs[:10]}, {spec.duration / 1000:.0f} ks): "
                f"{len(columns['time'])} events"
            )
    return truth
