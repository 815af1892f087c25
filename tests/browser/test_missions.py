"""Several missions on one page, in a real browser against the real service.

The observation selector builds its tables from the instrument registry (``GET /api/instruments``:
order, titles, camera labels and colours); the script chooser offers only the scripts whose
manifests accept every selected exposure, and says why when none does. The expectations are
computed here from the registry, the session's coverage rows and the scripts' ``accepts``, not
read back from the page.
"""

from __future__ import annotations

import json
import math
import re
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import shot
from tests.browser.test_workflow import drag_circle, ready

pytestmark = pytest.mark.browser


def api_json(service, path):
    status, body, _ = service.get(path)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


def settled(page):
    """The selection is saved and the chooser shows the scripts that fit it."""
    page.locator('[data-testid="observation-selector"][data-saved="true"]').wait_for(timeout=30_000)


def group_of(row):
    return f"{row['mission']}/{row['instrument']}/{row['camera']}"


def accepts(script, row):
    """Does a script's manifest accept an exposure row (empty lists accept anything)?"""
    kinds = script["accepts"]["kinds"]
    instruments = script["accepts"]["instruments"]
    return (not kinds or row["kind"] in kinds) and (
        not instruments or f"{row['mission']}/{row['instrument']}" in instruments
    )


def fitting(scripts, rows):
    return sorted(s["name"] for s in scripts if all(accepts(s, r) for r in rows))


def offered(page):
    select = page.get_by_test_id("script-select")
    if select.is_disabled():
        return []
    return sorted(select.locator("option").evaluate_all("os => os.map(o => o.value)"))


def rgb(hex_colour):
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def separation_deg(ra1, dec1, ra2, dec2):
    r = math.pi / 180
    a = (
        math.sin((dec2 - dec1) * r / 2) ** 2
        + math.cos(dec1 * r) * math.cos(dec2 * r) * math.sin((ra2 - ra1) * r / 2) ** 2
    )
    return 2 * math.asin(min(1.0, math.sqrt(a))) / r


@pytest.fixture
def shared_field(sample_archive):
    """A Chandra observation of the sample archive pointed inside an XMM observation's field."""
    truth = json.loads((sample_archive / "truth.json").read_text())
    chandra = truth.get("chandra", {}).get("observations", [])
    for obs in chandra:
        for xmm in truth["observations"]:
            if separation_deg(obs["ra_pnt"], obs["dec_pnt"], xmm["ra_pnt"], xmm["dec_pnt"]) < 0.1:
                return obs
    raise AssertionError(
        f"the sample archive has no Chandra observation on an XMM field ({len(chandra)} Chandra "
        "observations): demo.archive should put one on CL0958 or PKS0000"
    )


def enter_circle(page, ra, dec, radius_arcsec):
    """Draw a circle on the sky, then type its exact centre and radius; Accept."""
    target = page.get_by_test_id("target-input")
    target.fill(f"{ra} {dec}")
    target.press("Enter")
    drag_circle(page, 25)
    row = page.get_by_test_id("shape-row").first
    for field, value in (("ra", ra), ("dec", dec), ("radius", radius_arcsec)):
        box = row.locator(f'input[data-field="{field}"]')
        box.fill(str(value))
        box.dispatch_event("change")
    page.get_by_test_id("region-accept").click()
    page.get_by_test_id("observation-row").first.wait_for(timeout=30_000)
    settled(page)
    return page.url.rsplit("/", 1)[1]


def tables(page):
    return page.get_by_test_id("camera-table").evaluate_all(
        """ts => ts.map(t => ({
            group: t.dataset.group, colour: t.dataset.colour,
            title: (t.querySelector('[data-testid=camera-table-title]') || {}).textContent,
            label: (t.querySelector('[data-testid=camera-label]') || {}).textContent || null,
            dot: getComputedStyle(t.querySelector('.camera-dot')).backgroundColor,
            ids: [...t.querySelectorAll('[data-testid=observation-row]')].map(r => r.dataset.exposureId),
            checks: [...t.querySelectorAll('[data-testid=observation-check]')]
                .map(c => [c.dataset.exposureId, c.checked]),
        }))"""
    )


