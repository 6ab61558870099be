"""Proofs, checked by a small verifier written here (hashlib + cryptography, none of the auditor's code):
inclusion of one event in a signed checkpoint, consistency between two checkpoints, the JSONL export; forged
proofs fail. Also: why, what served at T, and the append-only table."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from audit_support import all_entries, auditor, causal_chain, event, topic_of
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from support.kafka import produce_events
from support.services import RunningService, Tokens, eventually, make_tokens
from vigil.events import Envelope

pytestmark = pytest.mark.integration


# -- the independent verifier ----------------------------------------------------------------------------------------


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256(prev_hash ‖ "\\n" ‖ canonical JSON of the entry's fields), as documented in docs/audit.md."""
    t = datetime.fromisoformat(entry["event_time"].replace("Z", "+00:00")).astimezone(UTC)
    fields = {
        "seq": entry["seq"],
        "event_id": entry["event_id"],
        "type": entry["event_type"],
        "subject": entry["subject"],
        "actor": entry["actor"],
        "time": t.isoformat(timespec="microseconds"),
        "event_sha256": entry["event_sha256"],
    }
    if entry.get("signer") is not None:  # the verified producer, hashed when recorded (docs/security.md)
        fields["signer"] = entry["signer"]
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(entry["prev_hash"].encode() + b"\n" + canonical).hexdigest()


