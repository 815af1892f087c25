"""A double-click on Run makes one run: the page locks the button until the service answers and
sends a fresh ``client_key`` with the launch (checked through the API, on the real service)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.browser.conftest import shot

pytestmark = pytest.mark.browser


def _call(service, method: str, path: str, body: object | None = None) -> tuple[int, object]:
    request = urllib.request.Request(
        service.url.rstrip("/") + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"} if body is not None else {},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read() or b"null")


@pytest.fixture
def xmm_session(live_service, sample_archive) -> str:
    """A session on a bright source with only its XMM exposures selected (scripts fit them)."""
    truth = json.loads((sample_archive / "truth.json").read_text())
    src = next(s for s in truth["sources"] if s["kind"] == "extended")
    status, session = live_service.post(
        "/api/sessions",
        {
            "source": f'icrs;circle({src["ra"]},{src["dec"]},25")',
            "background": f'icrs;annulus({src["ra"]},{src["dec"]},60",120")',
        },
    )
    assert status == 201, session
    xmm = [
        r["exposure_id"]
        for r in session["coverage"]
        if r["mission"] == "XMM" and r.get("kind") == "events"
    ]
    assert xmm, session["coverage"]
    _call(live_service, "PUT", f"/api/sessions/{session['id']}/selection", {"exposures": xmm})
    return session["id"]


def test_a_double_click_on_run_makes_one_run(page, live_service, xmm_session):
    posts = []
    page.on(
        "request",
        lambda r: (
            posts.append(r.post_data_json)
            if r.method == "POST" and r.url.endswith(f"/api/sessions/{xmm_session}/runs")
            else None
        ),
    )
    page.goto(f"{live_service.url.rstrip('/')}/sessions/{xmm_session}")
    page.locator("#app[data-ready=true]").wait_for(timeout=60_000)
    button = page.get_by_test_id("run-button")
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=run-button]').disabled", timeout=60_000
    )
    button.dblclick()
    page.locator("[data-testid=run-status][data-phase]").wait_for(timeout=60_000)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=run-button]').dataset.launching",
        timeout=60_000,
    )
    page.wait_for_timeout(1000)  # a second launch, if any, would have been sent by now
    shot(page, "launch-guard-after-double-click")

    _, listed = _call(live_service, "GET", f"/api/sessions/{xmm_session}/runs")
    assert len(listed) == 1, listed
    assert len(posts) == 1, posts  # the lock held: the second click sent nothing
    key = posts[0]["client_key"]
    assert isinstance(key, str) and len(key) == 32 and listed[0]["client_key"] == key

    # the same request again (a retry of the page's POST) answers the same run
    again = {"script": posts[0]["script"], "params": posts[0]["params"], "client_key": key}
    status, run = _call(live_service, "POST", f"/api/sessions/{xmm_session}/runs", again)
    assert status == 200 and run["id"] == listed[0]["id"]

    for run in listed:  # free the worker for the other tests
        if run["phase"] in ("QUEUED", "EXECUTING"):
            _call(live_service, "POST", f"/api/runs/{run['id']}/cancel", {})
