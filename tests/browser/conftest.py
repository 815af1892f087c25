"""Browser tests: Playwright drives Debian's Chromium against the real service.

Every request the page makes is recorded; a test fails if one leaves 127.0.0.1 (the page must
work offline). Screenshots go to ``test-output/screenshots/`` (kept by CI as artefacts).
"""

from __future__ import annotations

import signal
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import ROOT
from tests.service import service_env, start_service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
SCREENSHOTS = ROOT / "test-output" / "screenshots"


@pytest.fixture(scope="session")
def live_service(sample_archive, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    service = start_service(tmp, service_env(tmp, ARCHIVE=sample_archive))
    yield service
    service.stop(signal.SIGINT)


@pytest.fixture(scope="session")
def live_accounts_service(sample_archive, tmp_path_factory):
    """The real service with accounts on (REGIO_AUTH=accounts) and open sign-up."""
    from app.redis_server import free_port

    tmp = tmp_path_factory.mktemp("live-accounts")
    port = free_port()
    env = service_env(
        tmp, ARCHIVE=sample_archive, AUTH="accounts", SIGNUP="true", PORT=port,
        BASE_URL=f"http://127.0.0.1:{port}",
    )  # fmt: skip
    service = start_service(tmp, env)
    yield service
    service.stop(signal.SIGINT)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser, request):
    """Open pages in fresh browser contexts (no shared cookies); every request is recorded and
    the test fails if one leaves 127.0.0.1."""
    opened = []

    def make():
        context = browser.new_context(
            viewport={"width": 1400, "height": 900}, accept_downloads=True
        )
        page = context.new_page()
        page.requested_urls = []
        page.on("request", lambda req: page.requested_urls.append(req.url))
        opened.append((context, page))
        return page

    yield make
    failed = getattr(request.node, "rep_call", None)
    for number, (context, page) in enumerate(opened):
        if failed is not None and failed.failed:
            shot(page, f"FAILED-{request.node.name}-{number}")
        context.close()
        outside = [
            u
            for u in page.requested_urls
            if urlparse(u).scheme in ("http", "https", "ws", "wss")
            and urlparse(u).hostname not in ("127.0.0.1", "localhost")
        ]
        assert outside == [], f"the page made requests that leave 127.0.0.1: {outside}"


@pytest.fixture
def page(new_page):
    return new_page()


def shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
