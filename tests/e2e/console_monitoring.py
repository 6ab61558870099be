"""The console's monitoring views in a real headless Chromium, against the demo's story (the scenario and browser
fixtures of test_console.py: v1 serving, v2 rolled back by the monitor, drift, retrain, v3 promoted).
test_console.py collects these cases and runs them in its one play of the story, after the graph views' cases and
before its rollback.

* the monitoring page draws each feature's histogram against its reference on the same bins — the shares in its
  data table are the monitor's ``/distributions`` answer for the same window, and the canvas holds both series;
* quality over time: per window the estimated accuracy (CBPE) and the realised one are the figures of
  ``/v1/windows``, and the band chart is drawn;
* fairness: the demo's requests log their clinic (``site``) through the gateway and the policy declares the sites
  as groups, so the page shows per-site gaps for the served versions; a second deployment (console_fairness.py)
  has a breached gap and its per-group rates are compared with the monitor's;
* the overview and the deployment page show each served version's estimated accuracy beside the realised one, as
  the monitor's ``/health`` gives them;
* axe-core finds no WCAG 2 A/AA violation on the three pages.

``VIGIL_CONSOLE_SCREENSHOTS=<dir>`` saves docs/console/monitoring-*.png.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from console_fairness import ATTRIBUTE, SITES, FairDeployment, play
from playwright.sync_api import Browser, Locator, Page, expect
from test_console import (
    DEPLOYMENT,
    Scenario,
    _api,
    _assert_time_axis_fits,
    _axe_violations,
    _shot,
    _signed_in,
    browser,  # noqa: F401  (fixture)
    scenario,  # noqa: F401  (fixture)
)

from vigil.demo.story import StoryConfig

#: Page reads :func:`_between_equal_reads` makes at most: after the story only its last window still closes (and
#: a late label may revise one), so the monitor settles within a few reads.
SETTLE_READS = 15
T = TypeVar("T")

#: The fill colours monitoring.js gives the reference's and the window's bars (RGB).
REFERENCE_RGB, WINDOW_RGB = (0xCB, 0xD5, 0xE1), (0x1D, 0x4E, 0xD8)


def _windows(stack: Scenario, deployment: str = DEPLOYMENT) -> list[dict[str, Any]]:
    """Every tumbling window of a deployment as ``/v1/windows`` lists it (figures with their revision)."""
    items: list[dict[str, Any]] = []
    after: str | int = 0
    while True:
        page = _api(stack, "monitor", "/v1/windows", deployment=deployment, kind="tumbling", limit=100, after=after)
        items += page["items"]
        after = page["next"]
        if after is None:
            return items


def _revisions(windows: list[dict[str, Any]]) -> dict[tuple[int, str, str], int]:
    """Which windows exist and at which revision: what a page read between two equal reads must show."""
    return {(w["figures"]["version"], w["figures"]["variant"], w["figures"]["start"]): w["revision"] for w in windows}


def _health_revisions(health: dict[str, Any]) -> dict[tuple[int, str], tuple[str, int]]:
    return {(v["version"], v["variant"]): (v["window"]["end"], v["revision"]) for v in health["versions"]}


def _between_equal_reads(page: Page, url: str, read: Callable[[], T], key: Callable[[T], Any]) -> T:
    """Load ``url`` between two reads of the monitor's API that found the same windows at the same revisions, and
    return that read: the page's own reads lie between them, so it must show exactly this.

    Why: a window closes ``window_s + grace`` after its end and is revised in place when a late label arrives, so
    the story's last window still closes after the story ends (and a slow CI host can deliver labels late). A page
    read and an API read at different moments can see different windows — not a disagreement. Revisions only grow,
    so two equal reads around the page leave no room for a third state; when they differ the page is read again."""
    changes = []
    for _ in range(SETTLE_READS):
        before = read()
        page.goto(url)
        after = read()
        if key(before) == key(after):
            return after
        changes.append(sorted(set(key(after).items()) - set(key(before).items())))
        time.sleep(1.0)  # a close or revision landed during the page: give the monitor's tick a moment
    raise AssertionError(f"the monitor changed windows during each of {SETTLE_READS} page reads: {changes}")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f} %"


def _num(v: float | None, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


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


def _newest(windows: list[dict[str, Any]], version: int) -> dict[str, Any]:
    """A version's newest window as every section of the page shows it: the latest end, the stable variant at a
    tie (a promoted candidate served as candidate and as stable in the window of its promotion)."""
    return max(
        (w for w in windows if w["figures"]["version"] == version),
        key=lambda w: (w["figures"]["end"], w["figures"]["variant"] == "stable"),
    )


def test_monitoring_page_shows_the_monitors_histograms_estimates_and_fairness(
    browser: Browser,  # noqa: F811
    scenario: Scenario,  # noqa: F811
) -> None:
    page = _signed_in(browser, scenario, scenario.officer)
    url = f"{scenario.console}/deployments/{DEPLOYMENT}/monitoring"
    windows = _between_equal_reads(page, url, lambda: _windows(scenario), _revisions)
    by_key = {(w["figures"]["version"], w["figures"]["variant"], w["figures"]["start"]): w for w in windows}
    shown = sorted({version for version, _, _ in by_key})
    assert 3 in shown, shown
    expect(page.locator("#read-at")).to_contain_text("revision")  # the page says a window can be revised

    # Quality over time: the page's rows are the monitor's windows, each at its revision, with its figures.
    # The headings are set in capitals, as drawn (innerText applies CSS): σ keeps its case, since Σ is a sum.
    heading = page.locator(f"#quality-v{shown[0]} thead th").nth(5).inner_text()
    assert heading == "BAND (±3σ)", heading
    estimated_rows = 0
    for version in shown:
        rows = page.locator(f"#quality-v{version} tbody tr").evaluate_all(
            "rows => rows.map(r => [r.dataset.start, r.dataset.variant, r.dataset.revision,"
            " Array.from(r.cells).map(c => c.textContent)])"
        )
        keys = [(version, variant, start) for start, variant, _, _ in rows]
        assert sorted(keys) == sorted(k for k in by_key if k[0] == version), version  # every window, once
        newest = _newest(windows, version)["figures"]
        assert keys[0] == (version, newest["variant"], newest["start"])  # newest first
        for start, variant, revision, cells in rows:
            w = by_key[(version, variant, start)]
            fig = w["figures"]
            end, shown_variant, predictions, labels, estimate, _band, realised, *_, shown_revision = cells
            assert revision == str(w["revision"]) and shown_revision.startswith(f"{w['revision']} ")
            assert (end, shown_variant, predictions, labels) == (
                fig["end"][11:19],
                fig["variant"],
                str(fig["predictions"]),
                str(fig["labels"]),
            )
            est = ((fig.get("estimated") or {}).get("metrics") or {}).get("accuracy")
            assert estimate == _num(est["value"] if est else None)
            want = (est or {}).get("realised")
            want = want if want is not None else fig["quality"].get("accuracy")
            assert realised == _num(want)
            estimated_rows += est is not None
    assert estimated_rows > 0  # the demo's trainer stores a calibration: the monitor estimates without labels
    expect(page.locator('[data-mchart="quality-v3"][data-drawn] canvas')).to_be_visible()
    expect(page.locator('[data-mchart="quality-ece"][data-drawn] canvas')).to_be_visible()
    for chart_id in ("quality-v3", "quality-ece"):
        _assert_time_axis_fits(page, chart_id, holder="monitoring-chart-data", attr="data-mchart")
    _shot(page.locator("section").filter(has=page.locator("#quality-h")), "monitoring-quality")

    # Histograms: of the same window the drift table and the quality table show as the version's newest, read back
    # from the monitor for that window. A closed window's feature counts never change (a late prediction is only
    # counted late), so this read may come after the page's.
    for version in shown:
        newest = _newest(windows, version)
        fig = newest["figures"]
        grid = page.locator(f"#dist-v{version}")
        expect(grid).to_be_visible()
        start, variant = grid.get_attribute("data-window-start"), grid.get_attribute("data-variant")
        assert (start, variant, grid.get_attribute("data-revision")) == (
            fig["start"],
            fig["variant"],
            str(newest["revision"]),
        )
        expect(page.locator(f"#v{version}-h")).to_contain_text(
            f"{fig['variant']}, newest window {fig['start'][11:19]}–{fig['end'][11:19]}, revision {newest['revision']}"
        )
        dist = _api(
            scenario, "monitor", f"/v1/deployments/{DEPLOYMENT}/versions/{version}/distributions",
            start=start, variant=variant,
        )  # fmt: skip
        assert (dist["window"]["start"], dist["variant"]) == (fig["start"], fig["variant"])
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

    # Fairness: the demo's requests carry their clinic (``site``, a deployment's logged attribute the gateway logs
    # and the model never sees) and its policy declares the sites as groups: served versions' labelled windows
    # have per-site gaps, from real traffic through the gateway, and the page shows them.
    fair = [w for w in windows if w["figures"].get("fairness")]
    assert fair and {w["figures"]["sensitive_attribute"] for w in fair} == {"site"}
    expect(page.locator("#fairness-none")).to_have_count(0)
    expect(page.locator('[id^="fairness-groups-v"]').filter(has_text="riverside").first).to_be_visible()
    expect(page.locator('[id^="fairness-gaps-v"]').first).to_contain_text("Demographic parity difference")
    _shot(page, "monitoring-page")


def _newest_served(health: dict[str, Any], served: set[int]) -> dict[int, dict[str, Any]]:
    """Per served version its newest ``/health`` entry (stable at a tie): the overview's line of that version."""
    newest: dict[int, dict[str, Any]] = {}
    for v in health["versions"]:
        held = newest.get(v["version"])
        if v["version"] in served and (
            held is None
            or (v["window"]["end"], v["variant"] == "stable") > (held["window"]["end"], held["variant"] == "stable")
        ):
            newest[v["version"]] = v
    return newest


