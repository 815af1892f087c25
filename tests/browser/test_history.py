"""Run history, session titles and deletion in a real browser, against the real service
(``python -m app run``: gunicorn, a real rq worker, Redis) with the test scripts: two runs of
different scripts in one session are both reachable with their own products after a reload,
re-run makes a new run with the same parameters on the same exposures, the sessions list edits
titles and deletes after a confirmation (not a session with a running run), the favicon does
not 404 and the sky tiles are asked for without a double slash."""

from __future__ import annotations

import json
import shutil
import signal
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import shot
from tests.conftest import ROOT, wait_for
from tests.service import service_env, start_service

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def service(sample_archive, tmp_path_factory):
    """The real service with the test scripts (quick runs that write products) and a second
    manifest of the stages script, ``tables``."""
    tmp = tmp_path_factory.mktemp("history")
    scripts = tmp / "scripts"
    shutil.copytree(ROOT / "tests" / "scripts", scripts)
    # a second script with the same parameters (stages.py under another manifest)
    manifest = (scripts / "stages.toml").read_text()
    (scripts / "tables.toml").write_text(
        manifest.replace('title = "Three stages (test)"', 'title = "Tables (test)"')
    )
    env = service_env(tmp, ARCHIVE=sample_archive, SCRIPTS=scripts)
    running = start_service(tmp, env)
    yield running
    running.stop(signal.SIGINT)


