"""Products of a long-slit reduction: the 1-D table, the linearised 1-D image, QA plots.

- ``<stem>_spec1d.fits``: primary header with the provenance (below), then the ``SPEC1D``
  binary table: ``WAVE`` [Angstrom] (the wavelength of each detector pixel, from the arc's
  solution), ``FLUX`` [erg/s/cm2/Angstrom when flux calibrated, else electron/s/Angstrom],
  ``ERR`` (1-sigma, same unit), ``MASK`` (0: good; bits: 1 saturated, 2 cosmic ray cleaned,
  4 flat not trusted, 16 outside the sensitivity function); then ``ARCLINES`` (the arc lines
  identified: ``PIXEL``, ``WAVE``, ``FIT``, ``RESID`` [Angstrom], ``USED``, ``ION``).
- ``<stem>_linear.fits``: the same spectrum resampled (flux-conserving, specutils) on a linear
  wavelength grid, as a 1-D primary image with ``CTYPE1='WAVE'``, ``CUNIT1='Angstrom'``,
  ``CRVAL1``/``CDELT1``/``CRPIX1`` and ``BUNIT``, and its ``VAR`` (variance) and ``MASK``
  images (specutils reads it with ``Spectrum.read(path, format="wcs1d-fits")``).
- Headers of both: ``AIRORVAC`` (``vac`` or ``air``), ``WAVE_RMS`` [Angstrom] and ``WAVERMSP``
  [pixels] of the arc fit, ``NLINES``, ``ARCTEMPL`` (the template or reference lamp),
  ``ARCLAG``, ``WAVEDEG``, ``EXTRACT`` (boxcar/optimal), ``APWIDTH``, ``TRACEROW``; one
  ``INFILEnn``/``INROLEnn``/``INDATEnn`` triple per input frame (file, role, DATE-OBS) and
  per reference file (role ``template``, ``linelist``, ``extinction``, ``standard table``...);
  ``V_*`` keywords with the versions of the packages used; ``FLUXCAL`` and, when flux
  calibrated, ``SENSSTD`` (the standard's frame), ``SENSRMS``.
- QA plots (PNG): the trace, aperture and sky windows on the frame; the arc with its identified
  lines and the fit's residuals; the spectrum.
"""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import StdDevUncertainty

from longslit.fluxcal import MASK_NO_FLUX

PACKAGES = {
    "V_NUMPY": "numpy",
    "V_SCIPY": "scipy",
    "V_ASTROP": "astropy",
    "V_CCDPRO": "ccdproc",
    "V_SPECRE": "specreduce",
    "V_SPECUT": "specutils",
    "V_ASCRAP": "astroscrappy",
    "V_MPL": "matplotlib",
}


def package_versions() -> dict[str, str]:
    out = {}
    for key, name in PACKAGES.items():
        try:
            out[key] = version(name)
        except PackageNotFoundError:
            out[key] = "not installed"
    return out


def header_cards(cards: list[tuple[str, Any, str]]) -> fits.Header:
    header = fits.Header()
    for key, value, comment in cards:
        if key == "HISTORY":
            header.add_history(str(value))
        elif key == "COMMENT":
            header.add_comment(str(value))
        else:
            bare = len(fits.Card(key, value).image.rstrip())
            room = 80 - max(bare, 30) - 3
            header[key] = (value, comment[: max(room, 0)] if bare <= 80 else "")
    return header


