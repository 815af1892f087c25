"""Region masks in sky pixels against independent implementations (regions, matplotlib)."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from regions import PixCoord, PolygonPixelRegion

from tests.science_helpers import SCRIPTS, build_input

sys.path.insert(0, str(SCRIPTS))
from xmm import gti, selection  # noqa: E402
from xmm.selection import Polygon, RegionError, Shape, parse_physical  # noqa: E402

RNG = np.random.default_rng(2024)


def points(n=200_000, lo=-60, hi=60):
    return RNG.integers(lo, hi, n).astype(float), RNG.integers(lo, hi, n).astype(float)


def test_circle_annulus_ellipse_box_and_exclusions():
    x, y = points()
    region = parse_physical(
        "physical\ncircle(0,0,30)\n-ellipse(5,5,10,4,30)\nannulus(40,40,5,12)\nbox(-30,30,20,10,45)\n-circle(-30,30,2)"
    )
    d2 = x**2 + y**2
    u, v = (
        (x - 5) * np.cos(np.pi / 6) + (y - 5) * np.sin(np.pi / 6),
        -(x - 5) * np.sin(np.pi / 6) + (y - 5) * np.cos(np.pi / 6),
    )
    ell = (u / 10) ** 2 + (v / 4) ** 2 <= 1
    a2 = (x - 40) ** 2 + (y - 40) ** 2
    ann = (a2 > 25) & (a2 <= 144)
    bu = (x + 30) * np.cos(np.pi / 4) + (y - 30) * np.sin(np.pi / 4)
    bv = -(x + 30) * np.sin(np.pi / 4) + (y - 30) * np.cos(np.pi / 4)
    box = (np.abs(bu) <= 10) & (np.abs(bv) <= 5)
    hole = (x + 30) ** 2 + (y - 30) ** 2 <= 4
    expected = ((d2 <= 900) | ann | box) & ~ell & ~hole
    assert np.array_equal(region.mask(x, y), expected)


@pytest.mark.parametrize("integer", [True, False])
def test_polygon_agrees_with_regions_and_matplotlib_off_the_edges(integer):
    # a concave polygon (a star); points on an edge are ambiguous and left out of the check
    angles = np.linspace(0, 2 * np.pi, 11)[:-1]
    radius = np.where(np.arange(10) % 2 == 0, 50.0, 20.0)
    vx, vy = radius * np.cos(angles) + 0.3, radius * np.sin(angles) + 0.2
    text = "polygon(" + ",".join(f"{a:.6f},{b:.6f}" for a, b in zip(vx, vy, strict=True)) + ")"
    region = parse_physical(text)
    x, y = points()
    if not integer:
        x, y = x + RNG.random(len(x)), y + RNG.random(len(y))
    path = MplPath(np.column_stack([vx, vy]))
    ref = PolygonPixelRegion(PixCoord(vx, vy)).contains(PixCoord(x, y))
    mpl = path.contains_points(np.column_stack([x, y]))
    near_edge = path.contains_points(np.column_stack([x, y]), radius=1e-6) != path.contains_points(
        np.column_stack([x, y]), radius=-1e-6
    )
    ours = region.mask(x, y)
    assert np.array_equal(ours[~near_edge], ref[~near_edge])
    assert np.array_equal(ours[~near_edge], mpl[~near_edge])
    assert ours.sum() > 1000


def even_odd_exact(vx, vy, px, py):
    """The polygon rule in exact rationals: inside when an odd number of edges with
    ``(ay > y) != (by > y)`` cross the point's row strictly right of it (``x < x_cross``)."""
    edges = list(zip(vx, vy, vx[1:] + vx[:1], vy[1:] + vy[:1], strict=True))
    out = np.zeros(len(px), dtype=bool)
    for n, (x, y) in enumerate(zip(px.tolist(), py.tolist(), strict=True)):
        x, y = Fraction(x), Fraction(y)
        for ax, ay, bx, by in edges:
            if (ay > y) != (by > y):
                ax, ay, bx, by = map(Fraction, (ax, ay, bx, by))
                out[n] ^= x < ax + (y - ay) * (bx - ax) / (by - ay)
    return out