def root_from_path(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes | None:
    """Rebuild the root along RFC 6962's recursive PATH definition (the last path element is the top sibling)."""
    if size == 1:
        return leaf if not path else None
    if not path:
        return None
    k = 1
    while k * 2 < size:
        k *= 2
    if index < k:
        left = root_from_path(index, k, leaf, path[:-1])
        return None if left is None else sha(b"\x01" + left + path[-1])
    right = root_from_path(index - k, size - k, leaf, path[:-1])
    return None if right is None else sha(b"\x01" + path[-1] + right)


def consistent(m: int, n: int, old: bytes, new: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 §2.1.4.2, transcribed."""
    if m == n:
        return not proof and old == new
    if not proof or not 0 < m < n:
        return False
    path = [old, *proof] if m & (m - 1) == 0 else list(proof)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = sha(b"\x01" + c + fr), sha(b"\x01" + c + sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = sha(b"\x01" + sr + c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old and sr == new


def signature_ok(checkpoint: dict[str, Any], public_key_b64: str) -> bool:
    message = {
        k: checkpoint[k]
        for k in ("chain", "from_seq", "to_seq", "merkle_root", "last_entry_hash", "algorithm", "key_id")
    }
    canonical = json.dumps(message, sort_keys=True, separators=(",", ":")).encode()
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
    try:
        key.verify(base64.b64decode(checkpoint["signature"]), canonical)
    except InvalidSignature:
        return False
    return True


def inclusion_ok(proof: dict[str, Any], public_key_b64: str) -> bool:
    """Event bytes → sha256 → entry hash → leaf → path → the checkpoint's signed root."""
    entry, checkpoint = proof["entry"], proof["checkpoint"]
    event_bytes = json.dumps(proof["event"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if hashlib.sha256(event_bytes).hexdigest() != entry["event_sha256"] or entry_hash(entry) != entry["entry_hash"]:
        return False
    leaf = sha(b"\x00" + bytes.fromhex(entry["entry_hash"]))
    path = [bytes.fromhex(h) for h in proof["audit_path"]]
    root = root_from_path(entry["seq"] - 1, checkpoint["to_seq"], leaf, path)
    return (
        proof["tree_size"] == checkpoint["to_seq"]
        and root is not None
        and root.hex() == checkpoint["merkle_root"]
        and signature_ok(checkpoint, public_key_b64)
    )


# -- the tests ------------------------------------------------------------------------------------------------------


async def _publish(bootstrap: str, prefix: str, events: list[Envelope]) -> None:
    for e in events:  # one at a time, in order: the causal chain crosses topics
        await produce_events(bootstrap, prefix + topic_of(e), [e])


async def _checkpoint_at_least(service: RunningService, headers: dict[str, str], seq: int) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        items = (await service.client.get("/v1/checkpoints", params={"limit": 500}, headers=headers)).json()["items"]
        return items[-1] if items and items[-1]["to_seq"] >= seq else None

    found: dict[str, Any] = await eventually(probe, what=f"a checkpoint over entry {seq}")
    return found


async def test_inclusion_consistency_and_export_verify_independently(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    headers = tokens.headers("auditor")
    async with auditor(
        dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens, home=tmp_path,
        audit_checkpoint_every_entries=7, audit_checkpoint_interval_s=0.3,
    ) as service:  # fmt: skip
        first = [event("data.updated") for _ in range(20)]
        await produce_events(kafka_bootstrap, topic_prefix + "vigil.data", first)
        await eventually(lambda: all_entries(service, headers, type="data.updated"), what="first events")
        older = await _checkpoint_at_least(service, headers, 20)
        second = [event("job.state_changed") for _ in range(300)]  # crosses a 256-leaf block
        await produce_events(kafka_bootstrap, topic_prefix + "vigil.training", second)

        async def all_in() -> bool:
            return len(await all_entries(service, headers, type="job.state_changed")) == 300

        await eventually(all_in, what="300 more entries")
        head = max(e["seq"] for e in await all_entries(service, headers, type="job.state_changed"))
        newer = await _checkpoint_at_least(service, headers, head)
        key = (await service.client.get("/v1/keys", headers=headers)).json()
        assert signature_ok(older, key["public_key"]) and signature_ok(newer, key["public_key"])

        # Inclusion: early, late, and block-crossing entries, each against the newest checkpoint.
        for target in (first[0], first[13], second[200], second[-1]):
            r = await service.client.get(f"/v1/proofs/inclusion/{target.id}", headers=headers)
            assert r.status_code == 200, r.text
            proof = r.json()
            assert inclusion_ok(proof, key["public_key"]), target.id
            assert proof["event"]["id"] == target.id

            # Forgeries fail: a tampered path, another event's entry, a re-signed-looking root, a lying event.
            forged = json.loads(json.dumps(proof))
            forged["audit_path"][0] = "00" * 32
            assert not inclusion_ok(forged, key["public_key"])
            forged = json.loads(json.dumps(proof))
            forged["entry"]["actor"] = "user:mallory"
            assert not inclusion_ok(forged, key["public_key"])
            forged = json.loads(json.dumps(proof))
            forged["checkpoint"]["merkle_root"] = root_from_path(  # a root that fits the forged path, unsigned
                proof["leaf_index"],
                proof["tree_size"],
                sha(b"\x00" + bytes(32)),
                [bytes(32)] * len(proof["audit_path"]),
            ).hex()  # type: ignore[union-attr]
            assert not inclusion_ok(forged, key["public_key"])
            forged = json.loads(json.dumps(proof))
            forged["event"]["data"]["row_count"] = forged["event"]["data"].get("row_count", 0) + 1
            assert not inclusion_ok(forged, key["public_key"])

        # An older checkpoint can be asked for by size.
        r = await service.client.get(
            f"/v1/proofs/inclusion/{first[3].id}", params={"tree_size": older["to_seq"]}, headers=headers
        )
        assert r.status_code == 200 and inclusion_ok(r.json(), key["public_key"])

        # Consistency: the older tree is a prefix of the newer one.
        r = await service.client.get(
            "/v1/proofs/consistency", params={"from": older["to_seq"], "to": newer["to_seq"]}, headers=headers
        )
        assert r.status_code == 200, r.text
        c = r.json()
        proof_bytes = [bytes.fromhex(h) for h in c["proof"]]
        old_root, new_root = bytes.fromhex(older["merkle_root"]), bytes.fromhex(newer["merkle_root"])
        assert consistent(older["to_seq"], newer["to_seq"], old_root, new_root, proof_bytes)
        assert not consistent(older["to_seq"], newer["to_seq"], sha(b"other"), new_root, proof_bytes)
        assert not consistent(older["to_seq"], newer["to_seq"], old_root, new_root, proof_bytes[:-1])

        # Export: JSONL with a proof per checkpointed entry, each verifying on its own.
        lines = []
        async with service.client.stream(
            "GET", "/v1/export", params={"from_seq": 1, "to_seq": newer["to_seq"]}, headers=headers
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line:
                    lines.append(json.loads(line))
        header, body, end = lines[0], lines[1:-1], lines[-1]
        assert header["kind"] == "header" and end == {"kind": "end", "entries": newer["to_seq"]}
        assert [b["seq"] for b in body] == list(range(1, newer["to_seq"] + 1))
        for b in [*body[::17], body[-1]]:
            entry = {k: v for k, v in b.items() if k not in ("kind", "event", "proof")}
            as_proof = {**b["proof"], "entry": entry, "event": b["event"], "checkpoint": header["checkpoint"]}
            assert inclusion_ok(as_proof, header["public_key"]), b["seq"]

        # Not yet checkpointed / unknown: clear errors.
        r = await service.client.get("/v1/proofs/inclusion/nope", headers=headers)
        assert r.status_code == 404


async def test_why_served_at_and_append_only(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path, postgres_dsn: str
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    headers = tokens.headers("auditor")
    chain = causal_chain()
    t0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    def at(e: Envelope, minutes: int) -> Envelope:
        stamp = (t0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
        return e.model_copy(update={"time": stamp})

    created = at(event("deployment.created", stable_version=7), 0)
    started, promoted = at(chain[-2], 10), at(chain[-1], 30)
    step = at(event("deployment.rollout.step", cause=chain[-2], weights={"stable": 90, "candidate": 10}), 20)
    chain = [*chain[:-2], started, promoted]
    async with auditor(
        dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens, home=tmp_path
    ) as service:
        published = [created, *chain[:-1], step, chain[-1]]
        await _publish(kafka_bootstrap, topic_prefix, published)

        async def all_seen() -> bool:
            # Every event, not just the promotion: the chain crosses topics, and the auditor reads its topics'
            # partitions independently, so the promotion can be audited before an ancestor published earlier.
            audited = {entry["event_id"] for entry in await all_entries(service, headers)}
            return audited >= {e.id for e in published}

        await eventually(all_seen, what="every published event audited")

        # why: from the promotion down to the upstream data.updated, with every event's data.
        why = (await service.client.get(f"/v1/why/{promoted.id}", headers=headers)).json()
        assert why["complete"] is True
        assert [e["event_id"] for e in why["chain"]] == [e.id for e in reversed(chain)]
        assert [e["event"]["type"] for e in why["chain"]][-1] == "data.updated"
        assert why["chain"][-1]["event"]["data"]["dataset"] == "patients"
        assert why["chain"][-1]["actor"] == "system:ehr-export"
        by_subject = (
            await service.client.get("/v1/why", params={"subject": "deployment/readmission-api"}, headers=headers)
        ).json()
        assert by_subject["chain"][0]["event_id"] == promoted.id and by_subject["complete"] is True

        # what served at T
        async def served(minutes: float) -> dict[str, Any]:
            moment = (t0 + timedelta(minutes=minutes)).isoformat()
            r = await service.client.get(
                "/v1/deployments/readmission-api/served-at", params={"at": moment}, headers=headers
            )
            assert r.status_code == 200, r.text
            return dict(r.json())

        s = await served(5)
        assert (s["stable_version"], s["candidate_version"], s["weights"]) == (7, None, {"stable": 100, "candidate": 0})
        s = await served(25)
        assert (s["stable_version"], s["candidate_version"], s["weights"]) == (7, 8, {"stable": 90, "candidate": 10})
        assert s["decided_by"]["event_id"] == step.id
        s = await served(45)
        assert (s["stable_version"], s["candidate_version"], s["phase"]) == (8, None, "stable")
        r = await service.client.get(
            "/v1/deployments/readmission-api/served-at", params={"at": (t0 - timedelta(days=1)).isoformat()},
            headers=headers,
        )  # fmt: skip
        assert r.status_code == 404

        # Append-only, for the service's own role (the owner here): UPDATE, DELETE, TRUNCATE refused.
        async with service.runtime.pool.acquire() as conn:
            for sql in (
                "UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 1",
                "DELETE FROM audit_log WHERE seq = 1",
                "TRUNCATE audit_log",
                "DELETE FROM audit_checkpoints",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await conn.execute(sql)

        # A production-style role that does not own the table: no UPDATE/DELETE even with the triggers off.
        admin = await asyncpg.connect(fresh_db)
        try:
            role = f"audit_rw_{topic_prefix.split('.')[1]}"
            await admin.execute(f"CREATE ROLE {role} NOLOGIN")
            await admin.execute(f"GRANT USAGE ON SCHEMA auditor TO {role}")
            await admin.execute(f"GRANT SELECT, INSERT ON auditor.audit_log TO {role}")
            async with admin.transaction():
                await admin.execute(f"SET LOCAL ROLE {role}")
                assert await admin.fetchval("SELECT count(*) FROM auditor.audit_log") > 0
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await admin.execute("UPDATE auditor.audit_log SET actor = 'x'")
            async with admin.transaction():
                await admin.execute(f"SET LOCAL ROLE {role}")
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"permission denied|must be owner"):
                    await admin.execute("ALTER TABLE auditor.audit_log DISABLE TRIGGER USER")
            await admin.execute(f"REVOKE ALL ON auditor.audit_log FROM {role}")
            await admin.execute(f"REVOKE ALL ON SCHEMA auditor FROM {role}")
            await admin.execute(f"DROP ROLE {role}")
        finally:
            await admin.close()
        assert (await service.client.get("/v1/verify", headers=headers)).json()["ok"] is True
