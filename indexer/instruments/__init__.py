"""The instrument registry: one module per instrument behind one small interface.

As astropy ``regions`` keeps one file per shape, Regio keeps one module per instrument in this
package (``xmm_epic.py``, ``chandra_acis.py``, ...). Every public module here defines a subclass
of :class:`Instrument` decorated with :func:`register`; the package imports them all when first
used (modules whose name starts with ``_`` are helpers, not instruments). Nothing above the index
(the web app, the page) names a camera: it asks this registry.

An instrument module answers, for a FITS file it recognises from its **headers** (never its name):

- :meth:`Instrument.recognise`: is this file mine?
- :meth:`Instrument.describe`: its metadata row (``indexer.store.EXPOSURE_COLUMNS``: mission,
  instrument, camera, obsid, dates, exposure [s], filter, mode, pointing [deg], object, observer,
  ``kind``) and its sky footprint as a MOC made from the data (chips with events, gaps and dead
  chips excluded);
- :meth:`Instrument.pixel_wcs`: the WCS of the file's own pixel frame (DS9 ``physical``), so the
  runner can hand a script its regions in that frame (``app.inputs``);
- :meth:`Instrument.imaging_mask` and :meth:`Instrument.energy_ev`: which events of a chunk pass
  the standard filters and their energies [eV], for images of the archive (``indexer.hips``);
- :attr:`Instrument.cameras`: the display order, labels and colours of its cameras.

Data kinds (``KINDS``) say what a file holds; script manifests accept kinds and instruments.

Adding an instrument: a new module here (copy ``chandra_acis.py``), a demo generator in ``demo/``
and tests; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from mocpy import MOC

from indexer.instruments._base import FootprintError, NotRecognisedError, column_wcs

__all__ = [
    "KINDS",
    "Camera",
    "Footprint",
    "FootprintError",
    "Instrument",
    "NotRecognisedError",
    "all_instruments",
    "column_wcs",
    "for_detector",
    "for_row",
    "get",
    "pixel_wcs_cards",
    "recognise",
    "register",
    "wcs_from_cards",
]

#: Data kinds an exposure can be, with what they mean. Script manifests accept some of them.
KINDS: dict[str, str] = {
    "events": "an X-ray event list (photon positions, times and energies on a sky pixel grid)",
    "exposure-map": "an exposure map only: the footprint is known, there are no events to process",
    "longslit-frame": "a raw optical long-slit CCD frame",
}
#: Kinds holding data a script can process (selected by default when a session finds coverage).
PROCESSABLE_KINDS: frozenset[str] = frozenset({"events", "longslit-frame"})


@dataclass(frozen=True)
class Camera:
    """One camera (detector) of an instrument, as tables and the viewer show it."""

    name: str  #: the ``camera`` value of its metadata rows (e.g. ``EMOS1``, ``ACIS-S``)
    label: str  #: short label for headings (``MOS1``)
    colour: str  #: CSS colour of its table and footprint

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "label": self.label, "colour": self.colour}


@dataclass
class Footprint:
    """What one file contributes to the index: its metadata row and its footprint MOC, and the
    WCS of its pixel frame as FITS cards (``pixel_wcs_cards``), kept so that launching a run
    converts regions to the file's pixels without opening it."""

    meta: dict[str, Any]
    moc: MOC
    pixel_wcs: dict[str, Any] | None = None


def pixel_wcs_cards(wcs: WCS) -> dict[str, Any]:
    """A pixel-frame WCS as JSON-ready FITS cards (``wcs_from_cards`` makes it again)."""
    return {key: value for key, value in wcs.to_header(relax=True).items() if key}


def wcs_from_cards(cards: dict[str, Any]) -> WCS:
    """The WCS of ``pixel_wcs_cards``; ValueError if the cards do not describe a celestial one."""
    wcs = WCS(fits.Header(cards))
    if not wcs.has_celestial:
        raise ValueError("the stored pixel WCS is not celestial")
    return wcs