def write_spec1d(
    path: Path,
    wave: np.ndarray,
    flux: np.ndarray,
    error: np.ndarray,
    mask: np.ndarray,
    flux_unit: str,
    header: fits.Header,
    lines: Any | None = None,
) -> Path:
    cols = [
        fits.Column("WAVE", "D", unit="Angstrom", array=wave),
        fits.Column("FLUX", "E", unit=flux_unit, array=flux.astype(np.float32)),
        fits.Column("ERR", "E", unit=flux_unit, array=error.astype(np.float32)),
        fits.Column("MASK", "B", array=mask.astype(np.uint8)),
    ]
    table = fits.BinTableHDU.from_columns(cols, name="SPEC1D")
    for key in ("AIRORVAC", "WAVE_RMS", "NLINES", "BUNIT"):
        if key in header:
            table.header[key] = (header[key], header.comments[key])
    hdus = [fits.PrimaryHDU(header=header), table]
    if lines is not None and len(lines):
        arc = fits.BinTableHDU.from_columns(
            [
                fits.Column("PIXEL", "D", array=np.asarray(lines["PIXEL"])),
                fits.Column("WAVE", "D", unit="Angstrom", array=np.asarray(lines["WAVE"])),
                fits.Column("FIT", "D", unit="Angstrom", array=np.asarray(lines["FIT"])),
                fits.Column("RESID", "D", unit="Angstrom", array=np.asarray(lines["RESID"])),
                fits.Column("USED", "L", array=np.asarray(lines["USED"], dtype=bool)),
                fits.Column("ION", "8A", array=np.asarray(lines["ION"], dtype="U8")),
            ],
            name="ARCLINES",
        )
        hdus.append(arc)
    fits.HDUList(hdus).writeto(path, overwrite=True, checksum=False)
    return path


def linear_grid(wave: np.ndarray, step: float | None = None) -> np.ndarray:
    """A linear wavelength grid inside ``wave`` (step: the median dispersion when None)."""
    step = float(step or np.median(np.diff(wave)))
    start = float(np.ceil(wave[0] / step) * step)
    n = int(np.floor((wave[-1] - start) / step)) + 1
    return start + step * np.arange(n)


