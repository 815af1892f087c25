"""indexer.shapes: DS9 text -> validated sky regions -> MOCs, checked against ``regions`` itself."""

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import Angle, SkyCoord
from astropy.wcs import WCS
from regions import CircleSkyRegion, Regions

from indexer import limits, shapes
from indexer.shapes import RegionError


def tan_wcs(ra: float, dec: float) -> WCS:
    """A 1"-pixel TAN WCS centred on (ra, dec), as DS9 would use to draw the shapes."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [1000, 1000]
    wcs.wcs.cdelt = [-1 / 3600, 1 / 3600]
    return wcs


def random_points(ra: float, dec: float, radius_deg: float, n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    centre = SkyCoord(ra * u.deg, dec * u.deg)
    return centre.directional_offset_by(
        rng.uniform(0, 360, n) * u.deg, radius_deg * np.sqrt(rng.uniform(0, 1, n)) * u.deg
    )


def moc_contains(moc, points: SkyCoord) -> np.ndarray:
    return moc.contains_lonlat(points.ra, points.dec)


# Shapes of a few arcmin, elongated and rotated so that a wrong angle convention shows up, as
# functions of a size factor k (and h for the annulus hole) to build inner/outer margins.
SHAPE_TEXTS = {
    "circle": lambda k, h: f"icrs;circle(150.2,-11.0,{3 * k}')",
    "ellipse": lambda k, h: f"icrs;ellipse(150.2,-11.0,{6 * k}',{1.5 * k}',30)",
    "ellipse-tall": lambda k, h: f"icrs;ellipse(150.2,-11.0,{1.5 * k}',{6 * k}',120)",
    "box": lambda k, h: f"icrs;box(150.2,-11.0,{6 * k}',{2 * k}',25)",
    "annulus": lambda k, h: f"icrs;annulus(150.2,-11.0,{1.5 * h}',{4 * k}')",
}


@pytest.mark.parametrize("name", sorted(SHAPE_TEXTS))
def test_moc_matches_regions_contains(name):
    """Points well inside the shape (per ``regions`` with a TAN WCS) are in the MOC; points well
    outside are not. A wrong ellipse/box angle convention or axis swap fails this."""
    text = SHAPE_TEXTS[name]
    moc = shapes.to_moc(shapes.parse_ds9(text(1.0, 1.0)), max_depth=15)
    inner = shapes.parse_ds9(text(0.9, 1.1))[0]
    outer = shapes.parse_ds9(text(1.1, 0.9))[0]
    wcs = tan_wcs(150.2, -11.0)
    points = random_points(150.2, -11.0, 0.12)
    inside = inner.contains(points, wcs)
    outside = ~outer.contains(points, wcs)
    in_moc = moc_contains(moc, points)
    assert inside.sum() > 100 and outside.sum() > 100
    assert in_moc[inside].all()
    assert not in_moc[outside].any()


def test_polygon_and_exclusion():
    text = 'icrs;polygon(10.0,20.0,10.1,20.0,10.1,20.1,10.0,20.1);-circle(10.05,20.05,90")'
    moc = shapes.to_moc(shapes.parse_ds9(text))
    hole = SkyCoord(10.05 * u.deg, 20.05 * u.deg)
    corner = SkyCoord(10.01 * u.deg, 20.01 * u.deg)
    assert not moc.contains_lonlat(hole.ra, hole.dec)[0]
    assert moc.contains_lonlat(corner.ra, corner.dec)[0]
    full = shapes.to_moc(shapes.parse_ds9(text.split(";-")[0]))
    circle = np.pi * (90 / 3600) ** 2  # deg^2; the MOC removes every cell the circle touches
    removed = (full.sky_fraction - moc.sky_fraction) * 4 * np.pi * (180 / np.pi) ** 2
    assert circle < removed < 1.15 * circle


def test_ra_wrap_pole_and_tiny_regions():
    wrap = shapes.to_moc(shapes.parse_ds9("icrs;circle(359.99,0.0,2')"))
    for ra in (359.97, 359.999, 0.0, 0.01):
        assert wrap.contains_lonlat(ra * u.deg, 0.0 * u.deg)[0]
    assert not wrap.contains_lonlat(180 * u.deg, 0.0 * u.deg)[0]
    pole = shapes.to_moc(shapes.parse_ds9("icrs;circle(0,89.95,0.2)"))
    for ra in (0, 90, 180, 270):
        assert pole.contains_lonlat(ra * u.deg, 89.9 * u.deg)[0]
    tiny = shapes.to_moc(shapes.parse_ds9('icrs;circle(33.3,-44.4,0.2")'), max_depth=13)
    assert not tiny.empty()
    assert tiny.contains_lonlat(33.3 * u.deg, -44.4 * u.deg)[0]


def test_polygon_across_ra_zero_centre():
    regions = shapes.parse_ds9("icrs;polygon(359.9,1.0,0.1,1.0,0.1,1.2,359.9,1.2)")
    centre = shapes.centre(regions)
    assert centre.separation(SkyCoord(0 * u.deg, 1.1 * u.deg)).arcsec < 1
    moc = shapes.to_moc(regions)
    assert moc.contains_lonlat(0 * u.deg, 1.1 * u.deg)[0]
    assert moc.sky_fraction * 41252.96 == pytest.approx(0.2 * 0.2, rel=0.1)


def test_other_frames_are_converted_to_icrs():
    galactic = SkyCoord(l=120 * u.deg, b=30 * u.deg, frame="galactic").icrs
    moc = shapes.to_moc(shapes.parse_ds9("galactic;circle(120,30,1')"))
    assert moc.contains_lonlat(galactic.ra, galactic.dec)[0]
    assert shapes.centre(shapes.parse_ds9("galactic;circle(120,30,1')")).separation(
        galactic
    ).arcsec == pytest.approx(0, abs=1e-6)


def test_regions_objects_are_accepted():
    region = CircleSkyRegion(SkyCoord(1 * u.deg, 2 * u.deg), radius=Angle(30, u.arcsec))
    moc = shapes.to_moc(Regions([region]))
    assert moc.contains_lonlat(1 * u.deg, 2 * u.deg)[0]
    assert shapes.extent([region]).arcsec == pytest.approx(30)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty region"),
        ("   \n", "empty region"),
        ("garbage", "cannot parse"),
        ("icrs;circle(1,2", "cannot parse"),
        ('icrs;circle(1,2,0")', "strictly positive"),
        ('icrs;circle(1,2,-3")', "strictly positive"),
        ("circle(100,100,20)", "no coordinate system"),
        ("image;circle(100,100,20)", "pixel coordinates"),
        ("physical;circle(100,100,20)", "pixel coordinates"),
        ("fk5;polygon(1,2,3,4)", "at least 3 vertices"),
        ("icrs;polygon(1,1,1,1,1,1)", "no area"),
        ("icrs;point(1,2)", "unsupported shape 'point'"),
        ('icrs;annulus(1,2,30",20")', "outer_radius must be greater"),
        ("icrs;circle(1,100,1)", "Latitude"),
        ("icrs;circle(nan,1,1)", "finite"),
        ("icrs;circle(1,2,200)", "at most 180 deg"),
        ('icrs;-circle(1,2,3")', "only has exclusions"),
        ("icrs;circle(1,2,3\");-circle(1,2,4')", "exclusions remove all"),
        ("icrs;" + 'circle(1,2,3");' * (shapes.MAX_SHAPES + 1), "too many shapes"),
        ("#" * (shapes.MAX_TEXT_CHARS + 1), "too long"),
        # refused by the scan before the parser runs
        ('icrs;circle(1,2,3")\x00', "control character U+0000 at character 20"),
        ('icrs;circle(1,2,3") # text={\x1b[31m}', "control character U+001B"),
        ('icrs;circle(1,2,3") # text={\x85}', "control character U+0085"),
        ("icrs;circle(1,2,3" + "0" * 40 + ")", "more than 40 digits"),
        ("\n" * limits.MAX_DS9_STATEMENTS + 'icrs;circle(1,2,3")', "too many lines"),
        ("icrs" + ";" * limits.MAX_DS9_STATEMENTS + 'circle(1,2,3")', "too many lines"),
        ("icrs;annulus(1,2," + ",".join(f'{i}"' for i in range(1, 103)) + ")", "too many shapes"),
        ("icrs\n" + "circle 1 2 3\n" * (shapes.MAX_SHAPES + 1), "too many shapes"),
        ("icrs;polygon(" + "1,2," * 1001 + ")", "too many polygon vertices: 1001 (max 1000)"),
        ("icrs\n" + ("polygon(" + "1,2," * 600 + ")\n") * 2, "vertices in the region"),
    ],
)
def test_bad_regions_give_one_clear_line(text, fragment):
    with pytest.raises(RegionError) as info:
        shapes.to_moc(shapes.parse_ds9(text))
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message and len(message) < 400


def test_non_text_input():
    with pytest.raises(RegionError, match="must be text"):
        shapes.parse_ds9(None)  # type: ignore[arg-type]


def test_the_limits_fit_each_other():
    """A region at every limit at once is accepted, and so is its DS9 text (which the session
    store writes and parses again): a region never passes one limit to fail another later."""
    ring = np.linspace(0, 2 * np.pi, limits.MAX_REGION_VERTICES, endpoint=False)
    polygon = ",".join(
        f"{(359.87654321 + 0.5 * np.cos(a)) % 360:.8f},{-88.98765432 + 0.5 * np.sin(a):.8f}"
        for a in ring
    )
    ellipses = ['-ellipse(359.98765432,-89.12345679,0.61728394",4.93827160",123.45678900)'] * (
        limits.MAX_SHAPES - 1
    )
    text = "# Region file format: DS9\nicrs\n" + "\n".join([f"polygon({polygon})", *ellipses])
    assert len(text) < limits.MAX_TEXT_CHARS
    regions = shapes.parse_ds9(text)
    assert len(regions) == limits.MAX_SHAPES
    assert len(regions[0].vertices) == limits.MAX_REGION_VERTICES
    assert limits.MAX_REGION_VERTICES <= limits.MAX_POLYGON_VERTICES * limits.MAX_SHAPES


def test_the_moc_outline_is_bounded_before_any_moc_is_made():
    """The cells along the outlines are counted before mocpy runs (its cost grows with them):
    a region too large for the depth is refused with a message; a 20 deg circle is not."""
    wide = shapes.parse_ds9("icrs\n" + "circle(10,10,3)\n" * 100)
    with pytest.raises(RegionError, match="too large for a coverage at 25.8 arcsec"):
        shapes.to_moc(wide, max_depth=13)
    assert not shapes.to_moc(shapes.parse_ds9("icrs;circle(10,10,20)"), max_depth=13).empty()
    # the outline lengths the count uses [deg]
    assert shapes.outline_deg(shapes.parse_ds9("icrs;circle(0,0,90)")[0]) == pytest.approx(360)
    assert shapes.outline_deg(shapes.parse_ds9("icrs;ellipse(0,0,1,1,0)")[0]) == pytest.approx(
        360 * np.sin(np.radians(1)), rel=1e-4
    )
    square = shapes.parse_ds9("icrs;polygon(10,0,11,0,11,1,10,1)")[0]
    assert shapes.outline_deg(square) == pytest.approx(4, rel=1e-3)


def test_a_validated_region_is_not_checked_again_unless_changed():
    regions = shapes.validate(shapes.parse_ds9('icrs;circle(1,2,3")'))
    assert shapes.validate(regions) is regions
    regions.append(CircleSkyRegion(SkyCoord(1 * u.deg, 2 * u.deg), radius=Angle(200, u.deg)))
    with pytest.raises(RegionError, match="at most 180 deg"):
        shapes.validate(regions)
