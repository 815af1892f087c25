"""The common path of every script: from the run input to screened, region-selected events.

For each selected (observation, camera) with an event list:

1. **read events** (:meth:`Observation.read`): one streaming pass over the list in row chunks.
   Standard filters (:func:`indexer.instruments.xmm_epic.standard_filter`); the high-energy single events go to the
   flare curve; the events of each named region (source, background, ...) are kept (TIME, PI,
   CCDNR, X, Y); a strided sample feeds the per-CCD geometry (:mod:`xmm.footprint`).
2. **screen flares** (:meth:`Observation.screen`): per-CCD good time = the list's own good time
   (``STDGTInn`` and its recorded time selection) intersected with the flare good time.
3. **extract** (:meth:`Observation.extract`): events outside their CCD's good time are dropped;
   live area of each region per CCD (BACKSCAL); exposure of each region = live time of the CCDs
   under it, weighted by the live area on each.

Regions: the per-observation DS9 ``physical`` text of the input (``regions_pixel``, the event
list's X/Y, computed by the runner with the list's column WCS) is used as given; when it is
absent the ICRS DS9 text is converted here with the same column WCS (``regions`` ``to_pixel``).

:class:`EventObservation` holds what does not depend on the instrument (the selected events, the
per-CCD good time, the live areas, and the exposures that follow); :class:`Observation` is the
EPIC one and ``chandra.pipeline.AcisObservation`` the ACIS one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from indexer.instruments.xmm_epic import STANDARD_FILTERS, standard_filter
from xmm import gti as gtimod
from xmm.events import DEFAULT_CHUNK_ROWS, EventList, EventListError, EventTable
from xmm.flares import (
    EXPRESSION,
    THRESHOLD,
    FlareCurve,
    already_screened,
    flag_mask,
    high_energy_singles,
)
from xmm.footprint import CcdGeometry, LiveArea, live_area
from xmm.selection import Region, RegionError, from_sky_ds9, parse_physical

FLARE_BIN = 100.0  # s
ExtraRegions = Callable[[dict[str, Any], dict[str, Region]], dict[str, Region]]
GEOMETRY_SAMPLE = 400_000  # events per list used to learn the CCD geometry


class SkipObservation(Exception):
    """This observation cannot give a product; the message says why (shown to the user)."""


@dataclass
class RegionEvents:
    """Events of one region passing the standard filters (and, after extract, the good time).

    ``pattern``: the event pattern (EPIC PATTERN, ACIS grade), for pile-up checks.
    """

    time: NDArray[np.float64]
    pi: NDArray[np.int32]
    ccd: NDArray[np.int16]
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    pattern: NDArray[np.int16] = field(default_factory=lambda: np.zeros(0, np.int16))

    @classmethod
    def concat(cls, parts: list[RegionEvents]) -> RegionEvents:
        if not parts:
            z = np.zeros(0)
            return cls(z, z.astype(np.int32), z.astype(np.int16), z, z, z.astype(np.int16))
        return cls(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__)
        )

    def take(self, mask: NDArray[np.bool_]) -> RegionEvents:
        return RegionEvents(
            self.time[mask], self.pi[mask], self.ccd[mask], self.x[mask], self.y[mask],
            self.pattern[mask],
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.time)


@dataclass
class EventObservation:
    """One (observation, camera) of the run input, carried through the stages: any instrument.

    A subclass reads the events (:meth:`read`: ``selected``, ``n_read``, ``n_standard``), sets
    the per-CCD good time (``good_time``) and the live areas of the regions (``areas``, in
    :meth:`extract`); exposures and good time under a region follow from those here.
    """

    #: Whether an event at the very end of a good interval is in it (``xmm.gti.contains``).
    GTI_CLOSED = False

    meta: dict[str, Any]
    events: EventTable
    regions: dict[str, Region]
    selected: dict[str, RegionEvents] = field(default_factory=dict)
    good_time: dict[int, NDArray] = field(default_factory=dict)
    areas: dict[str, LiveArea] = field(default_factory=dict)
    n_read: int = 0
    n_standard: int = 0

    @property
    def obsid(self) -> str:
        return str(self.meta.get("obsid") or self.events.obsid)

    @property
    def camera(self) -> str:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return f"{self.obsid} {self.camera}"

    def read(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        raise NotImplementedError

    def extract(self) -> None:
        raise NotImplementedError

    def filters_text(self) -> str:
        raise NotImplementedError

    def select_regions(
        self,
        parts: dict[str, list[RegionEvents]],
        records: NDArray,
        rows: NDArray,
        x: NDArray,
        y: NDArray,
        pi: NDArray,
        ccd: NDArray,
    ) -> None:
        """Add the events of each region among ``rows`` of a block of ``records`` to ``parts``.

        ``x``, ``y``, ``pi``, ``ccd`` are the values of those rows (sky pixels, PI, CCD).
        """
        pattern_column = next((c for c in ("PATTERN", "GRADE") if c in self.events.columns), None)
        for name, region in self.regions.items():
            m = region.mask(x, y)
            pattern = (
                self.events.column(records, pattern_column, rows[m]).astype(np.int16)
                if pattern_column
                else np.zeros(int(m.sum()), np.int16)
            )
            parts[name].append(
                RegionEvents(
                    self.events.column(records, "TIME", rows[m]).astype(np.float64),
                    pi[m].astype(np.int32),
                    ccd[m].astype(np.int16),
                    x[m],
                    y[m],
                    pattern,
                )
            )

    def keep_good_time(self) -> int:
        """Drop selected events outside the good time of their CCD; returns how many went."""
        dropped = 0
        for name, sel in self.selected.items():
            keep = np.zeros(len(sel), dtype=bool)
            for ccd, good in self.good_time.items():
                on = np.flatnonzero(sel.ccd == ccd)
                keep[on] = gtimod.contains(good, sel.time[on], self.GTI_CLOSED)
            self.selected[name] = sel.take(keep)
            dropped += int(np.count_nonzero(~keep))
        return dropped

    def good_time_total(self, ccd: int) -> float:
        """Good time [s] of a CCD (on time, before the dead-time correction)."""
        return gtimod.total(self.good_time[ccd])

    def livetime(self, ccd: int) -> float:
        """Live time [s] of a CCD within its good time."""
        return gtimod.total(self.good_time[ccd]) * self.events.ccds[ccd].live_fraction

    def exposure(self, name: str) -> float:
        """Live time of the CCDs under region ``name``, weighted by the live area on each [s]."""
        weights = self.areas[name].weights()
        return float(sum(w * self.livetime(c) for c, w in weights.items()))

    def region_gti(self, name: str) -> NDArray:
        """Good time of the CCDs under region ``name`` (union)."""
        return gtimod.union(*(self.good_time[c] for c in self.areas[name].weights()))


@dataclass
class Observation(EventObservation):
    """One (observation, camera) of an EPIC event list, carried through the stages."""

    events: EventList
    flare_curve: FlareCurve | None = None
    geometry: dict[int, CcdGeometry] = field(default_factory=dict)
    flare_gti: NDArray | None = None
    #: what the screening did: status ('screened', 'already screened', 'off'), threshold,
    #: seconds removed, the reason for not screening (see :meth:`screening_cards`)
    screening: dict[str, Any] = field(default_factory=dict)

    @property
    def camera(self) -> str:
        return self.events.camera

    # --- stage 1 -----------------------------------------------------------------------------

    def read(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        ev, cam = self.events, self.camera
        # the high-energy single events are kept and binned once the good time is known (the
        # per-CCD good time is stored after the rows)
        self.flare_curve = FlareCurve(cam, FLARE_BIN)
        he_mask = flag_mask(cam, ev.header)
        stride = max(1, ev.n_rows // GEOMETRY_SAMPLE)
        parts: dict[str, list[RegionEvents]] = {name: [] for name in self.regions}
        geometry: dict[int, CcdGeometry] = {}
        for rec in ev.record_chunks(chunk_rows):
            self.n_read += len(rec)
            flag, pattern = ev.column(rec, "FLAG"), ev.column(rec, "PATTERN")
            pi_all = ev.column(rec, "PI")
            he = np.flatnonzero(high_energy_singles(cam, pi_all, pattern, flag, he_mask))
            self.flare_curve.add(ev.column(rec, "TIME", he))
            good = np.flatnonzero(standard_filter(cam, flag, pattern))
            self.n_standard += len(good)
            x = ev.column(rec, "X", good).astype(np.float64)
            y = ev.column(rec, "Y", good).astype(np.float64)
            ccd_good = ev.column(rec, "CCDNR", good)
            self.select_regions(parts, rec, good, x, y, pi_all[good], ccd_good)
            # the geometry sample: every stride-th good event, from the start of the list
            offset = (-(self.n_read - len(rec))) % stride
            sample = np.arange(offset, len(good), stride)
            rows = good[sample]
            ccd = ccd_good[sample].astype(np.int64)
            rawx, rawy = ev.column(rec, "RAWX", rows), ev.column(rec, "RAWY", rows)
            for c in np.unique(ccd):
                on = ccd == c
                geom = geometry.setdefault(int(c), CcdGeometry(int(c)))
                geom.add(x[sample][on], y[sample][on], rawx[on], rawy[on])
        self.selected = {name: RegionEvents.concat(p) for name, p in parts.items()}
        self.geometry = geometry

    # --- stage 2 -----------------------------------------------------------------------------

    def camera_gti(self) -> NDArray:
        return gtimod.union(*(c.gti for c in self.events.ccds.values()))

    def screen(self, enabled: bool, threshold: float | None = None, rescreen: bool = False) -> str:
        """Set the per-CCD good time; returns a log line describing the screening.

        ``enabled``: screen with the SAS rule (:mod:`xmm.flares`), unless the list's headers show
        it was already screened and ``rescreen`` is False.
        """
        ccds = self.events.ccds
        if not ccds:
            raise SkipObservation("the event list has no per-CCD good time (STDGTInn) extension")
        before = gtimod.total(self.camera_gti())
        limit = THRESHOLD[self.camera] if threshold is None else threshold
        done = already_screened(self.events.header, self.events.primary_header)
        if enabled and done and not rescreen:
            status, reason = "already screened", f"the list was already screened ({done})"
            enabled = False
        elif enabled:
            status, reason = "screened", ""
        else:
            status, reason = "off", "screening not asked for"
        if enabled:
            assert self.flare_curve is not None
            self.flare_gti = self.flare_curve.good_time(self.camera_gti(), limit)
            self.good_time = {c: gtimod.intersect(i.gti, self.flare_gti) for c, i in ccds.items()}
        else:
            self.good_time = {c: i.gti.copy() for c, i in ccds.items()}
        after = gtimod.total(gtimod.union(*self.good_time.values()))
        self.screening = {
            "status": status, "threshold": limit, "bin": FLARE_BIN,
            "removed": before - after, "before": before, "reason": reason,
            "expression": EXPRESSION[self.camera],
        }  # fmt: skip
        if after <= 0:
            raise SkipObservation(
                "no good time left"
                + (" after flare screening (the whole observation is flared)" if enabled else "")
            )
        if status == "off":
            return f"{self.label}: flare screening off; good time {after:.0f} s"
        if status == "already screened":
            return (
                f"{self.label}: flare screening skipped: {reason}; good time {after:.0f} s "
                "(set rescreen to screen it again)"
            )
        return (
            f"{self.label}: flare screening (evselect {EXPRESSION[self.camera]}, timebinsize "
            f"{FLARE_BIN:.0f} s on the good-time grid; tabgtigen RATE <= {limit} counts/s): "
            f"removed {before - after:.0f} s, kept {after:.0f} s of {before:.0f} s good time "
            f"({100 * after / before:.1f} %)"
        )

    def screening_cards(self) -> list[tuple]:
        """FITS cards saying what the flare screening did."""
        s = self.screening
        if not s:
            return []
        cards: list[tuple] = [
            ("FLSCREEN", s["status"], "flare screening: screened/already screened/off"),
            ("FLTHRESH", float(s["threshold"]), "[count/s] tabgtigen RATE<= threshold"),
            ("FLBINSIZ", float(s["bin"]), "[s] flare light-curve bin size"),
            ("FLREMOVE", round(float(s["removed"]), 3), "[s] good time removed by screening"),
        ]
        if s["status"] == "screened":
            cards.append(("HISTORY", f"flare screening: evselect {s['expression']} timebinsize="
                          f"{s['bin']:g}; tabgtigen RATE<={s['threshold']}; removed "
                          f"{s['removed']:.1f} s of {s['before']:.1f} s"))  # fmt: skip
        elif s["reason"]:
            cards.append(("HISTORY", f"flare screening not applied: {s['reason']}"))
        return cards

    # --- stage 3 -----------------------------------------------------------------------------

    def extract(self) -> None:
        """Drop events outside the good time of their CCD; live areas of the regions."""
        self.keep_good_time()
        solved = {}
        for ccd, geom in sorted(self.geometry.items()):
            info = self.events.ccds.get(ccd)
            if info is None or gtimod.total(self.good_time.get(ccd, np.zeros((0, 2)))) <= 0:
                continue
            if geom.solve(info.bad_pixels):
                solved[ccd] = geom
        self.areas = {name: live_area(region, solved) for name, region in self.regions.items()}

    def filters_text(self) -> str:
        return STANDARD_FILTERS[self.camera]


def regions_for(obs: dict[str, Any], inp: dict[str, Any], events: EventTable) -> dict[str, Region]:
    """The source (and background, if any) regions of an observation in its X/Y pixels."""
    pixel = obs.get("regions_pixel") or {}
    out: dict[str, Region] = {}
    for name in ("source", "background"):
        text = pixel.get(name)
        sky = (inp.get("regions") or {}).get(name)
        try:
            if text:
                out[name] = parse_physical(text)
            elif sky and sky.get("ds9"):
                out[name] = from_sky_ds9(sky["ds9"], events.wcs)
        except RegionError as exc:
            raise SkipObservation(f"the {name} region cannot be used: {exc}") from None
    if "source" not in out:
        raise SkipObservation("no source region was given")
    return out


def open_observation(
    obs: dict[str, Any],
    inp: dict[str, Any],
    extra_for: ExtraRegions | None = None,
    *,
    event_list: type[EventTable] = EventList,
    observation: type[EventObservation] = Observation,
) -> EventObservation:
    """Check and open one observation of the input; raises SkipObservation with the reason.

    ``extra_for(obs, regions)`` may add named regions whose events are collected in the same
    pass (e.g. the field of an image). ``event_list`` and ``observation`` are the instrument's
    classes (EPIC by default).
    """
    if obs.get("source") == "expmap" or obs.get("kind") == "exposure-map":
        raise SkipObservation(
            "only an exposure map is archived for it (no event list), so it cannot be processed"
        )
    path = obs.get("path")
    if not path:
        raise SkipObservation("the input gives no event-list path")
    try:
        events = event_list(path)
    except EventListError as exc:
        raise SkipObservation(str(exc)) from None
    regions = regions_for(obs, inp, events)
    if extra_for is not None:
        regions.update(extra_for(obs, regions))
    return observation(obs, events, regions)
