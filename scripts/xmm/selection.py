"""Regions in an event list's sky pixels (DS9 ``physical`` = the X/Y column values) and fast masks.

Coordinates are the event list's X/Y column values (1-based FITS pixels of the column WCS, 0.05"
each for EPIC); sizes are in the same pixels and angles in degrees, counter-clockwise from +X, as
DS9 writes them in the ``physical`` frame. Shapes and their edge conventions:

=========  ==========================================  ====================================
shape      DS9 text                                    inside when
=========  ==========================================  ====================================
circle     ``circle(x, y, r)``                         ``d <= r``
annulus    ``annulus(x, y, r_in, r_out)``              ``r_in < d <= r_out``
ellipse    ``ellipse(x, y, a, b, angle)`` (semi-axes)  ``(u/a)^2 + (v/b)^2 <= 1``
box        ``box(x, y, w, h, angle)`` (full sizes)     ``|u| <= w/2 and |v| <= h/2``
polygon    ``polygon(x1, y1, x2, y2, ...)``            even-odd rule (half-open crossings)
=========  ==========================================  ====================================

(``u, v`` are the offsets along the rotated axes.) A region is the union of its included shapes
minus the union of its excluded shapes (DS9 ``-circle(...)``), whatever their order.

Speed: a mask first keeps the points in the shape's bounding box, then tests only those.
Polygons on integer-valued X/Y (the EPIC X/Y columns are integers) use a raster instead: the
even-odd answer at every integer pixel of the bounding box (plus an all-outside border), made once
by a scan-line fill from each pixel row's edge crossings, computed by the very expression of the
point test, and stored one bit a pixel; a point then costs a few integer operations and one table
lookup, in cache-sized chunks. Non-integer points, polygons whose box exceeds ``RASTER_MAX_CELLS``
pixels, and polygons asked about too few points yet to pay for the raster take the point test: a
cell table (``CELLS_PER_SIDE`` cells across the bounding box; a cell no edge comes within one cell
of is wholly inside or outside, decided once at its centre) and, for points in edge cells, the
even-odd test (a scan-line table of sorted crossings on integer Y, else the crossing test over the
edges). Every path gives exactly the answer of the crossing test (``Polygon._inside_crossing``)
within the bounding box, including for points on edges and vertices.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Mask = NDArray[np.bool_]
CELLS_PER_SIDE = 256  # polygon cell table: cells per side of the bounding box
RASTER_MAX_CELLS = 50_000_000  # polygon raster: largest bounding box [pixels] (1 bit each)
RASTER_CHUNK = 1 << 16  # polygon raster: points per lookup step (temporaries stay in cache)
RASTER_MIN_POINTS = 1 / 8  # polygon raster: made after this many points per pixel of the box
_RASTER_BUILD_CELLS = 1 << 22  # polygon raster: pixels filled per step while building it
_SHAPE_RE = re.compile(r"^\s*([+-]?)\s*(circle|ellipse|box|polygon|annulus)\s*\(([^)]*)\)", re.I)
_FRAMES = ("physical", "image", "icrs", "fk5", "fk4", "galactic", "ecliptic", "linear", "wcs")


class RegionError(ValueError):
    """A region text cannot be used (unknown shape, wrong frame, bad numbers)."""


@dataclass(frozen=True)
class Shape:
    """Base of the pixel shapes: ``include`` False for a DS9 exclusion."""

    include: bool

    def bbox(self) -> tuple[float, float, float, float]:
        """``(xmin, xmax, ymin, ymax)`` [sky pixels]."""
        raise NotImplementedError

    def _inside(self, x: NDArray, y: NDArray) -> Mask:
        raise NotImplementedError

    def mask(self, x: NDArray, y: NDArray) -> Mask:
        """Whether each point ``(x, y)`` [sky pixels] is inside the shape (ignores ``include``)."""
        x0, x1, y0, y1 = self.bbox()
        inbox = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        idx = np.flatnonzero(inbox)
        out = np.zeros(np.shape(x), dtype=bool)
        if len(idx):
            out[idx] = self._inside(x[idx], y[idx])
        return out

    def area(self) -> float:
        """Geometric area [sky pixels^2]."""
        raise NotImplementedError

    def ds9(self) -> str:
        raise NotImplementedError

    def fits_row(self) -> tuple[str, list[float], list[float], list[float], float]:
        """``(SHAPE, X, Y, R, ROTANG)`` of a CXC/SAS REGION table row."""
        raise NotImplementedError

    def _sign(self) -> str:
        return "" if self.include else "-"


def _g(v: float) -> str:
    return f"{v:.10g}"


@dataclass(frozen=True)
class Circle(Shape):
    x: float
    y: float
    r: float

    def bbox(self):
        return (self.x - self.r, self.x + self.r, self.y - self.r, self.y + self.r)

    def _inside(self, x, y):
        dx, dy = x - self.x, y - self.y
        return dx * dx + dy * dy <= self.r * self.r

    def area(self):
        return math.pi * self.r**2

    def ds9(self):
        return f"{self._sign()}circle({_g(self.x)},{_g(self.y)},{_g(self.r)})"

    def fits_row(self):
        return ("CIRCLE", [self.x], [self.y], [self.r], 0.0)


@dataclass(frozen=True)
class Annulus(Shape):
    x: float
    y: float
    r_in: float
    r_out: float

    def bbox(self):
        r = self.r_out
        return (self.x - r, self.x + r, self.y - r, self.y + r)

    def _inside(self, x, y):
        dx, dy = x - self.x, y - self.y
        d2 = dx * dx + dy * dy
        return (d2 > self.r_in * self.r_in) & (d2 <= self.r_out * self.r_out)

    def area(self):
        return math.pi * (self.r_out**2 - self.r_in**2)

    def ds9(self):
        return f"{self._sign()}annulus({_g(self.x)},{_g(self.y)},{_g(self.r_in)},{_g(self.r_out)})"

    def fits_row(self):
        return ("ANNULUS", [self.x], [self.y], [self.r_in, self.r_out], 0.0)


def _rotated(x, y, xc, yc, angle_deg):
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    dx, dy = x - xc, y - yc
    return dx * c + dy * s, -dx * s + dy * c


def _rotated_bbox(xc, yc, half_w, half_h, angle_deg, ellipse):
    t = math.radians(angle_deg)
    c, s = abs(math.cos(t)), abs(math.sin(t))
    if ellipse:
        ex = math.hypot(half_w * c, half_h * s)
        ey = math.hypot(half_w * s, half_h * c)
    else:
        ex = half_w * c + half_h * s
        ey = half_w * s + half_h * c
    return (xc - ex, xc + ex, yc - ey, yc + ey)


@dataclass(frozen=True)
class Ellipse(Shape):
    x: float
    y: float
    a: float  # semi-axis along the rotated X axis
    b: float
    angle: float

    def bbox(self):
        return _rotated_bbox(self.x, self.y, self.a, self.b, self.angle, ellipse=True)

    def _inside(self, x, y):
        u, v = _rotated(x, y, self.x, self.y, self.angle)
        return (u / self.a) ** 2 + (v / self.b) ** 2 <= 1.0

    def area(self):
        return math.pi * self.a * self.b

    def ds9(self):
        vals = ",".join(_g(v) for v in (self.x, self.y, self.a, self.b, self.angle))
        return f"{self._sign()}ellipse({vals})"

    def fits_row(self):
        return ("ELLIPSE", [self.x], [self.y], [self.a, self.b], self.angle)


@dataclass(frozen=True)
class Box(Shape):
    x: float
    y: float
    width: float  # full size along the rotated X axis
    height: float
    angle: float

    def bbox(self):
        return _rotated_bbox(
            self.x, self.y, self.width / 2, self.height / 2, self.angle, ellipse=False
        )

    def _inside(self, x, y):
        u, v = _rotated(x, y, self.x, self.y, self.angle)
        return (np.abs(u) <= self.width / 2) & (np.abs(v) <= self.height / 2)

    def area(self):
        return self.width * self.height

    def ds9(self):
        vals = ",".join(_g(v) for v in (self.x, self.y, self.width, self.height, self.angle))
        return f"{self._sign()}box({vals})"

    def fits_row(self):
        return ("ROTBOX", [self.x], [self.y], [self.width, self.height], self.angle)


@dataclass(frozen=True)
class Polygon(Shape):
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    _scanlines: dict = field(default_factory=dict, compare=False, repr=False)

    def bbox(self):
        return (min(self.xs), max(self.xs), min(self.ys), max(self.ys))

    def area(self):
        x, y = np.asarray(self.xs), np.asarray(self.ys)
        return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)

    def ds9(self):
        vals = ",".join(_g(v) for xy in zip(self.xs, self.ys, strict=True) for v in xy)
        return f"{self._sign()}polygon({vals})"

    def fits_row(self):
        return ("POLYGON", list(self.xs), list(self.ys), [0.0], 0.0)

    def _edges(self):
        x1, y1 = np.asarray(self.xs, float), np.asarray(self.ys, float)
        return x1, y1, np.roll(x1, -1), np.roll(y1, -1)

    def mask(self, x, y):
        """Raster lookup for integer-valued points; the point test for the others."""
        x, y = np.asarray(x), np.asarray(y)
        raster = self._raster(x.size)
        if raster is None or x.shape != y.shape:
            return super().mask(x, y)
        out = np.empty(x.shape, dtype=bool)
        xf, yf, of = x.reshape(-1), y.reshape(-1), out.reshape(-1)
        for start in range(0, len(xf), RASTER_CHUNK):
            stop = start + RASTER_CHUNK
            of[start:stop] = self._raster_mask(raster, xf[start:stop], yf[start:stop])
        return out

    def _raster_mask(self, raster, x, y):
        bits, ox, oy, w, h = raster
        x = x.astype(np.float64, copy=False)
        y = y.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore"):  # NaN or beyond int32: flagged below
            ix, iy = x.astype(np.int32), y.astype(np.int32)
        whole = ix == x
        whole &= iy == y
        # padded pixel indices: anything outside the box lands on the all-outside border
        ix -= ox
        np.clip(ix, 0, w + 1, out=ix)
        iy -= oy
        np.clip(iy, 0, h + 1, out=iy)
        shift = ix.astype(np.uint8)
        shift &= 7
        ix >>= 3
        iy *= bits.shape[1]
        iy += ix
        inside = bits.reshape(-1).take(iy)
        inside >>= shift
        inside &= 1
        inside = inside.view(bool)
        if not whole.all():
            odd = np.flatnonzero(~whole)
            inside[odd] = super().mask(x[odd], y[odd])
        return inside

    def _raster(self, n_points: int | None = None):
        """``(bits, ox, oy, w, h)`` or None: the even-odd answer at every integer pixel.

        Made once this polygon has been asked about ``RASTER_MIN_POINTS`` points per pixel of its
        box in all (``n_points`` more now; None: make it now), so that a few points don't pay
        for a large raster.

        ``bits[i, j // 8]`` bit ``j % 8`` (little) is pixel ``(ox + j, oy + i)``, for ``i`` in
        ``0..h+1`` and ``j`` in ``0..w+1``; the first and last rows and columns (just outside the
        bounding box) are all outside, so points beyond the box can be clipped onto them.
        """
        if "raster" not in self._scanlines:
            seen = self._scanlines.get("points", 0) + (n_points or 0)
            self._scanlines["points"] = seen
            xmin, xmax, ymin, ymax = self.bbox()
            if n_points is not None and seen < RASTER_MIN_POINTS * (xmax - xmin) * (ymax - ymin):
                return None
            self._scanlines["raster"] = self._build_raster()
        return self._scanlines["raster"]

    def _build_raster(self):
        xmin, xmax, ymin, ymax = self.bbox()
        if not all(math.isfinite(v) and abs(v) < 2**30 for v in (xmin, xmax, ymin, ymax)):
            return None
        x0, y0 = math.ceil(xmin), math.ceil(ymin)
        w, h = max(math.floor(xmax) - x0 + 1, 0), max(math.floor(ymax) - y0 + 1, 0)
        if (w + 2) * (h + 2) > RASTER_MAX_CELLS:
            return None
        bits = np.zeros((h + 2, (w + 2 + 7) // 8), dtype=np.uint8)
        if w == 0 or h == 0:
            return bits, x0 - 1, y0 - 1, w, h
        ys = np.arange(y0, y0 + h, dtype=np.float64)
        # each edge's crossings with the pixel rows, by the expression of _inside_crossing; an
        # integer x has x < x_cross exactly when x < ceil(x_cross), i.e. (in padded columns
        # j = x - x0 + 1) when j < k with k = ceil(x_cross) - x0 + 1
        row_parts, col_parts = [], []
        for ax, ay, bx, by in zip(*self._edges(), strict=True):
            if ay == by:
                continue
            sel = np.flatnonzero((ay > ys) != (by > ys))
            x_cross = ax + (ys[sel] - ay) * (bx - ax) / (by - ay)
            row_parts.append(sel + 1)  # padded row
            col_parts.append(np.clip(np.ceil(x_cross) - (x0 - 1), 0, w + 2).astype(np.int64))
        row = np.concatenate(row_parts) if row_parts else np.zeros(0, np.int64)
        col = np.concatenate(col_parts) if col_parts else np.zeros(0, np.int64)
        order = np.argsort(row, kind="stable")
        row, col = row[order], col[order]
        step = max(1, _RASTER_BUILD_CELLS // (w + 3))
        for r0 in range(1, h + 1, step):
            r1 = min(h + 1, r0 + step)
            a, b = np.searchsorted(row, [r0, r1])
            toggle = np.zeros((r1 - r0, w + 3), dtype=np.uint8)
            np.bitwise_xor.at(toggle, (row[a:b] - r0, col[a:b]), 1)
            # parity of the row's crossings with k <= j, then of those with k > j
            odd = np.bitwise_xor.accumulate(toggle, axis=1)
            odd ^= odd[:, -1:]
            odd[:, 0] = 0
            odd[:, w + 1 :] = 0
            bits[r0:r1] = np.packbits(odd[:, : w + 2], axis=1, bitorder="little")
        return bits, x0 - 1, y0 - 1, w, h

    def _inside(self, x, y):
        """Cell table first: points in cells no edge touches take the cell's answer."""
        state, x0, y0, cell = self._cells()
        ix = ((x - x0) * (1.0 / cell)).astype(np.int64)
        iy = ((y - y0) * (1.0 / cell)).astype(np.int64)
        np.clip(ix, 0, state.shape[1] - 1, out=ix)
        np.clip(iy, 0, state.shape[0] - 1, out=iy)
        code = state[iy, ix]
        inside = code == 1
        edge = np.flatnonzero(code == 2)
        if len(edge):
            inside[edge] = self._inside_exact(x[edge], y[edge])
        return inside

    def _inside_exact(self, x, y):
        yi = np.asarray(y)
        if yi.dtype.kind in "iu" or (len(yi) and np.all(yi == np.round(yi))):
            return self._inside_scanline(np.asarray(x, float), yi.astype(np.int64))
        return self._inside_crossing(np.asarray(x, float), np.asarray(y, float))

    def _cells(self):
        """(state, x0, y0, cell): 0 outside, 1 inside, 2 an edge passes within one cell."""
        if "cells" not in self._scanlines:
            x0, x1, y0, y1 = self.bbox()
            size = max(x1 - x0, y1 - y0, 1.0)
            cell = max(size / CELLS_PER_SIDE, 1.0)
            nx, ny = int((x1 - x0) / cell) + 1, int((y1 - y0) / cell) + 1
            cx, cy = np.meshgrid(
                x0 + (np.arange(nx) + 0.5) * cell, y0 + (np.arange(ny) + 0.5) * cell
            )
            state = self._inside_crossing(cx.ravel(), cy.ravel()).reshape(ny, nx).astype(np.int8)
            touched = np.zeros((ny, nx), dtype=bool)
            for ax, ay, bx, by in zip(*self._edges(), strict=True):
                n = int(math.hypot(bx - ax, by - ay) / (cell / 4)) + 2
                t = np.linspace(0.0, 1.0, n)
                jx = np.clip(((ax + t * (bx - ax) - x0) / cell).astype(int), 0, nx - 1)
                jy = np.clip(((ay + t * (by - ay) - y0) / cell).astype(int), 0, ny - 1)
                touched[jy, jx] = True
            # grow by one cell: an edge clipping a cell corner between two samples still counts
            grown = touched.copy()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    grown |= np.roll(np.roll(touched, dy, axis=0), dx, axis=1)
            state[grown] = 2
            self._scanlines["cells"] = (state, x0, y0, cell)
        return self._scanlines["cells"]

    def _inside_crossing(self, x, y):
        """Even-odd crossing test, vectorised over points, one pass per edge."""
        inside = np.zeros(len(x), dtype=bool)
        for ax, ay, bx, by in zip(*self._edges(), strict=True):
            if ay == by:
                continue
            crosses = (ay > y) != (by > y)
            x_cross = ax + (y - ay) * (bx - ax) / (by - ay)
            inside ^= crosses & (x < x_cross)
        return inside

    def _table(self, y0: int, y1: int):
        """Sorted crossing keys of every integer row ``y0..y1`` (cached per row range)."""
        key = (y0, y1)
        if self._scanlines.get("rows", (None,))[0] != key:
            rows = np.arange(y0, y1 + 1, dtype=np.float64)
            xs_all, rows_all = [], []
            for ax, ay, bx, by in zip(*self._edges(), strict=True):
                if ay == by:
                    continue
                lo, hi = (ay, by) if ay < by else (by, ay)
                # rows with (ay > y) != (by > y), i.e. lo <= y < hi
                r = rows[(rows >= lo) & (rows < hi)]
                xs_all.append(ax + (r - ay) * (bx - ax) / (by - ay))
                rows_all.append(r.astype(np.int64) - y0)
            xs = np.concatenate(xs_all) if xs_all else np.zeros(0)
            rr = np.concatenate(rows_all) if rows_all else np.zeros(0, np.int64)
            order = np.lexsort((xs, rr))
            xs, rr = xs[order], rr[order]
            row_start = np.searchsorted(rr, np.arange(y1 - y0 + 2))
            self._scanlines["rows"] = (key, (rr, xs, row_start))
        return self._scanlines["rows"][1]

    def _inside_scanline(self, x, y):
        """Even-odd via per-row sorted crossings: inside when an odd number lie right of x."""
        x0, x1, y0f, y1f = self.bbox()
        y0, y1 = math.floor(y0f), math.ceil(y1f)
        rr, xs, row_start = self._table(y0, y1)
        row = y - y0
        # crossings of the point's row with x_cross <= x, by a search on (row, x) pairs
        span = (x1 - x0) + 4.0
        keys = rr * span + (xs - x0 + 1.0)
        q = row * span + (x - x0 + 1.0)
        lo = np.searchsorted(keys, q, side="left")
        hi = np.searchsorted(keys, q, side="right")
        # keys equal to q after rounding (a crossing within ~1e-8 of x): compare the x's
        tie = np.flatnonzero(hi > lo)
        if len(tie):
            first, last, xt = lo[tie], hi[tie], x[tie]
            for k in range(int((last - first).max())):
                j = first + k
                real = j < last
                lo[tie[real]] += xs[j[real]] <= xt[real]
        left = lo - row_start[row]
        n_row = row_start[row + 1] - row_start[row]
        return ((n_row - left) & 1).astype(bool)


@dataclass
class Region:
    """Included shapes minus excluded shapes, in one event list's sky pixels."""

    shapes: list[Shape]

    @property
    def includes(self) -> list[Shape]:
        return [s for s in self.shapes if s.include]

    @property
    def excludes(self) -> list[Shape]:
        return [s for s in self.shapes if not s.include]

    def bbox(self) -> tuple[float, float, float, float]:
        boxes = np.array([s.bbox() for s in self.includes])
        return (boxes[:, 0].min(), boxes[:, 1].max(), boxes[:, 2].min(), boxes[:, 3].max())

    def mask(self, x: NDArray, y: NDArray) -> Mask:
        """Whether each point is in the region (union of includes, minus every exclusion)."""
        x0, x1, y0, y1 = self.bbox()
        idx = np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
        out = np.zeros(np.shape(x), dtype=bool)
        if len(idx) == 0:
            return out
        xs, ys = x[idx], y[idx]
        inside = np.zeros(len(idx), dtype=bool)
        for shape in self.includes:
            inside |= shape.mask(xs, ys)
        for shape in self.excludes:
            keep = np.flatnonzero(inside)
            if len(keep):
                inside[keep[shape.mask(xs[keep], ys[keep])]] = False
        out[idx] = inside
        return out

    def ds9(self) -> str:
        """DS9 text in the ``physical`` frame (the event list's X/Y)."""
        body = "\n".join(s.ds9() for s in self.shapes)
        return f"# Region file format: DS9 (written by Regio)\nphysical\n{body}\n"

    def describe(self) -> str:
        """One line, e.g. ``circle(...) + annulus(...) - circle(...)``."""
        return " ".join(s.ds9() for s in self.shapes)


def parse_physical(text: str) -> Region:
    """Parse DS9 ``physical`` text (one shape a line or ``;``-separated; ``-`` for exclusions)."""
    shapes: list[Shape] = []
    for raw in re.split(r"[\n;]", text or ""):
        line = raw.split("#", 1)[0].strip()
        if not line or line.lower().startswith("global"):
            continue
        if line.lower() in _FRAMES:
            if line.lower() not in ("physical",):
                raise RegionError(f"pixel regions must be in the DS9 'physical' frame, not {line}")
            continue
        m = _SHAPE_RE.match(line)
        if not m:
            raise RegionError(f"cannot read the region line {line!r}")
        sign, kind, args = m.group(1), m.group(2).lower(), m.group(3)
        try:
            v = [float(a) for a in args.replace(" ", ",").split(",") if a.strip()]
        except ValueError:
            raise RegionError(f"non-numeric value in {line!r}") from None
        if not all(math.isfinite(a) for a in v):
            raise RegionError(f"non-finite value in {line!r}")
        include = sign != "-"
        shapes.append(_make_shape(kind, v, include, line))
    if not any(s.include for s in shapes):
        raise RegionError("the region has no included shape")
    return Region(shapes)


def _make_shape(kind: str, v: list[float], include: bool, line: str) -> Shape:
    need = {"circle": 3, "annulus": 4, "ellipse": 4, "box": 4}
    if kind in need and len(v) < need[kind]:
        raise RegionError(f"{kind} needs {need[kind]} numbers: {line!r}")
    if kind == "circle":
        return Circle(include, v[0], v[1], _positive(v[2], line))
    if kind == "annulus":
        radii = sorted(_positive(r, line) for r in v[2:])
        return Annulus(include, v[0], v[1], radii[0], radii[-1])
    if kind == "ellipse":
        angle = v[4] if len(v) > 4 else 0.0
        return Ellipse(include, v[0], v[1], _positive(v[2], line), _positive(v[3], line), angle)
    if kind == "box":
        angle = v[4] if len(v) > 4 else 0.0
        return Box(include, v[0], v[1], _positive(v[2], line), _positive(v[3], line), angle)
    if len(v) < 6 or len(v) % 2:
        raise RegionError(f"a polygon needs at least 3 x,y pairs: {line!r}")
    return Polygon(include, tuple(v[0::2]), tuple(v[1::2]))


def _positive(value: float, line: str) -> float:
    if value <= 0:
        raise RegionError(f"sizes must be positive in {line!r}")
    return value


def from_sky_ds9(text: str, wcs) -> Region:
    """ICRS DS9 text -> the same shapes in X/Y via the event list's column WCS (``regions``).

    ``regions`` works in 0-based pixels; X/Y column values are 1-based, hence the ``+ 1``.
    """
    from regions import (
        CircleAnnulusPixelRegion,
        CirclePixelRegion,
        EllipsePixelRegion,
        PolygonPixelRegion,
        RectanglePixelRegion,
        Regions,
    )

    shapes: list[Shape] = []
    for sky in Regions.parse(text, format="ds9"):
        include = bool(sky.meta.get("include", 1))
        pix = sky.to_pixel(wcs)
        if isinstance(pix, PolygonPixelRegion):
            shapes.append(Polygon(include, tuple(pix.vertices.x + 1), tuple(pix.vertices.y + 1)))
            continue
        cx, cy = float(pix.center.x) + 1, float(pix.center.y) + 1
        if isinstance(pix, CirclePixelRegion):
            shapes.append(Circle(include, cx, cy, float(pix.radius)))
        elif isinstance(pix, CircleAnnulusPixelRegion):
            shapes.append(
                Annulus(include, cx, cy, float(pix.inner_radius), float(pix.outer_radius))
            )
        elif isinstance(pix, EllipsePixelRegion):
            angle = float(pix.angle.to_value("deg"))
            shapes.append(Ellipse(include, cx, cy, pix.width / 2, pix.height / 2, angle))
        elif isinstance(pix, RectanglePixelRegion):
            angle = float(pix.angle.to_value("deg"))
            shapes.append(Box(include, cx, cy, float(pix.width), float(pix.height), angle))
        else:
            raise RegionError(f"unsupported shape {type(sky).__name__}")
    if not any(s.include for s in shapes):
        raise RegionError("the region has no included shape")
    return Region(shapes)
