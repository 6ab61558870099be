"""Pure pieces of the auditor: signing keys, the fast audit.entry encoder, stream digests, retention classes,
"what served at T", and the streaming chain verifier with checkpoints."""

from __future__ import annotations

import base64
import hashlib
import stat
import uuid
from dataclasses import astuple
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vigil.auditor import feed
from vigil.auditor.chain import (
    GENESIS_HASH,
    CheckpointClaim,
    EntryFields,
    StoredEntry,
    entry_hash,
    entry_hash_of,
    normalise_time,
    verify_entries,
)
from vigil.auditor.merkle import Frontier, root_of_leaves
from vigil.auditor.serving import fold
from vigil.auditor.signing import SigningKeyError, checkpoint_message, load_signer
from vigil.auditor.store import RetentionPolicy, canonical_event_bytes
from vigil.bus.context import Delivery
from vigil.events import Envelope, decode_event, make_event, payload_class, registered, sha256_hex
from vigil.events.catalog.audit import AuditEntry
from vigil.events.catalog.data import DataUpdated
from vigil.events.catalog.streams import MetricObserved
from vigil.events.codec import parse_json
from vigil.events.contracts import schemas_dir

pytestmark = pytest.mark.unit


def data_updated(n: int = 0) -> Envelope:
    payload = DataUpdated(
        dataset="patients",
        content_digest="sha256:" + hashlib.sha256(str(n).encode()).hexdigest(),
        uri=f"file:///d/{n}.csv",
        row_count=10,
        producer="ehr",
    )
    return make_event(payload, source="ehr://x", actor="system:ehr")


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def example(event_type: str) -> Any:
    """The payload of the schema file's first example (a valid event of that type)."""
    data = parse_json((schemas_dir() / "events" / event_type / "v1.json").read_bytes())["examples"][0]
    return payload_class(event_type, 1).model_validate(data)


def cause_payload() -> Any:
    return example("dataset.version.registered")


# -- signing keys --------------------------------------------------------------------------------------------------


def test_key_generated_once_with_private_permissions(tmp_path: Path) -> None:
    path = tmp_path / "auditor" / "signing.key"
    first = load_signer(None, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_signer(None, path)
    assert again.key_id == first.key_id
    assert path.read_text().strip() not in repr(first)


@pytest.mark.parametrize("encode", [bytes.hex, lambda b: base64.b64encode(b).decode()], ids=["hex", "base64"])
def test_key_from_settings_text(tmp_path: Path, encode: object) -> None:
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    signer = load_signer(encode(seed), tmp_path / "unused.key")  # type: ignore[operator]
    assert not (tmp_path / "unused.key").exists()
    message = b"hello"
    signature = signer.sign(message)
    private.public_key().verify(base64.b64decode(signature), message)


def test_bad_key_text_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError) as info:
        load_signer("not-a-key-secret-value", tmp_path / "k")
    assert "secret" not in str(info.value)


def test_signature_checks_key_and_content(tmp_path: Path) -> None:
    old = load_signer(None, tmp_path / "old.key")
    new = load_signer(None, tmp_path / "new.key", [old.public.public_bytes_raw().hex()])
    message = checkpoint_message({"to_seq": 3, "merkle_root": "ab", "signature": "ignored"})
    assert message == b'{"merkle_root":"ab","to_seq":3}'
    sig = old.sign(message)
    assert new.verify(old.key_id, message, sig) is None  # an earlier, trusted key
    assert new.verify(old.key_id, message + b" ", sig) == "signature does not verify"
    stranger = load_signer(None, tmp_path / "stranger.key")
    assert stranger.verify(old.key_id, message, sig) == f"signed by unknown key {old.key_id}"


# -- audit.entry fast path ------------------------------------------------------------------------------------------


def _row(env: Envelope, seq: int, prev: str, recorded_at: datetime) -> dict[str, Any]:
    """An ``audit_log`` row of ``env`` as the publisher reads it."""
    raw = canonical_event_bytes(env)
    fields = EntryFields(seq, env.id, env.type, env.subject, env.actor, normalise_time(env.time), sha256_hex(raw))
    return {
        "seq": seq,
        "event_id": env.id,
        "event_type": env.type,
        "subject": env.subject,
        "actor": env.actor,
        "correlation_id": env.correlationid,
        "causation_id": env.causationid,
        "topic": "vigil.data",
        "event_sha256": fields.event_sha256,
        "prev_hash": prev,
        "entry_hash": entry_hash(prev, fields),
        "recorded_at": recorded_at,
        "event": raw,
    }


