"""Evidence packs built from the demo's story on real processes (embedded broker and Postgres), checked field by
field against what the registry, deployer and auditor APIs answer; ``report verify`` passes on the pack and fails,
naming the entry, on each tampering; an unsigned version is a draft; the PDF's first page renders.

``VIGIL_REPORT_EXAMPLES=<dir>`` also copies the packs (JSON, HTML, PDF, first page PNG) there (docs/reports/).
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from vigil.cli.demo import _play
from vigil.cli.main import app
from vigil.demo.story import StoryConfig
from vigil.report.cite import CITE
from vigil.report.collect import DECISION_TYPES
from vigil.service.tokens import Role, issue_token, update_tokens
from vigil.stack.supervisor import RunningStack, default_launches, running_stack

pytestmark = pytest.mark.e2e

MODEL, DEPLOYMENT = "patient-risk-clf", "patient-risk"
EXAMPLES = os.environ.get("VIGIL_REPORT_EXAMPLES")


@dataclass
class Story:
    stack: RunningStack
    out: Path
    promoted: int
    rolled_back: int
    key: str

    def get(self, service: str, path: str, **params: Any) -> Any:
        response = httpx.get(
            f"{self.stack.url(service)}{path}",
            params=params,
            timeout=30,
            headers={"Authorization": f"Bearer {self.stack.admin_token}"},
        )
        response.raise_for_status()
        return response.json()

    def pages(self, service: str, path: str, **params: Any) -> list[Any]:
        items, after = [], None
        while True:
            page = self.get(service, path, limit=500, **({"after": after} if after else {}), **params)
            items += page["items"]
            after = page["next"]
            if after is None:
                return items


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    crashed = "" if result.exception is None or isinstance(result.exception, SystemExit) else repr(result.exception)
    return result.exit_code, result.output + crashed


def _token(stack: RunningStack, name: str, roles: set[Role]) -> str:
    plaintext, record = issue_token(name, roles)
    update_tokens(stack.paths.tokens_file, lambda records: [*records, record])
    return plaintext


CARD = {
    "intended_use": "Flags adult outpatients at raised 12-month cardiovascular risk for a nurse-led follow-up call.",
    "out_of_scope_uses": "Not for diagnosis, triage in emergency care, or patients under 18.",
    "risks": "Under-calls risk in populations older and heavier than the training data; the monitor watches drift.",
    "ethical_considerations": "Fairness gap on sex is reported per window; a human reviews every flagged patient.",
}


def _write_and_sign_card(stack: RunningStack, version: int) -> None:
    """A scientist writes the card; a scientist may not sign it off; a risk officer (deployer) does."""
    home = str(stack.paths.home)
    scientist = _token(stack, "dr-lee", {Role.SCIENTIST})
    officer = _token(stack, "risk-officer", {Role.DEPLOYER})
    for field, text in CARD.items():
        code, out = cli(
            "card",
            "edit",
            MODEL,
            "--version",
            str(version),
            "--field",
            field,
            "--text",
            text,
            "--home",
            home,
            "--token",
            scientist,
        )
        assert code == 0, out
    code, out = cli("card", "sign-off", MODEL, "--version", str(version), "--home", home, "--token", scientist)
    assert code == 1 and "403" in out, out
    code, out = cli(
        "card",
        "sign-off",
        MODEL,
        "--version",
        str(version),
        "--statement",
        "Reviewed by the safety board.",
        "--home",
        home,
        "--token",
        officer,
    )
    assert code == 0 and "signed off by user:risk-officer (deployer)" in out, out


def _covered(story: Story) -> bool:
    """The newest decision about the deployment and the card's sign-off are under a signed checkpoint (packs cite
    only covered entries)."""
    seqs = [story.pages("auditor", "/v1/entries", subject=f"deployment/{DEPLOYMENT}")[-1]["seq"]]
    card = story.get("registry", f"/v1/models/{MODEL}/versions/{story.promoted}/card")
    response = httpx.get(
        f"{story.stack.url('auditor')}/v1/events/{card['sign_off']['event_id']}",
        timeout=30,
        headers={"Authorization": f"Bearer {story.stack.admin_token}"},
    )
    if response.status_code == 404:
        return False  # not audited yet
    response.raise_for_status()
    seqs.append(response.json()["seq"])
    checkpoints = story.pages("auditor", "/v1/checkpoints")
    return bool(checkpoints) and checkpoints[-1]["to_seq"] >= max(seqs)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    home = tmp_path_factory.mktemp("report-home")
    config = StoryConfig.fast()
    env = {**config.service_env(), "VIGIL_AUDIT_CHECKPOINT_INTERVAL_S": "1"}
    with running_stack(
        home,
        services=default_launches(free_ports=True),
        broker_port=0,
        postgres_port=0,
        postgres_durable=False,
        extra_env=env,
        echo=lambda _msg: None,
    ) as stack:
        began = datetime.now(UTC)
        outcome = asyncio.run(_play(stack, config, Console(file=io.StringIO(), width=160)))
        assert outcome.ok, outcome.failure
        assert outcome.promoted_candidate and outcome.rejected_candidate
        _write_and_sign_card(stack, outcome.promoted_candidate)
        out = tmp_path_factory.mktemp("packs")
        probe = Story(stack, out, outcome.promoted_candidate, outcome.rejected_candidate, "")
        asyncio.run(_wait_covered(probe))
        probe.key = probe.get("auditor", "/v1/keys")["public_key"]
        for version in (probe.promoted, probe.rolled_back):
            code, text = cli(
                "report", "model", MODEL, "--version", str(version), "--out", str(out), "--pdf", "--home", str(home)
            )
            assert code == 0, text
        code, text = cli(
            "report",
            "deployment",
            DEPLOYMENT,
            "--from",
            began.isoformat(),
            "--to",
            datetime.now(UTC).isoformat(),
            "--out",
            str(out),
            "--pdf",
            "--home",
            str(home),
        )
        assert code == 0, text
        yield probe


async def _wait_covered(story: Story) -> None:
    from support.services import eventually

    async def probe() -> bool:
        return await asyncio.to_thread(_covered, story)

    await eventually(probe, timeout=120, what="a signed checkpoint over the story's decisions")


def _pack(story: Story, version: int) -> dict[str, Any]:
    return json.loads((story.out / f"{MODEL}-v{version}.json").read_text())


def _v(node: Any) -> Any:
    return node["value"]


def test_pack_holds_what_the_apis_say(story: Story) -> None:
    pack = _pack(story, story.promoted)
    model = pack["sections"]["model"]
    found = story.get("registry", f"/v1/models/{MODEL}/versions/{story.promoted}")
    assert _v(model["version"]) == found["version"] == story.promoted
    assert _v(model["artifact_digest"]) == found["artifact_digest"]
    assert _v(model["artifact_format"]) == found["artifact_format"]
    assert _v(model["params"]) == found["params"]
    assert _v(model["metrics"]) == found["metrics"]
    assert _v(model["gate_policy_version"]) == found["gate_policy_version"]
    assert _v(model["event_id"]) == found["registered_event_id"]
    pack_gates = {g["gate"]: g for g in _v(model["gates"])}
    assert set(pack_gates) == {g["gate"] for g in found["gates"]}
    for gate in found["gates"]:
        mine = pack_gates[gate["gate"]]
        for key in ("kind", "metric", "value", "threshold", "baseline", "baseline_version", "passed"):
            assert mine.get(key) == gate.get(key), (gate["gate"], key)
    assert [(d["dataset"], d["version"], d["content_digest"]) for d in _v(model["datasets"])] == [
        (d["dataset"], d["version"], d["content_digest"]) for d in found["datasets"]
    ]
    run = _v(pack["sections"]["training"]["run"])
    api_run = story.get("trainer", f"/v1/runs/{found['run_id']}")
    assert run["entrypoint"] == api_run["entrypoint"] and run["params"] == api_run["params"]

    # Lineage: the auditor's why walk, step by step, back to the upstream data.
    why = story.get("auditor", f"/v1/why/{found['registered_event_id']}")
    chain = pack["sections"]["lineage"]["why_chain"]
    assert [s["data"][CITE] for s in chain] == [s["event_id"] for s in why["chain"]]
    assert "data.updated" in [_v(s["type"]) for s in chain]  # v3's data answered the monitor's retrain request

    # Deployment history: every decision event the auditor holds about this version is in the pack, unchanged.
    (deployment,) = pack["sections"]["deployments"]
    decisions = {d["data"][CITE]: d for d in deployment["decisions"]}
    types = [_v(d["type"]) for d in deployment["decisions"]]
    assert "deployment.rollout.started" in types and "deployment.promoted" in types
    assert "analysis.verdict" in types
    for event_id, decision in decisions.items():
        audited = story.get("auditor", f"/v1/events/{event_id}")
        assert _v(decision["data"]) == audited["event"]["data"]
        assert _v(decision["type"]) == audited["event_type"]
    promoted = next(d for d in deployment["decisions"] if _v(d["type"]) == "deployment.promoted")
    rollouts = {r["id"]: r for r in story.pages("deployer", f"/v1/deployments/{DEPLOYMENT}/rollouts")}
    rollout = rollouts[_v(promoted["data"])["rollout_id"]]
    assert rollout["candidate_version"] == story.promoted and rollout["phase"] == "promoted"

    # Comparison: the stable version of the version's rollout, with that version's registered metrics.
    comparison = pack["sections"]["comparison"]
    assert _v(comparison["version"]) == rollout["stable_version"] == _v(comparison["against"])
    previous = story.get("registry", f"/v1/models/{MODEL}/versions/{rollout['stable_version']}")
    assert _v(comparison["metrics"]) == previous["metrics"]
    assert comparison["metrics"][CITE] == previous["registered_event_id"]

    # Monitoring: one window per (variant, start), the newest revision, as the auditor holds it.
    windows = deployment["windows"]
    assert windows
    for window in windows:
        audited = story.get("auditor", f"/v1/events/{window['data'][CITE]}")["event"]["data"]
        assert _v(window["data"]) == audited and audited["version"] == story.promoted
    # ... and they are the windows the monitor's API lists for the version, as far as the pack's checkpoint reaches
    # (windows keep closing after the story; those past the checkpoint are listed in the pack as not covered).
    size = pack["audit"]["checkpoint"]["to_seq"]
    listed = story.pages("monitor", "/v1/windows", deployment=DEPLOYMENT, version=story.promoted, kind="tumbling")
    seq = {w["event_id"]: story.get("auditor", f"/v1/events/{w['event_id']}")["seq"] for w in listed}
    in_pack = {w["data"][CITE] for w in windows}
    assert {eid for eid, n in seq.items() if n <= size} <= in_pack
    later = [
        e
        for e in story.pages(
            "auditor", "/v1/entries", subject=f"deployment/{DEPLOYMENT}/v{story.promoted}", type="monitor.window"
        )
        if e["seq"] > size
    ]
    later_windows = [story.get("auditor", f"/v1/events/{e['event_id']}")["event"]["data"] for e in later]
    for event_id in in_pack - set(seq):  # an older revision: the window's newest came after the checkpoint
        mine = next(_v(w["data"]) for w in windows if w["data"][CITE] == event_id)
        assert any(w["window"] == mine["window"] and w["revision"] > mine["revision"] for w in later_windows)
    # What the builder saw past its checkpoint it names, with the reason, instead of leaving it out silently.
    for late in pack["audit"]["not_covered"]:
        assert late["event_id"] not in pack["audit"]["entries"] and late["why"]

    # Policy changes: whichever the services record as events (issue #20 item 5) are cited as the auditor holds them.
    for change in pack["sections"]["policy_changes"]:
        audited = story.get("auditor", f"/v1/events/{change['data'][CITE]}")
        assert _v(change["data"]) == audited["event"]["data"] and audited["event_type"].startswith("policy.")

    # Aliases: the champion move to this version, as the registry's history records it.
    history = story.pages("registry", f"/v1/models/{MODEL}/aliases/champion/history")
    to_this = [h for h in history if h["to_version"] == story.promoted]
    pack_moves = [_v(a["data"]) for a in pack["sections"]["aliases"]]
    assert to_this and any(m["alias"] == "champion" and m["to_version"] == story.promoted for m in pack_moves)


def test_unsigned_version_is_a_draft_and_the_signed_one_is_not(story: Story) -> None:
    draft = _pack(story, story.rolled_back)
    assert draft["status"]["draft"] is True
    html = (story.out / f"{MODEL}-v{story.rolled_back}.html").read_text()
    assert "DRAFT" in html[: html.index("<h2>")]  # the first page, before the first section
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)|url\((?!#)|@import""", html)  # no external asset

    signed = _pack(story, story.promoted)
    card = story.get("registry", f"/v1/models/{MODEL}/versions/{story.promoted}/card")
    assert card["signed_off"] is True
    assert signed["status"]["draft"] is False
    assert signed["status"]["signed_off_by"] == card["sign_off"]["signed_off_by"] == "user:risk-officer"
    assert signed["status"]["role"] == "deployer"
    human = signed["sections"]["human"]
    for field, text in CARD.items():
        assert _v(human["sections"][field]["text"]) == text == card["sections"][field]["text"]
        assert human["sections"][field]["text"][CITE] == card["sections"][field]["event_id"]
    assert human["sign_off"]["data"][CITE] == card["sign_off"]["event_id"]
    audited = story.get("auditor", f"/v1/events/{card['sign_off']['event_id']}")
    assert audited["event_type"] == "model.card.signed_off" and audited["signer"] == "service:registry"
    html = (story.out / f"{MODEL}-v{story.promoted}.html").read_text()
    assert "DRAFT" not in html[: html.index("<h2>")] and "Signed off by user:risk-officer" in html


