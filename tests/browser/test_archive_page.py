"""A person opens the service in a browser and sees the archive's observations."""

import json

import pytest

from tests.browser.conftest import shot

pytestmark = pytest.mark.browser


def test_archive_page_lists_every_camera(page, live_service, sample_archive):
    truth = json.loads((sample_archive / "truth.json").read_text())
    page.goto(live_service.url + "archive")
    chandra = truth.get("chandra", {}).get("observations", [])  # one ACIS camera each
    rows = page.get_by_test_id("archive-row")
    assert rows.count() == 3 * len(truth["observations"]) + len(chandra)
    summary = page.get_by_test_id("archive-summary").inner_text()
    assert f"{len(truth['observations']) + len(chandra)} observations" in summary
    first = truth["observations"][0]
    row = page.locator(f'[data-obsid="{first["obsid"]}"][data-camera="EPN"]')
    assert row.count() == 1
    assert page.locator("table.observations").inner_text().count(first["obsid"]) == 1
    shot(page, "home-archive")
