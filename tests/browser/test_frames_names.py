"""Frames, the region size limit and object names in a real browser (issue 15): galactic and fk5
DS9 imports land on the ICRS position and give the coverage of the ICRS equivalent, the page
shows and exports the user's frame, a 30 degree region is refused with the message, drawn
values are rounded, and an archived object name typed in the target box moves the viewer."""

from __future__ import annotations

import json
import re

import astropy.units as u
import pytest
from astropy.coordinates import SkyCoord
from playwright.sync_api import expect
from regions import Regions

from tests.browser.conftest import shot
from tests.browser.test_workflow import drag_circle, go_to, ready

pytestmark = pytest.mark.browser

FRAMES = {
    "icrs": {"frame": "icrs"},
    "fk5": {"frame": "fk5", "equinox": "J2000"},
    "galactic": {"frame": "galactic"},
}


@pytest.fixture
def bright_source(sample_archive):
    truth = json.loads((sample_archive / "truth.json").read_text())
    return next(s for s in truth["sources"] if s["kind"] == "extended")


def region_file(tmp_path, frame, source, radius='40"'):
    """A circle about the source, written in ``frame`` (converted here with astropy)."""
    target = SkyCoord(0, 0, unit="deg", **FRAMES[frame]).frame
    c = SkyCoord(source["ra"] * u.deg, source["dec"] * u.deg).transform_to(target).spherical
    path = tmp_path / f"{frame}.reg"
    path.write_text(
        f"# Region file format: DS9\n{frame}\ncircle({c.lon.deg:.9f},{c.lat.deg:.9f},{radius})\n"
    )
    return path, (c.lon.deg, c.lat.deg)


def imported(page, path):
    """Import a DS9 file into the source tab; the covering rows once shown."""
    page.get_by_test_id("tab-source").click()
    page.get_by_test_id("import-ds9").set_input_files(str(path))
    page.locator(".message-info", has_text=f"Imported {path.name}").wait_for(timeout=30_000)
    page.get_by_test_id("observation-row").first.wait_for(timeout=30_000)
    rows = page.get_by_test_id("observation-row")
    return {
        r.get_attribute("data-exposure-id"): r.locator("td").nth(7).inner_text() for r in rows.all()
    }


def field(page, name):
    return float(
        page.get_by_test_id("shape-row").first.locator(f'input[data-field="{name}"]').input_value()
    )


def separation_arcsec(ra1, dec1, ra2, dec2):
    return (
        SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(SkyCoord(ra2 * u.deg, dec2 * u.deg)).arcsec
    )


def test_galactic_and_fk5_imports_land_on_the_icrs_position(
    new_page, live_service, bright_source, tmp_path
):
    ra, dec = bright_source["ra"], bright_source["dec"]
    results = {}
    for frame in ("icrs", "galactic", "fk5"):
        page = new_page()
        ready(page, live_service.url)
        path, typed = region_file(tmp_path, frame, bright_source)
        coverage = imported(page, path)
        assert coverage, f"{frame}: the import found no covering exposure"
        # the fields show ICRS degrees (6 decimals), not the typed l, b
        assert separation_arcsec(field(page, "ra"), field(page, "dec"), ra, dec) < 0.1, frame
        assert field(page, "radius") == pytest.approx(40.0)
        expect(page.get_by_test_id("region-frame")).to_have_value(frame)
        expect(page.get_by_test_id("frame-note")).to_contain_text("ICRS degrees")
        if frame == "galactic":
            expect(page.get_by_test_id("frame-note")).to_contain_text(f"l {typed[0]:.6f}°")
        # the viewer went to the region: its centre and a field of view fitting its size
        view_ra, view_dec, fov = map(
            float, page.locator("#app").get_attribute("data-region-view").split()
        )
        assert separation_arcsec(view_ra, view_dec, ra, dec) < 0.5
        assert 40 / 3600 < fov < 1.0
        shown_ra, shown_dec = map(float, page.locator("#app").get_attribute("data-view").split())
        assert separation_arcsec(shown_ra, shown_dec, ra, dec) < 2
        # stored in ICRS, the frame remembered
        session_id = page.url.rsplit("/", 1)[1]
        stored = json.loads(live_service.get(f"/api/sessions/{session_id}")[1])["regions"]
        assert stored["frame"] == frame
        assert (
            separation_arcsec(stored["source"][0]["ra"], stored["source"][0]["dec"], ra, dec) < 0.1
        )
        # exported in the user's frame, with the typed numbers
        with page.expect_download() as info:
            page.get_by_test_id("export-ds9").click()
        saved = tmp_path / f"export-{frame}.reg"
        info.value.save_as(saved)
        text = saved.read_text()
        assert text.splitlines()[1] == frame, text
        c = Regions.parse(text, format="ds9")[0].center.spherical
        assert separation_arcsec(c.lon.deg, c.lat.deg, *typed) < 0.1
        shot(page, f"20-import-{frame}")
        results[frame] = coverage
    # the same covering exposures and coverage as the ICRS equivalent
    assert results["galactic"] == results["icrs"] == results["fk5"]


