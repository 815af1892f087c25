"""Where each CCD sees the sky, learnt from the events; the live area of a region (BACKSCAL).

For every CCD, from events that pass the standard filter (a strided sample is enough):

- the affine map sky ``(X, Y)`` -> raw ``(RAWX, RAWY)``, by least squares over the events (the
  pointing is stable to a fraction of a raw pixel: residuals are the 0.29-pixel rms of the raw
  pixel quantisation itself);
- the raw window: the range of ``RAWX``/``RAWY`` with events (so windowed modes work too);
- the convex hull of the events in X/Y, which carries the field-of-view edge (outer MOS CCDs
  are clipped by the circular field stop; out-of-FOV events fail the standard filter).

A sky position is **live** on a CCD when its raw position lies inside the raw window (pixel
edges at ``k +- 0.5``), inside the event hull grown by one raw pixel, and not on a bad pixel of
``BADPIXnn``. The live area of a region is measured by sampling it on a square lattice of sky
pixels (step chosen for at most ``MAX_SAMPLES`` points, never coarser than 1/4 raw pixel for
small regions) with the same region masks as the events: area = live points x step^2. Chip gaps,
dead CCDs, the field stop and bad columns drop out, as in SAS ``backscale``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import ConvexHull, QhullError

from xmm.selection import Region

MAX_SAMPLES = 4_000_000
BLOCK_SAMPLES = 400_000
MIN_EVENTS_FOR_CCD = 20
_SKY0 = 25921.0  # subtract before fitting, for numerical conditioning


class LiveTest(Protocol):
    """What :func:`live_area` asks of a CCD: which sky points it sees."""

    def live(self, x: NDArray, y: NDArray) -> NDArray[np.bool_]: ...


@dataclass
class EventHull:
    """Convex hull of event positions [sky pixels] given in blocks, then grown by a margin.

    Only the hull's vertices are kept between blocks, so memory does not grow with the events.
    """

    points: NDArray = field(default_factory=lambda: np.zeros((0, 2)))
    half_planes: NDArray | None = None

    def add(self, x: NDArray, y: NDArray) -> None:
        if len(x) == 0:
            return
        pts = np.vstack([self.points, np.column_stack([x, y]).astype(np.float64)])
        self.points = _hull_vertices(pts)

    def solve(self, margin: float) -> bool:
        """Fix the hull grown by ``margin`` [sky pixels]; False when it has no area."""
        if len(self.points) < 3:
            return False
        try:
            self.half_planes = _half_planes(self.points, margin)
        except QhullError:
            return False
        return True

    def inside(self, x: NDArray, y: NDArray) -> NDArray[np.bool_]:
        """Whether points ``(x, y)`` lie in the grown hull (after :meth:`solve`)."""
        assert self.half_planes is not None
        ok = np.ones(np.shape(x), dtype=bool)
        for nx, ny, c in self.half_planes:
            ok &= x * nx + y * ny <= c
        return ok

    #: As a :class:`LiveTest`: the hull is where the CCD sees the sky.
    live = inside


@dataclass
class CcdGeometry:
    """Accumulates one CCD's sample of events, then answers 'is this sky point live?'.

    ``sky_scatters``: the events' sky positions scatter about the CCD's mean sky <-> raw map (as
    Chandra's dither spreads them over 16"), so the map is fitted as sky on raw pixels and then
    inverted: a least-squares fit must have its scatter in the fitted quantity, or its slope is
    biased (by 0.15 % for ACIS chips, which would grow each chip by 1.5 pixels). EPIC events sit
    at their raw pixel's sky position, and the raw quantisation is in the fitted raw pixels.
    """

    ccd: int
    sky_scatters: bool = False
    n: int = 0
    normal: NDArray = field(default_factory=lambda: np.zeros((3, 3)))
    rhs: NDArray = field(default_factory=lambda: np.zeros((3, 2)))
    raw_normal: NDArray = field(default_factory=lambda: np.zeros((3, 3)))
    sky_rhs: NDArray = field(default_factory=lambda: np.zeros((3, 2)))
    raw_min: NDArray = field(default_factory=lambda: np.full(2, np.inf))
    raw_max: NDArray = field(default_factory=lambda: np.full(2, -np.inf))
    hull: EventHull = field(default_factory=EventHull)
    # solved
    to_raw: NDArray | None = None
    bad: NDArray | None = None
    _good: NDArray | None = None

    def add(self, x: NDArray, y: NDArray, rawx: NDArray, rawy: NDArray) -> None:
        if len(x) == 0:
            return
        a = np.column_stack([x - _SKY0, y - _SKY0, np.ones(len(x))])
        raw = np.column_stack([rawx, rawy]).astype(np.float64)
        if self.sky_scatters:
            r = np.column_stack([raw, np.ones(len(x))])
            self.raw_normal += r.T @ r
            self.sky_rhs += r.T @ a[:, :2]
        else:
            self.normal += a.T @ a
            self.rhs += a.T @ raw
        self.n += len(x)
        self.raw_min = np.minimum(self.raw_min, raw.min(axis=0))
        self.raw_max = np.maximum(self.raw_max, raw.max(axis=0))
        self.hull.add(x, y)

    def solve(self, bad_pixels: NDArray[np.int64]) -> bool:
        """Fit the sky -> raw map and the hull; False when the CCD has too few events."""
        if self.n < MIN_EVENTS_FOR_CCD or len(self.hull.points) < 3:
            return False
        try:
            if self.sky_scatters:
                to_sky = np.linalg.solve(self.raw_normal, self.sky_rhs)  # (3, 2)
                inverse = np.linalg.inv(to_sky[:2])
                self.to_raw = np.vstack([inverse, -to_sky[2] @ inverse])
            else:
                self.to_raw = np.linalg.solve(self.normal, self.rhs)  # (3, 2)
        except np.linalg.LinAlgError:
            return False
        if not self.hull.solve(margin=self.raw_pixel_size()):
            return False
        nx = int(max(self.raw_max[0], bad_pixels[:, 0].max(initial=0))) + 2
        ny = int(max(self.raw_max[1], (bad_pixels[:, 1] + bad_pixels[:, 2]).max(initial=0))) + 2
        bad = np.zeros((nx, ny), dtype=bool)
        for rx, ry, ext in bad_pixels:
            if 0 <= rx < nx:
                bad[rx, max(ry, 0) : max(ry + ext, 0)] = True
        self.bad = bad
        return True

    def raw_pixel_size(self) -> float:
        """Size of a raw pixel [sky pixels] (22 for MOS, 82 for pn, 1 for ACIS)."""
        assert self.to_raw is not None
        return 1.0 / math.hypot(self.to_raw[0, 0], self.to_raw[1, 0])

    def live(self, x: NDArray, y: NDArray) -> NDArray[np.bool_]:
        """Whether sky points ``(x, y)`` fall on a live, good pixel of this CCD."""
        assert self.to_raw is not None
        (ax, ay), (bx, by), (cx, cy) = self.to_raw
        dx, dy = x - _SKY0, y - _SKY0
        fx = ax * dx + bx * dy + cx
        fy = ay * dx + by * dy + cy
        (x0, y0), (x1, y1) = self.raw_min - 0.5, self.raw_max + 0.5
        ok = (fx >= x0) & (fx < x1) & (fy >= y0) & (fy < y1)
        idx = np.flatnonzero(ok)
        if len(idx):
            good = self.good_pixels()
            rx = np.rint(fx[idx]).astype(np.int64) - int(self.raw_min[0])
            ry = np.rint(fy[idx]).astype(np.int64) - int(self.raw_min[1])
            rx = np.clip(rx, 0, good.shape[0] - 1)
            ry = np.clip(ry, 0, good.shape[1] - 1)
            ok[idx] = good[rx, ry]
        return ok

    def good_pixels(self) -> NDArray[np.bool_]:
        """Raw-pixel map over the raw window: inside the grown event hull and not bad."""
        if self._good is None:
            assert self.to_raw is not None and self.bad is not None
            (x0, y0), (x1, y1) = self.raw_min.astype(int), self.raw_max.astype(int)
            rx, ry = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1), indexing="ij")
            # raw pixel centres -> sky, by inverting the affine map
            lin, off = self.to_raw[:2].T, self.to_raw[2]
            raw = np.column_stack([rx.ravel(), ry.ravel()]) - off
            sky = np.linalg.solve(lin, raw.T).T + _SKY0
            inside = self.hull.inside(sky[:, 0], sky[:, 1]).reshape(rx.shape)
            bad = self.bad[
                np.clip(rx, 0, self.bad.shape[0] - 1), np.clip(ry, 0, self.bad.shape[1] - 1)
            ]
            self._good = inside & ~bad
        return self._good


def _hull_vertices(points: NDArray) -> NDArray:
    if len(points) < 4:
        return points
    try:
        return points[ConvexHull(points).vertices]
    except QhullError:
        return points


def _half_planes(vertices: NDArray, margin: float) -> NDArray:
    """Rows ``(nx, ny, c)``: the hull grown by ``margin`` is ``n . p <= c`` for every row."""
    hull = ConvexHull(vertices)
    normals = hull.equations[:, :2]  # outward unit normals, n . p + d <= 0 inside
    return np.column_stack([normals, -hull.equations[:, 2] + margin])


@dataclass
class LiveArea:
    """Live area of a region per CCD [sky pixels^2], and the lattice step used [sky pixels]."""

    per_ccd: dict[int, float]
    geometric: float
    step: float

    @property
    def total(self) -> float:
        return float(sum(self.per_ccd.values()))

    def weights(self) -> dict[int, float]:
        """Fraction of the live area on each CCD."""
        tot = self.total
        return {c: a / tot for c, a in self.per_ccd.items() if a > 0} if tot > 0 else {}


def live_area(region: Region, ccds: Mapping[int, LiveTest], min_step: float = 1.0) -> LiveArea:
    """Sample ``region`` on a lattice and count the points live on each CCD.

    The lattice step is a whole multiple of ``min_step`` [sky pixels] (1 for EPIC's 0.05" pixels;
    a fraction for coarser pixels, so that small regions are measured finely), chosen for at most
    ``MAX_SAMPLES`` points in the region's bounding box.
    """
    x0, x1, y0, y1 = region.bbox()
    box_area = max((x1 - x0) * (y1 - y0), min_step * min_step)
    step = min_step * max(1, math.ceil(math.sqrt(box_area / MAX_SAMPLES) / min_step))
    xs = np.arange(math.floor(x0), math.ceil(x1) + 1, step, dtype=np.float64)
    ys = np.arange(math.floor(y0), math.ceil(y1) + 1, step, dtype=np.float64)
    counts = dict.fromkeys(ccds, 0)
    n_region = 0
    single = len(region.includes) == 1
    if single:  # the lattice points in the shape's box, as Shape.mask's own box test keeps them
        bx0, bx1, by0, by1 = region.includes[0].bbox()
        xs = xs[np.searchsorted(xs, bx0, "left") : np.searchsorted(xs, bx1, "right")]
        ys = ys[np.searchsorted(ys, by0, "left") : np.searchsorted(ys, by1, "right")]
    rows_per_block = max(1, BLOCK_SAMPLES // max(len(xs), 1))
    for start in range(0, len(ys), rows_per_block):
        gx, gy = np.meshgrid(xs, ys[start : start + rows_per_block])
        gx, gy = gx.ravel(), gy.ravel()
        inside = _lattice_mask(region, gx, gy) if single else region.mask(gx, gy)
        gx, gy = gx[inside], gy[inside]
        n_region += len(gx)
        for ccd, geom in ccds.items():
            if len(gx) == 0:
                break
            on = geom.live(gx, gy)
            counts[ccd] += int(on.sum())
            gx, gy = gx[~on], gy[~on]
    return LiveArea({c: n * step * step for c, n in counts.items()}, n_region * step * step, step)


def _lattice_mask(region: Region, x: NDArray, y: NDArray) -> NDArray[np.bool_]:
    """``region.mask(x, y)`` for a region of one included shape and points inside that shape's
    bounding box: the shape's own test on every point, without the box tests and the copies
    ``mask`` makes for scattered events (~1/3 of the live-area time); exclusions as in
    ``Region.mask``."""
    inside = region.includes[0]._inside(x, y)
    for shape in region.excludes:
        keep = np.flatnonzero(inside)
        if len(keep):
            inside[keep[shape.mask(x[keep], y[keep])]] = False
    return inside