def test_rolled_back_version_shows_its_rollback(story: Story) -> None:
    pack = _pack(story, story.rolled_back)
    (deployment,) = pack["sections"]["deployments"]
    rolled = [_v(d["data"]) for d in deployment["decisions"] if _v(d["type"]) == "deployment.rolled_back"]
    assert rolled and rolled[0]["failed_version"] == story.rolled_back
    verdicts = [_v(d["data"]) for d in deployment["decisions"] if _v(d["type"]) == "analysis.verdict"]
    assert any(v["verdict"] == "Failed" for v in verdicts)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def _verify(story: Story, pack: dict[str, Any], key: str, name: str) -> tuple[int, str]:
    path = story.out / f"tampered-{name}.json"
    path.write_text(json.dumps(pack))
    return cli("report", "verify", str(path), "--public-key", key)


def test_verify_passes_then_fails_naming_the_entry(story: Story) -> None:
    pack = _pack(story, story.promoted)
    code, text = _verify(story, pack, story.key, "untouched")
    assert code == 0, text
    assert "OK" in text and "not backed by an audit entry" in text

    seq_of = {eid: rec["entry"]["seq"] for eid, rec in pack["audit"]["entries"].items()}
    registered = pack["sections"]["model"]["metrics"][CITE]

    # One cited number edited in the facts.
    edited = copy.deepcopy(pack)
    metrics = edited["sections"]["model"]["metrics"]["value"]
    metric = sorted(metrics)[0]
    metrics[metric] = metrics[metric] + 0.05
    code, text = _verify(story, edited, story.key, "number")
    assert code == 1
    assert f"entry {seq_of[registered]} (model.version.registered, event {registered})" in text, text

    # The same number edited inside the embedded event too: the event no longer hashes to its entry.
    both = copy.deepcopy(edited)
    both["audit"]["entries"][registered]["event"]["data"]["metrics"] = metrics
    code, text = _verify(story, both, story.key, "event")
    assert code == 1 and f"entry {seq_of[registered]} " in text and "event was altered" in text, text

    # A window's proof removed.
    window_id = pack["sections"]["deployments"][0]["windows"][0]["data"][CITE]
    no_proof = copy.deepcopy(pack)
    no_proof["audit"]["entries"][window_id]["audit_path"] = []
    code, text = _verify(story, no_proof, story.key, "proof")
    assert code == 1 and f"entry {seq_of[window_id]} (monitor.window, event {window_id})" in text, text
    dropped = copy.deepcopy(pack)
    del dropped["audit"]["entries"][window_id]
    code, text = _verify(story, dropped, story.key, "dropped")
    assert code == 1 and window_id in text and "does not carry" in text, text

    # A draft made to look signed off.
    promoted = _pack(story, story.rolled_back)
    promoted["status"] = {"draft": False, "signed_off_by": "user:risk-officer", "role": "deployer"}
    code, text = _verify(story, promoted, story.key, "status")
    assert code == 1 and "draft=False" in text and "draft=True" in text, text

    # Another key.
    other = "ab" * 32
    code, text = _verify(story, pack, other, "key")
    assert code == 1 and "checkpoint 1.." in text and "not by the given key" in text, text