def test_xmm_and_chandra_tables_and_the_scripts_that_fit(page, live_service, shared_field):
    registry = api_json(live_service, "/api/instruments")
    scripts = api_json(live_service, "/api/scripts")
    ready(page, live_service.url)
    session_id = enter_circle(page, shared_field["ra_pnt"], shared_field["dec_pnt"], 60)
    session = api_json(live_service, f"/api/sessions/{session_id}")
    coverage = session["coverage"]
    assert {r["mission"] for r in coverage} >= {"XMM", "CHANDRA"}, coverage

    # one table per (instrument, camera) with rows, in the registry's order, titles and colours
    cameras = {
        f"{i['mission']}/{i['instrument']}/{c['name']}": (i, c)
        for i in registry
        for c in i["cameras"]
    }
    expected = [key for key in cameras if any(group_of(r) == key for r in coverage)]
    shown = tables(page)
    assert [t["group"] for t in shown] == expected
    assert {t["group"].split("/")[0] for t in shown} >= {"XMM", "CHANDRA"}
    for table in shown:
        instrument, camera = cameras[table["group"]]
        assert table["title"] == instrument["title"]
        assert table["label"] == camera["label"]
        assert table["colour"] == camera["colour"]
        assert table["dot"] == rgb(camera["colour"])
        rows = [r for r in coverage if group_of(r) == table["group"]]
        assert sorted(table["ids"]) == sorted(r["exposure_id"] for r in rows)
        selected = set(session["selection"]["exposures"])
        assert all(checked == (eid in selected) for eid, checked in table["checks"])
    toggle_labels = page.get_by_test_id("camera-toggle").evaluate_all(
        "ts => ts.map(t => t.parentElement.textContent.trim())"
    )
    assert toggle_labels == [f"disable all {cameras[k][1]['label']}" for k in expected]

    # every footprint drawn, fetched from the exposure's MOC endpoint
    expect(page.locator("#app")).to_have_attribute("data-footprints", str(len(coverage)))
    for row in coverage:
        url = f"{live_service.url}api/exposures/{quote(row['exposure_id'], safe='')}/moc"
        assert url in page.requested_urls, url

    # the first selection: the data of the instrument covering the region best, which scripts
    # take (both missions selected together would leave none to run)
    best = max(coverage, key=lambda r: r["coverage"])
    first = [r for r in coverage if r["exposure_id"] in session["selection"]["exposures"]]
    assert {(r["mission"], r["instrument"]) for r in first} == {
        (best["mission"], best["instrument"])
    }
    assert fitting(scripts, first) and offered(page) == fitting(scripts, first)
    expect(page.get_by_test_id("run-button")).to_be_enabled()

    # tick every table: both missions together
    for table in shown:
        page.locator(f'[data-testid="camera-toggle"][data-group="{table["group"]}"]').uncheck()
        settled(page)
    session = api_json(live_service, f"/api/sessions/{session_id}")
    mixed = [r for r in coverage if r["exposure_id"] in session["selection"]["exposures"]]
    assert {r["mission"] for r in mixed} >= {"XMM", "CHANDRA"}
    expect(page.get_by_test_id("script-select")).to_have_attribute(
        "data-count", str(len(fitting(scripts, mixed)))
    )
    assert offered(page) == fitting(scripts, mixed)
    assert fitting(scripts, mixed) == [], "no script should accept XMM and Chandra data at once"

    # untick every XMM table: only the scripts that accept the Chandra exposures are offered
    for table in shown:
        if table["group"].startswith("XMM/"):
            toggle = page.locator(f'[data-testid="camera-toggle"][data-group="{table["group"]}"]')
            toggle.check()
            settled(page)
    session = api_json(live_service, f"/api/sessions/{session_id}")
    chosen = [r for r in coverage if r["exposure_id"] in session["selection"]["exposures"]]
    assert chosen and {r["mission"] for r in chosen} == {"CHANDRA"}, session["selection"]
    assert offered(page) == fitting(scripts, chosen)
    assert not [n for n in offered(page) if n.startswith("generate_")], offered(page)
    chandra_scripts = [s["name"] for s in scripts if s["name"].startswith("chandra_")]
    assert set(chandra_scripts) <= set(offered(page))
    if offered(page):
        expect(page.get_by_test_id("run-button")).to_be_enabled()
        expect(page.get_by_test_id("script-problem")).to_be_hidden()
        expect(page.get_by_test_id("script-accepts")).to_contain_text("CHANDRA/ACIS")
        # the chooser follows the selection without losing the parameters typed in
        script = page.get_by_test_id("script-select").input_value()
        field = page.get_by_test_id("params").locator("input[type=number]").first
        typed = "7" if field.input_value() != "7" else "8"
        field.fill(typed)
        acis = page.locator('[data-testid="camera-toggle"]:not([data-group^="XMM/"])').first
        acis.check()
        settled(page)
        acis.uncheck()
        settled(page)
        assert page.get_by_test_id("script-select").input_value() == script
        expect(field).to_have_value(typed)
    shot(page, "20-chandra-only")

    # tick XMM back: no script fits the mixed selection, and the page says why
    for table in shown:
        if table["group"].startswith("XMM/"):
            page.locator(f'[data-testid="camera-toggle"][data-group="{table["group"]}"]').uncheck()
            settled(page)
    assert offered(page) == []
    problem = page.get_by_test_id("script-problem")
    expect(problem).to_be_visible()
    expect(problem).to_contain_text("No script accepts this selection")
    expect(problem).to_contain_text("selected together")
    for name in ("XMM/EPIC", "CHANDRA/ACIS"):
        expect(problem).to_contain_text(name)
    expect(page.get_by_test_id("run-button")).to_be_disabled()
    expect(page.get_by_test_id("run-button")).to_have_attribute(
        "title", re.compile("selected together")
    )
    expect(page.get_by_test_id("run-reason")).to_contain_text("No script fits the selection")
    shot(page, "21-mixed-selection-no-script")