def test_overview_and_deployment_show_estimated_beside_realised_accuracy(
    browser: Browser,  # noqa: F811
    scenario: Scenario,  # noqa: F811
) -> None:
    page = _signed_in(browser, scenario, scenario.officer)
    deployment = _api(scenario, "deployer", f"/v1/deployments/{DEPLOYMENT}")
    served = {v for v in (deployment["stable_version"], deployment["candidate_version"]) if v is not None}

    def health() -> dict[str, Any]:
        return _api(scenario, "monitor", f"/v1/deployments/{DEPLOYMENT}/health")

    def lines(selector: str) -> list[list[str]]:
        return sorted(page.locator(selector).evaluate_all(
            "ls => ls.map(l => [l.dataset.version, l.dataset.variant, l.dataset.windowEnd, l.dataset.revision])"
        ))  # fmt: skip

    def said(entries: list[dict[str, Any]]) -> list[list[str]]:
        return sorted([str(v["version"]), v["variant"], v["window"]["end"], str(v["revision"])] for v in entries)

    # The overview: one line per served version, its newest window — a promoted candidate's last window as
    # candidate is no longer what it serves as.
    now = _between_equal_reads(page, f"{scenario.console}/", health, _health_revisions)
    latest = _newest_served(now, served)
    assert latest, now
    row = page.locator(f'tr[data-deployment="{DEPLOYMENT}"]')
    assert lines(f'tr[data-deployment="{DEPLOYMENT}"] .accuracy-line') == said(list(latest.values()))
    for version, v in latest.items():
        est = ((v.get("estimated") or {}).get("metrics") or {}).get("accuracy")
        assert est is not None, v  # the demo's versions carry a calibration
        line = row.locator(f'.accuracy-line[data-version="{version}"]')
        expect(line.locator(".estimate")).to_have_text(_pct(est["value"]))
        if v["labels"]:
            expect(line.locator(".realised")).to_have_text(_pct(v["quality"]["accuracy"]))
        else:
            expect(line).to_contain_text("no labels yet")
    _shot(page.locator("table.data").first, "monitoring-overview")

    # The deployment page: every version × variant the monitor has a latest window of, at its revision.
    now = _between_equal_reads(page, f"{scenario.console}/deployments/{DEPLOYMENT}", health, _health_revisions)
    assert lines("#estimates tbody tr[data-version]") == said(now["versions"])
    for v in now["versions"]:
        est = ((v.get("estimated") or {}).get("metrics") or {}).get("accuracy")
        cells = page.locator(f'#estimates tr[data-version="{v["version"]}"][data-variant="{v["variant"]}"]')
        expect(cells.locator(".estimate")).to_have_text(
            _pct(est["value"]) if est else "no estimate (no calibration in the profile)"
        )
        if v["labels"]:
            expect(cells.locator(".realised")).to_have_text(_pct(v["quality"]["accuracy"]))
    expect(page.locator('[data-mchart="quality-v3"][data-drawn] canvas')).to_be_visible()
    _shot(page.locator("section").filter(has=page.locator("#estimates-h")), "monitoring-deployment-estimates")


