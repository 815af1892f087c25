"""Arrays for the page's interactive plots, read from OGIP products with astropy.

Files come as open binary streams, never as paths: the caller opens them inside the run folder
without following links (``app.runs.open_product``), and the background named by ``BACKFILE``
is opened through the caller's ``open_sibling`` (so a header cannot point elsewhere).

- Spectrum (``SPECTRUM`` HDU, OGIP/92-007): count rate per keV against energy, for the source
  and its background (``BACKFILE`` beside it) scaled by the BACKSCAL and EXPOSURE ratios.
  Adjacent good channels (QUALITY 0) are grouped until each group holds at least ``min_counts``
  source counts (a last, short group joins the one before: no count is lost). Errors are
  ``STAT_ERR`` added in quadrature where the file has it (``POISSERR`` F), else the square root
  of the counts. Channel energies: ``(CHANNEL - TLMIN) x SPECDELT`` PI values of the
  instrument's ``pi_channel_ev``; the energy range shown is the instrument's calibrated band
  (``energy_range_kev``), both from the instrument registry by ``TELESCOP``/``INSTRUME``.
- Optical 1-D spectrum (``SPEC1D`` table of ``reduce_longslit``: WAVE [Angstrom], FLUX, ERR,
  MASK): flux with its error against wavelength, masked pixels as gaps (the cleaned-cosmic-ray
  bit 2 alone is not a gap), linear axes.
- Light curve (``RATE`` HDU, OGIP/93-003): the exposure-corrected net rate (``NETRATE`` table,
  low-exposure bins left out) or else ``RATE``, with errors, and the background; time as mission
  time (s since ``MJDREF``, ``TIMEZERO`` added) and as MJD in ``TIMESYS``; the good time
  intervals of the ``GTI`` tables, and the bin size ``TIMEDEL``.

Every plot carries ``x_decimals``: the decimals that resolve its x values (channel width, bin
size, pixel step) and no more, for the page's tooltips and legends.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import IO, Any

import numpy as np
from astropy.io import fits

from indexer import instruments

MIN_COUNTS = 20
#: Bounds of the minimum counts per spectral bin a caller may ask for.
MIN_COUNTS_RANGE = (1, 10_000)
MAX_POINTS = 2000
#: Largest product read for a plot [bytes] (spectra and light curves are far smaller).
MAX_FILE_BYTES = 64 * 2**20
SECONDS_PER_DAY = 86400.0


class NotPlottable(ValueError):
    """The file is not a spectrum or light curve this module can plot."""


def _finite(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def decimals_for(step: float) -> int:
    """Decimals that resolve values ``step`` apart (0.005 -> 3, 100 -> 0)."""
    if not step > 0 or not math.isfinite(step):
        return 3
    return max(0, math.ceil(-math.log10(step) - 1e-9))


def group_channels(counts: np.ndarray, minimum: float) -> np.ndarray:
    """Group index of each channel: consecutive channels until ``minimum`` counts are reached;
    a last group short of ``minimum`` joins the one before it (when there is one)."""
    group = np.zeros(len(counts), dtype=int)
    current, total = 0, 0.0
    for i, c in enumerate(counts):
        group[i] = current
        total += c
        if total >= minimum:
            current, total = current + 1, 0.0
    if len(counts) and group[-1] == current and total < minimum and current > 0:
        group[group == current] = current - 1  # the short tail joins the last full group
    return group


#: Opens a file named by a product's header (``BACKFILE``) beside the product.
OpenSibling = Callable[[str], IO[bytes]]


def _load(stream: IO[bytes]) -> io.BytesIO:
    """The stream's bytes in memory (astropy closes a file object it was given)."""
    data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise NotPlottable(f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB: download it")
    return io.BytesIO(data)


def _keyword(hdul: fits.HDUList, hdu: Any, key: str, default: Any = None) -> Any:
    """A keyword of the table's header, else of the primary header."""
    value = hdu.header.get(key)
    if value is None or value == "":
        value = hdul[0].header.get(key)
    return default if value is None or value == "" else value


def _column_min(hdu: Any, name: str) -> float | None:
    for i in range(1, int(hdu.header.get("TFIELDS", 0)) + 1):
        if str(hdu.header.get(f"TTYPE{i}", "")).strip().upper() == name:
            value = hdu.header.get(f"TLMIN{i}")
            return float(value) if value is not None else None
    return None


def _instrument(hdul: fits.HDUList, hdu: Any) -> instruments.Instrument | None:
    telescope = str(_keyword(hdul, hdu, "TELESCOP", ""))
    detector = str(_keyword(hdul, hdu, "INSTRUME", ""))
    return instruments.for_detector(telescope, detector)


def _spectrum_table(hdul: fits.HDUList) -> dict[str, Any]:
    """Counts, errors, channels and the keywords of a SPECTRUM HDU (source or background)."""
    hdu = hdul["SPECTRUM"]
    data = hdu.data
    names = {n.upper() for n in data.columns.names}
    if "COUNTS" in names:
        counts = np.asarray(data["COUNTS"], dtype=float)
    elif "RATE" in names:
        counts = np.asarray(data["RATE"], dtype=float) * float(_keyword(hdul, hdu, "EXPOSURE", 0))
    else:
        raise NotPlottable("the spectrum has neither a COUNTS nor a RATE column")
    poisson = bool(_keyword(hdul, hdu, "POISSERR", True))
    variance = counts.clip(min=0)
    if "STAT_ERR" in names and not poisson:
        variance = np.asarray(data["STAT_ERR"], dtype=float) ** 2
    quality = np.asarray(data["QUALITY"], dtype=int) if "QUALITY" in names else None
    if quality is None and isinstance(hdu.header.get("QUALITY"), int):
        quality = np.full(len(counts), int(hdu.header["QUALITY"]))
    return {
        "hdu": hdu,
        "counts": counts,
        "variance": variance,
        "channel": np.asarray(data["CHANNEL"], dtype=float),
        "quality": quality,
        "exposure": float(_keyword(hdul, hdu, "EXPOSURE", 0) or 0),
        "backscal": float(_keyword(hdul, hdu, "BACKSCAL", 1) or 1),
        "specdelt": float(_keyword(hdul, hdu, "SPECDELT", 1) or 1),
        "backfile": str(_keyword(hdul, hdu, "BACKFILE", "NONE")),
        "instrument": _instrument(hdul, hdu),
        "first": _column_min(hdu, "CHANNEL"),
    }


def spectrum(
    stream: IO[bytes], open_sibling: OpenSibling | None = None, min_counts: int = MIN_COUNTS
) -> dict[str, Any]:
    """Source (and scaled background) count rate per keV in groups of ``min_counts`` counts."""
    with fits.open(_load(stream)) as hdul:
        src = _spectrum_table(hdul)
    exposure = src["exposure"]
    if exposure <= 0:
        raise NotPlottable("the spectrum has no exposure")
    instrument = src["instrument"]
    ev_per_pi = instrument.pi_channel_ev if instrument is not None else 1.0
    first = src["first"] if src["first"] is not None else float(src["channel"].min(initial=0))
    width_kev = src["specdelt"] * ev_per_pi / 1000.0
    low = (src["channel"] - first) * width_kev  # keV at the channel's low edge
    band = instrument.energy_range_kev if instrument is not None else None
    keep = np.ones(len(low), dtype=bool)
    if band is not None:
        keep &= (low + width_kev > band[0]) & (low < band[1])
    if src["quality"] is not None:
        keep &= src["quality"] == 0
    if not keep.any():
        raise NotPlottable("the spectrum has no good channel in the instrument's energy range")
    counts = src["counts"][keep]
    group = group_channels(counts, min_counts)
    n = int(group.max()) + 1
    sums = np.bincount(group, counts, n)
    variance = np.bincount(group, src["variance"][keep], n)
    lo = np.full(n, np.inf)
    np.minimum.at(lo, group, low[keep])
    hi = np.full(n, -np.inf)
    np.maximum.at(hi, group, low[keep] + width_kev)
    # a group may straddle skipped (bad) channels: its width is that of the channels in it
    widths = np.bincount(group, np.full(len(counts), width_kev), n)
    centres = (lo + hi) / 2
    out: dict[str, Any] = {
        "kind": "spectrum",
        "x_label": "Energy (keV)",
        "y_label": "Count rate (counts/s/keV)",
        "x": _finite(centres),
        "x_low": _finite(lo),
        "x_high": _finite(hi),
        "x_decimals": decimals_for(width_kev),
        "series": {
            "source": _finite(sums / exposure / widths),
            "source_error": _finite(np.sqrt(variance) / exposure / widths),
        },
        "counts": _finite(sums),
        "min_counts": int(min_counts),
        "exposure": exposure,
        "energy_range": list(band) if band is not None else None,
        "instrument": instrument.title if instrument is not None else None,
    }
    background = _background(open_sibling, src)
    if background is not None:
        b_counts, b_variance, scale = background
        b_sums = np.bincount(group, b_counts[keep], n)
        b_var = np.bincount(group, b_variance[keep], n)
        out["series"]["background"] = _finite(b_sums * scale / exposure / widths)
        out["series"]["background_error"] = _finite(np.sqrt(b_var) * scale / exposure / widths)
    return out


def _background(
    open_sibling: OpenSibling | None, src: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """``(counts, variance, scale to the source)`` of the spectrum's BACKFILE, or None."""
    stream = _sibling(open_sibling, src["backfile"])
    if stream is None:
        return None
    with stream, fits.open(_load(stream)) as hdul:
        try:
            bkg = _spectrum_table(hdul)
        except (KeyError, NotPlottable):
            return None
    if len(bkg["counts"]) != len(src["counts"]):
        return None
    scale = (src["backscal"] / bkg["backscal"]) * (src["exposure"] / (bkg["exposure"] or 1))
    return bkg["counts"], bkg["variance"], scale


def _sibling(open_sibling: OpenSibling | None, name: str) -> IO[bytes] | None:
    """The file ``name`` beside the product, or None (none named, absent, or not allowed)."""
    if open_sibling is None or name.upper() == "NONE" or not name.strip():
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
    pixel = float(np.median(np.abs(np.diff(wave)))) if len(wave) > 1 else 1.0
    return {
        "kind": "optical-spectrum",
        "x_label": f"Wavelength (Å, {'vacuum' if medium.startswith('vac') else 'air'})",
        "y_label": f"Flux ({unit})" if unit else "Flux",
        "x": _finite(wave[::step]),
        "x_decimals": decimals_for(pixel * step),
        "series": {
            "flux": _finite(np.where(bad, np.nan, flux)[::step]),
            "flux_error": _finite(np.where(bad, np.nan, error)[::step]),
        },
        "gti": [],
    }


def _mjdref(header: fits.Header, primary: fits.Header) -> float:
    """MJDREF [d] from MJDREF or MJDREFI + MJDREFF (OGIP/93-003); NotPlottable if absent."""
    for h in (header, primary):
        if h.get("MJDREF") is not None:
            return float(h["MJDREF"])
        if h.get("MJDREFI") is not None:
            return float(h["MJDREFI"]) + float(h.get("MJDREFF", 0.0))
    raise NotPlottable("the light curve has no MJDREF (nor MJDREFI/MJDREFF)")


def _time_unit_seconds(header: fits.Header) -> float:
    unit = str(header.get("TIMEUNIT", "s")).strip().lower()
    return {"s": 1.0, "d": SECONDS_PER_DAY}.get(unit, 1.0)


def lightcurve(stream: IO[bytes]) -> dict[str, Any]:
    """Rate and error against mission time and MJD, the background, GTIs and the bin size."""
    with fits.open(_load(stream)) as hdul:
        rate_hdu = hdul["RATE"]
        head, primary = rate_hdu.header, hdul[0].header
        mjdref = _mjdref(head, primary)
        to_s = _time_unit_seconds(head)
        timezero = float(head.get("TIMEZERO", primary.get("TIMEZERO", 0.0)) or 0.0) * to_s
        timesys = str(head.get("TIMESYS", primary.get("TIMESYS", "TT"))).strip() or "TT"
        timedel = head.get("TIMEDEL")
        data = rate_hdu.data
        names = {n.upper() for n in data.columns.names}
        time = np.asarray(data["TIME"], dtype=float) * to_s
        if "NETRATE" in hdul and {"NET_RATE", "NET_ERROR"} <= {
            n.upper() for n in hdul["NETRATE"].columns.names
        }:
            net = hdul["NETRATE"].data
            time = np.asarray(net["TIME"], dtype=float) * to_s
            flagged = (
                np.asarray(net["QUALITY"], dtype=int) != 0
                if "QUALITY" in net.columns.names
                else np.zeros(len(time), dtype=bool)
            )
            rate = np.where(flagged, np.nan, np.asarray(net["NET_RATE"], dtype=float))
            error = np.where(flagged, np.nan, np.asarray(net["NET_ERROR"], dtype=float))
            label = "net rate"
            background = (
                np.asarray(net["BKG_RATE"], dtype=float)
                if "BKG_RATE" in net.columns.names
                else None
            )
            background_error = None
        else:
            flagged = np.zeros(len(time), dtype=bool)
            rate = np.asarray(data["RATE"], dtype=float)
            error = np.asarray(data["ERROR"], dtype=float) if "ERROR" in names else None
            label = "rate"
            background = np.asarray(data["BACKV"], dtype=float) if "BACKV" in names else None
            background_error = np.asarray(data["BACKE"], dtype=float) if "BACKE" in names else None
        gti: list[tuple[float, float]] = []
        for hdu in hdul[1:]:
            if hdu.name.startswith("GTI") or str(hdu.header.get("HDUCLAS1", "")).strip() == "GTI":
                columns = {n.upper() for n in hdu.columns.names}
                if {"START", "STOP"} <= columns:
                    gti_zero = float(hdu.header.get("TIMEZERO", 0.0) or 0.0) * to_s
                    gti += [
                        (float(a) * to_s + gti_zero, float(b) * to_s + gti_zero)
                        for a, b in zip(hdu.data["START"], hdu.data["STOP"], strict=True)
                    ]
    if len(time) == 0:
        raise NotPlottable("the light curve has no bins")
    if timedel is None:
        timedel = float(np.median(np.diff(time))) if len(time) > 1 else 0.0
    timedel = float(timedel) * to_s
    mission = time + timezero  # seconds since MJDREF
    step = max(1, len(time) // MAX_POINTS)
    series = {label: _finite(rate[::step])}
    if error is not None:
        series[f"{label}_error"] = _finite(error[::step])
    if background is not None:
        series["background"] = _finite(background[::step])
        if background_error is not None:
            series["background_error"] = _finite(background_error[::step])
    gti = sorted(set(gti))
    return {
        "kind": "lightcurve",
        "x_label": f"Time (s since MJD {mjdref:g} {timesys})",
        "x_label_mjd": f"Time (MJD, {timesys})",
        "y_label": "Count rate (counts/s)",
        "x": _finite(mission[::step]),
        "x_mjd": _finite(mjdref + mission[::step] / SECONDS_PER_DAY),
        "x_decimals": decimals_for(timedel * step) if timedel > 0 else 1,
        "x_decimals_mjd": decimals_for(timedel * step / SECONDS_PER_DAY) if timedel > 0 else 6,
        "series": series,
        "gti": [[a, b] for a, b in gti],
        "gti_mjd": [[mjdref + a / SECONDS_PER_DAY, mjdref + b / SECONDS_PER_DAY] for a, b in gti],
        "timedel": timedel,
        "bins_per_point": step,
        "mjdref": mjdref,
        "timesys": timesys,
        "flagged": int(flagged.sum()),
    }


def parse_min_counts(value: str | None) -> int:
    """The ``min_counts`` query value: a whole number in ``MIN_COUNTS_RANGE`` (ValueError)."""
    if value is None or value == "":
        return MIN_COUNTS
    if not value.strip().isdigit():
        raise ValueError(f"min_counts must be a whole number, not {value[:20]!r}")
    number = int(value)
    low, high = MIN_COUNTS_RANGE
    if not low <= number <= high:
        raise ValueError(f"min_counts must be between {low} and {high}, not {number}")
    return number


def from_fits(
    stream: IO[bytes], open_sibling: OpenSibling | None = None, min_counts: int = MIN_COUNTS
) -> dict[str, Any]:
    """Plot arrays of an OGIP spectrum or light curve, read from an open binary ``stream``."""
    memory = _load(stream)
    try:
        with fits.open(io.BytesIO(memory.getvalue())) as hdul:
            names = {hdu.name for hdu in hdul}
    except OSError as exc:
        raise NotPlottable(f"not a FITS file: {exc}") from None
    if "SPECTRUM" in names:
        return spectrum(memory, open_sibling, min_counts)
    if "SPEC1D" in names:
        return optical_spectrum(memory)
    if "RATE" in names:
        return lightcurve(memory)
    raise NotPlottable("only spectra (SPECTRUM, SPEC1D) and light curves (RATE) can be plotted")
