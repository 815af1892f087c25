"""Viewer JSON shapes <-> regions <-> DS9 text, both ways, and clear errors for bad shapes."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from app import shapes
from indexer import limits

ALL_SHAPES = [
    {"type": "circle", "ra": 149.59, "dec": -11.06, "radius": 1 / 60},
    {"type": "annulus", "ra": 149.59, "dec": -11.06, "inner": 0.03, "outer": 0.06},
    {"type": "circle", "ra": 149.6, "dec": -11.05, "radius": 0.002, "exclude": True},
    {"type": "polygon", "vertices": [[359.99, 2.0], [0.02, 2.0], [0.0, 2.03]]},
    {"type": "box", "ra": 10.0, "dec": 89.5, "width": 0.1, "height": 0.05, "angle": 30.0},
    {"type": "ellipse", "ra": 0.0, "dec": -30.0, "width": 0.02, "height": 0.01, "angle": 12.5},
]


def _close(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if key == "vertices":
            for (ra1, dec1), (ra2, dec2) in zip(a[key], b[key], strict=True):
                assert ra1 == pytest.approx(ra2, abs=1e-7) and dec1 == pytest.approx(dec2, abs=1e-7)
        elif isinstance(a[key], float):
            assert a[key] == pytest.approx(b[key], abs=1e-7), key
        else:
            assert a[key] == b[key], key


def test_json_to_ds9_and_back_keeps_every_shape():
    regions = shapes.from_json(ALL_SHAPES)
    text = shapes.to_ds9(regions)
    assert "\nicrs\n" in text
    assert "\n-circle(149.6" in text, "exclusions are written the DS9 way"
    back = shapes.to_json(shapes.parse(text))
    for original, again in zip(ALL_SHAPES, back, strict=True):
        _close(original, again)


def test_ds9_in_other_frames_and_units_becomes_icrs_degrees():
    regions = shapes.parse('galactic;circle(0,0,30")')
    (shape,) = shapes.to_json(regions)
    assert shape["ra"] == pytest.approx(266.405, abs=1e-3)  # Galactic centre
    assert shape["radius"] == pytest.approx(30 / 3600)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "empty region"),
        ({"type": "circle"}, "must be a list of shapes or a DS9 string"),
        ([{"type": "circle", "ra": 1, "dec": 2, "radius": 0}], "'radius' must be positive"),
        ([{"type": "circle", "ra": 1, "dec": 2, "radius": True}], "'radius' must be a number"),
        ([{"type": "circle", "ra": 1, "dec": 95, "radius": 1}], "dec must be between"),
        (
            [{"type": "circle", "ra": float("nan"), "dec": 1, "radius": 1}],
            "'ra' must be a finite number",
        ),
        ([{"type": "circle", "ra": 10**400, "dec": 1, "radius": 1}], "an integer of 1329 bits"),
        ([{"type": "circle", "ra": 1, "dec": -(10**400), "radius": 1}], "'dec' must be a finite"),
        ([{"type": "circle", "ra": 1, "dec": 1, "radius": 2.0**60}], "magnitude at most"),
        ([{"type": "circle", "ra": "1", "dec": 1, "radius": 1}], "'ra' must be a number"),
        ([{"type": "circle", "ra": 1, "dec": 1, "radius": 1, "colour": "red"}], "'colour'"),
        ([{"type": "circle", "ra": 1, "dec": 1, "radius": 1, "exclude": "no"}], "true or false"),
        ([{"type": ["circle"]}], "unknown type list"),
        ([{"type": "polygon", "vertices": [[1, 2], [2, 3], "4,5"]}], "vertex 3 must be an"),
        ([{"type": "polygon", "vertices": [[1, 2], [2, 3], [3, 4, 5]]}], "vertex 3 must be an"),
        ([{"type": "polygon", "vertices": [[1, 2], [2, 3], [3, None]]}], "vertex 3 dec must be"),
        ([{"type": "polygon", "vertices": [[1, 2], [2, 3], [3, 91]]}], "dec must be between"),
        ([{"type": "polygon", "vertices": [[1, 2]] * 1001}], "too many polygon vertices: 1001"),
        (
            [{"type": "polygon", "vertices": [[1, 2]] * 600}] * 2,
            "too many polygon vertices in the region: 1200",
        ),
        # counted before a single coordinate is built: the bad vertex comes after the count
        ([{"type": "polygon", "vertices": [["x"]] * 100_000}], "too many polygon vertices"),
        ([{"type": "polygon", "vertices": [[1, 2], [2, 3]]}], "at least 3 vertices"),
        ([{"type": "polygon", "vertices": "1,2,3"}], "list of [ra, dec] pairs"),
        ([{"type": "annulus", "ra": 1, "dec": 1, "inner": 2, "outer": 1}], "outer_radius"),
        ([{"type": "hexagon"}], "unknown type 'hexagon'"),
        (["circle"], "must be an object"),
        (
            [{"type": "circle", "ra": 1, "dec": 1, "radius": 1, "exclude": True}],
            "only has exclusions",
        ),
        ("circle(100,100,20)", "no coordinate system"),
        ("icrs;circle(1,2", "cannot parse DS9 region"),
        ([{"type": "circle", "ra": 1, "dec": 1, "radius": 0.1}] * 101, "too many shapes"),
    ],
)
def test_bad_regions_give_a_clear_message(value, message):
    with pytest.raises(shapes.RegionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        shapes.parse(value)


def test_physical_regions_use_the_event_list_column_wcs(real_data):
    path = real_data / "0201901401" / "mos1_exp1_clean_evts.fits"
    header = fits.getheader(path, "EVENTS")
    cols = {header[f"TTYPE{i}"]: i for i in range(1, header["TFIELDS"] + 1)}
    x, y = cols["X"], cols["Y"]
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = [header[f"TCTYP{x}"], header[f"TCTYP{y}"]]
    wcs.wcs.crval = [header[f"TCRVL{x}"], header[f"TCRVL{y}"]]
    wcs.wcs.crpix = [header[f"TCRPX{x}"], header[f"TCRPX{y}"]]
    wcs.wcs.cdelt = [header[f"TCDLT{x}"], header[f"TCDLT{y}"]]
    regions = shapes.from_json(
        [
            {
                "type": "circle",
                "ra": header[f"TCRVL{x}"],
                "dec": header[f"TCRVL{y}"],
                "radius": 1 / 60,
            }
        ]
    )
    text = shapes.to_physical_ds9(regions, wcs)
    assert "\nphysical\n" in text
    line = text.strip().splitlines()[-1]
    cx, cy, r = (float(v) for v in line[line.index("(") + 1 : -1].split(","))
    # DS9 physical coordinates are the X/Y column values: the pointing sits at TCRPX (25921),
    # and 1 arcmin is 1200 pixels of 0.05"
    assert cx == pytest.approx(header[f"TCRPX{x}"], abs=0.01)
    assert cy == pytest.approx(header[f"TCRPX{y}"], abs=0.01)
    assert r == pytest.approx(1200, rel=1e-6)


def test_a_region_at_the_limits_is_stored_as_ds9_that_parses_again():
    """What ``from_json`` accepts, ``to_ds9`` writes within ``MAX_TEXT_CHARS`` and ``parse``
    reads back (the session store does both): no region passes validation to fail storage."""
    ring = np.linspace(0, 2 * np.pi, limits.MAX_REGION_VERTICES, endpoint=False)
    polygon = {
        "type": "polygon",
        "vertices": [
            [float((359.123456789 + 0.5 * np.cos(a)) % 360), float(-88.987654321 + 0.5 * np.sin(a))]
            for a in ring
        ],
    }
    ellipse = {"type": "ellipse", "ra": 359.987654321, "dec": -89.123456789, "width": 0.0123456789,
               "height": 0.0987654321, "angle": 123.456789, "exclude": True}  # fmt: skip
    regions = shapes.from_json([polygon] + [ellipse] * (limits.MAX_SHAPES - 1))
    text = shapes.to_ds9(regions)
    assert len(text) < limits.MAX_TEXT_CHARS / 2
    again = shapes.parse(text)
    assert len(again) == limits.MAX_SHAPES
    assert len(again[0].vertices) == limits.MAX_REGION_VERTICES
