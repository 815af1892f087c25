"""OGIP PHA spectra (OGIP/92-007) of ACIS events, laid out as CIAO ``dmextract`` writes them.

- Channels: the PI channels themselves, CHANNEL 1..1024 (``TLMIN1`` 1, ``TLMAX1`` 1024,
  ``DETCHANS`` 1024, ``CHANTYPE`` 'PI'); channel k covers ``[(k-1) x 14.6, k x 14.6)`` eV. Events
  with PI outside 1..1024 (``TNULL`` 0) are not counted.
- ``EXPOSURE`` [s]: the live time of the chips under the region. For each chip, its GTI total
  (``ONTIMEn`` = the sum of the chip's GTIs) times its dead-time correction (``LIVTIMEn = DTCOR x
  ONTIMEn``; CIAO dictionary, "ONTIME and ONTIMEn", "LIVTIMEn and LIVETIME"), weighted by the
  fraction of the region's on-chip area on that chip when the region straddles chips. For a
  region on one chip of an unfiltered level-2 list this is the chip's ``LIVTIMEn``.
- ``BACKSCAL``: CIAO's definition (dictionary, "BACKSCAL"): the extraction region's area in sky
  pixels divided by the area of the whole 8192 x 8192 sky-pixel grid (``BACKSCAL_NORM``). The
  area counted is the region's area on the chips (:mod:`chandra.pipeline`), so chip edges and
  gaps drop out; the dictionary speaks of the region's area only, which is the same for a
  region wholly on a chip.
- The selection as a CIAO data subspace, one component per chip under the region (keywords of
  component k > 1 prefixed with k): ``time`` -> TABLE ``:GTIn`` (the chip's GTI table,
  ``EXTNAME`` GTI, ``HDUNAME`` GTIn, ``CCD_ID``), ``ccd_id`` ``n:n``, ``grade``
  ``0:0,2:2,3:3,4:4,6:6``, ``sky`` -> TABLE ``:REGION`` (SHAPE, X, Y, R, ROTANG, COMPONENT, with
  the list's sky WCS on X/Y). ``status=0`` is written in the HISTORY (CIAO has no range syntax
  for a bit column).
- ``BACKFILE`` names the background spectrum; ``RESPFILE`` and ``ANCRFILE`` are written 'NONE'
  here and set by :mod:`chandra.responses` (CIAO ``specextract`` when installed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from astropy.io import fits

from chandra.events import event_keywords
from chandra.pipeline import AcisObservation
from indexer.instruments.chandra_acis import GOOD_GRADES, PI_CHANNEL_EV, PI_CHANNELS
from regio_kit import ScriptError
from xmm.spectra import ChannelGrid, Spectrum, gti_hdu, region_hdu, spectrum_hdu, write_hdus

#: The ACIS PI channels as a spectral grid (1..1024 of 14.6 eV).
GRID = ChannelGrid(
    width=1, n=PI_CHANNELS[1] - PI_CHANNELS[0] + 1, first=PI_CHANNELS[0], ev_per_pi=PI_CHANNEL_EV
)
#: Area of the ACIS sky-pixel grid [sky pixels^2]: BACKSCAL = region area / BACKSCAL_NORM.
BACKSCAL_NORM = 8192.0**2
REGION_EXTNAME = "REGION"


def pi_band(emin_kev: float, emax_kev: float) -> tuple[int, int]:
    """The PI channels of the energy band ``[emin, emax)`` [keV], rounded outwards to whole
    channels: from the channel holding ``emin`` to the one holding energies just below ``emax``
    (clipped to 1..1024). Raises ScriptError when the band holds no channel."""
    lo = math.floor(round(emin_kev * 1000.0 / PI_CHANNEL_EV, 9)) + 1
    hi = math.ceil(round(emax_kev * 1000.0 / PI_CHANNEL_EV, 9))
    lo, hi = max(lo, GRID.first), min(hi, GRID.first + GRID.n - 1)
    if hi < lo:
        raise ScriptError(f"the energy band {emin_kev}-{emax_kev} keV holds no ACIS PI channel")
    return lo, hi


def band_text(band: tuple[int, int]) -> str:
    """The energy range [keV] of PI channels ``band`` (inclusive), e.g. ``0.4964-7.008 keV``."""
    return f"{(band[0] - 1) * PI_CHANNEL_EV / 1000:.4g}-{band[1] * PI_CHANNEL_EV / 1000:.4g} keV"


def region_spectrum(obs: AcisObservation, name: str, kind: str) -> Spectrum:
    """The spectrum of region ``name`` of ``obs`` (``kind`` 'TOTAL' or 'BKG')."""
    weights = obs.areas[name].weights()
    ontime = sum(w * obs.good_time_total(chip) for chip, w in weights.items())
    exposure = obs.exposure(name)
    return Spectrum(
        counts=GRID.histogram(obs.selected[name].pi),
        grid=GRID,
        exposure=exposure,
        backscal=obs.areas[name].total / BACKSCAL_NORM,
        kind=kind,
        keywords={
            **event_keywords(obs.events),
            "ONTIME": (ontime, "[s] GTI total of the chips under the region"),
            "LIVETIME": (exposure, "[s] dead-time corrected ONTIME"),
        },
        region=obs.regions[name],
        ccd_gtis={chip: obs.good_time[chip] for chip in sorted(weights)},
        history=[f"events: {obs.filters_text()}"],
    )


def data_subspace(header: fits.Header, chips: list[int], with_region: bool) -> None:
    """The CIAO data-subspace keywords of the selection: one component per chip."""
    grades = ",".join(f"{g}:{g}" for g in GOOD_GRADES)
    for block, chip in enumerate(chips, start=1):
        prefix = "" if block == 1 else str(block)
        descriptors = [
            ("time", "TABLE", "D", f":GTI{chip}"),
            ("ccd_id", f"{chip}:{chip}", "I", None),
            ("grade", grades, "I", None),
        ]
        if with_region:
            descriptors.append(("sky", "TABLE", None, f":{REGION_EXTNAME}"))
        for i, (name, value, form, ref) in enumerate(descriptors, start=1):
            if block == 1:
                header[f"DSTYP{i}"] = (name, "DM Keyword: Descriptor name.")
                if form:
                    header[f"DSFORM{i}"] = (form, "DM Keyword: Descriptor datatype.")
            header[f"{prefix}DSVAL{i}"] = (value, "DM Keyword: Descriptor value.")
            if ref:
                header[f"{prefix}DSREF{i}"] = (ref, "DM Keyword: Descriptor reference.")
    if with_region:
        header["MTYPE1"] = ("sky", "DM Keyword: Descriptor name.")
        header["MFORM1"] = ("x,y", "[pixel]")


def write_pha(
    path: Path, spec: Spectrum, wcs: Any = None, extra_cards: list[tuple] | None = None
) -> None:
    """Write ``spec`` as an OGIP PHA file: primary + SPECTRUM + REGION + one GTI per chip.

    ``wcs`` is the event list's sky column WCS (written on the REGION table's X/Y).
    """
    hdu = spectrum_hdu(
        spec,
        "[s] live time (GTI x DTCOR) of the chips under the region",
        "region area on the chips [sky pixel^2] / 8192^2",
    )
    chips = sorted(spec.ccd_gtis)
    data_subspace(hdu.header, chips, with_region=spec.region is not None)
    hdus: list[fits.hdu.base.ExtensionHDU] = [hdu]
    if spec.region is not None:
        hdus.append(region_hdu(spec.region, REGION_EXTNAME, wcs))
    for chip in chips:
        gti = gti_hdu(spec.ccd_gtis[chip], "GTI", None, spec.keywords)
        gti.ver = chip
        gti.header["HDUNAME"] = (f"GTI{chip}", "ASCDM block name")
        gti.header["CCD_ID"] = (chip, "CCD for this table")
        hdus.append(gti)
    write_hdus(path, spec.keywords, hdus, extra_cards, spec.history)
