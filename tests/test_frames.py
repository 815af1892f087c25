"""Region frames and the region size limit, through the API (issue 15, items 1 and 3).

Every DS9 sky frame (icrs, fk5, fk4, galactic, ecliptic) is converted to ICRS at the edge: a
region written in any of them gives the same ICRS shapes (centre within 0.1", angles turned by
the frame's North) and the same coverage as its ICRS equivalent, and is stored in ICRS; the
session remembers the frame and exports the region in it. The expected positions and angles are
computed here with astropy directly (points on the sky transformed one by one), not with the
code under test. A region larger than ``REGIO_REGION_MAX_DEG`` is refused with a message naming
its size and the limit, and nothing is stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from regions import Regions

from app import create_app
from indexer import shapes as sky
from tests.conftest import ROOT, app_settings
from tests.test_api import snapshot

SCRIPTS = ROOT / "tests" / "scripts"
#: astropy frames of the DS9 names, as the regions parser builds them
ASTROPY = {
    "icrs": {"frame": "icrs"},
    "fk5": {"frame": "fk5", "equinox": "J2000"},
    "fk4": {"frame": "fk4", "equinox": "B1950", "obstime": "B1950"},
    "galactic": {"frame": "galactic"},
    "ecliptic": {"frame": "barycentricmeanecliptic", "equinox": "J2000"},
}
FRAMES = list(ASTROPY)
ARCSEC = 1 / 3600


@pytest.fixture
def source(sample_archive):
    """A bright injected source of the sample archive (ICRS degrees)."""
    truth = json.loads((sample_archive / "truth.json").read_text())
    for src in truth["sources"]:
        if src["kind"] == "point" and any(
            cam["counts_r30"] > 200 for cams in src["expected"].values() for cam in cams.values()
        ):
            return src
    raise AssertionError("no bright source in the sample archive")


def in_frame(ra: float, dec: float, frame: str) -> tuple[float, float]:
    """An ICRS position as (lon, lat) degrees of a DS9 frame."""
    c = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").transform_to(
        SkyCoord(0, 0, unit="deg", **ASTROPY[frame]).frame
    )
    sph = c.spherical
    return float(sph.lon.deg), float(sph.lat.deg)


def angle_in_frame(ra: float, dec: float, angle: float, frame: str) -> float:
    """The DS9 angle in ``frame`` of the axis at ICRS position angle ``angle`` at (ra, dec):
    the tip of the axis, 10" away, transformed and measured from the centre in that frame."""
    centre = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
    tip = centre.directional_offset_by(angle * u.deg, 10 * u.arcsec)
    target = SkyCoord(0, 0, unit="deg", **ASTROPY[frame]).frame
    return float(centre.transform_to(target).position_angle(tip.transform_to(target)).deg) % 360


def ds9(frame: str, shape: str, ra: float, dec: float) -> str:
    """One shape of each kind about (ra, dec) ICRS, written in ``frame``."""
    lon, lat = in_frame(ra, dec, frame)
    if shape == "circle":
        return f'{frame};circle({lon:.10f},{lat:.10f},30")'
    if shape in ("ellipse", "box"):
        angle = angle_in_frame(ra, dec, 40.0, frame)  # the height axis at PA 40 deg in ICRS
        return f'{frame};{shape}({lon:.10f},{lat:.10f},20",90",{angle:.8f})'
    if shape == "polygon":
        offsets = [(-40, -30), (45, -25), (10, 50)]  # arcsec East, North
        centre = SkyCoord(ra * u.deg, dec * u.deg)
        points = []
        for east, north in offsets:
            p = centre.spherical_offsets_by(east * u.arcsec, north * u.arcsec)
            points += in_frame(p.ra.deg, p.dec.deg, frame)
        return f"{frame};polygon({','.join(f'{v:.10f}' for v in points)})"
    if shape == "annulus":
        return f'{frame};annulus({lon:.10f},{lat:.10f},40",80")'
    raise AssertionError(shape)


def coverage(session) -> dict[str, float]:
    return {row["exposure_id"]: row["coverage"] for row in session["coverage"]}


def separation_arcsec(a, b) -> float:
    return float(
        SkyCoord(a[0] * u.deg, a[1] * u.deg).separation(SkyCoord(b[0] * u.deg, b[1] * u.deg)).arcsec
    )