def test_a_refused_launch_is_explained(page, live_service, shared_field):
    """The selection changes behind the page's back (another tab, a collaborator): Run is
    refused by the service (400) and the page shows its message and offers what fits now."""
    scripts = api_json(live_service, "/api/scripts")
    ready(page, live_service.url)
    session_id = enter_circle(page, shared_field["ra_pnt"], shared_field["dec_pnt"], 60)
    coverage = api_json(live_service, f"/api/sessions/{session_id}")["coverage"]
    events = [r for r in coverage if r["kind"] == "events"]
    chandra = [r for r in events if r["mission"] == "CHANDRA"]
    xmm = [r for r in events if r["mission"] == "XMM"]
    for table in {group_of(r) for r in xmm}:
        page.locator(f'[data-testid="camera-toggle"][data-group="{table}"]').check()
        settled(page)
    if not fitting(scripts, chandra):
        pytest.fail("no installed script accepts Chandra ACIS events (scripts/chandra_*.toml)")
    script = page.get_by_test_id("script-select").input_value()
    assert script in fitting(scripts, chandra)

    answer = page.request.put(
        f"{live_service.url}api/sessions/{session_id}/selection",
        data={"exposures": [r["exposure_id"] for r in xmm]},
    )
    assert answer.ok, answer.text()
    with page.expect_response(lambda r: r.url.endswith(f"/sessions/{session_id}/runs")) as info:
        page.get_by_test_id("run-button").click()
    assert info.value.status == 400
    message = page.get_by_test_id("message")
    expect(message).to_contain_text("Not started")
    expect(message).to_contain_text(f"script {script} does not accept")
    assert "{" not in message.inner_text(), "a sentence, not JSON"
    expect(page.get_by_test_id("script-select")).not_to_contain_text(
        next(s["title"] for s in scripts if s["name"] == script)
    )
    settled(page)
    assert offered(page) == fitting(scripts, xmm)
    checked = page.locator('[data-testid="observation-check"]:checked').evaluate_all(
        "cs => cs.map(c => c.dataset.exposureId)"
    )
    assert sorted(checked) == sorted(r["exposure_id"] for r in xmm), (
        "the page shows the new selection"
    )
    shot(page, "22-refused-launch")


