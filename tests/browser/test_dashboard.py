"""The runs dashboard in a real browser, on the real service: runs of the three triggers
(manual, standing request, schedule) listed newest first with their products, filtered by
trigger, phase and session; a product marked valid and commented, which persists, shows in the
API and travels in the bundle; the automation panel lists and pauses a standing request and
saves default parameters."""

from __future__ import annotations

import io
import json
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest
import redis
from playwright.sync_api import expect

from app import automation, runs, settings
from app.plumbing import parse_time
from tests.browser.conftest import shot

pytestmark = pytest.mark.browser

SCRIPT = "generate_images"
DEADLINE = 300.0


def request(service, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        service.url + path.lstrip("/"), data=data, method=method,
        headers={"Content-Type": "application/json"} if data else {},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw and "json" in resp.headers.get(
                "Content-Type", ""
            ) else raw
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def service_values(service) -> dict[str, Any]:
    """The settings of the running service, for calling the automation in this process."""
    tmp = Path(service.instance).parent
    return settings.load(
        {
            "INSTANCE": service.instance,
            "INDEX": tmp / "index",
            "SESSIONS": tmp / "sessions",
            "REDIS_URL": f"unix://{Path(service.instance) / 'redis' / 'redis.sock'}?db=0",
        },
        environ={},
    )


def wait_runs_ended(service, run_ids: list[str]) -> list[dict]:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        found = [request(service, "GET", f"/api/runs/{r}")[1] for r in run_ids]
        if all(r["phase"] in runs.TERMINAL for r in found):
            return found
        time.sleep(0.5)
    raise AssertionError(f"runs still going after {DEADLINE} s: {found}")


@pytest.fixture
def three_triggers(live_service, sample_archive):
    """A session with a run of each trigger, all ended: (session id, {trigger kind: run})."""
    truth = json.loads((sample_archive / "truth.json").read_text())
    src = next(s for s in truth["sources"] if s["kind"] == "point")
    status, session = request(live_service, "POST", "/api/sessions", {
        "source": f'icrs;circle({src["ra"]},{src["dec"]},30")',
        "background": f'icrs;annulus({src["ra"]},{src["dec"]},60",120")',
        "title": "dashboard field",
    })  # fmt: skip
    assert status == 201, session
    sid = session["id"]
    one = next(r["exposure_id"] for r in session["coverage"] if r["camera"] == "EMOS1")
    assert request(live_service, "PUT", f"/api/sessions/{sid}/selection",
                   {"exposures": [one]})[0] == 200  # fmt: skip

    status, manual = request(live_service, "POST", f"/api/sessions/{sid}/runs", {"script": SCRIPT})
    assert status == 202, manual
    # a standing request (taking note of the index as it is), then one of its exposures
    # "arrives": the automation queues a run on it, as the ingest process would
    status, standing = request(live_service, "POST", f"/api/sessions/{sid}/standing-requests",
                               {"title": "new MOS1 data", "scripts": [{"script": SCRIPT}]})  # fmt: skip
    assert status == 201, standing
    values = service_values(live_service)
    with automation.connect(automation.db_path(values["SESSIONS"])) as db:
        db.execute("DELETE FROM known_exposures WHERE exposure_id = ?", [one])
    status, schedule = request(live_service, "POST", f"/api/sessions/{sid}/schedules",
                               {"script": SCRIPT, "cron": "@daily", "title": "nightly"})  # fmt: skip
    assert status == 201, schedule
    with redis.Redis.from_url(values["REDIS_URL"]) as conn:
        [by_standing] = automation.check_standing(values, conn)
        tick = parse_time(schedule["created"]).replace(microsecond=0)
        by_schedule = automation.fire_schedule(values, schedule["id"], tick, conn)
    assert by_schedule is not None
    ended = wait_runs_ended(live_service, [manual["id"], by_standing.id, by_schedule.id])
    assert [r["phase"] for r in ended] == ["COMPLETED"] * 3, ended
    made = dict(zip(("manual", "standing", "schedule"), ended, strict=True))
    return sid, made, standing, schedule


def rows(page):
    return page.get_by_test_id("run-row")


def test_the_dashboard_lists_filters_and_reviews_runs(page, live_service, three_triggers):
    sid, made, standing, schedule = three_triggers
    page.goto(f"{live_service.url}runs?session={sid}")
    page.locator("#dashboard[data-ready=true]").wait_for(timeout=60_000)
    expect(page.get_by_test_id("runs-total")).to_have_attribute("data-total", "3")
    order = [r.get_attribute("data-run") for r in rows(page).all()]
    assert order == [made[k]["id"] for k in ("schedule", "standing", "manual")], "newest first"
    triggers = {
        r.get_attribute("data-run"): r.get_attribute("data-trigger") for r in rows(page).all()
    }
    assert triggers == {
        made["manual"]["id"]: "manual",
        made["standing"]["id"]: f"standing:{standing['id']}",
        made["schedule"]["id"]: f"schedule:{schedule['id']}",
    }
    for row in rows(page).all():
        assert int(row.get_by_test_id("run-products").get_attribute("data-count")) > 0
        expect(row.get_by_test_id("run-phase")).to_have_text("COMPLETED")
    shot(page, "21-dashboard")

    # filters: trigger, then phase; the URL keeps them
    page.get_by_test_id("filter-trigger").select_option("standing")
    expect(page.get_by_test_id("runs-total")).to_have_attribute("data-total", "1")
    expect(rows(page)).to_have_count(1)
    assert rows(page).first.get_attribute("data-run") == made["standing"]["id"]
    assert "trigger=standing" in page.url
    page.get_by_test_id("filter-trigger").select_option("")
    page.get_by_test_id("filter-phase").select_option("ERROR")
    expect(page.get_by_test_id("no-runs")).to_be_visible()
    page.get_by_test_id("filter-phase").select_option("")
    expect(rows(page)).to_have_count(3)

    # review the manual run: mark its first product valid, comment on it
    manual_row = page.locator(f'[data-testid="run-row"][data-run="{made["manual"]["id"]}"]')
    manual_row.get_by_test_id("review-button").click()
    product = page.get_by_test_id("product-review-row").first
    product.wait_for()
    name = product.get_attribute("data-product")
    expect(product.get_by_test_id("mark-state")).to_have_text("not reviewed")
    product.get_by_test_id("mark-valid").click()
    product = page.locator(f'[data-testid="product-review-row"][data-product="{name}"]')
    expect(product).to_have_attribute("data-mark", "valid")
    expect(product.get_by_test_id("mark-state")).to_contain_text("valid by local user")
    product.get_by_test_id("comment-input").fill("clean image, no artefact")
    product.get_by_test_id("comment-submit").click()
    expect(product.get_by_test_id("comment")).to_contain_text("clean image, no artefact")
    expect(manual_row.get_by_test_id("run-products")).to_have_attribute("data-valid", "1")
    shot(page, "22-reviewed")

    # it persists: a fresh page shows it, the API has it, the bundle carries it
    page.reload()
    page.locator("#dashboard[data-ready=true]").wait_for(timeout=60_000)
    page.locator(f'[data-testid="run-row"][data-run="{made["manual"]["id"]}"]').get_by_test_id(
        "review-button"
    ).click()
    product = page.locator(f'[data-testid="product-review-row"][data-product="{name}"]')
    expect(product).to_have_attribute("data-mark", "valid")
    expect(product.get_by_test_id("comment")).to_have_count(1)
    _status, review = request(live_service, "GET", f"/api/runs/{made['manual']['id']}/review")
    marked = next(p for p in review["products"] if p["file"] == name)
    assert marked["mark"]["mark"] == "valid"
    assert [c["text"] for c in marked["comments"]] == ["clean image, no artefact"]
    _status, data = request(live_service, "GET", f"/api/runs/{made['manual']['id']}/bundle.zip")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        saved = json.loads(zf.read(f"{made['manual']['id']}/review.json"))
    assert saved["products"][name]["mark"]["mark"] == "valid"

    # the automation panel: the standing request and the schedule are listed; pause one
    item = page.locator(f'[data-testid="standing-row"][data-id="{standing["id"]}"]')
    expect(item).to_have_attribute("data-enabled", "true")
    item.get_by_test_id("standing-toggle").click()
    expect(
        page.locator(f'[data-testid="standing-row"][data-id="{standing["id"]}"]')
    ).to_have_attribute("data-enabled", "false")
    expect(
        page.locator(f'[data-testid="schedule-row"][data-id="{schedule["id"]}"]')
    ).to_be_visible()
    # save a default parameter for the script; the launch form shows it
    page.locator("#defaults-script").select_option(SCRIPT)
    page.locator("#defaults-params").fill('{"pixel_arcsec": 8}')
    page.get_by_test_id("defaults-submit").click()
    expect(page.locator(f'[data-testid="defaults-row"][data-script="{SCRIPT}"]')).to_contain_text(
        '"pixel_arcsec":8'
    )
    shot(page, "23-automation")
    _status, scripts = request(live_service, "GET", f"/api/scripts?session={sid}")
    images = next(s for s in scripts if s["name"] == SCRIPT)
    assert next(p for p in images["parameters"] if p["name"] == "pixel_arcsec")["default"] == 8
    assert request(live_service, "DELETE", f"/api/defaults/{SCRIPT}?scope=site")[0] == 204
