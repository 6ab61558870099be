"""The pack verifier offline: RFC 6962 folding against a naive transcription of the RFC, entry hashes against the
auditor's own definition, and ``verify_pack`` on a small signed log built here — passing, then failing with the
entry named for each kind of tampering."""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vigil.auditor.chain import EntryFields
from vigil.auditor.chain import entry_hash as auditor_entry_hash
from vigil.events import canonical_json
from vigil.report.cite import cited, from_api, resolve
from vigil.report.collect import FORMAT
from vigil.report.proofs import SIGNED_FIELDS, entry_hash, leaf_hash, root_from_path
from vigil.report.render_html import render_html
from vigil.report.verify import verify_pack

pytestmark = pytest.mark.unit


def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH over leaf hashes, as written there."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return _sha(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n]); the deepest sibling first."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 33])
def test_fold_matches_the_rfc(size: int) -> None:
    leaves = [_sha(bytes([i])) for i in range(size)]
    root = mth(leaves)
    for index in range(size):
        proof = path(index, leaves)
        assert root_from_path(index, size, leaves[index], proof) == root
        if proof:
            assert root_from_path(index, size, leaves[index], proof[:-1]) is None
            forged = [*proof[:-1], _sha(b"x")]
            assert root_from_path(index, size, leaves[index], forged) != root
    assert root_from_path(size, size, leaves[0], []) is None


def test_entry_hash_is_the_auditors() -> None:
    entry = {
        "seq": 7,
        "event_id": "e7",
        "event_type": "t",
        "subject": "s",
        "actor": "a",
        "prev_hash": "ab" * 32,
        "event_time": "2026-01-02T03:04:05.123456Z",
        "event_sha256": "cd" * 32,
        "signer": "service:registry",
    }
    fields = EntryFields(7, "e7", "t", "s", "a", "2026-01-02T03:04:05.123456+00:00", "cd" * 32, "service:registry")
    assert entry_hash(entry) == auditor_entry_hash("ab" * 32, fields)
    unsigned = EntryFields(7, "e7", "t", "s", "a", "2026-01-02T03:04:05.123456+00:00", "cd" * 32)
    assert entry_hash({**entry, "signer": None}) == auditor_entry_hash("ab" * 32, unsigned)


# -- a small signed log and a pack citing it ----------------------------------------------------------------------


def _event(n: int, etype: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"ev-{n}",
        "type": etype,
        "subject": f"model/m/v{n}",
        "actor": "service:registry",
        "time": f"2026-01-0{n}T00:00:00.000000Z",
        "source": "vigil://registry",
        "data": data,
    }


def _signed_log(events: list[dict[str, Any]], key: Ed25519PrivateKey) -> tuple[dict[str, Any], dict[str, Any]]:
    entries, prev = [], "0" * 64
    for seq, event in enumerate(events, start=1):
        entry = {
            "seq": seq,
            "event_id": event["id"],
            "event_type": event["type"],
            "subject": event["subject"],
            "actor": event["actor"],
            "event_time": event["time"],
            "prev_hash": prev,
            "signer": "service:registry",
            "event_sha256": hashlib.sha256(canonical_json(event)).hexdigest(),
        }
        entry["entry_hash"] = prev = entry_hash(entry)
        entries.append(entry)
    leaves = [leaf_hash(e["entry_hash"]) for e in entries]
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    checkpoint = {
        "chain": "audit",
        "from_seq": 1,
        "to_seq": len(entries),
        "merkle_root": mth(leaves).hex(),
        "last_entry_hash": prev,
        "algorithm": "ed25519",
        "key_id": hashlib.sha256(raw).hexdigest()[:16],
    }
    checkpoint["signature"] = base64.b64encode(
        key.sign(canonical_json({k: checkpoint[k] for k in SIGNED_FIELDS}))
    ).decode()
    records = {
        e["event_id"]: {
            "entry": e,
            "event": events[i],
            "leaf_index": i,
            "audit_path": [h.hex() for h in path(i, leaves)],
        }
        for i, e in enumerate(entries)
    }
    return checkpoint, records


