"""Flux calibration from a spectrophotometric standard, its table and the site's extinction curve.

Every file is named explicitly (the standard's table, the extinction curve); nothing is
downloaded.

- **Standard table** (:func:`read_standard`): a CALSPEC-style FITS table (``WAVELENGTH`` [A],
  ``FLUX`` [erg/s/cm2/A], optional ``FWHM`` [A], the table's resolution) or a text table of
  wavelength [A] and flux [erg/s/cm2/A]. CALSPEC wavelengths are vacuum; a text table says
  ``# air`` in a comment line if its wavelengths are in air.
- **Extinction curve** (:func:`read_extinction`): text, wavelength [A] and extinction
  [mag/airmass]; interpolated linearly, held at its end values beyond its range.
- **Sensitivity** (:func:`sensitivity`): the standard's extracted spectrum in electrons per
  second per Angstrom is corrected to airmass 0 (``x 10^(0.4 k(λ) X)``), smoothed to the table's
  resolution (a Gaussian of the table's median FWHM), and divided into the table's flux. The
  logarithm of that ratio is fitted by a Chebyshev polynomial (degree ``degree``) with
  iterative 3-sigma clipping, leaving out the cores of the hydrogen and helium lines of hot
  standards (``STELLAR_LINES``, +-``LINE_MASK`` A) and the telluric A and B bands. The fit holds
  over the wavelengths both cover; outside them a spectrum is not flux calibrated (MASK bit
  ``MASK_NO_FLUX`` and a NaN flux).
- **Calibration** (:func:`apply`): ``F(λ) = C(λ) 10^(0.4 k(λ) X) S(λ)`` for a spectrum ``C`` in
  electrons/s/A at airmass ``X``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.modeling import fitting, models
from astropy.stats import sigma_clip
from scipy.ndimage import gaussian_filter1d

#: Vacuum wavelengths [A] of the H and He lines of hot standards, masked in the sensitivity fit.
STELLAR_LINES = (
    3771.7, 3798.98, 3836.47, 3890.16, 3971.20, 4027.33, 4102.89, 4341.69, 4472.73,
    4542.86, 4687.02, 4714.46, 4862.68, 4923.31, 5017.08, 5412.99, 5877.25, 6564.61,
    6680.0,
)  # fmt: skip
#: Half-width [A] of the masks around ``STELLAR_LINES``.
LINE_MASK = 25.0
#: Telluric bands (vacuum, A) masked in the sensitivity fit: O2 B and A bands.
TELLURIC = ((6868.0, 6932.0), (7595.0, 7705.0))
MASK_NO_FLUX = 16

FLAM = "erg / (s cm2 Angstrom)"


class FluxError(ValueError):
    """A standard table or extinction curve is unusable, or the standard gives no sensitivity."""


@dataclass
class StandardTable:
    wave: np.ndarray  #: [A]
    flux: np.ndarray  #: [erg/s/cm2/A]
    fwhm: float  #: resolution of the table [A] (0: unknown)
    medium: str
    path: str


@dataclass
class Extinction:
    wave: np.ndarray
    mag: np.ndarray  #: [mag/airmass]
    path: str

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        return np.interp(wave, self.wave, self.mag)


@dataclass
class Sensitivity:
    model: models.Chebyshev1D  #: log10 of (erg/cm2/A per electron)
    low: float
    high: float
    used: int
    rms: float  #: RMS of the fit's residuals (fraction)
    standard: str

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        wave = np.asarray(wave, dtype=float)
        out = 10 ** self.model(wave)
        return np.where((wave >= self.low) & (wave <= self.high), out, np.nan)


def vacuum_to_air(wave: np.ndarray) -> np.ndarray:
    """Air wavelengths [A] of vacuum ones (Morton 2000, IAU standard; above 2000 A)."""
    from specutils.utils.wcs_utils import vac_to_air

    return np.asarray(vac_to_air(np.asarray(wave, dtype=float) * u.AA, method="Morton2000").value)


def air_to_vacuum(wave: np.ndarray) -> np.ndarray:
    from specutils.utils.wcs_utils import air_to_vac

    return np.asarray(
        air_to_vac(
            np.asarray(wave, dtype=float) * u.AA, method="Morton2000", scheme="iteration"
        ).value
    )


def read_standard(path: Path) -> StandardTable:
    path = Path(path)
    try:
        if path.name.lower().endswith((".fits", ".fits.gz", ".fit")):
            with fits.open(path) as hdul:
                for hdu in hdul[1:]:
                    names = {n.upper(): n for n in getattr(hdu, "columns", fits.ColDefs([])).names}
                    if "WAVELENGTH" in names and "FLUX" in names:
                        wave = np.asarray(hdu.data[names["WAVELENGTH"]], dtype=float)
                        flux = np.asarray(hdu.data[names["FLUX"]], dtype=float)
                        fwhm = float(np.median(hdu.data[names["FWHM"]])) if "FWHM" in names else 0.0
                        break
                else:
                    raise FluxError(f"{path.name} has no WAVELENGTH/FLUX table")
            medium = "vacuum"
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
            medium = "air" if re.search(r"^#.*\bair\b", text, re.M | re.I) else "vacuum"
            rows = np.loadtxt(path, comments="#", usecols=(0, 1), ndmin=2)
            wave, flux, fwhm = rows[:, 0], rows[:, 1], 0.0
    except (OSError, ValueError) as exc:
        if isinstance(exc, FluxError):
            raise
        raise FluxError(f"cannot read the standard's table {path}: {exc}") from None
    good = np.isfinite(wave) & np.isfinite(flux) & (flux > 0)
    order = np.argsort(wave[good])
    return StandardTable(wave[good][order], flux[good][order], fwhm, medium, str(path))


def read_extinction(path: Path) -> Extinction:
    path = Path(path)
    try:
        rows = np.loadtxt(path, comments=("#", "|"), usecols=(0, 1), ndmin=2)
    except (OSError, ValueError) as exc:
        raise FluxError(f"cannot read the extinction curve {path}: {exc}") from None
    order = np.argsort(rows[:, 0])
    if len(order) < 2:
        raise FluxError(f"the extinction curve {path.name} has fewer than 2 points")
    return Extinction(rows[order, 0], rows[order, 1], str(path))


def counts_per_angstrom(
    wave: np.ndarray, electrons: np.ndarray, exptime: float
) -> tuple[np.ndarray, np.ndarray]:
    """Electrons per second per Angstrom, and the dispersion [A/pixel] used."""
    dispersion = np.gradient(wave)
    return electrons / exptime / dispersion, dispersion


def sensitivity(
    wave: np.ndarray,
    rate: np.ndarray,
    airmass: float,
    table: StandardTable,
    extinction: Extinction,
    medium: str,
    degree: int = 7,
    good: np.ndarray | None = None,
) -> Sensitivity:
    """Sensitivity from a standard's spectrum (``rate`` in e-/s/A at ``wave`` in ``medium``)."""
    table_wave = table.wave
    if table.medium != medium:
        table_wave = vacuum_to_air(table.wave) if medium == "air" else air_to_vacuum(table.wave)
    corrected = rate * 10 ** (0.4 * extinction(wave) * airmass)
    step = float(np.median(np.abs(np.diff(wave))))
    if table.fwhm > 0 and step > 0:
        corrected = gaussian_filter1d(corrected, table.fwhm / 2.3548 / step, mode="nearest")
    low = max(float(wave.min()), float(table_wave.min()))
    high = min(float(wave.max()), float(table_wave.max()))
    keep = (wave >= low) & (wave <= high) & (corrected > 0) & np.isfinite(corrected)
    if good is not None:
        keep &= good
    lines = np.array(STELLAR_LINES)
    if medium == "air":
        lines = vacuum_to_air(lines)
    for line in lines:
        keep &= np.abs(wave - line) > LINE_MASK
    for a, b in TELLURIC:
        keep &= ~((wave >= a) & (wave <= b))
    if keep.sum() < 3 * (degree + 1):
        raise FluxError(
            f"the standard's spectrum and its table overlap on too few clean pixels "
            f"({int(keep.sum())}) for a sensitivity function"
        )
    ratio = np.log10(np.interp(wave[keep], table_wave, table.flux) / corrected[keep])
    init = models.Chebyshev1D(degree=degree, domain=(low, high))
    fitter = fitting.FittingWithOutlierRemoval(
        fitting.LinearLSQFitter(), sigma_clip, niter=5, sigma=3.0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, mask = fitter(init, wave[keep], ratio)
    used = ~np.asarray(mask, dtype=bool)
    resid = 10 ** (ratio[used] - model(wave[keep][used])) - 1
    return Sensitivity(
        model=model,
        low=low,
        high=high,
        used=int(used.sum()),
        rms=float(np.sqrt(np.mean(resid**2))),
        standard=Path(table.path).name,
    )


def apply(
    wave: np.ndarray,
    rate: np.ndarray,
    rate_error: np.ndarray,
    airmass: float,
    sens: Sensitivity,
    extinction: Extinction,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux [erg/s/cm2/A], its error, and the MASK bits (``MASK_NO_FLUX`` where no sensitivity)."""
    factor = 10 ** (0.4 * extinction(wave) * airmass) * sens(wave)
    missing = ~np.isfinite(factor)
    flux = np.where(missing, np.nan, rate * factor)
    error = np.where(missing, np.nan, rate_error * factor)
    return flux, error, np.where(missing, MASK_NO_FLUX, 0).astype(np.uint8)


def find_tables(folder: Path, object_name: str) -> list[Path]:
    """Files of ``folder`` named after the star (``Feige 66`` -> ``feige66*``), by name."""
    key = re.sub(r"[^a-z0-9]", "", object_name.lower())
    if not key or not Path(folder).is_dir():
        return []
    aliases = {key, key.replace("hiltner", "hilt"), key.replace("hilt", "hiltner")}
    found = []
    for path in sorted(Path(folder).iterdir()):
        stem = re.sub(r"[^a-z0-9]", "", path.name.lower().split(".")[0])
        if path.is_file() and any(stem.startswith(alias) for alias in aliases):
            found.append(path)
    return found
