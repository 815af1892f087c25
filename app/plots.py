"""Arrays for the page's interactive plots, read from OGIP products with astropy.

Files come as open binary streams, never as paths: the caller opens them inside the run folder
without following links (``app.runs.open_product``), and the background named by ``BACKFILE``
is opened through the caller's ``open_sibling`` (so a header cannot point elsewhere).

- Spectrum (``SPECTRUM`` HDU, OGIP/92-007): count rate per keV against energy for the source and
  for its background (``BACKFILE`` next to it) scaled by the BACKSCAL and EXPOSURE ratios, with
  Poisson errors, channels grouped to at least ``MIN_COUNTS`` source counts for readability.
- Optical 1-D spectrum (``SPEC1D`` table of ``reduce_longslit``: WAVE [Angstrom], FLUX, ERR,
  MASK): flux against wavelength, masked pixels as gaps (the cleaned-cosmic-ray bit 2 alone
  is not a gap), linear axes.
- Light curve (``RATE`` HDU, OGIP/93-003): RATE and ERROR against time (s from the first bin),
  BACKV when present, and the GTI gaps.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import IO, Any

import numpy as np
from astropy.io import fits

MIN_COUNTS = 20
MAX_POINTS = 2000
#: Largest product read for a plot [bytes] (spectra and light curves are far smaller).
MAX_FILE_BYTES = 64 * 2**20


class NotPlottable(ValueError):
    """The file is not a spectrum or light curve this module can plot."""


def _finite(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def _groups(counts: np.ndarray, minimum: int) -> np.ndarray:
    """Group index of each channel: consecutive channels until ``minimum`` counts are reached."""
    group = np.zeros(len(counts), dtype=int)
    current, total = 0, 0
    for i, c in enumerate(counts):
        group[i] = current
        total += c
        if total >= minimum:
            current, total = current + 1, 0
    return group


#: Opens a file named by a product's header (``BACKFILE``) beside the product.
OpenSibling = Callable[[str], IO[bytes]]


def _load(stream: IO[bytes]) -> io.BytesIO:
    """The stream's bytes in memory (astropy closes a file object it was given)."""
    data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise NotPlottable(f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB: download it")
    return io.BytesIO(data)


def spectrum(stream: IO[bytes], open_sibling: OpenSibling | None = None) -> dict[str, Any]:
    with fits.open(_load(stream)) as hdul:
        hdu = hdul["SPECTRUM"]
        head = hdu.header
        counts = np.asarray(hdu.data["COUNTS"], dtype=float)
        channel = np.asarray(hdu.data["CHANNEL"], dtype=float)
        exposure = float(head.get("EXPOSURE") or 0)
        backscal = float(head.get("BACKSCAL") or 1)
        width_ev = float(head.get("SPECDELT") or 5)
        backfile = str(head.get("BACKFILE") or "NONE")
    if exposure <= 0:
        raise NotPlottable("the spectrum has no exposure")
    energy = (channel + 0.5) * width_ev / 1000.0  # keV at the channel centres
    background = None
    bkg_stream = _sibling(open_sibling, backfile)
    if bkg_stream is not None:
        with bkg_stream, fits.open(_load(bkg_stream)) as bkg:
            b_head = bkg["SPECTRUM"].header
            b_counts = np.asarray(bkg["SPECTRUM"].data["COUNTS"], dtype=float)
            scale = (backscal / float(b_head.get("BACKSCAL") or 1)) * (
                exposure / float(b_head.get("EXPOSURE") or exposure)
            )
        if len(b_counts) == len(counts):
            background = (b_counts, scale)
    keep = (energy >= 0.2) & (energy <= 12.0)
    group = _groups(counts[keep], MIN_COUNTS)
    n = group.max() + 1 if len(group) else 0
    sums = np.bincount(group, counts[keep], n)
    widths = np.bincount(group, np.full(keep.sum(), width_ev / 1000.0), n)
    centres = np.bincount(group, energy[keep], n) / np.maximum(np.bincount(group, None, n), 1)
    out = {
        "kind": "spectrum",
        "x_label": "Energy (keV)",
        "y_label": "Count rate (counts/s/keV)",
        "x": _finite(centres),
        "series": {
            "source": _finite(sums / exposure / widths),
            "source_error": _finite(np.sqrt(sums) / exposure / widths),
        },
        "exposure": exposure,
    }
    if background is not None:
        b_counts, scale = background
        b_sums = np.bincount(group, b_counts[keep], n)
        out["series"]["background"] = _finite(b_sums * scale / exposure / widths)
        out["series"]["background_error"] = _finite(np.sqrt(b_sums) * scale / exposure / widths)
    return out


def _sibling(open_sibling: OpenSibling | None, name: str) -> IO[bytes] | None:
    """The file ``name`` beside the product, or None (none named, absent, or not allowed)."""
    if open_sibling is None or name.upper() == "NONE":
        return None
    try:
        return open_sibling(name)
    except (OSError, ValueError):
        return None


#: MASK bit of a pixel whose cosmic ray was cleaned (still a good value).
COSMIC_CLEANED = 2


def optical_spectrum(stream: IO[bytes]) -> dict[str, Any]:
    with fits.open(_load(stream)) as hdul:
        table = hdul["SPEC1D"]
        wave = np.asarray(table.data["WAVE"], dtype=float)
        flux = np.asarray(table.data["FLUX"], dtype=float)
        error = np.asarray(table.data["ERR"], dtype=float)
        mask = np.asarray(table.data["MASK"], dtype=np.int64)
        unit = table.columns["FLUX"].unit or ""
        medium = str(hdul[0].header.get("AIRORVAC", "vac"))
    bad = (mask & ~COSMIC_CLEANED) != 0
    step = max(1, len(wave) // MAX_POINTS)
    return {
        "kind": "optical-spectrum",
        "x_label": f"Wavelength (Å, {'vacuum' if medium.startswith('vac') else 'air'})",
        "y_label": f"Flux ({unit})" if unit else "Flux",
        "x": _finite(wave[::step]),
        "series": {
            "flux": _finite(np.where(bad, np.nan, flux)[::step]),
            "flux_error": _finite(np.where(bad, np.nan, error)[::step]),
        },
        "gaps": [],
    }


def lightcurve(stream: IO[bytes]) -> dict[str, Any]:
    with fits.open(_load(stream)) as hdul:
        data = hdul["RATE"].data
        names = [n.upper() for n in data.columns.names]
        time = np.asarray(data["TIME"], dtype=float)
        rate = np.asarray(data["RATE"], dtype=float)
        error = np.asarray(data["ERROR"], dtype=float) if "ERROR" in names else np.zeros_like(rate)
        backv = np.asarray(data["BACKV"], dtype=float) if "BACKV" in names else None
        gti = []
        if "GTI" in hdul:
            gti = [
                (float(a), float(b))
                for a, b in zip(hdul["GTI"].data["START"], hdul["GTI"].data["STOP"], strict=True)
            ]
    if len(time) == 0:
        raise NotPlottable("the light curve has no bins")
    t0 = time[0]
    step = max(1, len(time) // MAX_POINTS)
    series = {"net rate": _finite(rate[::step]), "error": _finite(error[::step])}
    if backv is not None:
        series["background"] = _finite(backv[::step])
    gaps = [(b - t0, a - t0) for (_, b), (a, _) in zip(gti, gti[1:], strict=False)]
    return {
        "kind": "lightcurve",
        "x_label": "Time (s from the first bin)",
        "y_label": "Count rate (counts/s)",
        "x": _finite(time[::step] - t0),
        "series": series,
        "gaps": gaps,
    }


def from_fits(stream: IO[bytes], open_sibling: OpenSibling | None = None) -> dict[str, Any]:
    """Plot arrays of an OGIP spectrum or light curve, read from an open binary ``stream``."""
    memory = _load(stream)
    try:
        with fits.open(io.BytesIO(memory.getvalue())) as hdul:
            names = {hdu.name for hdu in hdul}
    except OSError as exc:
        raise NotPlottable(f"not a FITS file: {exc}") from None
    if "SPECTRUM" in names:
        return spectrum(memory, open_sibling)
    if "SPEC1D" in names:
        return optical_spectrum(memory)
    if "RATE" in names:
        return lightcurve(memory)
    raise NotPlottable("only spectra (SPECTRUM, SPEC1D) and light curves (RATE) can be plotted")
