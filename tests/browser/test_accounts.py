"""Accounts in a real browser: sign up, run a script, share a read-only link, open it in a fresh
browser without an account."""

from __future__ import annotations

import pytest

from tests.browser.conftest import shot
from tests.browser.test_workflow import draw_and_accept, keep_only_xmm

pytestmark = pytest.mark.browser


def test_sign_up_run_share_and_open_the_link_anonymously(
    new_page, live_accounts_service, sample_archive
):
    import json

    url = live_accounts_service.url
    truth = json.loads((sample_archive / "truth.json").read_text())
    source = next(s for s in truth["sources"] if s["kind"] == "extended")

    page = new_page()
    page.goto(url)
    assert "/login" in page.url, "everything needs a login"
    page.get_by_test_id("signup-link").click()
    page.get_by_test_id("signup-name").fill("Vera Rubin")
    page.get_by_test_id("signup-email").fill("vera@example.org")
    page.get_by_test_id("signup-password").fill("spectral lines at dusk")
    page.get_by_test_id("signup-password2").fill("spectral lines at dusk")
    page.get_by_test_id("signup-submit").click()
    page.locator("#app[data-ready=true]").wait_for(timeout=60_000)
    assert "Vera Rubin" in page.get_by_test_id("nav-account").inner_text()

    draw_and_accept(page, source)
    keep_only_xmm(page)  # the field has Chandra data too; generate_images takes XMM EPIC
    page.get_by_test_id("script-select").select_option("generate_images")
    page.get_by_test_id("run-button").click()
    page.locator('[data-testid="run-status"][data-phase="COMPLETED"]').wait_for(timeout=240_000)
    page.get_by_test_id("product-row").first.wait_for(timeout=30_000)
    products = page.get_by_test_id("product-row").count()
    page.get_by_test_id("share-link-button").click()
    page.get_by_test_id("share-link").wait_for()  # shown once the link is made
    link = page.get_by_test_id("share-link").input_value()
    assert link.startswith(url.rstrip("/") + "/share/")
    shot(page, "11-owner-shares")

    visitor = new_page()
    visitor.goto(link)
    visitor.locator("#app[data-ready=true]").wait_for(timeout=60_000)
    visitor.get_by_test_id("product-row").first.wait_for(timeout=30_000)
    assert visitor.get_by_test_id("product-row").count() == products
    assert "Finished" in visitor.get_by_test_id("run-status").inner_text()
    assert visitor.get_by_test_id("observation-row").count() >= 1
    assert visitor.get_by_test_id("region-accept").is_disabled(), "a read-only link cannot edit"
    assert visitor.get_by_test_id("run-button").is_disabled()
    shot(visitor, "12-read-only-link")

    stranger = new_page()
    stranger.goto(url + "sessions")
    assert "/login" in stranger.url, "the link opens one session, not the service"
