"""The console's graphs and dead-letter replay in a real headless Chromium, against the demo's story (the scenario
and browser fixtures of test_console.py: v1 serving, v2 rolled back by the monitor, drift, retrain, v3 promoted).
test_console.py collects these cases and runs them in its one play of the story, after its own page checks and
before its rollback.

* the audit explorer draws the why chain of the rolled-back deployment: the same entries, in the same order, as the
  auditor's ``/v1/why``; each node opens its evidence (entry, hash, actor, signer, time) by mouse or keyboard;
* the model page draws the lineage datasets → jobs and runs → versions → deployments, the registry's own graph;
* a malformed record on the bus becomes a dead letter, an admin replays it from the console (confirmation, reason,
  CSRF) and the service's audit event names the admin; a viewer sees no replay and a forged replay is refused.

``VIGIL_CONSOLE_SCREENSHOTS=<dir>`` saves the graph pages there (docs/console/graph-*.png are made this way).
"""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from playwright.sync_api import Browser, Page, expect
from test_console import (
    DEPLOYMENT,
    MODEL,
    Scenario,
    _api,
    _axe_violations,
    _shot,
    _signed_in,
    browser,  # noqa: F401  (fixture)
    scenario,  # noqa: F401  (fixture)
)

from support.kafka import produce_raw
from vigil.events import topics


def _drawn(page: Page, graph: str) -> None:
    expect(page.locator(f'[data-graph="{graph}"][data-drawn] svg .gnode').first).to_be_visible()


def _is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    rest = iter(seen)
    return all(any(w == s for s in rest) for w in wanted)


def test_why_chain_of_the_rolled_back_deployment_is_drawn_with_its_evidence(
    browser: Browser,  # noqa: F811
    scenario: Scenario,  # noqa: F811
) -> None:
    rollbacks = _api(scenario, "auditor", "/v1/entries", type="deployment.rolled_back", limit=100)["items"]
    by_monitor = [e for e in rollbacks if not e["actor"].startswith("user:")]  # the story's own rollback of v2
    assert by_monitor, rollbacks
    chain = _api(scenario, "auditor", f"/v1/why/{by_monitor[0]['event_id']}")
    entries = chain["chain"]
    types = [e["event_type"] for e in entries]
    # The story's chain, newest first: the rollback, what asked for it (the monitor's request and its window, or
    # the rollout's failed analysis step: whichever came first in this run), the rollout it ended, the version that
    # rollout tried, its training, and the data that version was trained on.
    story = ["deployment.rolled_back", "deployment.rollout.started", "model.version.registered",
             "training.completed", "data.updated"]  # fmt: skip
    assert _is_subsequence(story, types), types

    page = _signed_in(browser, scenario, scenario.officer)
    page.goto(f"{scenario.console}/audit?why={entries[0]['event_id']}")
    _drawn(page, "why")
    nodes = page.locator('[data-graph="why"] .gnode')
    drawn_seqs = [int(s) for s in nodes.evaluate_all("ns => ns.map(n => n.getAttribute('data-seq'))")]
    assert drawn_seqs == [e["seq"] for e in entries]  # every entry the auditor walked, and nothing else
    assert nodes.evaluate_all("ns => ns.map(n => n.getAttribute('data-title'))") == types
    edges = page.locator('[data-graph="why"] path.edge')
    expect(edges).to_have_count(
        sum(1 for e in entries if e["causation_id"] in {x["event_id"] for x in entries}) + len(chain["links"])
    )
    # The same chain as a text list (what a screen reader reads), entry by entry.
    listed = page.locator("#why-chain > li")
    assert [int(s) for s in listed.evaluate_all("ls => ls.map(l => l.dataset.seq)")] == drawn_seqs

    # The asked-about event's evidence shows on arrival; a click shows another node's.
    panel = page.locator("#graph-why-evidence")
    expect(panel).to_contain_text(str(entries[0]["seq"]))
    root = next(e for e in entries if e["event_type"] == "data.updated")
    nodes.filter(has=page.locator("text.title", has_text="data.updated")).first.click()
    for fact in (str(root["seq"]), root["entry_hash"][:16], root["actor"], root["event_id"], "data.updated"):
        expect(panel).to_contain_text(fact)
    if root.get("signer"):
        expect(panel).to_contain_text(root["signer"])

    # The keyboard alone: focus a node, Enter shows its evidence, arrows move along the nodes.
    version = next(i for i, e in enumerate(entries) if e["event_type"] == "model.version.registered")
    nodes.nth(version).focus()
    page.keyboard.press("Enter")
    expect(panel).to_contain_text(entries[version]["entry_hash"][:16])
    expect(nodes.nth(version)).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("ArrowDown")
    page.keyboard.press(" ")
    expect(nodes.nth((version + 1) % len(entries))).to_have_attribute("aria-pressed", "true")
    expect(panel).to_contain_text(entries[(version + 1) % len(entries)]["entry_hash"][:16])
    nodes.nth(0).click()
    _shot(page, "graph-why")


