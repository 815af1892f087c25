"""Region masks in sky pixels against independent implementations (regions, matplotlib)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from regions import PixCoord, PolygonPixelRegion

from tests.test_science_helpers import SCRIPTS

sys.path.insert(0, str(SCRIPTS))
from xmm import gti  # noqa: E402
from xmm.selection import RegionError, parse_physical  # noqa: E402

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
