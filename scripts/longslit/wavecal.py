"""Wavelength calibration of an arc spectrum against a reference: template, line list, Chebyshev.

A :class:`Reference` is an arc spectrum whose wavelengths are known pixel by pixel (a template
table ``wave``/``flux``, or a reference lamp of a library such as Goodman's, whose solution is
in its header) and a line list (vacuum or air wavelengths, as the reference says). Every file is
passed explicitly: nothing is downloaded.

:func:`calibrate` (the steps Goodman's and PypeIt's "reidentify" pipelines take):

1. **Cross-correlation**: the arc and the template, each with its continuum removed (running
   median) and compressed (square root of the positive part, so a few bright lines do not
   decide alone), are correlated at integer lags within ``max_shift`` pixels of the initial
   guess (``shift``; None: every lag with at least half the arc overlapping); the peak is
   refined by a parabola. Arc pixel ``x`` is then template pixel ``x + lag``, and the
   template's wavelengths give a first solution. The template must share the arc's setup
   (same dispersion per pixel, same direction).
2. **Local re-identification**: each line of the line list inside the arc's range is looked for
   within a few line widths of where the current solution puts it; the local maximum is
   accepted when it stands ``min_snr`` times above the arc's noise and its Gaussian centroid
   stays inside the window. Lines whose windows hold the same peak (blends) are dropped.
3. **Chebyshev fit** of wavelength against pixel (degree ``degree``, domain the arc's pixels)
   with iterative sigma clipping (``sigma``); steps 2-3 are repeated with the fitted solution
   until the identified set no longer changes (at most ``iterations`` times).

The result (:class:`Solution`) gives the wavelength of every pixel, the lines used and
rejected, and the RMS of the residuals in Angstrom and in pixels (residual over the local
dispersion).

Reference lamp libraries (:func:`library_reference`): a folder of 1-D FITS lamp spectra with
their mode and lamps in the header (Goodman: ``WAVMODE``, ``LAMP_HGA``/``LAMP_NE``/``LAMP_AR``/
``LAMP_FE``/``LAMP_CU``), their solution as ``GSP_FUNC``/``GSP_ORDR``/``GSP_Cnnn`` (a Chebyshev
of the 0-based pixel index) and their identified lines as ``GSP_Pnnn``/``GSP_Annn`` pairs (an
``Annn`` of 0 marks a line left unidentified). An unknown mode or lamp mix raises
:class:`ReferenceError` "no reference lamp for <mode>/<lamps>".
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.modeling import fitting, models
from astropy.stats import sigma_clip
from astropy.table import Table
from scipy.ndimage import median_filter
from scipy.optimize import curve_fit

#: Goodman lamp keywords and the names they have in lamp mixes (``HgArNe``, ``CuHeAr``).
GOODMAN_LAMPS = {
    "LAMP_HGA": "HgAr",
    "LAMP_NE": "Ne",
    "LAMP_AR": "Ar",
    "LAMP_FE": "FeHeAr",
    "LAMP_CU": "CuHeAr",
}


class ReferenceError(ValueError):
    """A reference file is missing or unusable, or the library has no lamp for a mode."""


class CalibrationError(ValueError):
    """The arc could not be calibrated against the reference (too few lines, no match...)."""


@dataclass
class Reference:
    """An arc template with known wavelengths and the line list to identify."""

    name: str
    wave: np.ndarray  #: wavelength of each template pixel [A]
    flux: np.ndarray
    lines: np.ndarray  #: line-list wavelengths [A], sorted
    ions: list[str]  #: the ion of each line (or "")
    medium: str  #: "vacuum" or "air"
    files: list[str] = field(default_factory=list)
    #: True when the reference's own solution is exact at its lines (a library lamp whose lines
    #: were identified and fitted): arc lines are then placed relative to it (see ``identify``);
    #: False for a template, whose wavelengths only give the first guess
    relative: bool = False


@dataclass
class Solution:
    """A fitted wavelength solution of an arc (see the module docstring)."""

    model: models.Chebyshev1D
    npix: int
    shift: float  #: cross-correlation lag: arc pixel x is template pixel x + shift
    x: np.ndarray  #: centroids of the identified lines [pixel, 0-based]
    wave: np.ndarray  #: their line-list wavelengths [A]
    ions: list[str]
    used: np.ndarray  #: lines kept by the sigma clipping
    residuals: np.ndarray  #: line-list minus fitted wavelength [A]
    degree: int
    reference: str
    medium: str

    def __call__(self, x) -> np.ndarray:
        return self.model(np.asarray(x, dtype=float))

    @property
    def nlines(self) -> int:
        return int(np.count_nonzero(self.used))

    @property
    def dispersion(self) -> np.ndarray:
        """dλ/dx [A/pixel] at the identified lines."""
        return _deriv(self)

    @property
    def rms_angstrom(self) -> float:
        r = self.residuals[self.used]
        return float(np.sqrt(np.mean(r**2))) if len(r) else float("nan")

    @property
    def rms_pixels(self) -> float:
        r = self.residuals[self.used] / np.abs(_deriv(self)[self.used])
        return float(np.sqrt(np.mean(r**2))) if len(r) else float("nan")

    def wavelengths(self) -> np.ndarray:
        return self(np.arange(self.npix))


def _deriv(solution: Solution) -> np.ndarray:
    h = 0.5
    return (solution(solution.x + h) - solution(solution.x - h)) / (2 * h)


# --- references ------------------------------------------------------------------------------


def read_line_list(path: Path) -> tuple[np.ndarray, list[str]]:
    """Wavelengths [A] and ions of a line list.

    Accepts PypeIt's pipe tables (``| ion | wave | NIST | Instr | amplitude | Source |``, comment
    lines with ``#``) and plain text (first numeric column the wavelength, an optional second
    text column the ion; ``#`` comments).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ReferenceError(f"cannot read the line list {path}: {exc.strerror or exc}") from None
    waves: list[float] = []
    ions: list[str] = []
    header: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None and any(c.lower() == "wave" for c in cells):
                header = [c.lower() for c in cells]
                continue
            if header is None:
                continue
            row = dict(zip(header, cells, strict=False))
            try:
                waves.append(float(row["wave"]))
            except (KeyError, ValueError):
                continue
            ions.append(row.get("ion", ""))
            continue
        parts = line.replace(",", " ").split()
        numbers = []
        for part in parts:
            try:
                numbers.append(float(part))
            except ValueError:
                continue
        if not numbers:
            continue
        waves.append(numbers[0])
        names = [p for p in parts if re.fullmatch(r"[A-Z][a-z]?[IVX]*", p)]
        ions.append(names[0] if names else "")
    if not waves:
        raise ReferenceError(f"the line list {path.name} holds no wavelengths")
    order = np.argsort(waves, kind="stable")
    return np.asarray(waves, dtype=float)[order], [ions[i] for i in order]


