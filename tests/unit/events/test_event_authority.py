"""Who may produce what (vigil.events.authority) and the trust store that applies it (vigil.events.trust)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from vigil.events import registered
from vigil.events.authority import SERVICE_EVENTS, UPSTREAM_EVENTS, allowed_events
from vigil.events.signing import SignatureRejected
from vigil.events.trust import (
    TrustStore,
    ensure_keys,
    issue_key,
    load_signing_key,
    private_key_path,
    revoke,
    trust_dir,
)

pytestmark = pytest.mark.unit


def test_every_catalogued_type_has_a_producer() -> None:
    producible = set(UPSTREAM_EVENTS).union(*SERVICE_EVENTS.values())
    assert {t for t, _ in registered()} <= producible
    assert producible <= {t for t, _ in registered()}  # no stale names in the table


def test_decisions_have_exactly_one_producing_service() -> None:
    for event_type, service in {
        "rollback.requested": "monitor",
        "analysis.verdict": "monitor",
        "model.version.registered": "registry",
        "training.completed": "trainer",
        "training.requested": "scheduler",
        "deployment.promoted": "deployer",
        "audit.checkpoint": "auditor",
    }.items():
        assert [s for s, events in SERVICE_EVENTS.items() if event_type in events] == [service], event_type


def test_producers_are_held_to_upstream_types() -> None:
    assert allowed_events("producer:ehr", frozenset({"label.observed"})) == {"label.observed"}
    assert allowed_events("service:monitor", frozenset({"model.version.registered"})) == SERVICE_EVENTS["monitor"]
    for principal, events in [
        ("producer:ehr", frozenset({"rollback.requested"})),
        ("service:nobody", frozenset()),
        ("admin", frozenset()),
        ("producer:", frozenset()),
    ]:
        with pytest.raises(ValueError):  # noqa: PT011
            allowed_events(principal, events)


def test_keys_issued_load_and_authorise(tmp_path: Path) -> None:
    issued = ensure_keys(tmp_path, services=["monitor", "registry"], producers={"ehr": frozenset({"data.updated"})})
    assert issued == ["service:monitor", "service:registry", "producer:ehr"]
    assert ensure_keys(tmp_path, services=["monitor", "registry"], producers={"ehr": frozenset()}) == []
    private = private_key_path(tmp_path, "service:monitor")
    assert os.stat(private).st_mode & 0o777 == 0o600
    store = TrustStore.load(trust_dir(tmp_path))
    monitor = load_signing_key(private)
    value = b"{}"
    signer = store.verify(value, monitor.sign_values([value])[0])
    assert signer.principal == "service:monitor"
    TrustStore.authorise(signer, "rollback.requested")
    with pytest.raises(SignatureRejected) as info:
        TrustStore.authorise(signer, "model.version.registered")
    assert info.value.reason == "unauthorised_signer"
    ehr = store.verify(value, load_signing_key(private_key_path(tmp_path, "producer:ehr")).sign_values([value])[0])
    TrustStore.authorise(ehr, "data.updated")
    with pytest.raises(SignatureRejected):
        TrustStore.authorise(ehr, "label.observed")


def test_rotation_keeps_the_old_key_until_revoked(tmp_path: Path) -> None:
    old = issue_key(tmp_path, "service:registry")
    new = issue_key(tmp_path, "service:registry")
    assert load_signing_key(private_key_path(tmp_path, "service:registry")).kid == new.kid
    assert set(TrustStore.load(trust_dir(tmp_path)).keys) == {old.kid, new.kid}
    assert len(revoke(tmp_path, old.kid)) == 1
    assert set(TrustStore.load(trust_dir(tmp_path)).keys) == {new.kid}


def test_concurrent_issuers_leave_a_whole_key_and_no_scratch_files(tmp_path: Path) -> None:
    """Two issuers of one principal at once (each with a scratch file of its own): the key on disk is one of theirs,
    whole, and trusted; every trust entry is readable and no scratch file is left (they shared one ``.tmp`` before,
    so one could rename the other's half-written file into place)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        issued = list(pool.map(lambda _: issue_key(tmp_path, "service:registry"), range(32)))
    on_disk = load_signing_key(private_key_path(tmp_path, "service:registry"))
    assert on_disk.kid in {k.kid for k in issued}
    store = TrustStore.load(trust_dir(tmp_path))
    assert set(store.keys) == {k.kid for k in issued}
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []
    entry = next(trust_dir(tmp_path).glob("*.json"))
    assert os.stat(entry).st_mode & 0o777 == 0o644
    assert os.stat(private_key_path(tmp_path, "service:registry")).st_mode & 0o777 == 0o600


def test_an_over_reaching_trust_entry_stops_the_load(tmp_path: Path) -> None:
    key = issue_key(tmp_path, "producer:ehr", ["label.observed"])
    entry = next(trust_dir(tmp_path).glob(f"*.{key.kid}.json"))
    raw = orjson.loads(entry.read_bytes())
    entry.write_bytes(orjson.dumps({**raw, "events": ["rollback.requested"]}))
    with pytest.raises(ValueError, match="upstream"):
        TrustStore.load(trust_dir(tmp_path))
    with pytest.raises(FileNotFoundError, match="vigil keys init"):
        TrustStore.load(tmp_path / "missing")