def test_lineage_graph_of_the_model(browser: Browser, scenario: Scenario) -> None:  # noqa: F811
    versions = [v["version"] for v in _api(scenario, "registry", f"/v1/models/{MODEL}/versions")["items"]]
    graphs = [_api(scenario, "registry", f"/v1/lineage/models/{MODEL}/versions/{v}") for v in versions]
    node_ids = {n["id"] for g in graphs for n in g["nodes"]}
    edge_keys = {(e["source"], e["target"], e["kind"]) for g in graphs for e in g["edges"]}
    kinds = {n["kind"] for g in graphs for n in g["nodes"]}
    assert {"dataset", "job", "run", "model_version", "deployment"} <= kinds

    page = _signed_in(browser, scenario, scenario.officer)
    page.goto(f"{scenario.console}/models/{MODEL}")
    _drawn(page, "lineage")
    drawn = set(page.locator('[data-graph="lineage"] .gnode').evaluate_all("ns => ns.map(n => n.dataset.node)"))
    assert drawn == node_ids
    expect(page.locator('[data-graph="lineage"] path.edge')).to_have_count(len(edge_keys))

    # A path through the drawing from a dataset to the deployment: dataset → run → v3 → patient-risk.
    v3 = f"model:{MODEL}/v3"
    (run,) = [s for s, t, k in edge_keys if t == v3 and k == "output"]
    assert any(t == run and s.startswith("dataset:") for s, t, _ in edge_keys)
    assert any(t == run and s.startswith("job:") for s, t, _ in edge_keys)
    assert (v3, f"deployment:{DEPLOYMENT}", "deployed_as") in edge_keys

    # The newest version's evidence shows on arrival; a dataset node's on a click.
    panel = page.locator("#graph-lineage-evidence")
    v3_node = next(n for g in graphs for n in g["nodes"] if n["id"] == v3)
    expect(panel).to_contain_text(v3_node["facets"]["registered_event_id"])
    dataset = next(n for g in graphs for n in g["nodes"] if n["kind"] == "dataset")
    page.locator(f'[data-graph="lineage"] .gnode[data-node="{dataset["id"]}"]').click()
    expect(panel).to_contain_text(dataset["facets"]["content_digest"].split(":")[-1][:12])
    # And the list a screen reader reads names every node.
    expect(page.locator("#lineage-list > li")).to_have_count(len(node_ids))
    page.locator(f'[data-graph="lineage"] .gnode[data-node="{v3}"]').click()
    _shot(page, "graph-lineage")


def _letters(at: Scenario, service: str) -> list[dict[str, Any]]:
    return list(_api(at, service, "/v1/dlq", limit=500)["items"])