def test_entry_record_equals_the_model_path_and_passes_the_contract() -> None:
    cause = data_updated(1)
    env = make_event(cause_payload(), source="ehr://x", actor="system:ehr", cause=cause, traceparent=TRACEPARENT)
    row = _row(env, 7, GENESIS_HASH, datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC))
    record = feed.entry_record(row, "audit")
    decoded, payload = decode_event(record.value)  # the contract the SIEM side checks
    assert isinstance(payload, AuditEntry)
    assert payload.seq == 7 and payload.entry_hash == row["entry_hash"] and payload.event_sha256 == env.digest()
    assert decoded.causationid == env.id and decoded.correlationid == env.correlationid == cause.id
    assert payload.causationid == cause.id and payload.topic == "vigil.data"
    assert decoded.time == "2025-03-01T12:00:00.123456Z" and decoded.traceparent == TRACEPARENT
    by_model = make_event(
        AuditEntry.model_validate(decoded.data), source=feed.SOURCE, actor=feed.ACTOR, cause=env, event_id=decoded.id
    )
    assert Envelope(**{**by_model.model_dump(), "time": decoded.time}).canonical_bytes() == record.value
    assert record.topic == "vigil.audit" and record.key == "audit"
    assert ("traceparent", TRACEPARENT.encode()) in record.headers
    assert ("ce_id", decoded.id.encode()) in record.headers


def test_entry_event_ids_are_derived_from_chain_and_seq() -> None:
    env = data_updated()
    at = datetime(2025, 3, 1, tzinfo=UTC)
    first = feed.entry_record(_row(env, 3, GENESIS_HASH, at), "audit")
    again = feed.entry_record(_row(env, 3, GENESIS_HASH, at), "audit")
    assert first.value == again.value  # a republish is the same event, byte for byte
    assert first.record_id == feed.entry_event_id("audit", 3)
    # The documented derivation, independently of the auditor's code.
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, "vigil://auditor/audit.entry")
    assert first.record_id == str(uuid.uuid5(namespace, "audit/3"))
    assert len({feed.entry_event_id(c, s) for c in ("audit", "other") for s in (1, 2, 3)}) == 6
    for chain, seq in [("audit", 1), ("audit", 10**12), ("x.y-z_é", 42)]:
        assert feed.entry_event_id(chain, seq) == str(uuid.uuid5(namespace, f"{chain}/{seq}"))


def test_fast_canonical_bytes_equal_the_model_path() -> None:
    envelopes = [make_event(example(t), source="vigil://test", actor="svc:test") for t, _v in registered()]
    envelopes += [decode_event(e.canonical_bytes())[0] for e in envelopes]  # as a consumer sees them
    assert len(envelopes) >= 40
    for env in envelopes:
        assert canonical_event_bytes(env) == env.canonical_bytes(), env.type
    # Values pydantic converts before orjson sees them take the exact (slow) path.
    odd = Envelope(**{**data_updated().model_dump(), "data": {"at": datetime(2025, 1, 1, tzinfo=UTC), "b": b"x"}})
    assert canonical_event_bytes(odd) == odd.canonical_bytes()


def test_writer_hash_equals_the_chain_definition() -> None:
    fields = EntryFields(3, "id-é", "t.x", 'sub/"x', "act", "2025-01-01T00:00:00.000000+00:00", "ab" * 32)
    assert entry_hash_of(GENESIS_HASH, *astuple(fields)) == entry_hash(GENESIS_HASH, fields)


def test_stream_digest_root_is_over_event_digests_in_offset_order() -> None:
    events = [
        make_event(
            MetricObserved(deployment="api", name="latency", value=float(i), time="2025-01-01T00:00:00Z"),
            source="x://y",
            actor="system:y",
        )
        for i in range(5)
    ]
    deliveries = [Delivery(e, None, "vigil.metrics", 1, 100 + i) for i, e in enumerate(events)]  # type: ignore[arg-type]
    [digest] = feed.stream_digests(list(reversed(deliveries)), "audit")
    data = digest.envelope.data
    assert (data["from_offset"], data["to_offset"], data["count"], data["partition"]) == (100, 104, 5, 1)
    expected = Frontier()
    for e in events:
        expected.append(hashlib.sha256(e.canonical_bytes()).digest())
    assert data["merkle_root"] == expected.root().hex()
    decode_event(digest.raw)  # a valid audit.stream_digest


# -- retention classes ----------------------------------------------------------------------------------------------


def test_retention_classes() -> None:
    policy = RetentionPolicy(
        {"control_plane": 2192, "stream_digest": 184, "short": 1},
        {"audit.stream_digest": "stream_digest", "deployment.*": "short", "deployment.rollout.*": "control_plane"},
    )
    assert policy.class_of("data.updated") == "control_plane"
    assert policy.class_of("audit.stream_digest") == "stream_digest"
    assert policy.class_of("deployment.promoted") == "short"
    assert policy.class_of("deployment.rollout.step") == "control_plane"  # the longer prefix wins
    with pytest.raises(ValueError, match="without a period"):
        RetentionPolicy({"control_plane": 1}, {"x.y": "missing"})