def post(client, **body):
    response = client.post("/api/sessions", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# ---------------------------------------------------------------------------- the bug, first


def test_a_galactic_circle_is_stored_in_icrs_not_as_its_l_b(client, env, source):
    """The bug of issue 15: ``galactic;circle(l,b,r)`` had its l,b stored as RA/Dec."""
    lon, lat = in_frame(source["ra"], source["dec"], "galactic")
    session = post(client, source=f'galactic;circle({lon:.10f},{lat:.10f},30")')
    stored = session["regions"]["source"][0]
    assert separation_arcsec((stored["ra"], stored["dec"]), (source["ra"], source["dec"])) < 0.1
    assert session["regions"]["frame"] == "galactic"
    # the reference file the runs read is ICRS, with ICRS numbers
    text = (Path(env["SESSIONS"]) / session["id"] / "source.reg").read_text()
    parsed = Regions.parse(text, format="ds9")
    assert parsed[0].center.frame.name == "icrs"
    assert (
        separation_arcsec(
            (parsed[0].center.ra.deg, parsed[0].center.dec.deg), (source["ra"], source["dec"])
        )
        < 0.1
    )
    assert session["coverage"], "the galactic circle must be found on the source's exposures"


# ------------------------------------------------------------------- every frame, every shape


@pytest.fixture
def icrs_sessions(client, source):
    """The ICRS equivalent of each shape, as a session (made once per test)."""
    return {
        shape: post(client, source=ds9("icrs", shape, source["ra"], source["dec"]))
        for shape in ("circle", "ellipse", "box", "polygon", "annulus")
    }


@pytest.mark.parametrize("frame", ["fk5", "fk4", "galactic", "ecliptic"])
def test_every_frame_gives_the_icrs_shapes_and_coverage(client, env, source, icrs_sessions, frame):
    for shape, reference in icrs_sessions.items():
        text = ds9(frame, shape, source["ra"], source["dec"])
        session = post(client, source=text)
        got, want = session["regions"]["source"][0], reference["regions"]["source"][0]
        assert got["type"] == want["type"] == ("box" if shape == "box" else shape), text
        assert session["regions"]["frame"] == frame
        if shape == "polygon":
            for a, b in zip(got["vertices"], want["vertices"], strict=True):
                assert separation_arcsec(a, b) < 0.1, (frame, a, b)
        else:
            assert separation_arcsec((got["ra"], got["dec"]), (want["ra"], want["dec"])) < 0.1
            assert separation_arcsec((got["ra"], got["dec"]), (source["ra"], source["dec"])) < 0.1
        if shape in ("ellipse", "box"):
            assert abs((got["angle"] - 40.0 + 180) % 360 - 180) < 1e-3, (frame, got["angle"])
            assert got["width"] == pytest.approx(want["width"]) and got["height"] == pytest.approx(
                want["height"]
            )
        # the same coverage as the ICRS equivalent, on the same exposures
        mine, theirs = coverage(session), coverage(reference)
        assert mine.keys() == theirs.keys() and mine, (frame, shape)
        for key in mine:
            assert mine[key] == pytest.approx(theirs[key], abs=0.005), (frame, shape, key)
        # stored ICRS: the DS9 file says icrs and parses to the same numbers
        stored = (Path(env["SESSIONS"]) / session["id"] / "source.reg").read_text()
        assert stored.splitlines()[1] == "icrs"
        again = Regions.parse(stored, format="ds9")
        assert all(s.center.frame.name == "icrs" for s in again if hasattr(s, "center"))


@pytest.mark.parametrize("frame", FRAMES)
def test_export_writes_the_region_back_in_the_users_frame(client, source, frame):
    text = ds9(frame, "ellipse", source["ra"], source["dec"])
    session = post(client, source=text)
    answer = client.post(
        "/api/regions/convert",
        json={"region": session["regions"]["source"], "frame": session["regions"]["frame"]},
    )
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["frame"] == frame
    assert body["ds9"].splitlines()[1] == frame
    exported = Regions.parse(body["ds9"], format="ds9")[0]
    typed = Regions.parse(text, format="ds9")[0]
    a, b = exported.center.spherical, typed.center.spherical
    assert separation_arcsec((a.lon.deg, a.lat.deg), (b.lon.deg, b.lat.deg)) < 0.1
    assert abs((exported.angle - typed.angle).to_value(u.deg)) < 1e-3
    shown = body["frame_centre"]  # the centre as the page shows it in the user's frame
    assert separation_arcsec((shown["lon"], shown["lat"]), (b.lon.deg, b.lat.deg)) < 0.1
    assert (
        separation_arcsec(
            (body["centre"]["ra"], body["centre"]["dec"]), (source["ra"], source["dec"])
        )
        < 0.1
    )
    assert body["span"] == pytest.approx(180 / 3600, rel=1e-6)  # DS9 ellipse sizes are semi-axes


def test_sexagesimal_fk4_and_mixed_frames(client, source):
    """A B1950 position typed in sexagesimal, and a file with shapes in two frames."""
    c = SkyCoord(source["ra"] * u.deg, source["dec"] * u.deg).transform_to(
        SkyCoord(0, 0, unit="deg", **ASTROPY["fk4"]).frame
    )
    hms = c.ra.to_string(unit=u.hour, sep=":", precision=4)
    dms = c.dec.to_string(unit=u.deg, sep=":", precision=3, alwayssign=True)
    session = post(client, source=f'fk4;circle({hms},{dms},30")')
    got = session["regions"]["source"][0]
    assert separation_arcsec((got["ra"], got["dec"]), (source["ra"], source["dec"])) < 0.1
    assert session["regions"]["frame"] == "fk4"
    mixed = (
        ds9("galactic", "circle", source["ra"], source["dec"])
        + "\n"
        + ds9("fk5", "annulus", source["ra"], source["dec"]).replace("annulus", "-annulus")
    )
    session = post(client, source=mixed)
    assert session["regions"]["frame"] == "galactic"  # the first included shape's
    first, second = session["regions"]["source"]
    assert second.get("exclude") is True
    assert separation_arcsec((first["ra"], first["dec"]), (second["ra"], second["dec"])) < 0.1


def test_the_frame_is_kept_given_or_changed_and_old_sessions_read_icrs(client, env, source):
    session = post(client, source=ds9("galactic", "circle", source["ra"], source["dec"]))
    sid = session["id"]
    shapes_json = session["regions"]["source"]
    # viewer shapes (ICRS degrees) say nothing of the frame: the session's is kept
    again = client.put(f"/api/sessions/{sid}/regions", json={"source": shapes_json}).get_json()
    assert again["regions"]["frame"] == "galactic"
    again = client.put(
        f"/api/sessions/{sid}/regions", json={"source": shapes_json, "frame": "FK5"}
    ).get_json()
    assert again["regions"]["frame"] == "fk5"
    folder = Path(env["SESSIONS"]) / sid
    before = snapshot(folder)
    bad = client.put(f"/api/sessions/{sid}/regions", json={"source": shapes_json, "frame": "sgal"})
    assert bad.status_code == 400 and "'frame' must be one of" in bad.get_json()["message"]
    assert snapshot(folder) == before
    # a session written before frames were kept
    regions = json.loads((folder / "regions.json").read_text())
    del regions["frame"]
    (folder / "regions.json").write_text(json.dumps(regions))
    assert client.get(f"/api/sessions/{sid}").get_json()["regions"]["frame"] == "icrs"


def test_a_box_angle_in_galactic_is_turned_by_the_north_angle():
    """Unit check of the turn itself, far from the equator of both frames: a galactic box of
    angle 0 has its height axis along galactic North, whose ICRS position angle is measured
    here on two points."""
    region = sky.parse_ds9('galactic;box(120,60,10",100",0)')[0]
    centre = SkyCoord(120 * u.deg, 60 * u.deg, frame="galactic")
    north = centre.directional_offset_by(0 * u.deg, 50 * u.arcsec)
    want = centre.icrs.position_angle(north.icrs).deg
    assert abs(region.angle.to_value(u.deg) - want) < 1e-4
    assert abs(want) > 10  # galactic North is far from ICRS North here: the turn matters
    # and the MOC of the galactic box is the MOC of its ICRS equivalent
    icrs = f'icrs;box({region.center.ra.deg:.10f},{region.center.dec.deg:.10f},10",100",{want:.8f})'
    assert sky.to_moc(sky.parse_ds9('galactic;box(120,60,10",100",0)')) == sky.to_moc(
        sky.parse_ds9(icrs)
    )


# --------------------------------------------------------------------------------- the limit


@pytest.mark.parametrize(
    "body, what",
    [
        ({"source": "icrs;circle(150,-11,15)"}, "30° across"),  # a 30 degree circle
        ({"source": [{"type": "circle", "ra": 150, "dec": -11, "radius": 15}]}, "30° across"),
        ({"source": "galactic;circle(250,40,15)"}, "30° across"),
        ({"source": "icrs;box(150,-11,8,1,0)"}, "8.06° across"),
        ({"source": 'icrs;circle(150,-11,30")\nicrs;circle(160,-11,30")'}, "° across"),
        (
            {"source": 'icrs;circle(150,-11,30")', "background": "icrs;annulus(150,-11,1,6)"},
            "12° across",
        ),
    ],
)
def test_a_region_too_large_is_refused_and_nothing_is_stored(client, env, body, what):
    folder = Path(env["SESSIONS"])
    before = snapshot(folder)
    response = client.post("/api/sessions", json=body)
    assert response.status_code == 400
    message = response.get_json()["message"]
    assert what in message and "5°" in message and "REGIO_REGION_MAX_DEG" in message, message
    assert snapshot(folder) == before
    convert = client.post("/api/regions/convert", json={"region": body["source"]})
    if "background" not in body:
        assert convert.status_code == 400 and what in convert.get_json()["message"]


def test_a_too_large_region_on_an_existing_session_changes_nothing(client, env, source):
    session = post(client, source=ds9("icrs", "circle", source["ra"], source["dec"]))
    folder = Path(env["SESSIONS"]) / session["id"]
    before = snapshot(folder)
    for body in (
        {"source": f"icrs;circle({source['ra']},{source['dec']},15)"},
        {"source": session["regions"]["source"], "background": "galactic;circle(10,10,20)"},
    ):
        response = client.put(f"/api/sessions/{session['id']}/regions", json=body)
        assert response.status_code == 400
        assert "larger than the 5°" in response.get_json()["message"]
        assert snapshot(folder) == before
    form = {"source": (__import__("io").BytesIO(b"fk5;circle(150,-11,20)"), "big.reg")}
    response = client.put(
        f"/api/sessions/{session['id']}/regions", data=form, content_type="multipart/form-data"
    )
    assert response.status_code == 400 and "40° across" in response.get_json()["message"]
    assert snapshot(folder) == before


def test_the_limit_is_the_setting(tmp_path, sample_index, redis_url, source):
    settings = app_settings(tmp_path, sample_index, redis_url, SCRIPTS) | {"REGION_MAX_DEG": 0.01}
    client = create_app(settings).test_client()
    small = ds9("icrs", "circle", source["ra"], source["dec"])  # 60" across
    response = client.post("/api/sessions", json={"source": small})
    assert response.status_code == 400
    assert "0.0167° across, larger than the 0.01°" in response.get_json()["message"]
    tiny = f'icrs;circle({source["ra"]},{source["dec"]},10")'  # 20" = 0.0056 deg
    assert client.post("/api/sessions", json={"source": tiny}).status_code == 201
    assert np.isclose(sky.span(sky.parse_ds9(tiny)).deg, 20 / 3600)


def test_bad_convert_requests(client):
    for body, message in (
        ({}, "'region' is required"),
        ({"region": 'icrs;circle(1,2,3")', "frame": "supergalactic"}, "'frame' must be one of"),
        ({"region": 'icrs;circle(1,2,3")', "extra": 1}, "unknown field"),
        ({"region": "image;circle(1,2,3)"}, "pixel"),
    ):
        response = client.post("/api/regions/convert", json=body)
        assert response.status_code == 400, body
        assert message in response.get_json()["message"], response.get_json()


def test_span_of_shapes_against_astropy():
    """The size checked against the limit, measured here with astropy separations."""
    two = sky.parse_ds9('icrs;circle(150,-11,30")\nicrs;circle(160,-11,60")\nicrs;-circle(170,0,1)')
    a, b = SkyCoord(150 * u.deg, -11 * u.deg), SkyCoord(160 * u.deg, -11 * u.deg)
    middle = sky.centre(two)  # the mean of the included shapes' centres
    want = 2 * max(middle.separation(a).deg + 30 / 3600, middle.separation(b).deg + 60 / 3600)
    assert sky.span(two).deg == pytest.approx(want, rel=1e-9)
    polygon = sky.parse_ds9("icrs;polygon(10,10,12,10,12,13)")[0]
    vertices = polygon.vertices
    centre = sky.centre([polygon])
    assert sky.span([polygon]).deg == pytest.approx(2 * centre.separation(vertices).deg.max())
    box = sky.parse_ds9("galactic;box(10,10,3,4,33)")
    assert sky.span(box).deg == pytest.approx(5.0)  # the diagonal, whatever the frame and angle
    ellipse = sky.parse_ds9("fk4;ellipse(10,10,1,2,33)")  # DS9 ellipse sizes are semi-axes
    assert sky.span(ellipse).deg == pytest.approx(4.0)


def test_extent_is_the_half_size_of_every_shape():
    """The half-size the index chooses a region's MOC depth from: an ellipse's semi-major axis
    (DS9 writes semi-axes, ``regions`` keeps full widths), a box's half-diagonal."""
    assert sky.extent(sky.parse_ds9('icrs;ellipse(10,10,20",60",30)')).arcsec == pytest.approx(60)
    assert sky.extent(sky.parse_ds9('icrs;box(10,10,30",40",30)')).arcsec == pytest.approx(25)
    assert sky.extent(sky.parse_ds9('icrs;annulus(10,10,30",45")')).arcsec == pytest.approx(45)
