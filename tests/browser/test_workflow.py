"""An astronomer's session in a real browser, against the real service (gunicorn, rq worker,
Redis, demo-like archive): draw regions, see the coverage, select, run, follow, get products."""

from __future__ import annotations

import json
import re
import zipfile

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import shot

pytestmark = pytest.mark.browser


def ready(page, url):
    page.goto(url)
    page.locator("#app[data-ready=true]").wait_for(timeout=60_000)


def centre_of_sky(page):
    box = page.get_by_test_id("sky-view").bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def drag_circle(page, dx):
    page.get_by_test_id("draw-circle").click()
    x, y = centre_of_sky(page)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y, steps=6)
    page.mouse.up()


@pytest.fixture
def bright_source(sample_archive):
    truth = json.loads((sample_archive / "truth.json").read_text())
    return next(s for s in truth["sources"] if s["kind"] == "extended")


def go_to(page, ra, dec):
    target = page.get_by_test_id("target-input")
    target.fill(f"{ra} {dec}")
    target.press("Enter")
    expect(page.locator("#app")).to_have_attribute("data-target", f"{ra} {dec}")


def draw_and_accept(page, source):
    go_to(page, source["ra"], source["dec"])
    drag_circle(page, 25)
    page.get_by_test_id("tab-background").click()
    page.get_by_test_id("as-annulus").check()
    drag_circle(page, 80)
    page.get_by_test_id("region-accept").click()
    page.get_by_test_id("observation-row").first.wait_for(timeout=30_000)
    selection_saved(page)


def keep_only_xmm(page):
    """Select the XMM event lists and nothing else (the XMM scripts accept XMM EPIC data only;
    the first selection is the data of the instrument covering the region best, maybe not
    XMM's)."""
    for toggle in page.get_by_test_id("camera-toggle").all():
        if not toggle.get_attribute("data-group").startswith("XMM/") and not toggle.is_checked():
            toggle.check()
            selection_saved(page)
    xmm = '[data-testid="observation-row"][data-mission="XMM"][data-kind="events"] input'
    for box in page.locator(xmm).all():
        if not box.is_checked():
            box.check()
            selection_saved(page)


def selection_saved(page):
    """The selection is saved and the script chooser offers the scripts that fit it."""
    page.locator('[data-testid="observation-selector"][data-saved="true"]').wait_for(timeout=30_000)


def exposure_camera(exposure_id):
    return exposure_id.split(":")[2]  # MISSION:OBSID:CAMERA


def test_draw_select_run_follow_and_download(page, live_service, bright_source, tmp_path):
    ready(page, live_service.url)
    shot(page, "01-start")
    draw_and_accept(page, bright_source)
    rows = page.get_by_test_id("observation-row")
    assert rows.count() >= 3
    shapes = page.get_by_test_id("shape-row")
    assert shapes.count() == 1 and "annulus" in shapes.first.inner_text()
    assert "/sessions/" in page.url
    session_id = page.url.rsplit("/", 1)[1]
    shot(page, "02-regions-accepted")
    keep_only_xmm(page)

    # toggle the pn off: its rows are unchecked and the selection saved has no EPN
    page.locator('[data-testid="camera-toggle"][data-camera="EPN"]').check()
    selection_saved(page)
    session = json.loads(live_service.get(f"/api/sessions/{session_id}")[1])
    cameras = {exposure_camera(e) for e in session["selection"]["exposures"]}
    assert "EPN" not in cameras and cameras, session["selection"]
    pn_checks = page.locator('[data-testid="observation-row"][data-camera="EPN"] input')
    assert pn_checks.count() and not any(c.is_checked() for c in pn_checks.all())
    shot(page, "03-pn-off")

    page.get_by_test_id("script-select").select_option("generate_spectra")
    assert "spectra" in page.get_by_test_id("script-doc").inner_text().lower()
    page.get_by_test_id("run-button").click()
    page.get_by_test_id("log-stage").first.wait_for(timeout=60_000)
    assert "[STAGE]" in page.get_by_test_id("run-log").inner_text()
    shot(page, "04-running")
    status = page.get_by_test_id("run-status")
    page.locator('[data-testid="run-status"][data-phase="COMPLETED"]').wait_for(timeout=240_000)
    assert "Finished" in status.inner_text()
    products = page.get_by_test_id("product-row")
    products.first.wait_for(timeout=30_000)
    assert products.count() >= 2
    stages = page.get_by_test_id("log-stage").count()
    assert stages >= 3
    shot(page, "05-products")

    page.locator('[data-kind="spectrum"] [data-testid="plot-button"]').first.click()
    page.get_by_test_id("plot-canvas").locator("canvas").first.wait_for(timeout=20_000)
    shot(page, "06-spectrum-plot")

    with page.expect_download() as info:
        page.locator('[data-kind="spectrum"] [data-testid="download-link"]').first.click()
    downloaded = tmp_path / "product.fits"
    info.value.save_as(downloaded)
    assert downloaded.read_bytes()[:6] == b"SIMPLE"
    with page.expect_download() as info:
        page.get_by_test_id("bundle-link").click()
    bundle = tmp_path / "bundle.zip"
    info.value.save_as(bundle)
    names = zipfile.ZipFile(bundle).namelist()
    assert any(n.endswith("log.txt") for n in names)
    assert any(n.endswith("regions/source.reg") for n in names)

    # the session survives a reload: regions, selection, the finished run and its products
    page.reload()
    page.locator("#app[data-ready=true]").wait_for(timeout=60_000)
    page.get_by_test_id("product-row").first.wait_for(timeout=30_000)
    assert page.get_by_test_id("observation-row").count() == rows.count()
    assert page.locator('[data-testid="camera-toggle"][data-camera="EPN"]').is_checked()
    assert "Finished" in page.get_by_test_id("run-status").inner_text()
    page.get_by_test_id("tab-background").click()
    assert "annulus" in page.get_by_test_id("shape-row").first.inner_text()
    shot(page, "07-after-reload")

    page.goto(live_service.url + "sessions")
    assert page.locator(f'[data-session="{session_id}"]').count() == 1
    shot(page, "08-sessions-list")


