"""Optical long-slit spectrographs: one profile per spectrograph arm, one module for all of them.

A long-slit CCD frame says little about itself in a standard way: which keyword holds the
grating, whether a lamp was on, where the overscan is, which way the light is dispersed. Each
spectrograph arm is therefore a :class:`Profile` (plain data: header keywords, amplifier and
overscan sections, gain, read noise, dispersion axis, setup keys, air or vacuum wavelengths,
slit geometry, site longitude, the reference files of its usual setup) in :data:`PROFILES`, and
this module registers one :class:`~indexer.instruments.Instrument` per spectrograph (the
profiles of its arms are its cameras). **Adding a spectrograph is adding a profile** here: no
other code changes, and the reduction script (``scripts/reduce_longslit.py``) reads the same
profiles.

What the module answers for a raw frame, from its headers only:

- :func:`profile_for` recognises the spectrograph (the profile's ``identify`` keywords);
- :func:`classify` says what the frame is: ``bias``, ``flat``, ``arc``, ``dark``, ``standard``
  or ``science``, from the exposure time, the lamp states and the object name, with ``OBSTYPE``
  (and any other frame-type keyword of the profile) only as a hint: Kast writes
  ``OBSTYPE='DARK'`` on its biases and ``'OBJECT'`` on its arcs and flats. The rules, in order:
  an arc lamp on -> arc; a flat lamp on or a flat-like object name -> flat; no exposure
  (``EXPTIME <= bias_max_exptime``) -> bias; an arc-like object name -> arc; a bias-like name
  -> bias; a dark-like name or hint with the shutter closed -> dark; then the hints; then a
  known spectrophotometric standard's name -> standard; else science. The reasons go with the
  answer (:class:`Classification`), for the provenance of a reduction.
- :func:`night` is the observing night (the local calendar date of the evening: the UT date
  shifted by the site's longitude, then by 12 hours), :func:`setup` the values of the
  profile's setup keys: calibration association (``scripts/longslit/calibrations.py``) never
  uses a frame of another night or another setup.
- :meth:`LongSlitInstrument.describe`: the metadata row and the sky footprint of a sky frame
  (science or standard): the slit, a rectangle ``slit_length`` x slit width centred on the
  pointing at the slit's position angle. Calibration frames (bias, flat, arc, dark) have no
  sky position that means anything: they are not indexed (the build reports them as skipped
  with the reason "calibration frame: used by reductions, not a sky exposure"); the reduction
  finds them itself in the science frame's own folder.

Metadata row (``indexer.store.EXPOSURE_COLUMNS``): ``mission``/``instrument``/``camera`` from
the profile (``SHANE``/``KAST``/``BLUE``, ``LT``/``SPRAT``/``SPRAT``); ``obsid`` is the night
and the frame number (``20150519_27``, ``20180810_12_1``); ``kind`` ``longslit-frame``;
``filter`` the grating or grism; ``submode`` the slit; ``source`` the frame type
(``science`` or ``standard``); ``pa_pnt`` the slit's position angle [deg E of N].
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle, SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from mocpy import MOC

from indexer.instruments import Camera, Footprint, Instrument, register
from indexer.instruments._base import FootprintError, NotRecognisedError

#: Frame types :func:`classify` gives.
FRAME_TYPES = ("bias", "flat", "arc", "dark", "standard", "science")
#: Frame types that are sky exposures (indexed, with a slit footprint).
SKY_TYPES = ("science", "standard")

#: Object names of spectrophotometric standards (upper case, no spaces, ``+``/``-``/``_`` kept
#: out), as observers type them: Oke 1990, Hamuy 1992/1994, Massey 1988, CALSPEC.
STANDARD_STARS = frozenset(
    {
        "FEIGE34",
        "FEIGE56",
        "FEIGE66",
        "FEIGE67",
        "FEIGE92",
        "FEIGE98",
        "FEIGE110",
        "HILTNER102",
        "HILT102",
        "HILTNER600",
        "HILT600",
        "HZ2",
        "HZ4",
        "HZ14",
        "HZ21",
        "HZ29",
        "HZ43",
        "HZ44",
        "BD284211",
        "BD332642",
        "BD254655",
        "BD174708",
        "BD262606",
        "BD75325",
        "G191B2B",
        "GD71",
        "GD108",
        "GD153",
        "GD50",
        "G138-31",
        "G13831",
        "G2426",
        "G9348",
        "G4724",
        "G15822",
        "G6071",
        "EG131",
        "EG274",
        "EG21",
        "LTT1020",
        "LTT1788",
        "LTT2415",
        "LTT3218",
        "LTT377",
        "LTT4364",
        "LTT4816",
        "LTT6248",
        "LTT7379",
        "LTT7987",
        "LTT9239",
        "LTT9491",
        "WOLF1346",
        "ROSS640",
        "PG0823+546",
        "PG0823546",
        "PG0934554",
        "PG1545035",
        "PG0310149",
        "AGK+81D266",
        "AGK81D266",
        "BD+284211",
        "SA95-42",
        "SA9542",
        "CD-32D9927",
        "CD32D9927",
        "CD-34D241",
        "CD34D241",
    }
)

_ARC_NAME = re.compile(
    r"\b(arcs?|lamps?|comps?|comparison|thar|hene|henear|hgar|hgcd|hgne|cuar|fear|xenon)\b",
    re.IGNORECASE,
)
_FLAT_NAME = re.compile(r"flat|\bquartz\b|\btungsten\b|\bdomeflat\b|\bsky ?flat", re.IGNORECASE)
_BIAS_NAME = re.compile(r"\b(bias|zero)\b", re.IGNORECASE)
_DARK_NAME = re.compile(r"\bdark\b", re.IGNORECASE)
_TRUE = {"on", "true", "t", "1", "yes", "y"}


@dataclass(frozen=True)
class Amplifier:
    """One readout amplifier: its data and overscan sections (FITS ``[x1:x2,y1:y2]``, 1-based,
    inclusive), gain [e-/ADU] and read noise [e-]."""

    data: str
    overscan: str | None
    gain: float
    read_noise: float

    def data_slices(self) -> tuple[slice, slice]:
        return section_slices(self.data)

    def overscan_slices(self) -> tuple[slice, slice] | None:
        return section_slices(self.overscan) if self.overscan else None


@dataclass(frozen=True)
class Profile:
    """Everything a reduction needs to know about one spectrograph arm (see the module doc)."""

    key: str  #: profile key (``shane-kast-blue``)
    mission: str  #: ``mission`` of the metadata rows (observatory or telescope)
    instrument: str  #: ``instrument`` of the rows
    camera: str  #: ``camera`` of the rows (the arm)
    title: str  #: human title of the spectrograph
    colour: str  #: ``#rrggbb`` of its camera in the page
    #: header keyword -> value (case and spaces ignored) that together recognise a raw frame
    identify: dict[str, str]
    #: the data sections of the amplifiers, in the order they are assembled along the
    #: dispersion axis; every section is trimmed to its own data
    amplifiers: tuple[Amplifier, ...]
    #: FITS axis along which the light is dispersed (1: along NAXIS1, the rows of the array)
    dispersion_axis: int
    #: wavelengths of the profile's reference files (line lists, templates): ``vacuum``/``air``
    wavelengths: str
    #: arcsec per pixel along the slit
    spatial_scale: float
    #: slit length [arcsec]
    slit_length: float
    #: setup keys: frames of another setup are never used as calibrations
    setup_keys: tuple[str, ...]
    #: the setup key of the slit (arcs may have another slit)
    slit_key: str | None
    #: setup keys a bias must share (detector geometry only)
    bias_keys: tuple[str, ...] = ("NAXIS1", "NAXIS2")
    #: slit width [arcsec] when ``slit_key`` does not give it (a fixed slit)
    slit_width: float | None = None
    object_key: str = "OBJECT"
    exptime_key: str = "EXPTIME"
    date_key: str = "DATE-OBS"
    airmass_key: str = "AIRMASS"
    ra_key: str = "RA"
    dec_key: str = "DEC"
    #: keywords whose value is the slit's position angle [deg E of N], first found wins
    pa_keys: tuple[str, ...] = ()
    #: added to the position angle keyword (the slit's angle on the rotator)
    pa_offset: float = 0.0
    grating_keys: tuple[str, ...] = ()
    observer_keys: tuple[str, ...] = ("OBSERVER",)
    #: header keywords of arc lamps (value ``on``/``T``): keyword -> lamp name
    arc_lamps: dict[str, str] = field(default_factory=dict)
    #: header keywords of flat-field lamps
    flat_lamps: dict[str, str] = field(default_factory=dict)
    #: frame-type hints: (keyword, function of its value -> frame type or None)
    hints: tuple[tuple[str, Callable[[str], str | None]], ...] = ()
    #: frame number keywords joined (after the night) into the obsid
    number_keys: tuple[str, ...] = ()
    #: site longitude [deg, east positive], for the observing night
    longitude: float = 0.0
    #: exposure times up to this [s] are biases (with no lamp on)
    bias_max_exptime: float = 0.01
    #: calibrations a reduction cannot do without (others are used when found)
    required: tuple[str, ...] = ("bias", "flat", "arc")
    #: wavelength increases with the pixel index along the dispersion axis
    wavelength_increases: bool = True
    #: nominal wavelength of the first pixel [A] and dispersion [A/pixel] keywords (or values)
    nominal_start: str | float | None = None
    nominal_dispersion: str | float | None = None
    #: default reference files (names in the reference folder): arc template, line lists,
    #: extinction curve
    arc_template: str | None = None
    line_lists: tuple[str, ...] = ()
    extinction: str | None = None
    #: saturation [ADU] of the raw frames
    saturation: float = 65535.0

    # -- header access ------------------------------------------------------------------------

    def matches(self, header: fits.Header) -> bool:
        return all(_norm(header.get(k)) == _norm(v) for k, v in self.identify.items())

    def text(self, header: fits.Header, key: str | None) -> str | None:
        if key is None:
            return None
        value = header.get(key)
        if value is None:
            return None
        text = str(value).strip()
        return text or None

    def number(self, header: fits.Header, key: str) -> float | None:
        try:
            value = float(header.get(key))
        except (TypeError, ValueError):
            return None
        return value if np.isfinite(value) else None

    def exptime(self, header: fits.Header) -> float | None:
        return self.number(header, self.exptime_key)

    def airmass(self, header: fits.Header) -> float | None:
        return self.number(header, self.airmass_key)

    def date_obs(self, header: fits.Header) -> dt.datetime | None:
        return parse_date(self.text(header, self.date_key))

    def grating(self, header: fits.Header) -> str | None:
        for key in self.grating_keys:
            text = self.text(header, key)
            if text:
                return text
        return None

    def slit(self, header: fits.Header) -> str | None:
        return self.text(header, self.slit_key)

    def slit_width_arcsec(self, header: fits.Header) -> float | None:
        """The slit width [arcsec]: the first number of the slit keyword, else ``slit_width``."""
        name = self.slit(header)
        if name:
            found = re.search(r"(\d+(?:\.\d+)?)", name)
            if found:
                return float(found.group(1))
        return self.slit_width

    def position_angle(self, header: fits.Header) -> float | None:
        for key in self.pa_keys:
            value = self.number(header, key)
            if value is not None:
                return (value + self.pa_offset) % 360.0
        return None

    def pointing(self, header: fits.Header) -> SkyCoord | None:
        """The pointing (ICRS) from the RA/DEC keywords (sexagesimal hours/degrees or degrees)."""
        ra, dec = header.get(self.ra_key), header.get(self.dec_key)
        if ra is None or dec is None:
            return None
        try:
            if isinstance(ra, str) and ":" in ra:
                ra_angle = Angle(ra.strip(), unit=u.hourangle)
                dec_angle = Angle(str(dec).strip(), unit=u.deg)
            else:
                ra_angle, dec_angle = Angle(float(ra), unit=u.deg), Angle(float(dec), unit=u.deg)
            return SkyCoord(ra_angle, dec_angle, frame="icrs")
        except (ValueError, TypeError):
            return None

    def lamps_on(self, header: fits.Header, lamps: dict[str, str]) -> list[str]:
        return [name for key, name in lamps.items() if _norm(header.get(key)) in _TRUE]

    def arc_lamps_on(self, header: fits.Header) -> list[str]:
        return self.lamps_on(header, self.arc_lamps)

    def frame_number(self, header: fits.Header) -> str | None:
        parts = []
        for key in self.number_keys:
            value = header.get(key)
            if value is None or str(value).strip() == "":
                return None
            parts.append(str(value).strip())
        return "_".join(parts) if parts else None

    def nominal(self, header: fits.Header) -> tuple[float, float] | None:
        """(wavelength of the first pixel [A], dispersion [A/pixel]) from the header, or None."""

        def value(spec):
            if spec is None:
                return None
            return float(spec) if isinstance(spec, int | float) else self.number(header, spec)

        start, step = value(self.nominal_start), value(self.nominal_dispersion)
        return None if start is None or step is None else (start, step)


def _norm(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value).strip().lower()


def section_slices(section: str) -> tuple[slice, slice]:
    """``[x1:x2,y1:y2]`` (FITS, 1-based, inclusive) -> numpy ``(rows, columns)`` slices."""
    found = re.fullmatch(r"\[?\s*(\d+):(\d+)\s*,\s*(\d+):(\d+)\s*\]?", section.strip())
    if not found:
        raise ValueError(f"not a FITS section: {section!r}")
    x1, x2, y1, y2 = (int(v) for v in found.groups())
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def parse_date(text: str | None) -> dt.datetime | None:
    """A FITS date (``2015-05-20T04:37:33.12``) as a naive UTC datetime, or None."""
    if not text:
        return None
    text = text.strip().replace(" ", "T")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _sprat_expid(value: str) -> str | None:
    """LT file names (kept in ``EXPID``) carry the frame type: ``v_<type>_<date>_...``."""
    parts = value.strip().split("_")
    if len(parts) < 2:
        return None
    return {
        "a": "arc",
        "b": "bias",
        "d": "dark",
        "f": "flat",
        "w": "flat",
        "s": "standard",
        "e": "science",
    }.get(parts[1].lower())


def _obstype(value: str) -> str | None:
    value = value.strip().upper()
    return {
        "BIAS": "bias",
        "ZERO": "bias",
        "ARC": "arc",
        "COMP": "arc",
        "LAMP": "arc",
        "FLAT": "flat",
        "LAMPFLAT": "flat",
        "SKYFLAT": "flat",
        "DOMEFLAT": "flat",
        "TWILIGHT": "flat",
        "DARK": "dark",
        "STANDARD": "standard",
        "STD": "standard",
    }.get(value)


#: The profiles, by key. Adding a spectrograph (arm) = adding one here.
PROFILES: dict[str, Profile] = {
    p.key: p
    for p in (
        Profile(
            key="shane-kast-blue",
            mission="SHANE",
            instrument="KAST",
            camera="BLUE",
            title="Shane 3-m Kast spectrograph",
            colour="#3f51b5",
            identify={"VERSION": "kastb"},
            # two amplifiers side by side along the dispersion; the overscan columns follow the
            # data (2050-2080 for the first amplifier, 2081-2111 for the second)
            amplifiers=(
                Amplifier("[1:1024,1:350]", "[2050:2080,1:350]", gain=1.2, read_noise=3.7),
                Amplifier("[1025:2048,1:350]", "[2081:2111,1:350]", gain=1.2, read_noise=3.7),
            ),
            dispersion_axis=1,
            wavelengths="vacuum",
            spatial_scale=0.43,
            slit_length=145.0,
            setup_keys=("GRISM_N", "BSPLIT_N", "SLIT_N"),
            slit_key="SLIT_N",
            bias_keys=("NAXIS1", "NAXIS2"),
            # the Cassegrain TUB angle (Kast rotates with the TUB); taken as the slit PA
            pa_keys=("TUB",),
            grating_keys=("GRISM_N",),
            # line lamps A-K and flat-field lamps 1-5 (names as the LAMPNAMx keywords give them)
            arc_lamps={
                "LAMPSTAA": "Spare1",
                "LAMPSTAB": "Spare2",
                "LAMPSTAC": "Spare3",
                "LAMPSTAD": "Ar",
                "LAMPSTAE": "Ne (dim)",
                "LAMPSTAF": "He",
                "LAMPSTAG": "HgCd",
                "LAMPSTAH": "HgA",
                "LAMPSTAI": "Spare9",
                "LAMPSTAJ": "Ne",
            },
            flat_lamps={
                "LAMPSTA1": "Blue",
                "LAMPSTA2": "Red",
                "LAMPSTA3": "Spare3",
                "LAMPSTA4": "Spare4",
                "LAMPSTA5": "Sup_Blue",
            },
            hints=(("OBSTYPE", _obstype),),
            number_keys=("OBSNUM",),
            longitude=-121.6429,
            required=("bias", "flat", "arc"),
            arc_template="template_shane_kast_blue_600.fits",
            line_lists=("CdI_lines_vacuum.dat", "HgI_lines_vacuum.dat", "HeI_lines_vacuum.dat"),
            extinction="mthamextinct.dat",
        ),
        Profile(
            key="lt-sprat",
            mission="LT",
            instrument="SPRAT",
            camera="SPRAT",
            title="Liverpool Telescope SPRAT",
            colour="#e6550d",
            identify={"INSTRUME": "SPRAT", "TELESCOP": "Liverpool Telescope"},
            # no pre- or overscan (PRESCAN = POSTSCAN = 0): the bias level goes with the sky
            amplifiers=(Amplifier("[1:1024,1:254]", None, gain=2.45, read_noise=5.7),),
            dispersion_axis=1,
            wavelengths="air",
            spatial_scale=0.44,
            slit_length=95.0,
            slit_width=1.8,
            setup_keys=("GRATROT", "GRATPOS", "SLITPOS", "FILTER1", "CCDXBIN", "CCDYBIN"),
            slit_key=None,
            bias_keys=("NAXIS1", "NAXIS2", "CCDXBIN", "CCDYBIN"),
            pa_keys=("ROTSKYPA",),
            grating_keys=("GRATID",),
            observer_keys=("USERID",),
            arc_lamps={"LAMP1SET": "Xe"},
            flat_lamps={"LAMP2SET": "W"},
            hints=(("OBSTYPE", _obstype), ("EXPID", _sprat_expid)),
            number_keys=("RUNNUM", "EXPNUM"),
            longitude=-17.8792,
            required=("arc",),
            wavelength_increases=True,
            nominal_start="WAVSHORT",
            nominal_dispersion="WAVDISP",
        ),
    )
}


def profile_for(header: fits.Header) -> Profile | None:
    """The profile whose ``identify`` keywords the header has, or None."""
    return next((p for p in PROFILES.values() if p.matches(header)), None)


@dataclass(frozen=True)
class Classification:
    """What a frame is (:data:`FRAME_TYPES`) and why (one short reason per piece of evidence)."""

    type: str
    reasons: tuple[str, ...]

    def text(self) -> str:
        return f"{self.type} ({'; '.join(self.reasons)})"


def standard_name(name: str | None) -> str | None:
    """The object name normalised (upper case, no spaces or ``+-_.``) if it is a known
    spectrophotometric standard, else None."""
    if not name:
        return None
    key = re.sub(r"[\s_.\-+]", "", name.upper())
    plain = {re.sub(r"[\s_.\-+]", "", s) for s in STANDARD_STARS}
    return key if key in plain else None


def classify(header: fits.Header, profile: Profile) -> Classification:
    """The frame type of a raw frame of ``profile`` (rules in the module docstring)."""
    name = profile.text(header, profile.object_key) or ""
    exptime = profile.exptime(header)
    arcs = profile.arc_lamps_on(header)
    flats = profile.lamps_on(header, profile.flat_lamps)
    hints = []
    for key, read in profile.hints:
        value = header.get(key)
        if isinstance(value, str) and value.strip():
            hint = read(value)
            if hint:
                hints.append((key, value.strip(), hint))
    hint_text = [f"{key}={value!r} suggests {hint}" for key, value, hint in hints]
    hinted = {hint for _, _, hint in hints}

    def result(kind: str, *why: str) -> Classification:
        return Classification(kind, tuple(why) + tuple(hint_text))

    if arcs:
        return result("arc", f"arc lamp{'s' if len(arcs) > 1 else ''} on: {', '.join(arcs)}")
    if flats:
        return result("flat", f"flat lamp on: {', '.join(flats)}")
    if _FLAT_NAME.search(name):
        return result("flat", f"object name {name!r}")
    if exptime is not None and exptime <= profile.bias_max_exptime:
        return result("bias", f"exposure {exptime:g} s with no lamp on")
    if _ARC_NAME.search(name):
        return result("arc", f"object name {name!r}")
    if _BIAS_NAME.search(name):
        return result("bias", f"object name {name!r}")
    if _DARK_NAME.search(name):
        return result("dark", f"object name {name!r}")
    for kind in ("arc", "flat", "bias", "dark"):
        if kind in hinted:
            return result(kind, "no lamp on and the object name says nothing; the hint decides")
    if standard_name(name):
        return result("standard", f"object {name!r} is a spectrophotometric standard")
    if "standard" in hinted:
        return result("standard", "no lamp on and the object name says nothing; the hint decides")
    why = f"exposure {exptime:g} s, no lamp on" if exptime is not None else "no lamp on"
    return result("science", why, f"object {name!r}" if name else "no object name")


def night(date: dt.datetime, longitude: float) -> dt.date:
    """The observing night of a UT date: the local (solar) calendar date of the evening."""
    local = date + dt.timedelta(hours=longitude / 15.0)
    return (local - dt.timedelta(hours=12)).date()


def setup(header: fits.Header, profile: Profile, keys: tuple[str, ...] | None = None) -> dict:
    """The values of the setup keys (``profile.setup_keys`` unless ``keys``), as text."""
    return {
        key: (str(header.get(key)).strip() if header.get(key) is not None else None)
        for key in (profile.setup_keys if keys is None else keys)
    }


@dataclass(frozen=True)
class FrameInfo:
    """One raw frame of a profile: what the association and the reduction need from its header."""

    path: Path
    profile: Profile
    classification: Classification
    date_obs: dt.datetime | None
    night: dt.date | None
    setup: dict
    geometry: dict
    object: str | None
    exptime: float | None
    airmass: float | None

    @property
    def type(self) -> str:
        return self.classification.type

    @property
    def name(self) -> str:
        return self.path.name


def frame_info(path: Path, header: fits.Header, profile: Profile | None = None) -> FrameInfo:
    """Describe a raw frame (``NotRecognisedError`` when no profile recognises its header)."""
    profile = profile or profile_for(header)
    if profile is None:
        raise NotRecognisedError("no long-slit profile recognises this frame")
    date = profile.date_obs(header)
    return FrameInfo(
        path=Path(path),
        profile=profile,
        classification=classify(header, profile),
        date_obs=date,
        night=night(date, profile.longitude) if date else None,
        setup=setup(header, profile),
        geometry=setup(header, profile, profile.bias_keys),
        object=profile.text(header, profile.object_key),
        exptime=profile.exptime(header),
        airmass=profile.airmass(header),
    )


# --- the slit on the sky -------------------------------------------------------------------


def slit_corners(centre: SkyCoord, pa_deg: float, length: float, width: float) -> SkyCoord:
    """The four corners of a slit (``length`` x ``width`` arcsec at ``pa_deg`` E of N)."""
    half_l, half_w = length / 2.0, width / 2.0
    corners = []
    for along, across in (
        (half_l, half_w),
        (half_l, -half_w),
        (-half_l, -half_w),
        (-half_l, half_w),
    ):
        separation = np.hypot(along, across) * u.arcsec
        angle = (pa_deg + np.degrees(np.arctan2(across, along))) * u.deg
        corners.append(centre.directional_offset_by(angle, separation))
    return SkyCoord([c.ra for c in corners], [c.dec for c in corners], frame="icrs")


def slit_moc(centre: SkyCoord, pa_deg: float, length: float, width: float, depth: int) -> MOC:
    """The HEALPix cells a slit touches: its polygon, plus the cells of points along its length
    every quarter cell (a slit narrower than a cell would otherwise cover no cell at all)."""
    corners = slit_corners(centre, pa_deg, length, width)
    cell_arcsec = np.degrees(np.sqrt(4 * np.pi / (12 * 4**depth))) * 3600.0
    n = max(2, int(np.ceil(length / (cell_arcsec / 4.0))) + 1)
    along = np.linspace(-length / 2.0, length / 2.0, n)
    points = centre.directional_offset_by(
        np.where(along >= 0, pa_deg, pa_deg + 180.0) * u.deg, np.abs(along) * u.arcsec
    )
    lon = np.concatenate([points.ra.deg, corners.ra.deg]) * u.deg
    lat = np.concatenate([points.dec.deg, corners.dec.deg]) * u.deg
    moc = MOC.from_lonlat(lon=lon, lat=lat, max_norder=depth)
    polygon = MOC.from_polygon_skycoord(corners, max_depth=depth)
    return moc.union(polygon)


def frame_wcs(header: fits.Header, profile: Profile) -> WCS | None:
    """A celestial WCS of the frame's pixels (1-based), or None without a pointing.

    The spatial axis runs along the slit (``spatial_scale`` arcsec per pixel, the slit centre
    at the middle row, position angle ``pa``); the dispersion axis is given the same scale
    across the slit, so a region's position along the slit maps to the rows a source falls on.
    Only the spatial coordinate means something on a spectrum.
    """
    centre = profile.pointing(header)
    if centre is None:
        return None
    pa = profile.position_angle(header) or 0.0
    nx, ny = int(header.get("NAXIS1", 0)), int(header.get("NAXIS2", 0))
    scale = profile.spatial_scale / 3600.0
    theta = np.radians(pa)
    # (east, north) on the sky of one pixel along the slit and one across it; the intermediate
    # world coordinates of a TAN WCS are (east, north) in degrees
    along = np.array([np.sin(theta), np.cos(theta)]) * scale
    across = np.array([np.cos(theta), -np.sin(theta)]) * scale
    columns, rows = (across, along) if profile.dispersion_axis == 1 else (along, across)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [centre.ra.deg, centre.dec.deg]
    wcs.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    wcs.wcs.cd = np.column_stack([columns, rows])
    return wcs


# --- the registered instruments ----------------------------------------------------------


class LongSlitInstrument(Instrument):
    """A long-slit spectrograph: its arms' profiles are its cameras (see the module doc)."""

    profiles: tuple[Profile, ...] = ()
    kinds = ("longslit-frame",)
    field_radius_arcmin = 2.0

    def _profile(self, hdul: fits.HDUList) -> Profile | None:
        header = hdul[0].header
        return next((p for p in self.profiles if p.matches(header)), None)

    def recognise(self, hdul: fits.HDUList) -> bool:
        return self._profile(hdul) is not None

    def describe(self, hdul: fits.HDUList, depth: int) -> Footprint:
        profile = self._profile(hdul)
        if profile is None:
            raise NotRecognisedError(f"not a {self.title} frame")
        header = hdul[0].header
        if header.get("NAXIS", 0) != 2:
            raise NotRecognisedError(f"{self.title} file without a 2-D frame in its primary HDU")
        info = frame_info(Path("."), header, profile)
        if info.type not in SKY_TYPES:
            raise FootprintError(
                f"calibration frame ({info.classification.text()}): used by reductions, "
                "not a sky exposure"
            )
        meta = metadata(header, profile, info)
        centre = profile.pointing(header)
        if centre is None:
            raise FootprintError(
                f"{info.type} frame without a pointing ({profile.ra_key}/{profile.dec_key})"
            )
        width = profile.slit_width_arcsec(header) or 1.0
        moc = slit_moc(centre, meta["pa_pnt"] or 0.0, profile.slit_length, width, depth)
        return Footprint(meta=meta, moc=moc)

    def pixel_wcs(self, path: Path) -> WCS:
        try:
            header = fits.getheader(path, 0)
        except OSError as exc:
            raise FootprintError(f"cannot read the frame {Path(path).name}: {exc}") from None
        profile = profile_for(header)
        wcs = frame_wcs(header, profile) if profile else None
        if wcs is None:
            raise FootprintError(f"the frame {Path(path).name} has no pointing (RA/DEC)")
        return wcs

    def header_pixel_wcs(self, hdul: fits.HDUList) -> WCS | None:
        header = hdul[0].header
        profile = profile_for(header)
        return frame_wcs(header, profile) if profile else None


