"""Trace and extraction with specreduce: the object's trace, sky from side windows, boxcar or
optimal (Horne) extraction, with the variance carried through.

- **Where to look**: the spatial profile of the frame (each column's median removed, then the
  median over the columns with signal) peaks at the object; a ``guess`` row narrows the search
  to ``window`` rows around it (several objects on the slit).
- **Trace** (``specreduce.tracing.FitTrace``): the frame is cut into ``bins`` along the
  dispersion, a Gaussian is fitted across the slit in each bin within ``window`` rows of the
  peak, and a degree-2 polynomial is fitted to the bin centres.
- **Sky** (``specreduce.background.Background.two_sided``): two windows of ``sky_width`` rows
  centred ``sky_offset`` rows on each side of the trace, following it; per column their
  sigma-clipped mean is subtracted (its variance goes with it).
- **Extraction**: boxcar (``specreduce.extract.BoxcarExtract``) of ``width`` rows centred on the
  trace (default 3 x the object's FWHM across the slit, which holds all but a fraction of a
  per cent of a Gaussian profile), or optimal (Horne 1986): each column weighted by a Gaussian
  profile of the object's FWHM centred on the trace and by the inverse variance,
  ``flux = sum(P D / V) / sum(P^2 / V)``, ``variance = 1 / sum(P^2 / V)`` over the same aperture.
  (specreduce 1.9's ``HorneExtract`` is not used: with a curved trace it aligns the image on
  the trace but not the variance, which made its variances too small by an order of magnitude
  on the Kast standard.) The 1-D mask is the OR of the 2-D mask bits of the aperture's pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.modeling import models
from astropy.nddata import NDData, VarianceUncertainty
from scipy.optimize import curve_fit
from specreduce.background import Background
from specreduce.extract import BoxcarExtract
from specreduce.tracing import ArrayTrace, FitTrace

from longslit.ccd import MASK_FLAT, Frame

TRACE_BINS = 32


class ExtractionError(ValueError):
    """No object to trace, or an aperture off the slit."""


@dataclass
class Extraction:
    trace: np.ndarray  #: row of the object's centre in each column (0-based)
    fwhm: float  #: the object's FWHM across the slit [pixels]
    width: float  #: aperture width [pixels]
    sky_offset: float
    sky_width: float
    flux: np.ndarray  #: electrons per column
    variance: np.ndarray
    sky: np.ndarray  #: sky under the aperture [electrons per column]
    mask: np.ndarray  #: uint8 per column
    method: str

    @property
    def error(self) -> np.ndarray:
        return np.sqrt(np.clip(self.variance, 0, None))


def spatial_profile(frame: Frame) -> np.ndarray:
    """The median spatial profile of a frame (each column's median removed)."""
    data = np.where((frame.mask & MASK_FLAT) > 0, np.nan, frame.data)
    ncol = data.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN columns
        centred = data - np.nanmedian(data, axis=0)[None, :]
        # the columns with the most object signal
        strength = np.nan_to_num(np.nanmax(centred, axis=0))
    keep = strength >= np.percentile(strength, 50)
    if keep.sum() < max(10, ncol // 10):
        keep[:] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nan_to_num(np.nanmedian(centred[:, keep], axis=1))


def find_object(frame: Frame, guess: float | None = None, window: int = 30) -> tuple[float, float]:
    """Row of the brightest object on the slit (near ``guess``) and its FWHM [pixels]."""
    profile = spatial_profile(frame)
    rows = np.arange(len(profile))
    lit = (frame.mask & MASK_FLAT).mean(axis=1) < 0.5
    search = lit.copy()
    if guess is not None:
        search &= np.abs(rows - guess) <= window
    if not search.any():
        raise ExtractionError("no illuminated slit rows to search for the object")
    peak = int(rows[search][np.argmax(profile[search])])
    noise = 1.4826 * np.median(np.abs(profile[lit] - np.median(profile[lit])))
    if profile[peak] <= 5 * max(noise, 1e-9):
        raise ExtractionError(
            f"no object found on the slit (brightest row {peak} is {profile[peak]:.3g} e-, "
            f"noise {noise:.3g})"
        )
    half = profile[peak] / 2
    lo = peak
    while lo > 0 and profile[lo] > half:
        lo -= 1
    hi = peak
    while hi < len(profile) - 1 and profile[hi] > half:
        hi += 1
    fwhm = float(max(hi - lo, 2))
    # a Gaussian fit refines the centre and the width (kept only when it is sensible)
    sel = np.abs(rows - peak) <= max(2 * fwhm, 6)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p, _ = curve_fit(
                lambda x, a, m, s, b: a * np.exp(-0.5 * ((x - m) / s) ** 2) + b,
                rows[sel].astype(float),
                profile[sel],
                p0=[profile[peak], peak, fwhm / 2.3548, 0.0],
                maxfev=2000,
            )
        if abs(p[1] - peak) < fwhm and 0.5 < 2.3548 * abs(p[2]) < 3 * fwhm:
            return float(p[1]), float(2.3548 * abs(p[2]))
    except (RuntimeError, ValueError):
        pass
    return float(peak), fwhm


def trace_object(
    frame: Frame, guess: float | None = None, window: int = 30
) -> tuple[ArrayTrace, float]:
    """The object's trace (specreduce FitTrace, degree-2 polynomial) and its FWHM."""
    peak, fwhm = find_object(frame, guess, window)
    image = NDData(frame.data, unit=u.electron)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Gaussian fits of faint bins warn; the polynomial decides
        fitted = FitTrace(
            image,
            bins=TRACE_BINS,
            guess=peak,
            window=int(max(3 * fwhm, 8)),
            trace_model=models.Polynomial1D(degree=2),
            peak_method="gaussian",
        )
    trace = np.asarray(fitted.trace, dtype=float)
    if not np.all(np.isfinite(trace)) or np.any(np.abs(trace - peak) > 3 * max(fwhm, 5)):
        # a trace wandering off the object (faint bins): keep the object's row
        trace = np.full(frame.data.shape[1], peak)
    return ArrayTrace(image, trace), fwhm


def extract(
    frame: Frame,
    trace: ArrayTrace,
    fwhm: float,
    *,
    width: float | None = None,
    sky_offset: float | None = None,
    sky_width: float = 20.0,
    optimal: bool = False,
) -> Extraction:
    """Sky-subtracted spectrum along ``trace`` (see the module docstring)."""
    width = float(width or max(3.0 * fwhm, 5.0))
    sky_offset = float(sky_offset or width / 2 + 2 * fwhm + sky_width / 2)
    rows = frame.data.shape[0]
    centre = np.asarray(trace.trace, dtype=float)
    if np.min(centre) - sky_offset - sky_width / 2 < 0 or (
        np.max(centre) + sky_offset + sky_width / 2 > rows - 1
    ):
        raise ExtractionError(
            f"the sky windows ({sky_width:g} rows at {sky_offset:g} rows from the trace) fall off "
            f"the frame (rows 0-{rows - 1}); make them narrower or closer"
        )
    image = NDData(frame.data, uncertainty=VarianceUncertainty(frame.variance), unit=u.electron)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        sky = Background.two_sided(image, trace, sky_offset, width=sky_width, statistic="average")
        subtracted = sky.sub_image(image)
        sky_1d = np.asarray(sky.bkg_spectrum().flux.value) * width
    if optimal:
        sub_data = np.asarray(subtracted.flux.value)
        sub_var = np.asarray(subtracted.uncertainty.represent_as(VarianceUncertainty).array)
        flux, variance = horne(sub_data, sub_var, centre, fwhm, width)
    else:
        spectrum = BoxcarExtract(subtracted, trace, width=width, mask_treatment="ignore")()
        flux = np.asarray(spectrum.flux.value, dtype=float)
        variance = np.asarray(
            spectrum.uncertainty.represent_as(VarianceUncertainty).array, dtype=float
        )
    mask = aperture_mask(frame.mask, centre, width)
    return Extraction(
        trace=centre,
        fwhm=fwhm,
        width=width,
        sky_offset=sky_offset,
        sky_width=sky_width,
        flux=flux,
        variance=variance,
        sky=sky_1d,
        mask=mask,
        method="optimal" if optimal else "boxcar",
    )


def horne(
    data: np.ndarray, variance: np.ndarray, centre: np.ndarray, fwhm: float, width: float
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal extraction with a Gaussian profile (see the module docstring)."""
    rows = np.arange(data.shape[0], dtype=float)[:, None]
    sigma = fwhm / 2.3548
    inside = np.abs(rows - centre[None, :]) <= width / 2
    profile = np.where(inside, np.exp(-0.5 * ((rows - centre[None, :]) / sigma) ** 2), 0.0)
    profile /= profile.sum(axis=0, keepdims=True)
    good = inside & (variance > 0) & np.isfinite(data)
    inverse = np.where(good, 1.0 / np.where(good, variance, 1.0), 0.0)
    den = np.sum(profile**2 * inverse, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        flux = np.sum(profile * np.where(good, data, 0.0) * inverse, axis=0) / den
        var = 1.0 / den
    return np.nan_to_num(flux), np.where(np.isfinite(var), var, np.inf)


def aperture_mask(mask2d: np.ndarray, centre: np.ndarray, width: float) -> np.ndarray:
    rows = np.arange(mask2d.shape[0])[:, None]
    inside = np.abs(rows - centre[None, :]) <= width / 2
    return np.bitwise_or.reduce(np.where(inside, mask2d, 0).astype(np.uint8), axis=0)


def arc_spectrum(frame: Frame, centre: np.ndarray, width: float) -> np.ndarray:
    """The arc along the object's trace (boxcar, no sky: the arc has none)."""
    image = NDData(frame.data, unit=u.electron)
    trace = ArrayTrace(image, np.asarray(centre, dtype=float))
    spectrum = BoxcarExtract(image, trace, width=max(width, 3.0), mask_treatment="ignore")()
    return np.asarray(spectrum.flux.value, dtype=float)