def star(n, r_out, r_in, x0=0.0, y0=0.0):
    t = np.linspace(0, 2 * np.pi, 2 * n + 1)[:-1]
    r = np.where(np.arange(2 * n) % 2 == 0, r_out, r_in)
    return list(x0 + r * np.cos(t)), list(y0 + r * np.sin(t))


# integer vertices: many lattice points lie exactly on edges and vertices, and the float crossing
# test equals the exact rational rule (a crossing that is not an integer is >= 1/|dy| from one)
INTEGER_POLYGONS = {
    "convex": ([0, 40, 50, 20, -5], [0, 10, 40, 50, 30]),
    "triangle": ([0, 30, 7], [0, 3, 41]),
    "concave U": ([0, 30, 30, 20, 20, 10, 10, 0], [0, 0, 30, 30, 10, 10, 30, 30]),
    "concave arrow": ([0, 40, 0, 15], [0, 20, 40, 20]),
    "integer star": tuple([round(v) for v in c] for c in star(5, 30, 12)),
    "touching at a vertex": ([0, 10, 10, 20, 20, 10, 10, 0], [0, 0, 10, 10, 20, 20, 10, 10]),
    "zero-width spike": ([0, 20, 20, 10, 10, 10, 0], [0, 0, 20, 20, 5, 20, 20]),
    "bow tie": ([0, 20, 20, 0], [0, 20, 0, 20]),
    "repeated vertex": ([0, 12, 12, 12, 0], [0, 0, 9, 9, 9]),
}


@pytest.mark.parametrize("name", sorted(INTEGER_POLYGONS))
def test_polygon_raster_equals_exact_rule_on_edges_and_vertices(name):
    vx, vy = INTEGER_POLYGONS[name]
    # every integer point of the box and around it (so every vertex and every lattice point on an
    # edge), plus random integer points near and far
    gx, gy = np.meshgrid(np.arange(min(vx) - 3, max(vx) + 4), np.arange(min(vy) - 3, max(vy) + 4))
    rx, ry = RNG.integers(-200, 200, (2, 3000))
    px = np.concatenate([gx.ravel(), rx]).astype(float)
    py = np.concatenate([gy.ravel(), ry]).astype(float)
    expected = even_odd_exact(vx, vy, px, py)
    polygon = Polygon(True, tuple(map(float, vx)), tuple(map(float, vy)))
    assert polygon._raster() is not None
    assert np.array_equal(polygon.mask(px, py), expected)
    assert np.array_equal(polygon.mask(px.astype(np.int32), py.astype(np.int32)), expected)
    # the point test (no raster) agrees
    assert np.array_equal(Shape.mask(Polygon(True, polygon.xs, polygon.ys), px, py), expected)
    assert expected.sum() > 0


@pytest.mark.parametrize("offset", [0.0, 0.3, 1e-9])
def test_polygon_raster_equals_crossing_test_on_float_vertices(offset):
    # a star like the benchmark's and a random (self-intersecting) polygon, vertices off the grid
    rng = np.random.default_rng(7)
    shapes = [
        star(6, 300.0, 150.0, 0.5 + offset, offset),
        (list(rng.uniform(-300, 300, 15) + offset), list(rng.uniform(-300, 300, 15) - offset)),
    ]
    px, py = rng.integers(-320, 320, (2, 400_000)) * 1.0
    for vx, vy in shapes:
        polygon = Polygon(True, tuple(vx), tuple(vy))
        x0, x1, y0, y1 = polygon.bbox()
        inbox = (px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)
        expected = inbox & polygon._inside_crossing(px, py)
        assert polygon._raster() is not None
        assert np.array_equal(polygon.mask(px, py), expected)
        assert np.array_equal(Shape.mask(Polygon(True, polygon.xs, polygon.ys), px, py), expected)
        # non-integer points mixed in take the point test
        fx, fy = px.copy(), py.copy()
        fx[::3] += 0.5
        fy[1::3] -= 0.25
        inbox = (fx >= x0) & (fx <= x1) & (fy >= y0) & (fy <= y1)
        assert np.array_equal(polygon.mask(fx, fy), inbox & polygon._inside_crossing(fx, fy))