def read_template(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(wave, flux)`` of an arc template: a FITS table with wave/flux columns (any case), or a
    1-D image with a linear WCS (CRVAL1/CDELT1/CRPIX1) or a GSP Chebyshev solution."""
    path = Path(path)
    try:
        with fits.open(path) as hdul:
            for hdu in hdul:
                if isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
                    names = {n.lower(): n for n in hdu.columns.names}
                    if "wave" in names and "flux" in names:
                        wave = np.asarray(hdu.data[names["wave"]], dtype=float)
                        flux = np.asarray(hdu.data[names["flux"]], dtype=float)
                        return wave, flux
            primary = hdul[0]
            if primary.data is not None and primary.data.ndim == 1:
                flux = np.asarray(primary.data, dtype=float)
                return header_wavelengths(primary.header, len(flux)), flux
    except OSError as exc:
        raise ReferenceError(f"cannot read the arc template {path}: {exc}") from None
    raise ReferenceError(
        f"the arc template {path.name} has neither a wave/flux table nor a 1-D spectrum"
    )


def header_wavelengths(header: fits.Header, npix: int) -> np.ndarray:
    """Wavelength of each pixel of a 1-D spectrum from its header (GSP Chebyshev or linear)."""
    pixels = np.arange(npix, dtype=float)
    if str(header.get("GSP_FUNC", "")).strip() == "Chebyshev1D":
        order = int(header["GSP_ORDR"])
        coeffs = [float(header[f"GSP_C{i:03d}"]) for i in range(order + 1)]
        return models.Chebyshev1D(degree=order, **{f"c{i}": c for i, c in enumerate(coeffs)})(
            pixels
        )
    if "CRVAL1" in header and ("CDELT1" in header or "CD1_1" in header):
        step = float(header.get("CDELT1", header.get("CD1_1")))
        return float(header["CRVAL1"]) + (pixels + 1 - float(header.get("CRPIX1", 1))) * step
    raise ReferenceError("the spectrum has no wavelength solution in its header")


def template_reference(
    template: Path, line_lists: list[Path], medium: str, margin: float = 0.0
) -> Reference:
    """A reference from a template file and line lists (every file named explicitly)."""
    wave, flux = read_template(template)
    good = np.isfinite(wave) & np.isfinite(flux)
    wave, flux = wave[good], flux[good]
    if len(wave) < 50 or not np.all(np.diff(wave) > 0):
        raise ReferenceError(f"the arc template {Path(template).name} is not a usable spectrum")
    all_waves, all_ions = [], []
    for path in line_lists:
        w, i = read_line_list(path)
        all_waves.extend(w)
        all_ions.extend(i)
    lines, ions = _in_range(np.asarray(all_waves), all_ions, wave[0] + margin, wave[-1] - margin)
    return Reference(
        name=Path(template).name,
        wave=wave,
        flux=flux,
        lines=lines,
        ions=ions,
        medium=medium,
        files=[str(template), *[str(p) for p in line_lists]],
    )


def _in_range(waves, ions, low, high):
    order = np.argsort(waves, kind="stable")
    waves = np.asarray(waves, dtype=float)[order]
    ions = [ions[i] for i in order]
    keep = (waves >= low) & (waves <= high)
    waves, ions = waves[keep], [ion for ion, k in zip(ions, keep, strict=True) if k]
    # the same line in two lists: once
    unique = np.concatenate([[True], np.diff(waves) > 0.01]) if len(waves) else np.array([], bool)
    return waves[unique], [ion for ion, k in zip(ions, unique, strict=True) if k]


def lamp_mix(header: fits.Header) -> str:
    """The lamp mix of a Goodman lamp header (``HgArNe``), from its lamp keywords."""
    on = [
        name
        for key, name in GOODMAN_LAMPS.items()
        if str(header.get(key, "")).strip().upper() in ("TRUE", "T", "ON", "1")
    ]
    return "".join(on)


def library_reference(library: Path, mode: str, lamps: str) -> Reference:
    """The reference lamp of ``mode`` (``400_M2``) and lamp mix (``HgArNe``) in a library.

    Raises :class:`ReferenceError` ``no reference lamp for <mode>/<lamps>`` (naming what the
    library holds for that mode) when there is none.
    """
    library = Path(library)
    if not library.is_dir():
        raise ReferenceError(f"the reference lamp library {library} is not a folder")
    found: list[tuple[str, str]] = []
    chosen = None
    for path in sorted(library.iterdir()):
        if not path.name.lower().endswith((".fits", ".fits.gz", ".fit")):
            continue
        try:
            header = fits.getheader(path)
        except OSError:
            continue
        file_mode = str(header.get("WAVMODE", "")).strip()
        mix = lamp_mix(header)
        found.append((file_mode, mix))
        if file_mode.upper() == mode.strip().upper() and mix.upper() == lamps.strip().upper():
            chosen = path
            break
    if chosen is None:
        same_mode = sorted({mix for m, mix in found if m.upper() == mode.strip().upper()})
        known = f"lamps for {mode}: {', '.join(same_mode)}" if same_mode else "no lamp of that mode"
        raise ReferenceError(f"no reference lamp for {mode}/{lamps} in {library.name} ({known})")
    with fits.open(chosen) as hdul:
        header = hdul[0].header
        flux = np.asarray(hdul[0].data, dtype=float)
    wave = header_wavelengths(header, len(flux))
    lines = []
    for key in header:
        found_key = re.fullmatch(r"GSP_A(\d{3})", key)
        if found_key and float(header[key]) > 0:
            lines.append(float(header[key]))
    lines_arr, ions = _in_range(np.asarray(lines), [""] * len(lines), wave.min(), wave.max())
    medium = "vacuum" if "VAC" in str(header.get("AIRORVAC", "air")).upper() else "air"
    return Reference(
        name=chosen.name,
        wave=wave,
        flux=flux,
        lines=lines_arr,
        ions=ions,
        medium=medium,
        files=[str(chosen)],
        relative=True,
    )


# --- the calibration ----------------------------------------------------------------------------


def _continuum_free(flux: np.ndarray, width: int = 51) -> np.ndarray:
    flux = np.nan_to_num(np.asarray(flux, dtype=float))
    return flux - median_filter(flux, size=width, mode="nearest")


def _noise(signal: np.ndarray) -> float:
    mad = np.median(np.abs(signal - np.median(signal)))
    return float(1.4826 * mad) or float(np.std(signal)) or 1.0


def _compressed(flux: np.ndarray) -> np.ndarray:
    c = _continuum_free(flux)
    c = np.sqrt(np.clip(c / _noise(c), 0, None))
    return c - c.mean()


def cross_correlate(
    arc: np.ndarray, template: np.ndarray, shift: float | None, max_shift: float
) -> float:
    """The lag (arc pixel x = template pixel x + lag) maximising the normalised correlation."""
    a, t = _compressed(arc), _compressed(template)
    n, m = len(a), len(t)
    if shift is None:
        lags = np.arange(-n // 2, m - n // 2 + 1)
    else:
        lags = np.arange(int(np.floor(shift - max_shift)), int(np.ceil(shift + max_shift)) + 1)
    scores = np.full(len(lags), -np.inf)
    x = np.arange(n)
    for k, lag in enumerate(lags):
        j = x + lag
        ok = (j >= 0) & (j < m)
        if ok.sum() < n // 4:
            continue
        aa, tt = a[ok], t[j[ok]]
        den = np.sqrt(np.dot(aa, aa) * np.dot(tt, tt))
        if den > 0:
            scores[k] = np.dot(aa, tt) / den
    if not np.isfinite(scores).any():
        raise CalibrationError("the arc and the template do not overlap at any tried shift")
    best = int(np.argmax(scores))
    lag = float(lags[best])
    if 0 < best < len(lags) - 1 and np.all(np.isfinite(scores[best - 1 : best + 2])):
        y0, y1, y2 = scores[best - 1 : best + 2]
        den = y0 - 2 * y1 + y2
        if den < 0:
            lag += 0.5 * (y0 - y2) / den
    return lag


def _gauss(x, amp, mu, sigma, base):
    return amp * np.exp(-0.5 * ((x - mu) / sigma) ** 2) + base


def centroid(flux: np.ndarray, guess: float, half: int) -> tuple[float, float, float] | None:
    """Gaussian centroid, sigma and amplitude of the peak nearest ``guess`` (or None)."""
    i0 = int(round(guess))
    lo, hi = max(0, i0 - half), min(len(flux), i0 + half + 1)
    if hi - lo < 5:
        return None
    x = np.arange(lo, hi, dtype=float)
    y = flux[lo:hi]
    amp0 = float(y.max() - np.median(y))
    p0 = [amp0, float(x[np.argmax(y)]), max(half / 3.0, 0.8), float(np.median(y))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p, _ = curve_fit(_gauss, x, y, p0=p0, maxfev=2000)
    except (RuntimeError, ValueError):
        return None
    amp, mu, sigma, _ = p
    if not (np.isfinite(mu) and lo <= mu <= hi - 1 and 0.3 < abs(sigma) < half and amp > 0):
        return None
    return float(mu), float(abs(sigma)), float(amp)


def line_fwhm(arc: np.ndarray, n_peaks: int = 15) -> float:
    """Median FWHM [pixel] of the strongest isolated peaks of an arc."""
    c = _continuum_free(arc)
    noise = _noise(c)
    order = np.argsort(c)[::-1]
    taken: list[int] = []
    widths = []
    for i in order:
        if c[i] < 10 * noise or len(widths) >= n_peaks:
            break
        if any(abs(i - j) < 10 for j in taken):
            continue
        taken.append(int(i))
        found = centroid(c, i, 6)
        if found:
            widths.append(2.3548 * found[1])
    return float(np.median(widths)) if widths else 3.0


def identify(
    arc: np.ndarray,
    reference: Reference,
    pixel_of,
    window: float,
    fwhm: float,
    min_snr: float,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Positions in the arc of the line-list lines found near ``pixel_of(wavelength)``.

    The position is the line's Gaussian centroid in the arc. With a ``relative`` reference
    (a library lamp), it is corrected by the same centroid's error on the reference (where the
    reference's solution puts the line minus the centroid measured there), so the library's
    solution is transferred line by line whatever the lines' shapes (asymmetric profiles,
    faint neighbours in the wings); a line not seen in the reference keeps its plain centroid.
    """
    c = _continuum_free(arc)
    noise = _noise(c)
    t = _continuum_free(reference.flux)
    t_noise = _noise(t)
    t_pixels = np.arange(len(reference.wave), dtype=float)
    half_fit = max(3, int(round(1.5 * fwhm)))
    xs, ws, names = [], [], []
    n = len(c)
    for wave, ion in zip(reference.lines, reference.ions, strict=True):
        guess = float(pixel_of(wave))
        if not (half_fit <= guess <= n - 1 - half_fit):
            continue
        lo, hi = max(0, int(np.floor(guess - window))), min(n, int(np.ceil(guess + window)) + 1)
        if hi - lo < 3:
            continue
        peak = lo + int(np.argmax(c[lo:hi]))
        at_edge = peak in (lo, hi - 1)  # still rising: the real peak lies outside the window
        if c[peak] < min_snr * noise or at_edge:
            continue
        found = centroid(c, peak, half_fit)
        if found is None or abs(found[0] - guess) > window:
            continue
        position = found[0]
        x_ref = float(np.interp(wave, reference.wave, t_pixels))
        if reference.relative and half_fit <= x_ref <= len(t) - 1 - half_fit:
            i_ref = int(round(x_ref))
            lo_r, hi_r = max(0, i_ref - half_fit), min(len(t), i_ref + half_fit + 1)
            peak_ref = lo_r + int(np.argmax(t[lo_r:hi_r]))
            on_ref = centroid(t, peak_ref, half_fit) if t[peak_ref] > min_snr * t_noise else None
            if on_ref is not None and abs(on_ref[0] - x_ref) < 0.5 * fwhm:
                position += x_ref - on_ref[0]
        xs.append(position)
        ws.append(wave)
        names.append(ion)
    xs_arr, ws_arr = np.asarray(xs), np.asarray(ws)
    # two lines claiming the same peak: a blend, or a neighbour's window: keep neither
    keep = np.ones(len(xs_arr), dtype=bool)
    for i in range(len(xs_arr)):
        for j in range(i + 1, len(xs_arr)):
            if abs(xs_arr[i] - xs_arr[j]) < fwhm:
                keep[i] = keep[j] = False
    return xs_arr[keep], ws_arr[keep], [n for n, k in zip(names, keep, strict=True) if k]


def fit_solution(
    x: np.ndarray, w: np.ndarray, npix: int, degree: int, sigma: float
) -> tuple[models.Chebyshev1D, np.ndarray]:
    """Chebyshev fit of w(x) with iterative sigma clipping; returns (model, used mask)."""
    init = models.Chebyshev1D(degree=degree, domain=(0, npix - 1))
    fitter = fitting.FittingWithOutlierRemoval(
        fitting.LinearLSQFitter(), sigma_clip, niter=5, sigma=sigma
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "poorly conditioned" on few lines: judged by the RMS
        model, mask = fitter(init, x, w)
    return model, ~np.asarray(mask, dtype=bool)


def calibrate(
    arc: np.ndarray,
    reference: Reference,
    *,
    shift: float | None = None,
    max_shift: float = 60.0,
    degree: int = 3,
    sigma: float = 3.0,
    min_snr: float = 5.0,
    iterations: int = 5,
    fwhm: float | None = None,
    min_lines: int | None = None,
) -> Solution:
    """Calibrate an arc spectrum (1-D, along increasing wavelength) against a reference."""
    arc = np.nan_to_num(np.asarray(arc, dtype=float))
    npix = len(arc)
    fwhm = fwhm or line_fwhm(arc)
    min_lines = min_lines or degree + 3
    lag = cross_correlate(arc, reference.flux, shift, max_shift)
    tpix = np.arange(len(reference.wave), dtype=float)
    grid = np.arange(npix, dtype=float)
    first = _extrapolated(grid + lag, tpix, reference.wave)

    def pixel_of_first(wave):
        return np.interp(wave, first, grid)

    window = max(2.0 * fwhm, 4.0)
    x, w, ions = identify(arc, reference, pixel_of_first, window, fwhm, min_snr)
    if len(x) < min_lines:
        raise CalibrationError(
            f"only {len(x)} line(s) of the line list found in the arc after the "
            f"cross-correlation (lag {lag:.1f} pixels against {reference.name}); "
            f"at least {min_lines} are needed"
        )
    previous: tuple | None = None
    for _ in range(iterations):
        model, used = fit_solution(x, w, npix, min(degree, len(x) - 2), sigma)
        waves = model(grid)
        if not np.all(np.diff(waves) > 0):
            raise CalibrationError("the fitted wavelength solution is not monotonic")

        def pixel_of(wave, waves=waves):
            return np.interp(wave, waves, grid)

        x_new, w_new, ions_new = identify(
            arc, reference, pixel_of, max(1.5 * fwhm, 3.0), fwhm, min_snr
        )
        key = tuple(np.round(w_new, 4))
        if len(x_new) >= min_lines:
            x, w, ions = x_new, w_new, ions_new
        if key == previous:
            break
        previous = key
    model, used = fit_solution(x, w, npix, min(degree, len(x) - 2), sigma)
    if used.sum() < min_lines:
        raise CalibrationError(
            f"only {int(used.sum())} line(s) survive the sigma clipping; {min_lines} needed"
        )
    return Solution(
        model=model,
        npix=npix,
        shift=lag,
        x=x,
        wave=w,
        ions=ions,
        used=used,
        residuals=w - model(x),
        degree=model.degree,
        reference=reference.name,
        medium=reference.medium,
    )


def _extrapolated(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """np.interp, continued linearly beyond both ends."""
    y = np.interp(x, xp, fp)
    low, high = x < xp[0], x > xp[-1]
    y[low] = fp[0] + (x[low] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    y[high] = fp[-1] + (x[high] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return y


def table_rows(solution: Solution) -> Table:
    """The identified lines as a table (for the QA plot and the products)."""
    return Table(
        {
            "PIXEL": solution.x,
            "WAVE": solution.wave,
            "FIT": solution(solution.x),
            "RESID": solution.residuals,
            "USED": solution.used,
            "ION": solution.ions,
        }
    )