@pytest.fixture(scope="module")
def fair(scenario: Scenario) -> FairDeployment:  # noqa: F811
    """A second deployment in the scenario's stack whose traffic has a ``site`` column (console_fairness.py)."""
    with ThreadPoolExecutor(1) as pool:  # playwright's sync API keeps an event loop running in this thread
        return pool.submit(play, scenario.stack, scenario.admin, StoryConfig.fast().window_s).result()


#: The gaps the fairness view lists, in its order: (figure key, the policy's threshold field, the name shown).
GAPS = (
    ("demographic_parity_difference", "max_demographic_parity_difference", "Demographic parity difference"),
    ("equalized_odds_difference", "max_equalized_odds_difference", "Equalized odds difference"),
)


def test_fairness_view_shows_the_monitors_gaps_per_group(
    browser: Browser,  # noqa: F811
    scenario: Scenario,  # noqa: F811
    fair: FairDeployment,
) -> None:
    """With a categorical sensitive attribute in the traffic and ``fairness.attribute`` in the policy: the gaps of the
    version's newest window against the policy's thresholds, breached where the monitor's rule says so, and the
    per-group rates behind them — all as the monitor's API gives them for that window and revision."""
    page = _signed_in(browser, scenario, scenario.officer)
    url = f"{scenario.console}/deployments/{fair.deployment}/monitoring"
    windows = _between_equal_reads(page, url, lambda: _windows(scenario, fair.deployment), _revisions)
    newest = _newest(windows, fair.version)
    fig = newest["figures"]
    assert fig["sensitive_attribute"] == ATTRIBUTE and fig["fairness"], fig.get("fairness")
    rule = _api(scenario, "monitor", f"/v1/policies/{fair.deployment}")["policy"]["fairness"]
    assert rule["attribute"] == ATTRIBUTE
    expect(page.locator("#fairness-none")).to_have_count(0)

    section = page.locator(f"#fairness-v{fair.version}")
    expect(section).to_be_visible()
    assert [section.get_attribute(a) for a in ("data-window-start", "data-variant", "data-revision")] == [
        fig["start"], fig["variant"], str(newest["revision"])
    ]  # fmt: skip
    heading = page.locator("h3").filter(has=page.locator(f"code:text-is('{ATTRIBUTE}')"))
    expect(heading).to_contain_text(f"revision {newest['revision']}")
    expect(heading).to_contain_text(f"{int(fig['fairness']['count'])} labelled rows")

    # The gaps: the window's figures against the policy's thresholds, judged over enough labelled rows.
    judged = fig["fairness"]["count"] >= rule["min_samples"]
    gaps = page.locator(f"#fairness-gaps-v{fair.version} tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    expected = []
    fair_fig = fig["fairness"]
    for key, limit, name in GAPS:
        value, threshold = fair_fig[key], rule[limit]
        # The gap's test (kernels/fairness.py): for equalized odds, the TPR or FPR gap past the limit.
        parts = ["demographic_parity"] if key.startswith("demographic") else ["tpr_gap", "fpr_gap"]
        ps = [fair_fig[f"{g}_p_value"] for g in parts if g == "demographic_parity" or fair_fig.get(g, 0) > threshold]
        p = min(ps) if ps else None
        large = judged and value > threshold
        real = p is None or p < rule["alpha"]
        verdict = (
            "breached"
            if large and real
            else (f"past the limit, not told from noise (p ≥ {rule['alpha']})" if large else "within")
        )
        expected.append([name, _num(value), f"> {threshold:.3f}", _num(p), verdict])
    assert gaps == expected
    assert expected[0][4] == "breached"  # the scenario's sites are flagged at 60 % and 30 %: a gap of about 0.3

    # The per-group rates: the monitor's /distributions of the same window, which counts no label the figures miss.
    dist = _api(
        scenario, "monitor", f"/v1/deployments/{fair.deployment}/versions/{fair.version}/distributions",
        start=fig["start"], variant=fig["variant"],
    )  # fmt: skip
    assert (dist["sensitive_attribute"], dist["revision"], dist["pending_labels"]) == (ATTRIBUTE, newest["revision"], 0)
    assert section.get_attribute("data-pending-labels") == "0"
    groups = [g for g in dist["groups"] if g["n"] > 0]
    assert {g["group"] for g in groups} == set(SITES)
    rows = page.locator(f"#fairness-groups-v{fair.version} tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    assert rows == [
        [g["group"], str(g["n"]), _num(g["selection_rate"]), _num(g["tpr"]), _num(g["fpr"])] for g in groups
    ]
    rates = [g["selection_rate"] for g in groups]
    assert fig["fairness"]["demographic_parity_difference"] == pytest.approx(max(rates) - min(rates))
    chart_id = "fair-demographic_parity_difference"
    expect(page.locator(f'[data-mchart="{chart_id}"][data-drawn] canvas')).to_be_visible()
    _assert_time_axis_fits(page, chart_id, holder="monitoring-chart-data", attr="data-mchart")
    _shot(page.locator("section").filter(has=page.locator("#fair-h")), "monitoring-fairness")


def test_monitoring_views_pass_axe_wcag_aa(
    browser: Browser,  # noqa: F811
    scenario: Scenario,  # noqa: F811
) -> None:
    """No WCAG 2 A/AA violation (contrast, names, labels) on the pages this module's views are on, with the charts
    drawn; the histogram data tables open from the keyboard."""
    page = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True).new_page()
    page.goto(f"{scenario.console}/login")
    page.get_by_label("API token").fill(scenario.officer)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Deployments")).to_be_visible()
    pages = ("/", f"/deployments/{DEPLOYMENT}", f"/deployments/{DEPLOYMENT}/monitoring")
    assert _axe_violations(page, scenario.console, pages) == {}
    summary = page.locator('#dist-v3 figure[data-feature="glucose"] summary')
    summary.focus()
    page.keyboard.press("Enter")
    expect(page.locator('#dist-v3 figure[data-feature="glucose"] table.hist-data')).to_be_visible()