def _wait(probe: Any, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_dead_letter_replayed_from_the_console_by_an_admin(browser: Browser, scenario: Scenario) -> None:  # noqa: F811
    before = {d["id"] for d in _letters(scenario, "monitor")}
    poison = b'{"id": "console-replay", "type": ' + str(time.time_ns()).encode()  # malformed JSON, signed
    publish = produce_raw(scenario.stack.bootstrap_servers, topics.LABELS, [poison], key=DEPLOYMENT.encode())
    with ThreadPoolExecutor(1) as pool:  # playwright's sync API keeps an event loop running in this thread
        pool.submit(asyncio.run, publish).result()
    letter = _wait(
        lambda: next((d for d in _letters(scenario, "monitor") if d["id"] not in before), None),
        "the monitor to dead-letter the malformed record",
    )
    assert letter["status"] == "dead" and letter["reason"] == "malformed_json"
    row = f'tr[data-letter="monitor/{letter["id"]}"]'
    action = f"{scenario.console}/dead-letters/monitor/{letter['id']}/replay"

    # A viewer sees the letter and no replay; forging the replay with the viewer's own session and CSRF token is
    # refused by the monitor (the console forwards it; the role is the service's to check).
    viewer = _signed_in(browser, scenario, scenario.viewer)
    viewer.goto(f"{scenario.console}/operations")
    expect(viewer.locator(row)).to_contain_text("malformed_json")
    expect(viewer.get_by_role("link", name=re.compile("^Replay"))).to_have_count(0)
    csrf = viewer.locator('form[action="/logout"] input[name=csrf]').get_attribute("value")
    forged = viewer.request.post(action, form={"csrf": csrf or "", "reason": "forged"})
    assert forged.status == 403 and "requires one of the roles" in forged.text(), forged.text()
    # An admin's session without its CSRF token, or with a wrong one, is refused by the console.
    admin = _signed_in(browser, scenario, scenario.admin)
    for form in ({"reason": "no csrf"}, {"csrf": "guessed", "reason": "wrong csrf"}):
        assert admin.request.post(action, form=form).status == 403
    assert browser.new_context().request.post(action, form={"csrf": "x", "reason": "none"}).status == 401
    unchanged = next(d for d in _letters(scenario, "monitor") if d["id"] == letter["id"])
    assert unchanged == letter  # nothing was replayed

    admin.goto(f"{scenario.console}/operations")
    expect(admin.get_by_role("link", name=re.compile("^Replay")).first).to_be_visible()  # what the viewer lacks
    admin.locator(row).get_by_role("link", name=f"Replay dead letter {letter['id']} of the monitor").click()
    expect(admin.get_by_role("heading", name=f"Replay dead letter {letter['id']} of the monitor?")).to_be_visible()
    expect(admin.locator("dl.facts")).to_contain_text("malformed_json")
    admin.get_by_label("Reason").fill("the lab feed's encoder is fixed; re-deliver the record")
    _shot(admin, "graph-dlq-confirm")
    admin.get_by_role("button", name="Confirm replay").click()
    expect(admin.get_by_role("status").filter(has_text=f"Replayed dead letter {letter['id']}")).to_be_visible()
    _shot(admin, "graph-dlq")

    # The monitor replayed it: marked replayed — and, as this record is still malformed, dead again once its
    # consumer has read it a second time (the service's own rule: same record, same letter, one more attempt).
    def replayed() -> dict[str, Any] | None:
        now = next(d for d in _letters(scenario, "monitor") if d["id"] == letter["id"])
        moved = datetime.fromisoformat(now["updated_at"]) > datetime.fromisoformat(letter["updated_at"])
        return now if moved and (now["status"] == "replayed" or now["attempts"] > letter["attempts"]) else None

    _wait(replayed, "the letter replayed")

    # The replay is in the audit log under the admin's name, with the reason.
    audited = _wait(
        lambda: _api(scenario, "auditor", "/v1/entries", type="dlq.replayed", subject=f"dlq/monitor/{letter['id']}")[
            "items"
        ],
        "the replay's audit entry",
    )
    (entry,) = audited
    event = _api(scenario, "auditor", f"/v1/events/{entry['event_id']}")["event"]["data"]
    assert event["reason"] == "the lab feed's encoder is fixed; re-deliver the record"
    assert entry["actor"] == event["replayed_by"] and entry["actor"].startswith("user:")
    officer = _signed_in(browser, scenario, scenario.officer)
    officer.goto(f"{scenario.console}/audit?type=dlq.replayed")
    expect(officer.locator("#entries tbody tr").first).to_contain_text(entry["actor"])


def test_graph_pages_pass_axe_wcag_aa(browser: Browser, scenario: Scenario) -> None:  # noqa: F811
    """axe-core finds no WCAG 2 A/AA violation on the drawn graphs (nodes as named buttons, contrast of their text)
    nor on the jobs page with its replay actions and the replay's confirmation."""
    letters = [d for d in _letters(scenario, "monitor") if d["status"] == "dead"]
    paths = [f"/audit?subject=deployment/{DEPLOYMENT}", f"/models/{MODEL}", "/operations"]
    if letters:
        paths.append(f"/dead-letters/monitor/{letters[0]['id']}/confirm")
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)  # to inject axe
    page = context.new_page()
    page.goto(f"{scenario.console}/login")
    page.get_by_label("API token").fill(scenario.admin)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Deployments")).to_be_visible()
    assert _axe_violations(page, scenario.console, paths) == {}
