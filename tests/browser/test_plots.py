"""The product plots in a real browser, after real runs on the live service: a spectrum has
error bars and an energy axis inside the instrument's band (read from uPlot's scales in the
page), rebins on request and refuses a bad minimum; a light curve has error bars, MJD or mission
time and its bin size; clicking a thumbnail opens the interactive plot; the status says
"stage k of n" while the run goes."""

from __future__ import annotations

import json
import re

import pytest

from indexer import instruments
from tests.browser.conftest import shot
from tests.browser.test_workflow import draw_and_accept, keep_only_xmm, ready

pytestmark = pytest.mark.browser

RECORD_STATUS = """() => {
  window.statusTexts = [];
  const box = document.querySelector('[data-testid="run-status"]');
  new MutationObserver(() => window.statusTexts.push(box.textContent))
    .observe(box, { childList: true, characterData: true, subtree: true });
}"""

PLOT_STATE = """() => {
  const holder = document.querySelector('[data-testid="plot-canvas"]');
  const u = holder && holder.uplot;
  if (!u) return null;
  return { xmin: u.scales.x.min, xmax: u.scales.x.max, xdistr: u.scales.x.distr,
           n: u.data[0].length, bars: Number(holder.dataset.errorBars || 0),
           axis: holder.dataset.x, width: u.width,
           panel: holder.parentElement.clientWidth,
           legend: [...document.querySelectorAll('.u-legend .u-value')].map((e) => e.textContent) };
}"""


@pytest.fixture
def bright_source(sample_archive):
    truth = json.loads((sample_archive / "truth.json").read_text())
    return next(s for s in truth["sources"] if s["kind"] == "extended")


def run_script(page, name: str, stage_count: int) -> list[str]:
    """Launch ``name`` from the page, wait for it to finish; the status texts shown meanwhile."""
    page.evaluate(RECORD_STATUS)
    page.get_by_test_id("script-select").select_option(name)
    page.get_by_test_id("run-button").click()
    page.locator('[data-testid="run-status"][data-phase="COMPLETED"]').wait_for(timeout=300_000)
    page.get_by_test_id("product-row").first.wait_for(timeout=30_000)
    texts = page.evaluate("() => window.statusTexts")
    assert f"of {stage_count} stages)" in page.get_by_test_id("run-status").inner_text()
    return texts


def plot_state(page, **expected):
    page.wait_for_function(
        "() => { const h = document.querySelector('[data-testid=\"plot-canvas\"]');"
        " return h && h.uplot && Number(h.dataset.errorBars || 0) > 0; }",
        timeout=30_000,
    )
    return page.evaluate(PLOT_STATE)