# -- what served at T -----------------------------------------------------------------------------------------------


def test_serving_fold() -> None:
    def ev(i: int, kind: str, **data: object) -> dict[str, object]:
        return {"id": f"e{i}", "type": kind, "data": {"deployment": "api", "model": "m", **data}}

    history = [
        ev(1, "deployment.created", stable_version=1),
        ev(2, "deployment.rollout.started", stable_version=1, candidate_version=2),
        ev(
            3, "deployment.rollout.step", stable_version=1, candidate_version=2, weights={"stable": 90, "candidate": 10}
        ),
        ev(4, "deployment.paused", step_index=1, reason="api"),
    ]
    state = fold(history)
    assert (state.stable_version, state.candidate_version, state.weights) == (1, 2, {"stable": 90, "candidate": 10})
    assert state.phase == "paused" and state.decided_by == "e3"
    state = fold([*history, ev(5, "deployment.promoted", version=2, previous_version=1)])
    assert (state.stable_version, state.candidate_version, state.phase) == (2, None, "stable")


# -- streaming verifier ---------------------------------------------------------------------------------------------


def build_chain(n: int) -> list[StoredEntry]:
    out, prev = [], GENESIS_HASH
    for i in range(1, n + 1):
        env = data_updated(i)
        raw = env.canonical_bytes()
        f = EntryFields(i, env.id, env.type, env.subject, env.actor, normalise_time(env.time), sha256_hex(raw))
        h = entry_hash(prev, f)
        out.append(StoredEntry(f, prev, h, raw))
        prev = h
    return out


def claim(entries: list[StoredEntry], size: int, problem: str | None = None) -> CheckpointClaim:
    root = root_of_leaves([_leaf(e) for e in entries[:size]]).hex()
    return CheckpointClaim(size, root, entries[size - 1].entry_hash, problem)


def _leaf(e: StoredEntry) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(e.entry_hash)).digest()


def test_verifier_checks_chain_and_checkpoints() -> None:
    entries = build_chain(40)
    good = verify_entries(entries, checkpoints=[claim(entries, 10), claim(entries, 40)])
    assert good.ok and good.entries_checked == 40 and good.checkpoints_checked == 2

    forged = CheckpointClaim(10, "00" * 32, entries[9].entry_hash, None)
    bad = verify_entries(entries, checkpoints=[forged])
    assert not bad.ok and bad.bad_checkpoint == 10 and "Merkle root" in (bad.problem or "")

    unsigned = verify_entries(entries, checkpoints=[claim(entries, 10, "signature does not verify")])
    assert not unsigned.ok and "signature" in (unsigned.problem or "")

    tail_cut = verify_entries(entries[:35], checkpoints=[claim(entries, 40)])
    assert not tail_cut.ok and tail_cut.first_bad_seq == 36


def test_verifier_names_missing_reordered_and_altered_entries() -> None:
    entries = build_chain(20)
    missing = verify_entries(entries[:5] + entries[6:])
    assert (missing.ok, missing.first_bad_seq) == (False, 6)
    swapped = [*entries[:7], entries[8], entries[7], *entries[9:]]
    reordered = verify_entries(swapped)
    assert (reordered.ok, reordered.first_bad_seq) == (False, 8)
    e = entries[11]
    altered = StoredEntry(
        EntryFields(**{**e.fields.__dict__, "actor": "user:mallory"}), e.prev_hash, e.entry_hash, e.event
    )
    result = verify_entries([*entries[:11], altered, *entries[12:]])
    assert (result.ok, result.first_bad_seq) == (False, 12)


def test_verifier_resumes_from_a_checkpoint_frontier() -> None:
    entries = build_chain(30)
    frontier = Frontier()
    for e in entries[:12]:
        frontier.append(bytes.fromhex(e.entry_hash))
    result = verify_entries(
        entries[12:],
        expected_prev=entries[11].entry_hash,
        start_seq=13,
        frontier=frontier,
        checkpoints=[claim(entries, 30)],
    )
    assert result.ok and result.checkpoints_checked == 1


def test_auditors_starting_at_once_share_one_whole_generated_key(tmp_path: Path) -> None:
    """Two instances with one key file and no key yet (``vigil up --replicas auditor=2``): each start generates or
    reads the key. A fresh-clone CI run saw the second read the file the first had created but not yet written, and
    exit. Many starts at once, many rounds: every one gets the same key, none reads a partial file."""
    import concurrent.futures

    for round_ in range(20):
        key_file = tmp_path / f"round-{round_}" / "signing.key"
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            signers = list(pool.map(load_signer, [None] * 8, [key_file] * 8))
        assert len({s.key_id for s in signers}) == 1
        assert len(key_file.read_text().strip()) == 64
        assert [p.name for p in key_file.parent.iterdir()] == ["signing.key"]  # no scratch file left behind