def resample(
    wave: np.ndarray, flux: np.ndarray, error: np.ndarray, mask: np.ndarray, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux-conserving resampling (specutils) of a flux density, its error and mask bits."""
    from specutils import Spectrum
    from specutils.manipulation import FluxConservingResampler

    good = np.isfinite(flux) & np.isfinite(error)
    spectrum = Spectrum(
        flux=np.where(good, flux, 0.0) * u.one,
        spectral_axis=wave * u.AA,
        uncertainty=StdDevUncertainty(np.where(good, error, 0.0)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = FluxConservingResampler(extrapolation_treatment="nan_fill")(spectrum, grid * u.AA)
    new_flux = np.asarray(out.flux.value, dtype=float)
    new_err = np.asarray(out.uncertainty.represent_as(StdDevUncertainty).array, dtype=float)
    # a grid pixel carries the bits of the detector pixels it overlaps (the ones whose centres
    # fall inside it and their neighbours), and no flux where one of them has none
    step = grid[1] - grid[0]
    n = len(wave)
    lo = np.clip(np.searchsorted(wave, grid - step / 2) - 1, 0, n - 1)
    hi = np.clip(np.searchsorted(wave, grid + step / 2) + 1, 1, n)
    bits = np.zeros(len(grid), dtype=np.uint8)
    for k in range(len(grid)):
        bits[k] = np.bitwise_or.reduce(mask[lo[k] : hi[k]])
        if not good[lo[k] : hi[k]].all():
            bits[k] |= MASK_NO_FLUX
    missing = (bits & MASK_NO_FLUX) > 0
    new_flux[missing] = np.nan
    new_err[missing] = np.nan
    return new_flux, new_err, bits


def write_linear(
    path: Path,
    grid: np.ndarray,
    flux: np.ndarray,
    error: np.ndarray,
    mask: np.ndarray,
    flux_unit: str,
    header: fits.Header,
) -> Path:
    step = float(grid[1] - grid[0])
    head = header.copy()
    head["CTYPE1"] = ("WAVE", "wavelength axis (linear)")
    head["CUNIT1"] = ("Angstrom", "")
    head["CRPIX1"] = (1.0, "reference pixel")
    head["CRVAL1"] = (float(grid[0]), "wavelength at the reference pixel [Angstrom]")
    head["CDELT1"] = (step, "wavelength step [Angstrom/pixel]")
    head["BUNIT"] = (flux_unit, "flux unit")
    primary = fits.PrimaryHDU(flux.astype(np.float32), header=head)
    axis = fits.Header()
    for key in ("CTYPE1", "CUNIT1", "CRPIX1", "CRVAL1", "CDELT1"):
        axis[key] = head[key]
    # the variance (specutils' wcs1d-fits reader knows VAR, not ERR, as an uncertainty HDU)
    err = fits.ImageHDU(
        (error.astype(np.float64) ** 2).astype(np.float32), header=axis.copy(), name="VAR"
    )
    err.header["BUNIT"] = f"({flux_unit})2"
    bits = fits.ImageHDU(mask.astype(np.uint8), header=axis.copy(), name="MASK")
    fits.HDUList([primary, err, bits]).writeto(path, overwrite=True)
    return path


# --- QA plots -------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_trace(path: Path, data: np.ndarray, extraction: Any, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    finite = data[np.isfinite(data)]
    lo, hi = np.percentile(finite, [5, 99]) if finite.size else (0, 1)
    ax.imshow(data, origin="lower", aspect="auto", cmap="gray", vmin=lo, vmax=hi)
    x = np.arange(data.shape[1])
    t = extraction.trace
    ax.plot(x, t, color="#e6550d", lw=1, label="trace")
    for sign in (-1, 1):
        ax.plot(x, t + sign * extraction.width / 2, color="#fdae6b", lw=0.8, ls="--")
        for edge in (-1, 1):
            ax.plot(
                x,
                t + sign * extraction.sky_offset + edge * extraction.sky_width / 2,
                color="#31a354",
                lw=0.6,
                ls=":",
            )
    ax.set_xlabel("column (dispersion)")
    ax.set_ylabel("row (along the slit)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_arc(path: Path, arc: np.ndarray, solution: Any, title: str) -> Path:
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), dpi=100, sharex=True)
    wave = solution.wavelengths()
    top.plot(wave, arc, color="#333333", lw=0.7)
    for w, used in zip(solution.wave, solution.used, strict=True):
        top.axvline(w, color="#3182bd" if used else "#de2d26", lw=0.6, alpha=0.7)
    top.set_ylabel("arc [e-]")
    top.set_title(title, fontsize=9)
    bottom.axhline(0, color="#999999", lw=0.8)
    bottom.plot(solution.wave[solution.used], solution.residuals[solution.used], "o", ms=4,
                color="#3182bd", label="used")  # fmt: skip
    rejected = ~solution.used
    if rejected.any():
        bottom.plot(solution.wave[rejected], solution.residuals[rejected], "x", ms=5,
                    color="#de2d26", label="clipped")  # fmt: skip
    bottom.set_ylabel("residual [Å]")
    bottom.set_xlabel(f"wavelength [Å, {solution.medium}]")
    bottom.set_title(
        f"Chebyshev degree {solution.degree}: {solution.nlines} lines, RMS "
        f"{solution.rms_angstrom:.3f} Å = {solution.rms_pixels:.3f} pixel",
        fontsize=9,
    )
    bottom.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_spectrum(
    path: Path, wave: np.ndarray, flux: np.ndarray, error: np.ndarray, unit: str, title: str
) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.8), dpi=100)
    ax.plot(wave, flux, color="#1f77b4", lw=0.7, label="flux")
    ax.fill_between(wave, flux - error, flux + error, color="#1f77b4", alpha=0.25, lw=0)
    finite = flux[np.isfinite(flux)]
    if finite.size:
        lo, hi = np.percentile(finite, [1, 99.5])
        pad = 0.1 * (hi - lo or abs(hi) or 1)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("wavelength [Å]")
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