def test_spectrum_and_light_curve_plots(page, live_service, bright_source):
    ready(page, live_service.url)
    draw_and_accept(page, bright_source)
    keep_only_xmm(page)

    texts = run_script(page, "generate_spectra", 5)
    running = [t for t in texts if "Running:" in t]
    assert running and all(re.search(r"(stage [1-5] of 5: \w|starting)", t) for t in running), (
        running
    )

    # the thumbnail of a spectrum opens the interactive plot
    thumb = page.locator('[data-kind="spectrum"] [data-testid="thumbnail"]').first
    box = thumb.bounding_box()
    assert box["height"] >= 90  # larger previews
    thumb.click()
    state = plot_state(page)
    low, high = instruments.get("xmm-epic").energy_range_kev
    assert low <= state["xmin"] < state["xmax"] <= high, state
    assert state["bars"] >= state["n"] // 2 and state["xdistr"] == 3  # log energy by default
    assert state["width"] >= 0.9 * state["panel"]  # the panel's full width
    shot(page, "plots-01-spectrum")

    # the legend shows values rounded to their error, not 13 decimals
    over = page.locator('[data-testid="plot-canvas"] .u-over')
    over.hover(position={"x": 100, "y": 50})
    over.hover(position={"x": 300, "y": 100})
    page.wait_for_function(
        "() => [...document.querySelectorAll('.u-legend .u-value')]"
        ".some((e) => e.textContent.includes('±'))",
        timeout=10_000,
    )
    legend = page.evaluate(PLOT_STATE)["legend"]
    shown = [v for v in legend if "±" in v]
    assert shown and all(len(re.sub(r"[^0-9]", "", v.split("±")[0])) <= 8 for v in shown), legend

    # fewer, fuller bins on request; linear energy on request
    before = state["n"]
    page.get_by_test_id("min-counts").fill(str(200))
    page.get_by_test_id("rebin").click()
    page.wait_for_function(
        f"() => {{ const h = document.querySelector('[data-testid=\"plot-canvas\"]');"
        f" return h && h.uplot && h.uplot.data[0].length < {before}; }}",
        timeout=30_000,
    )
    page.get_by_test_id("log-x").uncheck()
    assert plot_state(page)["xdistr"] == 1
    spectrum_file = page.locator('[data-kind="spectrum"]').first.get_attribute("data-file")
    run_id = re.search(r"generate_spectra (\w+):", page.get_by_test_id("run-status").inner_text())[
        1
    ]
    for bad in ("0", "abc", "20000"):
        code, body, _ = live_service.get(f"/runs/{run_id}/plot/{spectrum_file}?min_counts={bad}")
        assert code == 400 and "min_counts" in json.loads(body)["message"], (bad, code, body[:200])
    code, body, _ = live_service.get(f"/runs/{run_id}/plot/no-such.pha")
    assert code == 404 and "no product" in json.loads(body)["message"]

    # a light curve: error bars, MJD or mission time, the bin size
    run_script(page, "generate_lightcurves", 5)
    page.locator('[data-kind="lightcurve"] [data-testid="plot-button"]').first.click()
    state = plot_state(page)
    assert state["axis"] == "mjd" and 50000 < state["xmin"] < state["xmax"] < 70000, state
    assert state["bars"] > 0
    assert re.search(r"bin \d+(\.\d+)? s", page.get_by_test_id("bin-size").inner_text())
    page.get_by_test_id("time-axis").select_option("mission")
    state = plot_state(page)
    assert state["axis"] == "mission" and state["xmin"] > 1e6, state  # s since MJDREF
    shot(page, "plots-02-lightcurve")

    # an image's thumbnail opens the image at full size
    run_script(page, "generate_images", 5)
    thumb = page.locator('[data-kind="image"] [data-testid="thumbnail"]').first
    thumb.click()
    image = page.get_by_test_id("plot-image")
    image.wait_for(timeout=30_000)
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=\"plot-image\"]');"
        " return i && i.complete && i.naturalWidth > 0; }",
        timeout=30_000,
    )
    assert image.bounding_box()["width"] > 2 * thumb.bounding_box()["width"]
    assert image.get_attribute("src") == thumb.get_attribute("src")
    shot(page, "plots-03-image")


def test_the_dashboard_reads_stage_k_of_n_while_a_run_goes(new_page, live_service, bright_source):
    page = new_page()
    ready(page, live_service.url)
    draw_and_accept(page, bright_source)
    keep_only_xmm(page)
    page.get_by_test_id("script-select").select_option("generate_lightcurves")
    page.locator("#param-bin_size").fill("3")  # many bins: a slow run
    page.get_by_test_id("run-button").click()
    page.locator('[data-testid="run-status"][data-phase="EXECUTING"]').wait_for(timeout=60_000)
    dashboard = new_page()
    dashboard.goto(live_service.url + "runs")
    stage = dashboard.locator(
        '[data-testid="run-row"][data-phase="EXECUTING"] [data-testid="run-stage"]'
    )
    stage.first.wait_for(timeout=60_000)
    assert re.fullmatch(
        r" · (stage [1-5] of 5: [a-z ]+|starting \(5 stages\))", stage.first.inner_text()
    )
    shot(dashboard, "plots-04-dashboard-stage")
    page.get_by_test_id("cancel-button").click()
    page.locator('[data-testid="run-status"][data-phase="ABORTED"]').wait_for(timeout=60_000)