def call(service, method: str, path: str, body: object = None) -> tuple[int, object]:
    request = urllib.request.Request(
        service.url + path.lstrip("/"),
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            data = resp.read()
            return resp.status, json.loads(data) if data else None
    except urllib.error.HTTPError as exc:
        data = exc.read()
        return exc.code, json.loads(data) if data else None


def xmm_session(service, sample_archive, title: str = "") -> tuple[str, list[str]]:
    """A session on a point source of the sample archive selecting its XMM EPIC event lists."""
    truth = json.loads((sample_archive / "truth.json").read_text())
    src = next(s for s in truth["sources"] if s["kind"] == "point")
    status, session = call(
        service,
        "POST",
        "/api/sessions",
        {"source": f'icrs;circle({src["ra"]},{src["dec"]},30")', "title": title},
    )
    assert status == 201, session
    chosen = [
        r["exposure_id"]
        for r in session["coverage"]
        if r["mission"] == "XMM" and r["instrument"] == "EPIC" and r["kind"] == "events"
    ]
    assert len(chosen) >= 2, session["coverage"]
    status, session = call(
        service, "PUT", f"/api/sessions/{session['id']}/selection", {"exposures": chosen}
    )
    assert status == 200, session
    return session["id"], chosen


def ready(page, url):
    page.goto(url)
    page.locator("#app[data-ready=true]").wait_for(timeout=60_000)


def run_script(page, script: str, label: str) -> str:
    """Choose ``script``, give it ``label``, press Run and wait for the end; the run's id."""
    page.get_by_test_id("script-select").select_option(script)
    page.locator("#param-label").fill(label)
    before = shown_run(page)
    page.get_by_test_id("run-button").click()
    return wait_for_new_run(page, before)


def shown_run(page) -> str | None:
    """The run the page shows (the URL names it)."""
    return page.url.split("#run=")[1] if "#run=" in page.url else None


def wait_for_new_run(page, before: str | None) -> str:
    """Wait until the page shows a run other than ``before`` and it has completed with its
    products listed; its id."""
    page.wait_for_function(
        "before => location.hash.startsWith('#run=') && location.hash !== `#run=${before}`",
        arg=before,
        timeout=60_000,
    )
    run_id = shown_run(page)
    expect(page.get_by_test_id("run-status")).to_contain_text(run_id)
    page.locator('[data-testid="run-status"][data-phase="COMPLETED"]').wait_for(timeout=120_000)
    expect(page.get_by_test_id("products-run")).to_contain_text(run_id)
    page.get_by_test_id("product-row").first.wait_for(timeout=30_000)
    return run_id


def table_text(page, service) -> str:
    """The text of the table product shown in the products panel."""
    link = page.locator('[data-file="table.txt"] [data-testid="download-link"]')
    return page.request.get(service.url + link.get_attribute("href").lstrip("/")).text()


def test_two_runs_reachable_after_reload_and_rerun(page, service, sample_archive):
    sid, chosen = xmm_session(service, sample_archive)
    ready(page, f"{service.url}sessions/{sid}")
    expect(page.get_by_test_id("run-history")).to_be_visible()
    first = run_script(page, "stages", "first-run")
    second = run_script(page, "tables", "second-run")
    assert first != second
    rows = page.get_by_test_id("history-row")
    expect(rows).to_have_count(2)
    assert "label second-run" in table_text(page, service)
    shot(page, "history-01-two-runs")

    # after a reload the newest run is shown (the URL names it); the other is one click away
    page.reload()
    page.locator("#app[data-ready=true]").wait_for(timeout=60_000)
    expect(page.get_by_test_id("history-row")).to_have_count(2)
    expect(page.get_by_test_id("run-status")).to_contain_text(second)
    page.get_by_test_id("product-row").first.wait_for(timeout=30_000)
    history = {r.get_attribute("data-run"): r for r in page.get_by_test_id("history-row").all()}
    assert history[first].get_attribute("data-script") == "stages"
    assert history[second].get_attribute("data-script") == "tables"
    assert "label=first-run" in history[first].get_by_test_id("history-params").inner_text()
    assert history[first].get_by_test_id("history-trigger").inner_text() == "manual"
    assert history[first].get_by_test_id("history-phase").inner_text() == "completed"
    assert ":" in history[first].get_by_test_id("history-duration").inner_text()
    history[first].get_by_test_id("history-show").click()
    expect(page.get_by_test_id("run-status")).to_contain_text(first)
    expect(page.get_by_test_id("products-run")).to_contain_text(first)
    page.locator('[data-file="table.txt"]').wait_for(timeout=30_000)
    assert "label first-run" in table_text(page, service)
    assert page.url.endswith(f"#run={first}")
    assert page.get_by_test_id("run-log").inner_text().count("[STAGE]") == 3
    shot(page, "history-02-first-chosen")

    # the chosen run survives a reload
    page.reload()
    page.locator("#app[data-ready=true]").wait_for(timeout=60_000)
    expect(page.get_by_test_id("run-status")).to_contain_text(first)
    page.locator('[data-file="table.txt"]').wait_for(timeout=30_000)
    assert "label first-run" in table_text(page, service)
    expect(page.locator(f'[data-testid="history-row"][data-run="{first}"]')).to_have_class(
        "history-row chosen"
    )

    # nothing selected: Run is disabled and says why, beside the button
    for check in page.get_by_test_id("observation-check").all():
        if check.is_checked():
            check.uncheck()
    page.locator('[data-testid="observation-selector"][data-saved="true"]').wait_for()
    expect(page.get_by_test_id("run-button")).to_be_disabled()
    expect(page.get_by_test_id("run-reason")).to_be_visible()
    expect(page.get_by_test_id("run-reason")).to_have_text("Select at least one exposure.")
    shot(page, "history-03-nothing-selected")

    # re-run the first run: same script, same parameters, on the exposures it ran on
    page.locator(f'[data-testid="history-row"][data-run="{first}"]').get_by_test_id(
        "rerun-button"
    ).click()
    third = wait_for_new_run(page, first)
    expect(page.get_by_test_id("history-row")).to_have_count(3, timeout=30_000)
    assert third not in (first, second)
    status, runs = call(service, "GET", f"/api/sessions/{sid}/runs")
    by_id = {r["id"]: r for r in runs}
    assert by_id[third]["script"] == "stages"
    assert by_id[third]["params"] == by_id[first]["params"]
    assert sorted(by_id[third]["exposures"]) == sorted(by_id[first]["exposures"]) == sorted(chosen)
    page.locator('[data-file="table.txt"]').wait_for(timeout=30_000)
    assert "label first-run" in table_text(page, service)
    shot(page, "history-04-rerun")

    # the title is edited on the session page
    title = page.get_by_test_id("session-title")
    title.fill("Point source, two scripts")
    title.press("Enter")
    wait_for(
        lambda: (
            call(service, "GET", f"/api/sessions/{sid}")[1]["title"] == "Point source, two scripts"
        ),
        "the title saved",
        timeout=30,
    )


def test_sessions_list_titles_and_delete(page, service, sample_archive):
    kept, _ = xmm_session(service, sample_archive, title="Kept session")
    doomed, _ = xmm_session(service, sample_archive, title="To delete")
    busy, _ = xmm_session(service, sample_archive, title="Busy")
    status, run = call(service, "POST", f"/api/sessions/{busy}/runs", {"script": "slow"})
    assert status == 202, run
    page.goto(f"{service.url}sessions")
    page.locator("body[data-ready=true]").wait_for()
    row = page.locator(f'[data-testid="session-row"][data-session="{kept}"]')
    expect(row.get_by_test_id("title-input")).to_have_value("Kept session")
    row.get_by_test_id("title-input").fill("Renamed in the list")
    row.get_by_test_id("title-save").click()
    expect(page.get_by_test_id("message")).to_contain_text("Title saved")
    assert call(service, "GET", f"/api/sessions/{kept}")[1]["title"] == "Renamed in the list"
    row.get_by_test_id("title-input").fill("bad\u0007title")
    row.get_by_test_id("title-save").click()
    expect(page.get_by_test_id("message")).to_contain_text("Title not saved")
    assert call(service, "GET", f"/api/sessions/{kept}")[1]["title"] == "Renamed in the list"

    # dismissed: nothing happens; accepted: the session is gone
    doomed_row = page.locator(f'[data-testid="session-row"][data-session="{doomed}"]')
    page.once("dialog", lambda dialog: dialog.dismiss())
    doomed_row.get_by_test_id("delete-session").click()
    expect(doomed_row).to_have_count(1)
    assert call(service, "GET", f"/api/sessions/{doomed}")[0] == 200
    messages = []
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.accept()))
    doomed_row.get_by_test_id("delete-session").click()
    expect(doomed_row).to_have_count(0)
    assert "To delete" in messages[0]
    assert call(service, "GET", f"/api/sessions/{doomed}")[0] == 404

    # a session with a running run is not deleted, and the page says why
    wait_for(
        lambda: call(service, "GET", f"/api/runs/{run['id']}")[1]["phase"] == "EXECUTING",
        "the slow run to start",
    )
    page.reload()
    page.locator("body[data-ready=true]").wait_for()
    busy_row = page.locator(f'[data-testid="session-row"][data-session="{busy}"]')
    expect(busy_row.get_by_test_id("run-counts")).to_contain_text("1 executing")
    page.once("dialog", lambda dialog: dialog.accept())
    busy_row.get_by_test_id("delete-session").click()
    expect(page.get_by_test_id("message")).to_contain_text("queued or running")
    expect(busy_row).to_have_count(1)
    shot(page, "history-05-sessions-list")
    assert call(service, "POST", f"/api/runs/{run['id']}/cancel", {})[0] in (200, 202)
    # the run links of the list open the session page on that run
    link = busy_row.get_by_test_id("run-link").first
    assert link.get_attribute("href") == f"/sessions/{busy}#run={run['id']}"


def test_favicon_and_tile_urls(page, service):
    responses = []
    page.on("response", lambda r: responses.append((r.url, r.status)))
    ready(page, service.url)
    icon = page.locator('link[rel="icon"]').get_attribute("href")
    response = page.request.get(service.url + icon.lstrip("/"))
    assert response.status == 200 and "<svg" in response.text()
    response = page.request.get(service.url + "favicon.ico")
    assert response.status == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert not [u for u, s in responses if s == 404 and "favicon" in u]
    wait_for(lambda: any("/hips/Norder" in u for u in page.requested_urls), "sky tiles", 60)
    assert not [u for u in page.requested_urls if "/hips//" in u]