def test_the_frame_chooser_exports_in_another_frame(page, live_service, bright_source, tmp_path):
    ready(page, live_service.url)
    path, _ = region_file(tmp_path, "icrs", bright_source)
    imported(page, path)
    page.get_by_test_id("region-frame").select_option("galactic")
    expect(page.get_by_test_id("frame-note")).to_contain_text("Galactic: centre l ")
    with page.expect_download() as info:
        page.get_by_test_id("export-ds9").click()
    saved = tmp_path / "export.reg"
    info.value.save_as(saved)
    text = saved.read_text()
    assert text.splitlines()[1] == "galactic"
    c = Regions.parse(text, format="ds9")[0].center.icrs
    assert separation_arcsec(c.ra.deg, c.dec.deg, bright_source["ra"], bright_source["dec"]) < 0.1
    # Accept keeps the chosen frame with the session
    page.get_by_test_id("region-accept").click()
    page.locator(".message-info", has_text="Regions saved").wait_for(timeout=30_000)
    session_id = page.url.rsplit("/", 1)[1]
    stored = json.loads(live_service.get(f"/api/sessions/{session_id}")[1])["regions"]
    assert stored["frame"] == "galactic"


def test_a_30_degree_region_is_refused_with_the_message(
    page, live_service, bright_source, tmp_path
):
    ready(page, live_service.url)
    before = json.loads(live_service.get("/api/sessions")[1])
    big, _ = region_file(tmp_path, "galactic", bright_source, radius="15")  # 15 deg radius
    page.get_by_test_id("import-ds9").set_input_files(str(big))
    message = page.locator(".message-error", has_text="Import refused")
    message.wait_for(timeout=10_000)
    text = page.get_by_test_id("message").inner_text()
    assert "30° across" in text and "larger than the 5°" in text, text
    assert json.loads(live_service.get("/api/sessions")[1]) == before, "no session was made"
    shot(page, "21-too-large-import")

    # a drawn circle typed up to 15 degrees: Accept says why not, nothing stored
    go_to(page, bright_source["ra"], bright_source["dec"])
    drag_circle(page, 25)
    page.get_by_test_id("region-accept").click()
    page.locator(".message-info", has_text="Regions saved").wait_for(timeout=30_000)
    session_id = page.url.rsplit("/", 1)[1]

    def stored_state():  # what a refused region must not change (the viewer position may)
        session = json.loads(live_service.get(f"/api/sessions/{session_id}")[1])
        return session["regions"], session["coverage"], session["selection"]

    stored = stored_state()
    radius = page.get_by_test_id("shape-row").first.locator('input[data-field="radius"]')
    radius.fill(str(15 * 3600))
    radius.dispatch_event("change")
    page.get_by_test_id("region-accept").click()
    expect(page.get_by_test_id("message")).to_contain_text("Not saved")
    text = page.get_by_test_id("message").inner_text()
    assert "30° across" in text and "REGIO_REGION_MAX_DEG" in text, text
    assert stored_state() == stored, "nothing stored changed"
    shot(page, "22-too-large-drawn")


def test_drawn_values_are_rounded(page, live_service, bright_source):
    ready(page, live_service.url)
    go_to(page, bright_source["ra"], bright_source["dec"])
    drag_circle(page, 25)
    row = page.get_by_test_id("shape-row").first
    for name, decimals in (("ra", 6), ("dec", 6), ("radius", 2)):
        value = row.locator(f'input[data-field="{name}"]').input_value()
        assert re.fullmatch(rf"-?\d+(\.\d{{1,{decimals}}})?", value), (name, value)


def test_an_archived_name_moves_the_viewer(page, live_service):
    ready(page, live_service.url)
    observations = json.loads(live_service.get("/api/observations")[1])
    names = sorted({o["object"] for o in observations if o.get("object")}, key=len)
    assert names, "the sample archive has object names"
    name = names[-1]
    pointings = [o for o in observations if o.get("object") == name]
    # the mean pointing of its exposures, computed here
    c = SkyCoord(
        [o["ra_pnt"] for o in pointings] * u.deg, [o["dec_pnt"] for o in pointings] * u.deg
    )
    xyz = c.cartesian.xyz.value.mean(axis=1)
    mean = SkyCoord(*xyz, representation_type="cartesian").spherical
    typed = name.lower().replace(" ", "")  # case and spaces do not matter
    target = page.get_by_test_id("target-input")
    target.fill(typed)
    target.press("Enter")
    expect(page.locator("#app")).to_have_attribute("data-resolved", name)
    ra, dec = map(float, page.locator("#app").get_attribute("data-view").split())
    assert separation_arcsec(ra, dec, mean.lon.deg, mean.lat.deg) < 1, "the viewer moved there"
    assert name in page.get_by_test_id("message").inner_text()
    shot(page, "23-name-resolved")

    target.fill("no such object anywhere")
    target.press("Enter")
    expect(page.get_by_test_id("message")).to_contain_text("no archived observation")
    assert "Give coordinates" in page.get_by_test_id("message").inner_text()
    after = tuple(map(float, page.locator("#app").get_attribute("data-view").split()))
    assert after == (ra, dec), "an unknown name does not move the viewer"
