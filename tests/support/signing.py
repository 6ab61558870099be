"""Event keys for tests: one trust store per test run, handed to every service through ``VIGIL_EVENT_KEYS_DIR``.

Created when conftest is imported (in the xdist controller, before workers start, so they inherit the variable and
find the keys made); removed at exit by the process that made it. Holds a key per service, the stack's ``local``
producer, a ``tests`` producer and the probe test service's key (``producer:probe``), all allowed every upstream
event type. Test helpers that publish straight to
the broker sign with the key allowed to produce the event (:func:`key_for_type`), as a real producer would.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

from vigil.bus.dead_letters import claimed_identity
from vigil.events.authority import SERVICE_EVENTS, UPSTREAM_EVENTS, producer_principal, service_principal
from vigil.events.signing import HEADER_KID, HEADER_PROOF, HEADER_SIG, HEADER_SIGNATURE, SigningKey
from vigil.events.trust import LOCAL_PRODUCER, ensure_keys, load_signing_key, private_key_path

KEYS_ENV = "VIGIL_EVENT_KEYS_DIR"
TEST_PRODUCER = producer_principal("tests")


def install() -> Path:
    """Make the run's keys (once) and point ``VIGIL_EVENT_KEYS_DIR`` at them; returns the directory."""
    existing = os.environ.get(KEYS_ENV)
    if existing and (Path(existing) / "trust").is_dir():
        return Path(existing)
    path = Path(tempfile.mkdtemp(prefix="vigil-test-keys-"))
    ensure_keys(path, producers={LOCAL_PRODUCER: UPSTREAM_EVENTS, "tests": UPSTREAM_EVENTS, "probe": UPSTREAM_EVENTS})
    # The probe test service (support/probe.py) is no Vigil service: it signs as the upstream producer "probe".
    shutil.copy(private_key_path(path, producer_principal("probe")), private_key_path(path, "service:probe"))
    os.environ[KEYS_ENV] = str(path)
    atexit.register(shutil.rmtree, path, True)
    return path


def keys_dir() -> Path:
    return install()


@cache
def signing_key(principal: str) -> SigningKey:
    """The run's private key of ``principal`` (``service:<name>`` or ``producer:<name>``)."""
    return load_signing_key(private_key_path(keys_dir(), principal))


def key_for_type(event_type: str | None) -> SigningKey:
    """The key a legitimate producer of ``event_type`` holds: the tests producer for upstream events (and for records
    that name no known type), else the service that produces it."""
    if event_type is None or event_type in UPSTREAM_EVENTS:
        return signing_key(TEST_PRODUCER)
    for service, events in SERVICE_EVENTS.items():
        if event_type in events:
            return signing_key(service_principal(service))
    return signing_key(TEST_PRODUCER)


def signed_headers(value: bytes, key: SigningKey | None = None) -> list[tuple[str, bytes]]:
    """Signing headers for one record, by ``key`` or the key allowed to produce the type it claims."""
    chosen = key if key is not None else key_for_type(claimed_identity(value)[1])
    return chosen.sign_values([value])[0]


def as_version_1(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The same signature in the first wire format's three headers (``vigil-kid`` as hex, ``vigil-sig``,
    ``vigil-proof``): what records produced before ``vigil-signature`` carry, and dead letters replay."""
    (seal,) = [v for k, v in headers if k == HEADER_SIGNATURE]
    head = 1 + 8 + 64  # version, key id, signature
    rest = [(k, v) for k, v in headers if k != HEADER_SIGNATURE]
    return [*rest, (HEADER_KID, seal[1:9].hex().encode()), (HEADER_SIG, seal[9:head]), (HEADER_PROOF, seal[head:])]
