"""The console in a real headless Chromium against the embedded stack after the demo's story (real processes).

The story (``vigil demo --fast``'s code: v1 serving, v2 rolled back by the monitor, drift, retrain, v3 promoted)
gives every page real data. Then, as people would: a risk officer (deployer + auditor roles) reads the pages and
rolls the deployment back from the console; a viewer sees no action and cannot forge one. The graph views'
(console_graphs.py) and monitoring views' (console_monitoring.py) cases are collected here too, so one play of the
story serves all three. Chromium is Debian's package (``make browser`` installs it); the tests skip, saying so, only
when it is absent.

``VIGIL_CONSOLE_SCREENSHOTS=<dir>`` also saves a screenshot of each page there (docs/console/ is made this way).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from vigil.cli.demo import _play
from vigil.demo.story import StoryConfig
from vigil.report.verify import verify_pack
from vigil.service.tokens import Role, TokenRecord, issue_token, update_tokens
from vigil.stack.console import running_console
from vigil.stack.supervisor import RunningStack, default_launches, running_stack

# The first case also plays the scenario (the demo's story, minutes on a loaded machine, twice if it must).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("Debian's chromium is not installed (make browser installs it)", allow_module_level=True)

from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright  # noqa: E402

DEPLOYMENT, MODEL = "patient-risk", "patient-risk-clf"
SHOTS = os.environ.get("VIGIL_CONSOLE_SCREENSHOTS")
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"


@dataclass
class Scenario:
    stack: RunningStack
    console: str
    officer: str  # deployer + auditor: may act and read the audit log
    viewer: str
    admin: str


def _token(stack: RunningStack, name: str, roles: set[Role]) -> str:
    plaintext, record = issue_token(name, roles)

    def add(records: list[TokenRecord]) -> list[TokenRecord]:
        return [*records, record]

    update_tokens(stack.paths.tokens_file, add)
    return plaintext


#: How often the scenario's story is played before the module gives up. The story is the demo's, judged on live
#: labels: its last canary (v3, as accurate as v1) could be rolled back by chance. That was ~1 play in 25 when each
#: window was judged alone; since the monitor judges accuracy over the rollout at the story's ``alpha: 0.001``
#: (c768f24) it is ~0.05 %. The console is not what that tests, so a second play in a fresh stack stands in, at no
#: cost when the first play succeeds; tests/e2e/test_demo.py still plays the story once and asserts it.
STORY_PLAYS = 2


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    config = StoryConfig.fast()
    failures: list[str | None] = []
    for _ in range(STORY_PLAYS):
        home = tmp_path_factory.mktemp("console-home")
        with running_stack(
            home,
            services=default_launches(free_ports=True),
            broker_port=0,
            postgres_port=0,
            postgres_durable=False,
            extra_env=config.service_env(),
        ) as stack:
            # In a thread of its own: playwright's sync API keeps an event loop running in this one.
            with ThreadPoolExecutor(1) as pool:
                play = _play(stack, config, Console(file=io.StringIO(), width=160))
                outcome = pool.submit(asyncio.run, play).result()
            if not outcome.ok:
                failures.append(outcome.failure)
                continue
            with running_console(stack, port=0) as console:
                yield Scenario(
                    stack=stack,
                    console=console.url,
                    officer=_token(stack, "risk-officer", {Role.DEPLOYER, Role.AUDITOR}),
                    viewer=_token(stack, "clinician", {Role.VIEWER}),
                    admin=stack.admin_token,
                )
            return
    raise AssertionError(f"the story did not end as scripted in {STORY_PLAYS} plays: {failures}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _signed_in(browser: Browser, scenario: Scenario, token: str) -> Page:
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(f"{scenario.console}/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Deployments")).to_be_visible()
    return page


def _shot(target: Page | Locator, name: str) -> None:
    """With ``VIGIL_CONSOLE_SCREENSHOTS`` set, a screenshot of a whole page or of one element, named ``name``."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        path = str(Path(SHOTS) / f"{name}.png")
        if isinstance(target, Page):
            target.screenshot(path=path, full_page=True)
        else:
            target.screenshot(path=path)