class Instrument(ABC):
    """The interface every instrument module implements (see the module docstring)."""

    #: registry key, ``<mission>-<instrument>`` in lower case (``xmm-epic``)
    key: ClassVar[str]
    #: ``mission`` value of the metadata rows (``XMM``, ``CHANDRA``)
    mission: ClassVar[str]
    #: ``instrument`` value of the metadata rows (``EPIC``, ``ACIS``)
    name: ClassVar[str]
    #: human title (``XMM-Newton EPIC``)
    title: ClassVar[str]
    #: data kinds its files can be (keys of ``KINDS``)
    kinds: ClassVar[tuple[str, ...]]
    #: its cameras in display order
    cameras: ClassVar[tuple[Camera, ...]]
    #: columns (upper case) an imaging pass reads for ``imaging_mask`` and ``energy_ev``
    imaging_columns: ClassVar[tuple[str, ...]] = ()
    #: radius around the pointing holding the whole field of view of any camera [arcmin]
    field_radius_arcmin: ClassVar[float] = 16.0
    #: calibrated energy band of its spectra [keV] (plots show this range); None: not X-ray
    energy_range_kev: ClassVar[tuple[float, float] | None] = None
    #: width of one PI value of its spectra's channels [eV] (a channel is SPECDELT PI values)
    pi_channel_ev: ClassVar[float] = 1.0

    @abstractmethod
    def recognise(self, hdul: fits.HDUList) -> bool:
        """True if the opened file is one of this instrument's (from its headers only)."""

    @abstractmethod
    def describe(self, hdul: fits.HDUList, depth: int) -> Footprint:
        """Metadata row and footprint MOC (HEALPix order ``depth``) of a recognised file.

        Raises :class:`FootprintError` (one line, for the build report) when it cannot be indexed.
        """

    def pixel_wcs(self, path: Path) -> WCS:
        """The celestial WCS of the file's DS9 ``physical`` pixels (1-based FITS pixels).

        Default: the column WCS of the X/Y columns of the ``EVENTS`` table. Raises
        :class:`FootprintError` when the file has none. (The index keeps it: see
        :meth:`header_pixel_wcs` and ``Footprint.pixel_wcs``.)
        """
        try:
            header = fits.getheader(path, "EVENTS")
        except (OSError, KeyError) as exc:
            raise FootprintError(f"cannot read the event list {Path(path).name}: {exc}") from None
        wcs = column_wcs(header)
        if wcs is None:
            raise FootprintError(
                f"the event list {Path(path).name} has no X/Y sky coordinates (column WCS)"
            )
        return wcs

    def header_pixel_wcs(self, hdul: fits.HDUList) -> WCS | None:
        """:meth:`pixel_wcs` of an opened file (None when it has none), for the index build."""
        try:
            return column_wcs(hdul["EVENTS"].header)
        except KeyError:
            return None

    def imaging_mask(self, camera: str, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Events of a chunk (``imaging_columns``, upper case) passing the standard filters."""
        return np.ones(len(next(iter(columns.values()))), dtype=bool)

    def energy_ev(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Energies [eV] of the events of a chunk."""
        raise NotImplementedError(f"{self.title} has no event energies")

    def camera(self, name: str) -> Camera | None:
        return next((c for c in self.cameras if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """What ``/api/instruments`` says about it."""
        return {
            "key": self.key,
            "mission": self.mission,
            "instrument": self.name,
            "title": self.title,
            "kinds": list(self.kinds),
            "cameras": [c.to_json() for c in self.cameras],
        }


_REGISTRY: dict[str, Instrument] = {}
_loaded = False


def register(cls: type[Instrument]) -> type[Instrument]:
    """Class decorator: add an instrument to the registry (one instance per class)."""
    instance = cls()
    if instance.key in _REGISTRY and type(_REGISTRY[instance.key]) is not cls:
        raise ValueError(f"two instruments registered as {instance.key!r}")
    unknown = set(instance.kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown data kinds {sorted(unknown)}")
    _REGISTRY[instance.key] = instance
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    _loaded = True


def all_instruments() -> list[Instrument]:
    """Every registered instrument, in a stable order (by key)."""
    _load()
    return [_REGISTRY[key] for key in sorted(_REGISTRY)]


def get(key: str) -> Instrument:
    """The instrument registered as ``key`` (KeyError if none)."""
    _load()
    return _REGISTRY[key]


def for_row(row: dict[str, Any]) -> Instrument:
    """The instrument of a metadata row (by its ``mission`` and ``instrument``); KeyError."""
    for instrument in all_instruments():
        if instrument.mission == row.get("mission") and instrument.name == row.get("instrument"):
            return instrument
    raise KeyError(f"no instrument {row.get('mission')}/{row.get('instrument')} is registered")


def for_detector(telescope: str, detector: str) -> Instrument | None:
    """The instrument of a product's ``TELESCOP`` and ``INSTRUME`` (its name or one of its
    cameras' names, any case), or None."""
    telescope, detector = telescope.strip().upper(), detector.strip().upper()
    for instrument in all_instruments():
        names = {instrument.name.upper(), *(c.name.upper() for c in instrument.cameras)}
        if instrument.mission.upper() == telescope and detector in names:
            return instrument
    return None


def recognise(hdul: fits.HDUList) -> Instrument:
    """The instrument whose module recognises the opened file; :class:`NotRecognisedError`."""
    for instrument in all_instruments():
        if instrument.recognise(hdul):
            return instrument
    primary = hdul[0].header
    header = hdul[1].header if len(hdul) > 1 else primary
    telescope = str(primary.get("TELESCOP", header.get("TELESCOP", ""))).strip()
    detector = str(primary.get("INSTRUME", header.get("INSTRUME", ""))).strip()
    raise NotRecognisedError(
        f"no registered instrument recognises this file (TELESCOP={telescope or '-'}, "
        f"INSTRUME={detector or '-'}; known: {', '.join(i.title for i in all_instruments())})"
    )


def camera_order() -> dict[tuple[str, str], int]:
    """``{(mission, camera): rank}``: the display order of every camera of every instrument."""
    order: dict[tuple[str, str], int] = {}
    for instrument in all_instruments():
        for camera in instrument.cameras:
            order[(instrument.mission, camera.name)] = len(order)
    return order