def metadata(header: fits.Header, profile: Profile, info: FrameInfo) -> dict[str, Any]:
    """The index row of a sky frame (see the module docstring)."""
    number = profile.frame_number(header)
    if info.night is None or number is None:
        raise NotRecognisedError(
            f"{profile.title} frame without {profile.date_key} or frame number "
            f"({', '.join(profile.number_keys)})"
        )
    centre = profile.pointing(header)
    exptime = info.exptime
    end = info.date_obs + dt.timedelta(seconds=exptime) if exptime and info.date_obs else None
    observer = next((profile.text(header, k) for k in profile.observer_keys if header.get(k)), None)
    return {
        "mission": profile.mission,
        "obsid": f"{info.night:%Y%m%d}_{number}",
        "camera": profile.camera,
        "instrument": profile.instrument,
        "kind": "longslit-frame",
        "object": info.object,
        "observer": observer,
        "date_obs": info.date_obs.isoformat(timespec="seconds") if info.date_obs else None,
        "date_end": end.isoformat(timespec="seconds") if end else None,
        "exposure": exptime,
        "ra_pnt": float(centre.ra.deg) if centre is not None else None,
        "dec_pnt": float(centre.dec.deg) if centre is not None else None,
        "pa_pnt": profile.position_angle(header),
        "filter": profile.grating(header),
        "submode": profile.slit(header)
        or (f"{profile.slit_width:g} arcsec" if profile.slit_width else None),
        "source": info.type,
    }


def _register_spectrographs() -> None:
    groups: dict[tuple[str, str], list[Profile]] = {}
    for profile in PROFILES.values():
        groups.setdefault((profile.mission, profile.instrument), []).append(profile)
    for (mission, instrument), profiles in groups.items():
        cls = type(
            f"LongSlit{mission.title()}{instrument.title()}",
            (LongSlitInstrument,),
            {
                "key": f"{mission}-{instrument}".lower(),
                "mission": mission,
                "name": instrument,
                "title": profiles[0].title,
                "cameras": tuple(Camera(p.camera, p.camera.title(), p.colour) for p in profiles),
                "profiles": tuple(profiles),
                "__module__": __name__,
            },
        )
        globals()[cls.__name__] = register(cls)


_register_spectrographs()