def _assert_time_axis_fits(page: Page, chart_id: str, *, holder: str = "chart-data", attr: str = "data-chart") -> None:
    """The drawn chart's time axis spans its windows' ends, and one window gets a minute each side (left to itself,
    uPlot 1.6 widens a one-point time axis to a thousand days, every tick 00:00:00; see ``static/console.js``). The
    chart's data is the page's JSON block ``#<holder>``; the range is what the page's script read back from uPlot
    (the labels are on a canvas)."""
    charts = json.loads(page.locator(f"#{holder}").text_content() or "[]")
    xs = next(c["x"] for c in charts if c["id"] == chart_id)
    drawn = page.locator(f'[{attr}="{chart_id}"]').get_attribute("data-x-range") or ""
    low, high = (float(v) for v in drawn.split())
    expected = (xs[0] - 60, xs[0] + 60) if len(xs) == 1 else (min(xs), max(xs))
    assert (low, high) == pytest.approx(expected), (chart_id, xs, drawn)


def _api(scenario: Scenario, service: str, path: str, *, timeout: float = 30, **params: Any) -> Any:
    """A service's answer to the admin (the tests' view of the truth the console must show)."""
    response = httpx.get(
        f"{scenario.stack.url(service)}{path}",
        params=params,
        headers={"Authorization": f"Bearer {scenario.admin}"},
        timeout=timeout,
    )
    response.raise_for_status()
    return response.json()


def _deployer(scenario: Scenario, path: str = "") -> dict:
    return dict(_api(scenario, "deployer", f"/v1/deployments/{DEPLOYMENT}{path}", timeout=10))


def _axe_violations(page: Page, console: str, paths: Iterable[str]) -> dict[str, list[str]]:
    """axe-core's WCAG 2 A/AA violations per console page (``page``'s context must bypass CSP to inject it)."""
    assert AXE.is_file(), f"{AXE} is missing: run make console-assets"
    problems = {}
    for path in paths:
        page.goto(f"{console}{path}")
        page.wait_for_load_state("load")
        page.add_script_tag(path=str(AXE))
        found = page.evaluate(
            "async () => (await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}}))"
            ".violations.map(v => v.id + ': ' + v.nodes.length + ' × ' + v.nodes[0].html.slice(0, 160))"
        )
        if found:
            problems[path] = found
    return problems


