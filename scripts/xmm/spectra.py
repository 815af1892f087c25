"""OGIP PHA spectra (OGIP/92-007) as SAS ``evselect`` + ``backscale`` (+ ``grppha``) write them.

Channel grids (SAS ``specchannelmin=0``, ``spectralbinsize``): channel ``k`` holds PI (eV)
``k*d .. k*d + d - 1``; pn ``d = 5``, 4096 channels (PI 0-20479, the canned pn responses); MOS
``d = 5``, 2400 channels (PI 0-11999) or ``d = 15``, 800 channels. Events with PI outside the
grid are not counted. ``SPECDELT = d``, ``SPECPIX = 0``, ``SPECVAL = (d - 1) / 2``.

The selection is written back as a SAS data subspace, one block per live CCD (block ``k > 1``
keywords prefixed with ``k``): ``CCDNR`` = the CCD; ``FLAG`` (MOS: the ``#XMMEA_EM`` bit string,
``DSFORM = 'X'``; pn ``0``); ``PI`` = the grid's range; ``PATTERN`` ``:12`` / ``:4``; ``TIME`` ->
``TABLE`` with ``DSREF = :GTI{k-1:03d}05`` (that CCD's good time); ``POS(X,Y)`` -> ``TABLE`` with
``DSREF = :REG00106``, a CXC/SAS region table (SHAPE, X, Y, R, ROTANG, COMPONENT; each included
shape is a component, exclusions ``!SHAPE`` are repeated in every component). The ``REFX*/REFY*``
sky WCS keywords of the event list are copied, so SAS ``backscale``/``arfgen``/``rmfgen`` can run
on these files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from numpy.typing import NDArray

from indexer.instruments.xmm_epic import XMMEA_EM
from xmm import gti as gtimod
from xmm.events import EventList
from xmm.selection import Region

#: Event-list keywords copied into spectra (primary and SPECTRUM headers), when present.
COPIED_KEYWORDS = (
    "TELESCOP", "INSTRUME", "OBS_ID", "EXP_ID", "EXPIDSTR", "OBJECT", "OBSERVER", "DATE-OBS",
    "DATE-END", "FILTER", "SUBMODE", "DATAMODE", "REVOLUT", "RA_OBJ", "DEC_OBJ", "RA_PNT",
    "DEC_PNT", "PA_PNT", "EQUINOX", "RADECSYS", "TIMESYS", "MJDREF", "TIMEREF", "TIMEUNIT",
    # as SAS copies them from the event list (checked against data/sas-reference)
    "OBS_MODE", "RA_NOM", "DEC_NOM", "ATT_SRC", "AVRG_PNT", "ORB_RCNS", "TFIT_RPD", "TFIT_DEG",
    "TFIT_RMS", "TFIT_PFR", "TFIT_IGH", "CLOCKAPP", "TASSIGN", "TIMEZERO",
)  # fmt: skip
TIME_DSS, REGION_DSS = 5, 6
REGION_EXTNAME = "REG00106"


@dataclass(frozen=True)
class ChannelGrid:
    """``n`` spectral channels of ``width`` PI values each, numbered from ``first``.

    Channel ``c`` (``first <= c < first + n``) holds PI ``c*width .. c*width + width - 1``; one
    PI value is ``ev_per_pi`` eV wide and the first channel starts at energy 0. SAS: PI in eV,
    channels from 0 (e.g. 4096 x 5 eV); CIAO ACIS: the PI channels themselves, 1..1024 of 14.6 eV.
    """

    width: int
    n: int
    first: int = 0
    ev_per_pi: float = 1.0

    @property
    def pi_min(self) -> int:
        return self.first * self.width

    @property
    def pi_max(self) -> int:
        return (self.first + self.n) * self.width - 1

    @property
    def channels(self) -> NDArray[np.int64]:
        """The CHANNEL numbers."""
        return np.arange(self.first, self.first + self.n)

    def histogram(self, pi: NDArray) -> NDArray[np.int64]:
        """Counts per channel of events with PI values ``pi``."""
        pi = np.asarray(pi)
        on = (pi >= self.pi_min) & (pi <= self.pi_max)
        return np.bincount(pi[on].astype(np.int64) // self.width - self.first, minlength=self.n)

    def energy_kev(self) -> tuple[NDArray, NDArray]:
        """Low and high energy edges [keV] of each channel."""
        step = self.width * self.ev_per_pi / 1000.0
        lo = np.arange(self.n) * step
        return lo, lo + step


def channel_grid(camera: str, mos_bin: int = 5) -> ChannelGrid:
    """pn: 4096 x 5 eV; MOS: 2400 x 5 eV or 800 x 15 eV."""
    if camera == "EPN":
        return ChannelGrid(5, 4096)
    if mos_bin == 15:
        return ChannelGrid(15, 800)
    return ChannelGrid(5, 2400)


def flag_bit_string(mask: int) -> str:
    """SAS DSS bit string of ``(FLAG & mask) == 0``: ``b`` + bits 30..0, '0' required, 'x' free."""
    return "b" + "".join("0" if mask >> bit & 1 else "x" for bit in range(30, -1, -1))


@dataclass
class Spectrum:
    """One PHA spectrum and everything its header needs."""

    counts: NDArray[np.int64]
    grid: ChannelGrid
    exposure: float  # s
    backscal: float  # sky pixels^2
    kind: str  # 'TOTAL' (source) or 'BKG'
    keywords: dict[str, Any] = field(default_factory=dict)
    region: Region | None = None
    ccd_gtis: dict[int, NDArray] = field(default_factory=dict)
    backfile: str = "NONE"
    respfile: str = "NONE"
    ancrfile: str = "NONE"
    grouping: NDArray | None = None
    quality: NDArray | None = None
    history: list[str] = field(default_factory=list)
    #: errors when the counts are no longer Poisson (pn out-of-time events subtracted)
    stat_err: NDArray | None = None

    @property
    def total_counts(self) -> int:
        return int(round(float(self.counts.sum())))


def group_min_counts(counts: NDArray, min_counts: int) -> tuple[NDArray, NDArray]:
    """grppha ``group min N``: GROUPING (1 starts a group, -1 continues) and QUALITY.

    Channels are grouped from the lowest until each group has ``min_counts``; a last group
    that does not reach it gets QUALITY 2 (bad, as grppha sets it).
    """
    grouping = np.full(len(counts), -1, dtype=np.int16)
    quality = np.zeros(len(counts), dtype=np.int16)
    running, start = 0, 0
    for k, c in enumerate(counts):
        if k == start:
            grouping[k] = 1
        running += int(c)
        if running >= min_counts:
            running = 0
            start = k + 1
    quality[start:] = 2  # the last group, if it did not reach min_counts
    return grouping, quality


def data_subspace(
    header: fits.Header, camera: str, grid: ChannelGrid, ccds: list[int], with_region: bool
) -> None:
    """Write the SAS DSS keywords (one block per CCD) into ``header``."""
    header["DSTYP1"] = ("CCDNR", "data subspace descriptor: name")
    header["DSTYP2"] = ("FLAG", "data subspace descriptor: name")
    header["DSTYP3"] = ("PI", "data subspace descriptor: name")
    header["DSUNI3"] = ("CHAN", "data subspace descriptor: units")
    header["DSTYP4"] = ("PATTERN", "data subspace descriptor: name")
    header["DSTYP5"] = ("TIME", "data subspace descriptor: name")
    header["DSUNI5"] = ("s", "data subspace descriptor: units")
    if with_region:
        header["DSTYP6"] = ("POS(X,Y)", "data subspace descriptor: name")
    header["DSVAL1"] = (str(ccds[0]), "data subspace descriptor: value")
    if camera == "EPN":
        header["DSVAL2"] = ("0", "data subspace descriptor: value")
    else:
        header["DSFORM2"] = ("X", "data subspace descriptor: data type")
        header["DSVAL2"] = (flag_bit_string(XMMEA_EM), "data subspace descriptor: value")
    header["DSVAL3"] = (f"0:{grid.pi_max}", "data subspace descriptor: value")
    header["DSVAL4"] = (":12" if camera != "EPN" else ":4", "data subspace descriptor: value")
    header["DSVAL5"] = ("TABLE", "data subspace descriptor: value")
    header["DSREF5"] = (f":{gti_extname(1)}", "data subspace descriptor: reference")
    if with_region:
        header["DSVAL6"] = ("TABLE", "data subspace descriptor: value")
        header["DSREF6"] = (f":{REGION_EXTNAME}", "data subspace descriptor: reference")
    for block, ccd in enumerate(ccds[1:], start=2):
        header[f"{block}DSVAL1"] = (str(ccd), "data subspace descriptor: value")
        header[f"{block}DSREF5"] = (f":{gti_extname(block)}", "data subspace descriptor: reference")
    if with_region:
        header["MTYPE1"] = ("POS", "DM Keyword: Descriptor name")
        header["MFORM1"] = ("X,Y", "DM Keyword: Descriptor value")


def gti_extname(block: int) -> str:
    return f"GTI{block - 1:03d}{TIME_DSS:02d}"


def gti_hdu(
    gti: NDArray, extname: str, ccd: int | None, keywords: dict[str, Any]
) -> fits.BinTableHDU:
    """An OGIP GTI table (START, STOP [s])."""
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="START", format="D", unit="s", array=gti[:, 0]),
            fits.Column(name="STOP", format="D", unit="s", array=gti[:, 1]),
        ],
        name=extname,
    )
    h = hdu.header
    if ccd is not None:
        h["CCDID"] = (ccd, "CCD ID")
    h["HDUCLASS"] = ("OGIP", "format conforms to OGIP standard")
    h["HDUCLAS1"] = ("GTI", "table contains Good Time Intervals")
    h["HDUCLAS2"] = ("STANDARD", "standard Good Time Interval table")
    h["ONTIME"] = (gtimod.total(gti), "[s] sum of all Good Time Intervals")
    h["TSTART"] = (float(gti[0, 0]) if len(gti) else 0.0, "[s] Lower bound of first GTI")
    h["TSTOP"] = (float(gti[-1, 1]) if len(gti) else 0.0, "[s] Upper bound of last GTI")
    for key in ("TIMEUNIT", "TIMESYS", "MJDREF", "TIMEREF", "CLOCKAPP"):
        if key in keywords:
            h[key] = keywords[key]
    h["TASSIGN"] = (keywords.get("TASSIGN", "SATELLITE"), "location of time assignment")
    h["TIMEZERO"] = (float(keywords.get("TIMEZERO", 0.0)), "[s] clock correction")
    return hdu


def region_hdu(
    region: Region, extname: str = REGION_EXTNAME, wcs: WCS | None = None
) -> fits.BinTableHDU:
    """CXC/SAS region table: one component per included shape, exclusions in every component.

    With ``wcs`` (the event list's column WCS) the X/Y columns carry it (``TCTYPn``...), as in
    CIAO region blocks.
    """
    rows = []
    for comp, inc in enumerate(region.includes, start=1):
        rows.append((inc.fits_row(), comp))
        rows.extend((exc.fits_row(), comp) for exc in region.excludes)
    nxy = max(len(r[0][1]) for r in rows)
    shape = []
    xs = np.zeros((len(rows), nxy), np.float32)
    ys = np.zeros((len(rows), nxy), np.float32)
    rs = np.zeros((len(rows), 2), np.float32)
    rot = np.zeros(len(rows), np.float32)
    comps = np.zeros(len(rows), np.int16)
    n_inc = len(region.includes)
    per_comp = 1 + len(region.excludes)
    for i, ((name, x, y, r, angle), comp) in enumerate(rows):
        is_exclusion = i % per_comp != 0
        shape.append(("!" if is_exclusion else "") + name)
        xs[i, : len(x)], ys[i, : len(y)] = x, y
        xs[i, len(x) :], ys[i, len(y) :] = x[0], y[0]  # pad polygons by closing them
        rs[i, : len(r)] = r
        rot[i] = angle
        comps[i] = comp
    assert len(rows) == n_inc * per_comp
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="SHAPE", format="16A", array=np.array(shape)),
            fits.Column(name="X", format=f"{nxy}E", unit="pixel", array=xs),
            fits.Column(name="Y", format=f"{nxy}E", unit="pixel", array=ys),
            fits.Column(name="R", format="2E", unit="pixel", array=rs),
            fits.Column(name="ROTANG", format="E", unit="deg", array=rot),
            fits.Column(name="COMPONENT", format="I", array=comps),
        ],
        name=extname,
    )
    h = hdu.header
    if wcs is not None:
        for i, axis in ((2, 0), (3, 1)):  # the X and Y columns
            h[f"TCTYP{i}"] = wcs.wcs.ctype[axis]
            h[f"TCRVL{i}"] = float(wcs.wcs.crval[axis])
            h[f"TCRPX{i}"] = float(wcs.wcs.crpix[axis])
            h[f"TCDLT{i}"] = float(wcs.wcs.cdelt[axis])
            h[f"TCUNI{i}"] = "deg"
    h["HDUCLASS"] = "ASC"
    h["HDUCLAS1"] = "REGION"
    h["HDUCLAS2"] = "STANDARD"
    h["MTYPE1"] = "pos"
    h["MFORM1"] = "X,Y"
    return hdu


def event_keywords(events: EventList) -> dict[str, Any]:
    """Keywords copied from an event list, plus its sky WCS as SAS ``REFX*``/``REFY*``."""
    out = {k: events.keyword(k) for k in COPIED_KEYWORDS if events.keyword(k) is not None}
    wcs = events.wcs.wcs
    for axis, name in ((0, "REFX"), (1, "REFY")):
        out[f"{name}CTYP"] = events.keyword(f"{name}CTYP", wcs.ctype[axis])
        out[f"{name}CRPX"] = events.keyword(f"{name}CRPX", float(wcs.crpix[axis]))
        out[f"{name}CRVL"] = events.keyword(f"{name}CRVL", float(wcs.crval[axis]))
        out[f"{name}CDLT"] = events.keyword(f"{name}CDLT", float(wcs.cdelt[axis]))
        out[f"{name}CUNI"] = "deg"
        for suffix in ("LMIN", "LMAX", "DMIN", "DMAX"):
            value = events.keyword(f"{name}{suffix}")
            if value is not None:
                out[f"{name}{suffix}"] = value
    return out


def spectrum_hdu(spec: Spectrum, exposure_comment: str, backscal_comment: str) -> fits.BinTableHDU:
    """The OGIP ``SPECTRUM`` table (OGIP/92-007) of ``spec`` with the keywords every PHA carries.

    Columns CHANNEL (the grid's numbers, ``TLMIN1``/``TLMAX1``) and COUNTS (+ QUALITY and
    GROUPING when grouped); the event-list keywords of ``spec.keywords`` (but the ``REF*`` sky
    WCS, which goes to the primary header only), EXPOSURE, AREASCAL, BACKFILE, BACKSCAL,
    CORRFILE, CORRSCAL, RESPFILE, ANCRFILE, DETCHANS, CHANTYPE 'PI', POISSERR, HDUCLASn.
    """
    grid = spec.grid
    cols = [fits.Column(name="CHANNEL", format="I", array=grid.channels.astype(np.int16))]
    if spec.stat_err is None:
        counts = spec.counts.astype(np.int32)
        cols.append(fits.Column(name="COUNTS", format="J", unit="count", array=counts))
    else:
        counts = spec.counts.astype(np.float32)
        cols.append(fits.Column(name="COUNTS", format="E", unit="count", array=counts))
        cols.append(fits.Column(name="STAT_ERR", format="E", unit="count", array=spec.stat_err))
    if spec.grouping is not None and spec.quality is not None:
        cols.append(fits.Column(name="QUALITY", format="I", array=spec.quality))
        cols.append(fits.Column(name="GROUPING", format="I", array=spec.grouping))
    hdu = fits.BinTableHDU.from_columns(cols, name="SPECTRUM")
    h = hdu.header
    h["TLMIN1"] = (grid.first, "Lowest legal channel number")
    h["TLMAX1"] = (grid.first + grid.n - 1, "Highest legal channel number")
    h["HDUCLASS"] = ("OGIP", "format conforms to OGIP standard")
    h["HDUCLAS1"] = ("SPECTRUM", "PHA dataset (OGIP memo OGIP-92-007)")
    h["HDUVERS"] = ("1.2.1", "Version of format (OGIP memo OGIP-92-007)")
    h["HDUVERS1"] = ("1.2.1", "Obsolete - included for backwards compatibility")
    h["LONGSTRN"] = ("OGIP 1.0", "The HEASARC long string convention may be used")
    h["HDUCLAS2"] = (spec.kind, "TOTAL: gross source spectrum; BKG: background")
    h["HDUCLAS3"] = ("COUNT", "PHA data stored as counts (not count/s)")
    for key, value in spec.keywords.items():
        if not key.startswith("REF"):
            h[key] = value
    h["EXPOSURE"] = (spec.exposure, exposure_comment)
    h["AREASCAL"] = (1.0, "Area scaling factor")
    h["BACKFILE"] = (spec.backfile, "Background FITS file")
    h["BACKSCAL"] = (spec.backscal, backscal_comment)
    h["CORRFILE"] = ("NONE", "Correlation FITS file")
    h["CORRSCAL"] = (1.0, "Correlation scale factor")
    h["RESPFILE"] = (spec.respfile, "Redistribution matrix")
    h["ANCRFILE"] = (spec.ancrfile, "Ancillary response")
    h["PHAVERSN"] = ("1992a", "obsolete")
    h["DETCHANS"] = (grid.n, "Total number of possible channels")
    h["CHANTYPE"] = ("PI", "Channel type (PHA, PI etc)")
    if spec.stat_err is None:
        h["POISSERR"] = (True, "Poissonian errors to be assumed")
        h["STAT_ERR"] = (0, "no statistical error specified")
    else:
        h["POISSERR"] = (False, "errors in the STAT_ERR column")
    h["SYS_ERR"] = (0, "no systematic error specified")
    if spec.grouping is None:
        h["QUALITY"] = (0, "All channels have good quality")
        h["GROUPING"] = (0, "No data grouping done")
    return hdu


class _SettledConfig:
    """The values of ``astropy.io.fits.conf`` read once (other names: from ``conf`` itself)."""

    NAMES = (
        "strip_header_whitespace",
        "enable_record_valued_keyword_cards",
        "extension_name_case_sensitive",
    )

    def __init__(self, conf: Any) -> None:
        self._conf = conf
        for name in self.NAMES:
            setattr(self, name, getattr(conf, name))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conf, name)


@contextlib.contextmanager
def settled_fits_config() -> Iterator[None]:
    """While writing, ``astropy.io.fits`` reads its settings as plain attributes.

    Each card it makes reads ``conf.strip_header_whitespace`` (and more) through astropy's
    configuration machinery, ~40 % of the time spent writing a PHA file with its GTI and region
    tables; the values cannot change in the middle of a write, so the card and HDU modules see a
    snapshot meanwhile (the same values: the files are the same)."""
    from astropy.io.fits import card, conf
    from astropy.io.fits.hdu import base

    modules = [m for m in (card, base) if getattr(m, "conf", None) is conf]
    snapshot = _SettledConfig(conf)
    for module in modules:
        module.conf = snapshot
    try:
        yield
    finally:
        for module in modules:
            module.conf = conf


def write_hdus(
    path: Path,
    keywords: dict[str, Any],
    hdus: list[fits.hdu.base.ExtensionHDU],
    extra_cards: list[tuple] | None = None,
    history: list[str] | None = None,
) -> None:
    """Write a primary header with ``keywords`` and ``hdus``; ``extra_cards`` (provenance) go to
    the primary and the first extension, ``history`` to the first extension (with checksums)."""
    primary = fits.PrimaryHDU()
    primary.header["LONGSTRN"] = ("OGIP 1.0", "The HEASARC long string convention may be used")
    for key, value in keywords.items():
        primary.header[key] = value
    for card in extra_cards or []:
        for header in (primary.header, hdus[0].header):
            add_card(header, card)
    for line in history or []:
        hdus[0].header.add_history(line)
    with settled_fits_config():
        for hdu_ in (primary, *hdus):
            fit_comments(hdu_.header)
        fits.HDUList([primary, *hdus]).writeto(path, overwrite=True, checksum=True)


def write_pha(
    path: Path, spec: Spectrum, camera: str, extra_cards: list[tuple] | None = None
) -> None:
    """Write ``spec`` as an OGIP PHA file (primary + SPECTRUM + GTIs + REGION) as SAS does."""
    with settled_fits_config():
        _write_pha(path, spec, camera, extra_cards)


def _write_pha(path: Path, spec: Spectrum, camera: str, extra_cards: list[tuple] | None) -> None:
    hdu = spectrum_hdu(
        spec,
        "[s] Weighted live time of CCDs in the extraction region",
        "[sky pixel^2] live area of the extraction region",
    )
    h = hdu.header
    h["SPECDELT"] = (spec.grid.width, "Spectral channel size, ie the binning factor")
    h["SPECPIX"] = (0, "The rebinned channel corresponding to SPECVAL")
    h["SPECVAL"] = ((spec.grid.width - 1) / 2.0, "Original chan value at center of rebinned chan")
    hdus: list[fits.hdu.base.ExtensionHDU] = [hdu]
    ccds = sorted(spec.ccd_gtis)
    if ccds:
        data_subspace(h, camera, spec.grid, ccds, with_region=spec.region is not None)
        if spec.region is not None:
            h["SLCTEXPR"] = (_selection_expression(spec.region, camera), "Selection expression")
        for block, ccd in enumerate(ccds, start=1):
            hdus.append(gti_hdu(spec.ccd_gtis[ccd], gti_extname(block), ccd, spec.keywords))
        if spec.region is not None:
            hdus.insert(2, region_hdu(spec.region))
    write_hdus(path, spec.keywords, hdus, extra_cards, spec.history)


def fit_comments(header: fits.Header) -> fits.Header:
    """Shorten comments that would not fit on their 80-character card (as SAS does)."""
    for card in header.cards:
        if not card.comment or card.keyword in ("COMMENT", "HISTORY", ""):
            continue
        if _surely_fits(card.keyword, card.value, card.comment):
            continue  # (measuring the card below makes a new Card: slow)
        room = 80 - len(fits.Card(card.keyword, card.value).image.rstrip()) - 3
        if len(card.comment) > room:
            header.comments[card.keyword] = card.comment[: max(room, 0)]
    return header


def _surely_fits(keyword: str, value: Any, comment: str) -> bool:
    """Whether ``KEYWORD = value / comment`` fits on 80 characters whatever the formatting of
    ``value`` (FITS: the value field is 20 characters or the value's width, strings quoted with
    their quotes doubled)."""
    if len(keyword) > 8 or not isinstance(value, str | int | float | bool):
        return False
    text = str(value)
    width = len(text) + 2 + text.count("'") if isinstance(value, str) else len(text)
    return 10 + max(20, width) + 3 + len(comment) <= 80


def add_card(header: fits.Header, card: tuple) -> None:
    """Add a provenance card: ``(keyword, value[, comment])``, ``("HISTORY"|"COMMENT", text)``."""
    key = card[0]
    if key in ("HISTORY", "COMMENT"):
        header.add_history(card[1]) if key == "HISTORY" else header.add_comment(card[1])
    else:
        header[key] = card[1:] if len(card) > 2 else card[1]


def _selection_expression(region: Region, camera: str) -> str:
    inc = "||".join(f"((X,Y) IN {s.ds9()})" for s in region.includes)
    exc = "".join(f"&&!((X,Y) IN {s.ds9().lstrip('-')})" for s in region.excludes)
    flags = "(FLAG==0)&&(PATTERN<=4)" if camera == "EPN" else "#XMMEA_EM&&(PATTERN<=12)"
    return f"({inc}){exc}&&{flags}"


def combine(spectra: list[Spectrum], kind: str) -> Spectrum:
    """Sum spectra of one camera (as ``epicspeccombine``): counts, EXPOSURE, ONTIME and LIVETIME
    summed, BACKSCAL exposure-weighted; one HISTORY line per input spectrum."""
    exposure = sum(s.exposure for s in spectra)
    backscal = sum(s.backscal * s.exposure for s in spectra) / exposure if exposure > 0 else 0.0
    first = spectra[0]
    keywords = {
        k: v for k, v in first.keywords.items() if k not in ("OBS_ID", "EXP_ID", "DATE-END")
    }
    keywords["OBS_ID"] = "COMBINED"
    keywords["NOBSCOMB"] = len(spectra)
    keywords["DATE-END"] = spectra[-1].keywords.get("DATE-END", "")
    keywords["ONTIME"] = float(sum(float(s.keywords.get("ONTIME", 0.0)) for s in spectra))
    keywords["LIVETIME"] = float(
        sum(float(s.keywords.get("LIVETIME", s.exposure)) for s in spectra)
    )
    errors = [s.stat_err if s.stat_err is not None else np.sqrt(s.counts) for s in spectra]
    poisson = all(s.stat_err is None for s in spectra)
    return Spectrum(
        stat_err=None if poisson else np.sqrt(np.sum([e**2 for e in errors], axis=0)),
        counts=np.sum([s.counts for s in spectra], axis=0),
        grid=first.grid,
        exposure=exposure,
        backscal=backscal,
        kind=kind,
        keywords=keywords,
        history=[f"sum of {len(spectra)} spectra ({kind}):"]
        + [
            f"  {s.keywords.get('OBS_ID')} {s.keywords.get('INSTRUME')}: {s.total_counts} counts, "
            f"EXPOSURE {s.exposure:.1f} s, BACKSCAL {s.backscal:.6g}"
            for s in spectra
        ],
    )


def combine_backgrounds(
    sources: list[Spectrum], backgrounds: list[Spectrum], source: Spectrum
) -> Spectrum:
    """The sum of the backgrounds, its BACKSCAL set so that the background it predicts in the
    combined source, ``B (BACKSCAL_src/BACKSCAL_bkg) (EXPOSURE_src/EXPOSURE_bkg)``, equals the
    sum of what each background predicts in its own source spectrum (when the backgrounds hold
    no counts: exposure-weighted, like the source)."""
    out = combine(backgrounds, "BKG")
    predicted = sum(
        b.total_counts * (s.backscal / b.backscal) * (s.exposure / b.exposure)
        for s, b in zip(sources, backgrounds, strict=True)
        if b.backscal > 0 and b.exposure > 0
    )
    if out.total_counts > 0 and predicted > 0:
        out.backscal = (
            out.total_counts * source.backscal * source.exposure / (out.exposure * predicted)
        )
        out.history.append(
            "BACKSCAL set so the combined background predicts the sum of the predicted "
            f"backgrounds: {predicted:.3f} counts"
        )
    return out
