"""CCD processing with ccdproc and astroscrappy: overscan, trim, master bias, normalised flat,
bias and flat correction, gain, cosmic rays, variance and mask.

Every frame becomes a :class:`Frame` in electrons with the dispersion along axis 1 (numpy
columns) and the wavelength increasing with the column; rows keep the raw frame's numbering
(row ``r`` is FITS row ``r + 1``), so a trace position means the same on the raw frame.

Steps (per amplifier of the profile, ``indexer.instruments.longslit.Amplifier``):

1. **Overscan** (``ccdproc.subtract_overscan``): the overscan section's median across its
   columns, row by row, smoothed by a degree-2 Chebyshev along the rows, is subtracted; then
   the amplifier's data section is cut out (``ccdproc.trim_image``) and the sections are put
   side by side as they lie on the detector. A profile without overscan (SPRAT) skips this;
   its bias level is then removed by the master bias, or else with the sky.
2. **Master bias** (``ccdproc.combine``, median of the overscan-corrected biases, in ADU):
   subtracted from every other frame. Its mean per amplifier is reported (it is the bias
   structure left after the overscan: a good overscan leaves it within a few ADU of zero).
3. **Gain** (``ccdproc.gain_correct``, each amplifier its own): ADU -> electrons.
4. **Normalised flat**: the flats (bias-corrected, in electrons) are median-combined, each scaled
   by the inverse of its median (``ccdproc.combine``); the lamp's spectrum (median over the
   illuminated rows, smoothed by a Savitzky-Golay filter of ``FLAT_SMOOTH`` pixels) is divided
   out, leaving the pixel-to-pixel response and the slit's illumination. Pixels where the
   flat has less than ``FLAT_MIN`` of the lamp's level (the ends of the slit, dead columns),
   and columns where the lamp gave less than ``FLAT_MIN_SIGNAL`` electrons per pixel, get a
   flat of 1 and the ``MASK_FLAT`` bit. The science is divided by it
   (``ccdproc.flat_correct`` with ``norm_value=1``).
5. **Cosmic rays** (``astroscrappy.detect_cosmics``, L.A.Cosmic, on the electrons with the
   profile's read noise; ``sigclip`` ``CR_SIGCLIP``, ``objlim`` 5, 4 iterations): flagged (``MASK_CR``) and
   replaced by the median of their neighbours. The sky lines and the object's continuum are
   given to astroscrappy as a background (``inbkg``: :func:`smooth_model`), so their sharp
   edges are not taken for cosmic rays; saturated and untrusted-flat pixels are left out.
   Not done on arcs and flats.
6. **Variance** [e-^2]: the Poisson noise of the (positive) signal plus the read noise, divided
   by the flat squared. **Mask** bits: ``MASK_SATURATED`` (raw value at the profile's
   saturation), ``MASK_CR``, ``MASK_FLAT``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import astroscrappy
import ccdproc
import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.modeling import models
from astropy.nddata import CCDData
from scipy.ndimage import median_filter
from scipy.signal import savgol_filter

from indexer.instruments.longslit import FrameInfo, Profile, section_slices

MASK_SATURATED = 1
MASK_CR = 2
MASK_FLAT = 4
#: below this fraction of the lamp's level, a flat pixel is not trusted (ends of the slit)
FLAT_MIN = 0.2
#: below this lamp level [electrons per pixel], a column's flat is noise, not response
FLAT_MIN_SIGNAL = 100.0
#: Savitzky-Golay window [pixels] smoothing the flat lamp's spectrum
FLAT_SMOOTH = 51
#: running medians of the smooth model protecting sky lines and the object from astroscrappy
SKY_ROWS = 15
OBJECT_COLUMNS = 9
#: astroscrappy's Laplacian-to-noise limit: 4.5 (its default) still took pixels of a bright
#: standard's core and of the slit's edges for cosmic rays on Kast (475 pixels in a 30 s
#: exposure); 6 leaves about 35 there and about 130 in a 1200 s one
CR_SIGCLIP = 6.0


@dataclass
class Frame:
    """A processed frame (see the module docstring)."""

    info: FrameInfo
    data: np.ndarray  #: electrons
    variance: np.ndarray  #: electrons^2
    mask: np.ndarray  #: uint8 bits
    header: fits.Header
    notes: list[str] = field(default_factory=list)


@dataclass
class MasterBias:
    data: np.ndarray  #: ADU, the assembled data sections
    files: list[FrameInfo]
    amp_means: list[float]  #: mean of each amplifier's section [ADU]


@dataclass
class MasterFlat:
    data: np.ndarray  #: normalised (about 1)
    low: np.ndarray  #: pixels not trusted (MASK_FLAT)
    response: np.ndarray  #: the lamp's smoothed spectrum [e- per pixel]
    files: list[FrameInfo]


def read(info: FrameInfo) -> tuple[np.ndarray, fits.Header]:
    """The raw primary array (float, ADU) and header of a frame."""
    with fits.open(info.path, memmap=False) as hdul:
        header = hdul[0].header.copy()
        data = np.asarray(hdul[0].data, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"{info.name} has no 2-D frame in its primary HDU")
    return data, header


def _layout(profile: Profile) -> tuple[tuple[int, int], list[tuple[slice, slice]]]:
    """Shape of the assembled data and, per amplifier, where its section lands in it."""
    sections = [amp.data_slices() for amp in profile.amplifiers]
    r0 = min(s[0].start for s in sections)
    c0 = min(s[1].start for s in sections)
    r1 = max(s[0].stop for s in sections)
    c1 = max(s[1].stop for s in sections)
    places = [
        (slice(s[0].start - r0, s[0].stop - r0), slice(s[1].start - c0, s[1].stop - c0))
        for s in sections
    ]
    return (r1 - r0, c1 - c0), places


def overscan_trim(raw: np.ndarray, profile: Profile) -> np.ndarray:
    """Overscan-corrected (where the profile has an overscan) and trimmed data [ADU]."""
    shape, places = _layout(profile)
    out = np.zeros(shape)
    ccd = CCDData(raw, unit="adu")
    for amp, place in zip(profile.amplifiers, places, strict=True):
        if amp.overscan:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                corrected = ccdproc.subtract_overscan(
                    ccd,
                    fits_section=amp.overscan,
                    overscan_axis=None,
                    median=True,
                    model=models.Chebyshev1D(2),
                )
        else:
            corrected = ccd
        out[place] = ccdproc.trim_image(corrected, fits_section=amp.data).data
    return out


def _per_amp(profile: Profile, attribute: str) -> np.ndarray:
    shape, places = _layout(profile)
    out = np.zeros(shape)
    for amp, place in zip(profile.amplifiers, places, strict=True):
        out[place] = getattr(amp, attribute)
    return out


def gain_map(profile: Profile) -> np.ndarray:
    return _per_amp(profile, "gain")


def read_noise_map(profile: Profile) -> np.ndarray:
    return _per_amp(profile, "read_noise")


def amp_means(data: np.ndarray, profile: Profile) -> list[float]:
    _, places = _layout(profile)
    return [float(np.mean(data[place])) for place in places]


def orient(data: np.ndarray, profile: Profile) -> np.ndarray:
    """Dispersion along axis 1, wavelength increasing with the column."""
    if profile.dispersion_axis == 2:
        data = data.T
    if not profile.wavelength_increases:
        data = data[:, ::-1]
    return np.ascontiguousarray(data)


def _saturated(raw: np.ndarray, profile: Profile) -> np.ndarray:
    _, places = _layout(profile)
    shape, _ = _layout(profile)
    out = np.zeros(shape, dtype=bool)
    for amp, place in zip(profile.amplifiers, places, strict=True):
        rows, cols = section_slices(amp.data)
        out[place] = raw[rows, cols] >= profile.saturation
    return out


def _combine(arrays: list[np.ndarray], scale: bool) -> np.ndarray:
    ccds = [CCDData(a, unit="adu") for a in arrays]
    if len(ccds) == 1:
        a = ccds[0].data
        return a / np.median(a) if scale else a.copy()
    kwargs = {"scale": lambda a: 1.0 / np.ma.median(a)} if scale else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        combined = ccdproc.combine(ccds, method="median", **kwargs)
    return np.asarray(combined.data, dtype=float)


def master_bias(biases: list[FrameInfo]) -> MasterBias:
    """Median of the overscan-corrected, trimmed biases [ADU]."""
    profile = biases[0].profile
    arrays = [overscan_trim(read(info)[0], profile) for info in biases]
    data = _combine(arrays, scale=False)
    return MasterBias(data=data, files=list(biases), amp_means=amp_means(data, profile))


def _electrons(raw: np.ndarray, profile: Profile, bias: MasterBias | None) -> np.ndarray:
    adu = overscan_trim(raw, profile)
    if bias is not None:
        adu = ccdproc.subtract_bias(CCDData(adu, unit="adu"), CCDData(bias.data, unit="adu")).data
    gain = gain_map(profile) * u.electron / u.adu
    return np.asarray(ccdproc.gain_correct(CCDData(adu, unit="adu"), gain).data, dtype=float)


def master_flat(flats: list[FrameInfo], bias: MasterBias | None) -> MasterFlat:
    """Normalised flat (see the module docstring, step 4)."""
    profile = flats[0].profile
    arrays = [orient(_electrons(read(info)[0], profile, bias), profile) for info in flats]
    combined = _combine(arrays, scale=True) * float(np.median(arrays[0]))
    rows = np.median(combined, axis=1)
    lit = rows > 0.5 * np.percentile(rows, 90)
    spectrum = np.median(combined[lit], axis=0)
    window = min(FLAT_SMOOTH, (len(spectrum) // 2) * 2 - 1)
    response = savgol_filter(spectrum, window, 3, mode="interp")
    response = np.where(response > 0, response, np.nan)
    norm = combined / response[None, :]
    low = ~np.isfinite(norm) | (norm < FLAT_MIN) | ~lit[:, None]
    low |= ~np.isfinite(response)[None, :] | (response < FLAT_MIN_SIGNAL)[None, :]
    norm = np.where(low, 1.0, norm)
    return MasterFlat(data=norm, low=low, response=np.nan_to_num(response), files=list(flats))


def smooth_model(data: np.ndarray) -> np.ndarray:
    """What a cosmic ray is not: sky lines (smooth along the slit: a running median of
    ``SKY_ROWS`` rows) plus the object's continuum (smooth along the dispersion: a running median
    of ``OBJECT_COLUMNS`` columns of what the sky model leaves)."""
    sky = median_filter(data, size=(SKY_ROWS, 1), mode="nearest")
    return sky + median_filter(data - sky, size=(1, OBJECT_COLUMNS), mode="nearest")


def process(
    info: FrameInfo,
    bias: MasterBias | None,
    flat: MasterFlat | None,
    *,
    cosmic_rays: bool = True,
) -> Frame:
    """Overscan, trim, bias, gain, flat, cosmic rays; variance and mask (module docstring)."""
    profile = info.profile
    raw, header = read(info)
    notes = []
    data = orient(_electrons(raw, profile, bias), profile)
    read_noise = orient(read_noise_map(profile), profile)
    mask = np.where(orient(_saturated(raw, profile), profile), MASK_SATURATED, 0).astype(np.uint8)
    variance = np.clip(data, 0, None) + read_noise**2
    if bias is None:
        notes.append("no master bias: the bias level is removed with the sky background")
    if flat is not None:
        if flat.data.shape != data.shape:
            raise ValueError(f"the master flat's shape {flat.data.shape} is not {data.shape}")
        ccd = CCDData(data, unit="electron")
        data = np.asarray(
            ccdproc.flat_correct(ccd, CCDData(flat.data, unit=""), norm_value=1.0).data
        )
        variance = variance / flat.data**2
        mask |= np.where(flat.low, MASK_FLAT, 0).astype(np.uint8)
    else:
        notes.append("no flat field: pixel-to-pixel response not corrected")
    if cosmic_rays:
        crmask, cleaned = astroscrappy.detect_cosmics(
            data.astype(np.float32),
            inmask=(mask & (MASK_SATURATED | MASK_FLAT)) > 0,
            inbkg=smooth_model(data).astype(np.float32),
            sigclip=CR_SIGCLIP,
            sigfrac=0.3,
            objlim=5.0,
            gain=1.0,
            readnoise=float(np.median(read_noise)),
            satlevel=np.inf,
            niter=4,
            sepmed=True,
            cleantype="medmask",
            fsmode="median",
        )
        crmask = np.asarray(crmask, dtype=bool)
        data = np.asarray(cleaned, dtype=float)
        mask |= np.where(crmask, MASK_CR, 0).astype(np.uint8)
        notes.append(f"cosmic rays: {int(crmask.sum())} pixels flagged and cleaned (astroscrappy)")
    return Frame(info=info, data=data, variance=variance, mask=mask, header=header, notes=notes)
