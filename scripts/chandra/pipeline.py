"""From the run input to region-selected ACIS events, chip areas and exposures.

For each selected ACIS observation (the stages of :func:`xmm.run.prepare`, without flare
screening: the level-2 good time is used as it is):

1. **read events** (:meth:`AcisObservation.read`): one streaming pass in row chunks. CIAO's
   standard filter (``indexer.instruments.chandra_acis.standard_filter``: ASCA grade in
   ``GOOD_GRADES`` = 0, 2, 3, 4, 6 and ``status == 0`` when the list has a status column); the
   events of each region (time, PI channel, ccd_id, x, y) are kept, selected in the list's own
   x/y sky pixels (the runner's ``regions_pixel``). Every filtered event also teaches where its
   chip is on the sky (level-2 files carry no chip geometry): with chip coordinates (``chipx``,
   ``chipy``, in every archive level-2 list) the affine map sky -> chip pixels, fitted by least
   squares over the chip's events (:class:`xmm.footprint.CcdGeometry`, as for EPIC's raw
   pixels; sky on chip pixels, so that the 16" dither averages out without biasing the
   scale), and the chip's pixel window (1..1024); without
   them (a cutout) the convex outline of the chip's events.
2. **extract** (:meth:`AcisObservation.extract`): per-chip good time = the chip's GTI table
   (:mod:`chandra.events`); events outside it are dropped (both ends of a GTI are in it, as in
   CIAO's range filters). A chip with at least ``MIN_EVENTS_PER_CHIP`` events (the index's
   threshold) covers the sky points whose fitted chip coordinates fall in its pixel window (the
   chip as the dither-averaged exposure sees it, whose area is the chip's own) and inside the
   outline of its events; without chip coordinates, its events' outline grown by
   ``HULL_MARGIN``. The area of each region on each chip is measured on a lattice of at most
   ``AREA_STEP`` sky pixels (:func:`xmm.footprint.live_area`), so chip edges, gaps and chips
   that were off drop out. Exposure of a region = sum over its chips of the area fraction on
   the chip x the chip's GTI total x its dead-time correction (``DTCOR``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chandra.events import AcisEventList
from indexer.instruments.chandra_acis import (
    GOOD_GRADES,
    MIN_EVENTS_PER_CHIP,
    STANDARD_FILTER,
    camera_from_sim_z,
    standard_filter,
)
from xmm import gti as gtimod
from xmm.events import DEFAULT_CHUNK_ROWS
from xmm.footprint import CcdGeometry, EventHull, live_area
from xmm.pipeline import (
    EventObservation,
    ExtraRegions,
    RegionEvents,
    open_observation,
)
from xmm.provenance import Provenance
from xmm.run import prepare as prepare_observations

#: Without chip coordinates, a chip's events' outline is grown by this much [sky pixels].
HULL_MARGIN = 0.5
#: Level-2 lists carry no bad-pixel tables (bad pixels are already filtered out of the events).
NO_BAD_PIXELS = np.zeros((0, 3), np.int64)
#: Live areas are measured on lattices no coarser than this for small regions [sky pixels].
AREA_STEP = 0.125


@dataclass
class AcisObservation(EventObservation):
    """One ACIS observation of the run input, carried through the stages."""

    #: CIAO's time filters (``time=start:stop``) keep events at the end of a GTI.
    GTI_CLOSED = True

    events: AcisEventList
    geometry: dict[int, CcdGeometry | EventHull] = field(default_factory=dict)
    chip_events: dict[int, int] = field(default_factory=dict)

    @property
    def camera(self) -> str:
        """``ACIS-I`` or ``ACIS-S`` as the index says (``SIM_Z`` when the input does not)."""
        sim_z = self.events.keyword("SIM_Z")
        return str(
            self.meta.get("camera")
            or camera_from_sim_z(float(sim_z) if sim_z is not None else None)
            or "ACIS"
        )

    def read(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        ev = self.events
        parts: dict[str, list[RegionEvents]] = {name: [] for name in self.regions}
        for rec in ev.record_chunks(chunk_rows):
            self.n_read += len(rec)
            status = ev.column(rec, "status") if ev.has_status else None
            good = np.flatnonzero(standard_filter(ev.column(rec, "grade"), status))
            self.n_standard += len(good)
            x = ev.column(rec, "x", good).astype(np.float64)
            y = ev.column(rec, "y", good).astype(np.float64)
            ccd = ev.column(rec, "ccd_id", good)
            self._learn_chips(rec, good, x, y, ccd)
            self.select_regions(parts, rec, good, x, y, ev.column(rec, "pi", good), ccd)
        self.selected = {name: RegionEvents.concat(p) for name, p in parts.items()}

    def _learn_chips(self, rec, rows, x, y, ccd) -> None:
        """Add filtered events (``rows`` of block ``rec``, at sky x, y on chips ccd) to the
        geometry of their chips."""
        ev = self.events
        if ev.has_chip_coordinates:
            chipx, chipy = ev.column(rec, "chipx", rows), ev.column(rec, "chipy", rows)
        for chip in np.unique(ccd):
            on = ccd == chip
            self.chip_events[int(chip)] = self.chip_events.get(int(chip), 0) + int(on.sum())
            if ev.has_chip_coordinates:
                geom = self.geometry.setdefault(
                    int(chip), CcdGeometry(int(chip), sky_scatters=True)
                )
                geom.add(x[on], y[on], chipx[on], chipy[on])
            else:
                self.geometry.setdefault(int(chip), EventHull()).add(x[on], y[on])

    def extract(self) -> None:
        """Chip good time; drop events outside it; live areas of the regions on the chips."""
        self.good_time = {chip: info.gti.copy() for chip, info in self.events.ccds.items()}
        self.keep_good_time()
        solved = {
            chip: geom
            for chip, geom in sorted(self.geometry.items())
            if self.chip_events.get(chip, 0) >= MIN_EVENTS_PER_CHIP
            and gtimod.total(self.good_time.get(chip, np.zeros((0, 2)))) > 0
            and (
                geom.solve(NO_BAD_PIXELS)
                if isinstance(geom, CcdGeometry)
                else geom.solve(HULL_MARGIN)
            )
        }
        self.areas = {
            name: live_area(region, solved, min_step=AREA_STEP)
            for name, region in self.regions.items()
        }

    def filters_text(self) -> str:
        if self.events.has_status:
            return STANDARD_FILTER
        return f"grade={','.join(map(str, GOOD_GRADES))} (no status column)"


open_acis = functools.partial(
    open_observation, event_list=AcisEventList, observation=AcisObservation
)


def prepare(
    inp: dict[str, Any],
    provenance: Provenance,
    extra_regions_for: ExtraRegions | None = None,
) -> list[AcisObservation]:
    """Read and extract every ACIS observation of the input (fails if none is usable)."""
    return prepare_observations(
        inp,
        screen_flares=None,
        provenance=provenance,
        extra_regions_for=extra_regions_for,
        opener=open_acis,
    )