def _first_page(story: Story, version: int) -> tuple[Path, str]:
    """The PDF's first page as PNG (pdftoppm) and as text (pdftotext)."""
    pdf = story.out / f"{MODEL}-v{version}.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    stem = story.out / f"{MODEL}-v{version}-page1"
    subprocess.run(
        ["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile", str(pdf), str(stem)],
        check=True,
        timeout=120,
    )
    png = stem.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = subprocess.run(
        ["pdftotext", "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return png, text


def test_pdf_first_page_renders(story: Story) -> None:
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm is not installed (make browser installs poppler-utils)")
    signed_png, text = _first_page(story, story.promoted)
    assert "Signed off by user:risk-officer" in text and f"{MODEL} v{story.promoted}" in text
    draft_png, text = _first_page(story, story.rolled_back)
    assert "DRAFT" in text and f"{MODEL} v{story.rolled_back}" in text
    if EXAMPLES:
        target = Path(EXAMPLES)
        target.mkdir(parents=True, exist_ok=True)
        for version in (story.promoted, story.rolled_back):
            for suffix in (".json", ".html", ".pdf"):
                shutil.copy(story.out / f"{MODEL}-v{version}{suffix}", target)
        for period in story.out.glob(f"{DEPLOYMENT}-2*.*"):
            shutil.copy(period, target)
        shutil.copy(signed_png, target)
        shutil.copy(draft_png, target)
        (target / "auditor-public-key.txt").write_text(story.key + "\n")  # to run `report verify` on the examples


def test_period_report_of_the_deployment(story: Story) -> None:
    (path,) = story.out.glob(f"{DEPLOYMENT}-2*.json")
    pack = json.loads(path.read_text())
    assert pack["kind"] == "deployment"
    size = pack["audit"]["checkpoint"]["to_seq"]
    subject = pack["subject"]
    # Every decision the auditor holds about the deployment in the period (under the checkpoint), in order.
    audited = [
        e
        for e in story.pages(
            "auditor", "/v1/entries", subject=f"deployment/{DEPLOYMENT}", since=subject["from"], until=subject["to"]
        )
        if e["seq"] <= size and e["event_type"] in DECISION_TYPES
    ]
    assert [d["data"][CITE] for d in pack["sections"]["decisions"]] == [e["event_id"] for e in audited]
    # The rollback of v2 is an incident, with its causes walked back
    rollbacks = [i for i in pack["sections"]["incidents"] if _v(i["event"]["type"]) == "deployment.rolled_back"]
    assert rollbacks and _v(rollbacks[0]["event"]["data"])["failed_version"] == story.rolled_back
    # (through the monitor's rollback.requested or the analysis step's Failed verdict, whichever came first) back to
    # the registration of the failed version and on to its data.
    causes = [(_v(step["type"]), _v(step["data"])) for step in rollbacks[0]["why"]]
    assert ("model.version.registered", story.rolled_back) in [(t, d.get("version")) for t, d in causes], causes
    assert "data.updated" in [t for t, _d in causes]
    # What served at the end is what the deployer serves now: v3.
    assert _v(pack["sections"]["served"]["at_end"])["stable_version"] == story.promoted
    assert story.get("deployer", f"/v1/deployments/{DEPLOYMENT}")["stable_version"] == story.promoted
    versions = {_v(w["data"])["version"] for w in pack["sections"]["windows"]}
    assert {story.promoted, story.rolled_back} <= versions

    code, text = cli("report", "verify", str(path), "--public-key", story.key)
    assert code == 0, text
    # A period cut short after the fact: the decisions past its new end are caught, the entry named.
    shortened = copy.deepcopy(pack)
    last = pack["sections"]["decisions"][-1]
    shortened["subject"]["to"] = _v(last["time"])
    code, text = _verify(story, shortened, story.key, "period")
    assert code == 1 and "outside the report's period" in text, text
    # The entry named is the first cited one at or past the new end — the last decision, or another cited fact
    # (a rollout step, a window) stamped in the same moment or later; the check names whichever it meets first.
    named = re.search(r"event ([0-9a-f-]{36})\)", text)
    assert named is not None, text
    named_time = pack["audit"]["entries"][named.group(1)]["entry"]["event_time"]
    assert _ts(named_time) >= _ts(_v(last["time"])), (named_time, _v(last["time"]))