def test_the_token_never_reaches_the_browser(browser: Browser, scenario: Scenario) -> None:
    page = _signed_in(browser, scenario, scenario.officer)
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["vigil_console_session"]
    (cookie,) = cookies
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert scenario.officer not in cookie["value"] and scenario.officer not in page.content()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(f"{scenario.console}/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()  # the session is gone with sign-out
    page.get_by_label("API token").fill("vgl_not_a_token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("does not accept this token")


def test_pages_show_the_story(browser: Browser, scenario: Scenario) -> None:
    page = _signed_in(browser, scenario, scenario.officer)
    row = page.locator(f'tr[data-deployment="{DEPLOYMENT}"]')
    expect(row.locator("td.stable")).to_have_text("v3")
    expect(row).to_contain_text("stable 100 % · candidate 0 %")
    expect(row).to_contain_text("predictions)")  # the latest window's traffic of the served version
    expect(page.locator("#feed li").first).to_be_visible()  # the feed opened with the story's decisions
    expect(page.locator("#feed")).to_contain_text("deployment.promoted")
    _shot(page, "overview")

    page.get_by_role("link", name=DEPLOYMENT, exact=True).first.click()
    expect(page.locator("#stable-version")).to_have_text("v3")
    expect(page.locator(".verdict").first).to_be_visible()
    expect(page.get_by_text("Successful").first).to_be_visible()  # v3's canary verdict
    expect(page.locator("table.data").filter(has_text="accuracy.drop").first).to_be_visible()
    expect(page.get_by_text("v1 → v2")).to_be_visible()
    expect(page.get_by_text("rolled_back")).to_be_visible()
    for chart in ("traffic", "accuracy", "roc_auc", "ece", "latency_p99", "max_psi"):
        expect(page.locator(f'[data-chart="{chart}"][data-drawn] canvas')).to_be_visible()  # uPlot drew it
        _assert_time_axis_fits(page, chart)
    expect(page.locator("#drift")).to_contain_text("glucose")
    expect(page.get_by_role("link", name="Rollback…")).to_be_visible()
    _shot(page, "deployment")

    page.get_by_role("link", name="Monitoring detail").click()
    # The page and /health are two reads: a window that closes between them makes each show another newest window
    # (it happened once in a fresh-clone CI run). Read both again until they show the same ones.
    for _ in range(10):
        health = httpx.get(
            f"{scenario.stack.url('monitor')}/v1/deployments/{DEPLOYMENT}/health",
            headers={"Authorization": f"Bearer {scenario.admin}"},
            timeout=10,
        ).json()
        newest = {
            version: max(v["window"]["end"] for v in health["versions"] if v["version"] == version)
            for version in (1, 3)
        }
        if all(f"–{end[11:19]}" in page.locator(f"#v{version}-h").inner_text() for version, end in newest.items()):
            break
        time.sleep(1)
        page.reload()
    for version in (1, 3):
        table = page.locator(f"#features-v{version}")
        expect(table).to_contain_text("psi > 0.2")  # the demo's drift rule, from the policy in force
        expect(table.locator("tbody tr")).to_have_count(8)  # the patient-risk features
        fired = sorted(table.locator("tr.breached th").all_inner_texts())
        mine = [v for v in health["versions"] if v["version"] == version]
        said = sorted({f for v in mine if v["window"]["end"] == newest[version] for f in v["drifted_features"]})
        assert fired == [f for f in said if f != "prediction"], (version, fired, said)  # the monitor's own word
    expect(page.locator('[data-chart="prediction-hist"][data-drawn] canvas')).to_be_visible()
    _shot(page, "monitoring")
    page.go_back()

    page.get_by_role("link", name=MODEL).first.click()
    for version in ("v1", "v2", "v3"):
        expect(page.locator(f"#{version}")).to_be_visible()
    expect(page.get_by_text("champion = v3")).to_be_visible()
    expect(page.locator("#alias-timeline")).to_contain_text("v1 → v3")
    expect(page.locator("#v3 table.gates")).to_contain_text("pass")
    expect(page.locator(".lineage")).to_contain_text("patient-risk v3")
    # v3's metrics as the registry holds them: counts (n_train, n_estimators) as integers, the rest to 3 decimals.
    metrics = _api(scenario, "registry", f"/v1/models/{MODEL}/versions/3")["metrics"]
    shown = page.locator("#v3 h4:text-is('Metrics') + table tr").evaluate_all(
        "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])"
    )
    counts = {k for k, v in metrics.items() if v == round(v) and abs(v) >= 1}
    assert {"n_train", "n_estimators"} <= counts, metrics
    assert shown == [[k, f"{v:.0f}" if k in counts else f"{v:.3f}"] for k, v in sorted(metrics.items())]
    _shot(page, "model")

    # The evidence pack (#23) downloads from the model page and verifies offline with the auditor's key alone.
    # A version registered moments ago is not under a signed checkpoint yet: the console says so (503, Retry-After)
    # until the auditor's next checkpoint (at most its interval, 60 s by default), then serves the pack.
    links = page.locator("#v3").get_by_role("link")
    html_href, json_href = (links.filter(has_text=t).get_attribute("href") for t in ("document", "facts and proofs"))
    assert html_href and json_href
    deadline = time.monotonic() + 150
    while (answer := page.request.get(f"{scenario.console}{html_href}", timeout=120_000)).status == 503:
        assert "signed checkpoint" in answer.text() and answer.headers["retry-after"] == "10"
        assert time.monotonic() < deadline, "no checkpoint covered v3's registration in 150 s"
        time.sleep(2)
    assert answer.ok, (answer.status, answer.text()[-1500:])
    assert "attachment" in answer.headers["content-disposition"] and MODEL in answer.text()
    with page.expect_download() as json_download:  # and as a user gets it: the link, a real browser download
        page.locator("#v3").get_by_role("link", name="facts and proofs", exact=False).click()
    pack = json.loads(Path(json_download.value.path()).read_text())
    key = httpx.get(
        f"{scenario.stack.url('auditor')}/v1/keys", headers={"Authorization": f"Bearer {scenario.admin}"}, timeout=10
    ).json()["public_key_hex"]
    verdict = verify_pack(pack, key)
    assert verdict.ok and verdict.entries_checked > 0, verdict.problem

    page.locator("#v3").get_by_role("link", name="training job, metrics and log").click()
    expect(page.locator("#transitions")).to_contain_text("succeeded")
    expect(page.locator('[data-chart="metric-0"][data-drawn] canvas')).to_be_visible()  # boosting rounds' loss
    expect(page.get_by_role("heading", name="Run log")).to_be_visible()
    _shot(page, "job")

    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.locator("#jobs tbody tr")).to_have_count(3)  # v1, v2 and v3 were each trained by one job
    expect(page.locator("#jobs")).to_contain_text("succeeded")
    expect(page.locator("#dead-letters")).to_be_visible()
    _shot(page, "operations")

    page.goto(f"{scenario.console}/audit?subject=deployment/{DEPLOYMENT}&verify=true")
    chain = page.locator("#why-chain")
    for step in ("deployment.promoted", "model.version.registered", "data.updated", "retrain.requested"):
        expect(chain).to_contain_text(step)
    expect(chain.locator("tr.breached").first).to_be_visible()  # the retrain request's drift evidence
    expect(page.locator("#verification")).to_contain_text("Chain verified")
    expect(page.locator("#verification")).to_contain_text("Hash chain verified up to entry")
    expect(page.locator("#verification")).to_contain_text("by key")
    expect(page.locator("#entries")).to_contain_text("deployment.rolled_back")
    _shot(page, "audit")


def test_viewer_sees_no_action_and_forged_actions_are_refused(browser: Browser, scenario: Scenario) -> None:
    before = _deployer(scenario)
    viewer = _signed_in(browser, scenario, scenario.viewer)
    expect(viewer.locator(f'tr[data-deployment="{DEPLOYMENT}"]')).to_be_visible()
    expect(viewer.get_by_role("link", name="Audit")).to_have_count(0)
    viewer.goto(f"{scenario.console}/deployments/{DEPLOYMENT}")
    expect(viewer.locator("#stable-version")).to_have_text(f"v{before['stable_version']}")
    expect(viewer.locator("nav.actions")).to_have_count(0)
    expect(viewer.get_by_role("link", name="Rollback…")).to_have_count(0)
    missing = viewer.goto(f"{scenario.console}/deployments/no-such-deployment")
    assert missing is not None and missing.status == 404  # the deployer's answer, as a page with its reason
    expect(viewer.get_by_role("alert")).to_contain_text("no-such-deployment")

    action = f"{scenario.console}/deployments/{DEPLOYMENT}/actions/rollback"
    csrf = viewer.locator('form[action="/logout"] input[name=csrf]').get_attribute("value")
    # The viewer's own session and CSRF token: the console forwards, the deployer refuses the role.
    forged = viewer.request.post(action, form={"csrf": csrf or "", "reason": "forged"})
    assert forged.status == 403, forged.text()
    assert "requires one of the roles" in forged.text()

    officer = _signed_in(browser, scenario, scenario.officer)
    forms: list[dict[str, str | float | bool]] = [{"reason": "no csrf"}, {"csrf": "guessed", "reason": "wrong csrf"}]
    for form in forms:
        refused = officer.request.post(action, form=form)
        assert refused.status == 403, refused.text()
    outsider = browser.new_context().request.post(action, form={"csrf": "x", "reason": "no session"})
    assert outsider.status == 401
    assert _deployer(scenario)["stable_version"] == before["stable_version"]
    assert _deployer(scenario)["weights"] == before["weights"]


def test_pages_pass_axe_wcag_aa(browser: Browser, scenario: Scenario) -> None:
    """axe-core (installed from package-lock.json by make console-assets) finds no WCAG 2 A/AA violation — colour
    contrast, labels, names, landmarks — on any page, and every page is reachable from the keyboard alone."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)  # to inject axe
    page = context.new_page()
    page.goto(f"{scenario.console}/login")
    page.keyboard.type(scenario.officer)  # the token field has the focus on arrival
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Deployments")).to_be_visible()
    page.goto(f"{scenario.console}/operations")
    job_link = page.locator("#jobs a").first.get_attribute("href")
    paths = ["/login", "/", f"/deployments/{DEPLOYMENT}", f"/deployments/{DEPLOYMENT}/monitoring", f"/models/{MODEL}",
             "/operations", str(job_link),
             f"/audit?subject=deployment/{DEPLOYMENT}&verify=true"]  # fmt: skip
    assert _axe_violations(page, scenario.console, paths) == {}

    # Keyboard: from the top of the deployment page, Tab reaches the skip link first, then the Rollback action.
    page.goto(f"{scenario.console}/deployments/{DEPLOYMENT}")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Rollback…":
            break
    else:
        raise AssertionError("Rollback… is not reachable with Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Rollback {DEPLOYMENT}?")).to_be_visible()


# The graph and monitoring views' cases (console_graphs.py, console_monitoring.py) run here, in this module's one
# story, before the rollback below changes its end: in modules of their own each replayed the story, about two
# minutes of a CI worker per play (three plays of the same story were an eighth of the suite's worker time).
# isort: off
from console_graphs import (  # noqa: E402, F401  (collected here, in this order)
    test_why_chain_of_the_rolled_back_deployment_is_drawn_with_its_evidence,
    test_lineage_graph_of_the_model,
    test_dead_letter_replayed_from_the_console_by_an_admin,
    test_graph_pages_pass_axe_wcag_aa,
)
from console_monitoring import (  # noqa: E402, F401  (collected here, in this order; ``fair`` is a fixture)
    fair,
    test_monitoring_page_shows_the_monitors_histograms_estimates_and_fairness,
    test_overview_and_deployment_show_estimated_beside_realised_accuracy,
    test_fairness_view_shows_the_monitors_gaps_per_group,
    test_monitoring_views_pass_axe_wcag_aa,
)
# isort: on

# A case added to either module but not imported above would never run: refuse to collect instead.
_NOT_IMPORTED = [
    f"{module.__name__}.{name}"
    for module in (sys.modules["console_graphs"], sys.modules["console_monitoring"])
    for name in vars(module)
    if name.startswith("test_") and globals().get(name) is not getattr(module, name)
]
assert not _NOT_IMPORTED, f"import these cases into test_console.py: {_NOT_IMPORTED}"


def test_rollback_from_the_console_happens_and_is_audited_live(browser: Browser, scenario: Scenario) -> None:
    watcher = _signed_in(browser, scenario, scenario.officer)
    expect(watcher.locator("#feed li").first).to_be_visible()
    seen = watcher.locator("#feed li").count()

    page = _signed_in(browser, scenario, scenario.officer)
    page.goto(f"{scenario.console}/deployments/{DEPLOYMENT}")
    page.get_by_role("link", name="Rollback…").click()
    page.get_by_label("Reason").fill("clinical review: v3 under-calls high-risk patients")
    page.get_by_role("button", name="Confirm rollback").click()
    expect(page.get_by_role("status").filter(has_text="The deployer accepted: rollback")).to_be_visible()

    after = _deployer(scenario)
    assert after["stable_version"] == 1, after  # the previous stable, kept warm, serves again
    rollouts = _deployer(scenario, "/rollouts")["items"]
    detail = _deployer(scenario, f"/rollouts/{rollouts[0]['id']}")
    # After a promotion the rollback is a revert to the previous stable, recorded under the user's name.
    assert any(h["actor"] == "user:risk-officer" and h["action"] in {"rollback", "revert"} for h in detail["history"])

    # The live feed of the other page shows it, pushed by the console (the test never reloads that page).
    news = watcher.locator("#feed li").filter(has_text="deployment.rolled_back").filter(has_text="user:risk-officer")
    expect(news.first).to_be_visible(timeout=10_000)
    assert watcher.locator("#feed li").count() > seen

    page.goto(f"{scenario.console}/audit?type=deployment.rolled_back")
    newest = page.locator("#entries tbody tr").first
    expect(newest).to_contain_text("user:risk-officer")
    entries = httpx.get(
        f"{scenario.stack.url('auditor')}/v1/entries",
        params={"type": "deployment.rolled_back", "actor": "user:risk-officer"},
        headers={"Authorization": f"Bearer {scenario.admin}"},
        timeout=10,
    ).json()["items"]
    assert len(entries) == 1 and entries[0]["subject"] == f"deployment/{DEPLOYMENT}"
    reason = httpx.get(
        f"{scenario.stack.url('auditor')}/v1/events/{entries[0]['event_id']}",
        headers={"Authorization": f"Bearer {scenario.admin}"},
        timeout=10,
    ).json()["event"]["data"]
    assert "clinical review" in str(reason)