def test_polygon_crossing_a_hair_right_of_a_pixel():
    # an edge 1e-9 right of x = 5 in a box thousands of pixels across: the crossing is right of
    # the points at x = 5, whichever path (raster, cell table with scan-line table) decides
    e = 5 + 1e-9
    vx, vy = (-6000.5, e, e, -6000.5), (-0.5, -0.5, 6000.5, 6000.5)
    y = np.arange(0, 6001, dtype=float)
    x = np.full_like(y, 5.0)
    assert Shape.mask(Polygon(True, vx, vy), x, y).all()
    polygon = Polygon(True, vx, vy)
    assert polygon._raster() is not None and polygon.mask(x, y).all()
    assert not polygon.mask(x + 1, y).any()


def test_polygon_without_raster(monkeypatch):
    # too large a box for the raster, and too few points asked about yet: the point test
    vx, vy = star(5, 50.0, 20.0, 0.3, 0.2)
    x, y = points()
    expected = Shape.mask(Polygon(True, tuple(vx), tuple(vy)), x, y)
    few = Polygon(True, tuple(vx), tuple(vy))
    assert np.array_equal(few.mask(x[:10], y[:10]), expected[:10])
    assert few._scanlines.get("raster") is None
    assert np.array_equal(few.mask(x, y), expected)
    assert few._scanlines.get("raster") is not None
    monkeypatch.setattr(selection, "RASTER_MAX_CELLS", 100)
    big = Polygon(True, tuple(vx), tuple(vy))
    assert big._raster() is None
    assert np.array_equal(big.mask(x, y), expected)
    # no integer pixel inside the box at all
    tiny = Polygon(True, (0.2, 0.8, 0.5), (0.2, 0.2, 0.8))
    assert tiny._raster() is not None
    got = tiny.mask(np.array([0.0, 1.0, 0.5]), np.array([0.0, 0.0, 0.5]))
    assert got.tolist() == [False, False, True]


@pytest.mark.parametrize(
    "text",
    [
        "fk5\ncircle(1,2,3)",
        "circle(1,2)",
        "circle(1,2,-3)",
        "polygon(1,2,3,4)",
        "-circle(1,2,3)",
        "blob(1)",
        "circle(1,nan,2)",
    ],
)
def test_bad_region_text_is_refused(text):
    with pytest.raises(RegionError):
        parse_physical(text)


def test_gti_arithmetic():
    a = np.array([[0.0, 10.0], [20.0, 30.0]])
    b = np.array([[5.0, 25.0], [28.0, 40.0]])
    assert gti.intersect(a, b).tolist() == [[5.0, 10.0], [20.0, 25.0], [28.0, 30.0]]
    assert gti.union(a, b).tolist() == [[0.0, 40.0]]
    assert gti.overlap_with_bins(a, [0, 5, 15, 25, 35]).tolist() == [5.0, 5.0, 5.0, 5.0]
    assert gti.contains(a, [0, 10, 9.99, 25, 31]).tolist() == [True, False, True, True, False]


def test_build_input_matches_the_event_headers(real_data):
    path = real_data / "0201901401" / "mos1_exp1_clean_evts.fits"
    inp = build_input(
        "generate_spectra", [path], "icrs\ncircle(149.59,-11.06,0.01667)", None, Path("/tmp/x")
    )
    obs = inp["observations"][0]
    assert obs["camera"] == "EMOS1" and obs["obsid"] == "0201901401"
    assert obs["regions_pixel"]["source"].splitlines()[1] == "physical"
    assert inp["params"]["screen_flares"] is True