def test_cameras_the_registry_does_not_know_still_show(page, live_service, shared_field):
    """A web host whose registry lacks an instrument the index holds (e.g. a newer indexer):
    its rows go to a last "other" table, selectable, instead of vanishing."""
    registry = api_json(live_service, "/api/instruments")
    partial = [i for i in registry if i["mission"] != "CHANDRA"]
    page.route("**/api/instruments", lambda route: route.fulfill(json=partial))
    ready(page, live_service.url)
    session_id = enter_circle(page, shared_field["ra_pnt"], shared_field["dec_pnt"], 60)
    coverage = api_json(live_service, f"/api/sessions/{session_id}")["coverage"]
    unknown = sorted(r["exposure_id"] for r in coverage if r["mission"] == "CHANDRA")
    assert unknown
    shown = tables(page)
    assert shown[-1]["group"] == "other"
    assert sorted(shown[-1]["ids"]) == unknown
    assert all(t["group"].startswith("XMM/") for t in shown[:-1])
    assert sum(len(t["ids"]) for t in shown) == len(coverage)
    expect(page.locator('[data-group="other"] caption')).to_contain_text("Other instruments")
    first = api_json(live_service, f"/api/sessions/{session_id}")["selection"]["exposures"]
    other = page.locator('[data-testid="camera-toggle"][data-group="other"]')
    other.check()
    settled(page)
    selection = api_json(live_service, f"/api/sessions/{session_id}")["selection"]["exposures"]
    assert sorted(selection) == sorted(set(first) - set(unknown))
    other.uncheck()
    settled(page)
    selection = api_json(live_service, f"/api/sessions/{session_id}")["selection"]["exposures"]
    assert set(unknown) <= set(selection)
    shot(page, "23-unknown-instrument")


@pytest.fixture(scope="module")
def real_service(real_data, tmp_path_factory):
    """The service on the real XMM data set: MOS event lists, pn exposure maps only."""
    import signal

    from tests.service import service_env, start_service

    tmp = tmp_path_factory.mktemp("live-real")
    service = start_service(tmp, service_env(tmp, ARCHIVE=real_data))
    yield service
    service.stop(signal.SIGINT)


def test_exposure_map_rows_show_their_kind_and_start_unticked(page, real_service):
    scripts = api_json(real_service, "/api/scripts")
    ready(page, real_service.url)
    session_id = enter_circle(page, 149.5905, -11.0873, 60)
    session = api_json(real_service, f"/api/sessions/{session_id}")
    maps = [r for r in session["coverage"] if r["kind"] == "exposure-map"]
    events = [r for r in session["coverage"] if r["kind"] == "events"]
    assert maps and events
    assert sorted(session["selection"]["exposures"]) == sorted(r["exposure_id"] for r in events)
    for row in maps:
        tr = page.locator(
            f'[data-testid="observation-row"][data-exposure-id="{row["exposure_id"]}"]'
        )
        expect(tr.get_by_test_id("observation-kind")).to_have_text("exposure map only")
        expect(tr.get_by_test_id("observation-check")).not_to_be_checked()
    for row in events:
        tr = page.locator(
            f'[data-testid="observation-row"][data-exposure-id="{row["exposure_id"]}"]'
        )
        expect(tr.get_by_test_id("observation-kind")).to_have_count(0)
        expect(tr.get_by_test_id("observation-check")).to_be_checked()
    assert offered(page) == fitting(scripts, events)

    # ticking an exposure map: the chooser offers what accepts it too, or says why nothing does
    first = maps[0]
    page.locator(
        f'[data-testid="observation-check"][data-exposure-id="{first["exposure_id"]}"]'
    ).check()
    settled(page)
    expected = fitting(scripts, [*events, first])
    assert offered(page) == expected
    if not expected:
        problem = page.get_by_test_id("script-problem")
        expect(problem).to_contain_text("exposure map")
        expect(problem).to_contain_text(first["obsid"])
        expect(page.get_by_test_id("run-button")).to_be_disabled()
    shot(page, "24-exposure-map-rows")