@pytest.fixture
def signed() -> tuple[dict[str, Any], str]:
    key = Ed25519PrivateKey.generate()
    gates = [{"gate": "auc", "kind": "metric_floor", "metric": "auc", "value": 0.91, "threshold": 0.8, "passed": True}]
    events = [
        _event(1, "data.updated", {"dataset": "d", "row_count": 100}),
        _event(2, "model.version.registered", {"model": "m", "version": 2, "gates": gates, "metrics": {"auc": 0.91}}),
        _event(
            3,
            "monitor.window",
            {
                "model": "m",
                "version": 2,
                "variant": "stable",
                "quality": {"accuracy": 0.8},
                "window": {"start": "2026-01-03T00:00:00Z", "end": "2026-01-03T00:00:08Z"},
            },
        ),
    ]
    checkpoint, records = _signed_log(events, key)
    reg, win = events[1], events[2]
    pack = {
        "format": FORMAT,
        "kind": "model",
        "subject": {"model": "m", "version": 2},
        "built_at": "2026-01-09T00:00:00+00:00",
        "status": {"draft": True, "reason": "never signed off"},
        "audit": {"checkpoint": checkpoint, "entries": records, "not_covered": []},
        "sections": {
            "model": {
                "event_id": cited("ev-2", reg, "/id"),
                "version": cited("ev-2", reg, "/data/version"),
                "gates": cited("ev-2", reg, "/data/gates"),
                "metrics": cited("ev-2", reg, "/data/metrics"),
            },
            "deployments": [
                {
                    "windows": [{"data": cited("ev-3", win, "/data")}],
                    "deployment": from_api("deployer GET /v1/deployments/d", {"name": "d"}),
                }
            ],
        },
        "notes": ["policy history is not recorded as events yet"],
    }
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    return pack, public


def test_an_untouched_pack_verifies(signed: tuple[dict[str, Any], str]) -> None:
    pack, key = signed
    verdict = verify_pack(pack, key)
    assert verdict.ok, verdict.problem
    assert verdict.entries_checked == 3 and verdict.facts_cited == 5
    assert verdict.facts_from_apis == ["deployer GET /v1/deployments/d"]


def test_tampering_is_named(signed: tuple[dict[str, Any], str]) -> None:
    pack, key = signed
    cases = []
    edited = copy.deepcopy(pack)
    edited["sections"]["model"]["gates"]["value"][0]["value"] = 0.99
    cases.append((edited, "entry 2 (model.version.registered, event ev-2): the pack shows"))
    in_event = copy.deepcopy(pack)
    in_event["audit"]["entries"]["ev-3"]["event"]["data"]["quality"]["accuracy"] = 0.95
    cases.append((in_event, "entry 3 (monitor.window, event ev-3): its event does not hash"))
    no_path = copy.deepcopy(pack)
    no_path["audit"]["entries"]["ev-1"]["audit_path"] = []
    cases.append((no_path, "entry 1 (data.updated, event ev-1): its audit path"))
    missing = copy.deepcopy(pack)
    del missing["audit"]["entries"]["ev-3"]
    cases.append((missing, "cites event ev-3, whose entry and proof the pack does not carry"))
    bare = copy.deepcopy(pack)
    bare["sections"]["model"]["accuracy"] = 0.99
    cases.append((bare, "sections.model.accuracy holds 0.99, neither cited"))
    retitled = copy.deepcopy(pack)
    retitled["subject"]["version"] = 3
    cases.append((retitled, "titled m v3 but its registration event is about m v2"))
    for tampered, expected in cases:
        verdict = verify_pack(tampered, key)
        assert not verdict.ok and expected in str(verdict.problem), (expected, verdict.problem)
    other = base64.b64encode(bytes(32)).decode()
    assert "not by the given key" in str(verify_pack(pack, other).problem)


def test_html_marks_every_fact_with_its_origin(signed: tuple[dict[str, Any], str]) -> None:
    pack, _key = signed
    pack["sections"].update({"lineage": {"why_chain": []}, "aliases": [], "policies": {}, "training": {}})
    html = render_html(pack)
    assert "DRAFT" in html[: html.index("<h2>")]
    assert 'href="#entry-2"' in html and 'id="entry-3"' in html
    assert resolve(pack["audit"]["entries"]["ev-2"]["event"], "/data/gates/0/value") == 0.91


def test_period_pack_refuses_events_outside_its_period_or_deployment() -> None:
    key = Ed25519PrivateKey.generate()
    events = [
        {**_event(1, "deployment.promoted", {"deployment": "d", "version": 2}), "subject": "deployment/d"},
        {
            **_event(2, "deployment.rolled_back", {"deployment": "other", "failed_version": 3}),
            "subject": "deployment/other",
        },
    ]
    checkpoint, records = _signed_log(events, key)
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    pack = {
        "format": FORMAT,
        "kind": "deployment",
        "subject": {"deployment": "d", "from": "2026-01-01T00:00:00+00:00", "to": "2026-01-03T00:00:00+00:00"},
        "status": {"draft": False},
        "audit": {"checkpoint": checkpoint, "entries": records, "not_covered": []},
        "sections": {"decisions": [{"data": cited("ev-1", events[0], "/data")}], "windows": []},
    }
    assert verify_pack(pack, public).ok
    late = copy.deepcopy(pack)
    late["subject"].update({"from": "2025-12-31T00:00:00+00:00", "to": "2026-01-01T00:00:00+00:00"})  # end excluded
    assert "entry 1 (deployment.promoted, event ev-1): its time" in str(verify_pack(late, public).problem)
    foreign = copy.deepcopy(pack)
    foreign["sections"]["decisions"].append({"data": cited("ev-2", events[1], "/data")})
    assert "it is about deployment/other, not deployment d" in str(verify_pack(foreign, public).problem)