def test_cancel_a_running_script(page, live_service, bright_source):
    ready(page, live_service.url)
    draw_and_accept(page, bright_source)
    keep_only_xmm(page)
    page.get_by_test_id("script-select").select_option("generate_lightcurves")
    bin_size = page.locator("#param-bin_size")
    bin_size.fill("3")  # many bins: a slow run, long enough to cancel
    page.get_by_test_id("run-button").click()
    page.locator('[data-testid="run-status"][data-phase="EXECUTING"]').wait_for(timeout=60_000)
    page.get_by_test_id("cancel-button").click()
    page.locator('[data-testid="run-status"][data-phase="ABORTED"]').wait_for(timeout=60_000)
    assert "Cancelled" in page.get_by_test_id("run-status").inner_text()
    shot(page, "09-cancelled")


def test_bad_editor_input_is_explained_and_changes_nothing(
    page, live_service, bright_source, tmp_path
):
    ready(page, live_service.url)
    draw_and_accept(page, bright_source)
    session_id = page.url.rsplit("/", 1)[1]

    def stored():  # the viewer position is remembered as it moves (to the region after Accept)
        session = json.loads(live_service.get(f"/api/sessions/{session_id}")[1])
        return {k: v for k, v in session.items() if k not in ("view", "updated")}

    before = stored()

    # a zero radius typed in the numeric fields
    page.get_by_test_id("tab-source").click()
    radius = page.get_by_test_id("shape-row").first.locator('input[data-field="radius"]')
    radius.fill("0")
    radius.dispatch_event("change")
    page.get_by_test_id("region-accept").click()
    assert "must be positive" in page.get_by_test_id("message").inner_text()

    # a polygon of two points: the viewer refuses to make it
    page.get_by_test_id("region-clear").click()
    page.get_by_test_id("draw-polygon").click()
    x, y = centre_of_sky(page)
    page.mouse.click(x, y)
    page.mouse.click(x + 40, y)
    page.mouse.click(x, y)
    expect(page.get_by_test_id("message")).to_contain_text("at least 3 vertices")
    assert page.get_by_test_id("shape-row").count() == 0
    page.get_by_test_id("region-accept").click()
    assert "source region first" in page.get_by_test_id("message").inner_text()

    # a malformed DS9 file
    bad = tmp_path / "bad.reg"
    bad.write_text("fk5\ncircle(149.5,-11.0\n")
    page.get_by_test_id("import-ds9").set_input_files(str(bad))
    page.locator(".message-error", has_text="Import refused").wait_for(timeout=10_000)
    assert "cannot parse DS9 region" in page.get_by_test_id("message").inner_text()
    shot(page, "10-bad-input")
    assert stored() == before, "nothing stored changed"


def test_export_ds9_and_make_an_annulus(page, live_service, bright_source, tmp_path):
    ready(page, live_service.url)
    page.get_by_test_id("export-ds9").click()  # nothing saved yet: a message, no download
    assert "Accept first" in page.get_by_test_id("message").inner_text()
    go_to(page, bright_source["ra"], bright_source["dec"])
    drag_circle(page, 25)
    radius = page.get_by_test_id("shape-row").first.locator('input[data-field="radius"]')
    assert 10 < float(radius.input_value()) < 600  # arcseconds
    page.get_by_test_id("tab-background").click()
    drag_circle(page, 80)
    page.get_by_test_id("make-annulus").click()
    row = page.get_by_test_id("shape-row").first
    outer = float(row.locator('input[data-field="outer"]').input_value())
    inner = float(row.locator('input[data-field="inner"]').input_value())
    assert abs(inner - outer / 2) < 1e-3 * outer
    row.locator('input[data-field="inner"]').fill(f"{outer * 0.6:.3f}")
    row.locator('input[data-field="inner"]').dispatch_event("change")
    page.get_by_test_id("region-accept").click()
    page.get_by_test_id("observation-row").first.wait_for(timeout=30_000)
    session_id = page.url.rsplit("/", 1)[1]
    stored = json.loads(live_service.get(f"/api/sessions/{session_id}")[1])["regions"]
    annulus = stored["background"][0]
    assert annulus["type"] == "annulus"
    assert abs(annulus["inner"] * 3600 - outer * 0.6) < 0.01 * outer
    with page.expect_download() as info:
        page.get_by_test_id("export-ds9").click()
    saved = tmp_path / "background.reg"
    info.value.save_as(saved)
    assert info.value.suggested_filename == f"regio-{session_id}-background.reg"
    assert "annulus(" in saved.read_text() and "<html" not in saved.read_text()
    shot(page, "13-annulus-exported")


def test_target_box_moves_the_view(page, live_service):
    ready(page, live_service.url)
    target = page.get_by_test_id("target-input")
    target.fill("09 58 21.6 -11 03 36")
    target.press("Enter")
    expect(page.locator("#app")).to_have_attribute("data-target", re.compile(r"^149\.59"))
    ra, dec = map(float, page.locator("#app").get_attribute("data-view").split())
    assert abs(ra - 149.59) < 1e-3 and abs(dec + 11.06) < 1e-3, "the sky view moved there"
    target.fill("not a place")
    target.press("Enter")  # not coordinates: looked up as a name first (GET /api/resolve)
    expect(page.get_by_test_id("message")).to_contain_text("Give coordinates")
