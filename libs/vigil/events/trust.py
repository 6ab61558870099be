"""The trust store: public keys of every signer and what each may produce; private keys on disk; key issuance.

Layout of an event-keys directory (``<VIGIL_HOME>/keys/events`` on the embedded stack, ``event_keys_dir`` in
settings)::

    trust/<principal>.<kid>.json   {"kid", "principal", "public_key" (hex), "events" (producers only)}   0644
    private/<principal>.key        {"kid", "principal", "seed" (hex)}                                      0600

A principal is ``service-<name>`` or ``producer-<name>`` in file names (``service:<name>`` inside). Consumers read
``trust/`` at start; a service reads its own ``private/`` file. Rotation adds a key (the old trust entry stays until
revoked, so records in flight still verify). See docs/security.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vigil.events.authority import (
    SERVICE_EVENTS,
    UPSTREAM_EVENTS,
    allowed_events,
    producer_principal,
    service_principal,
)
from vigil.events.signing import RecordVerifier, SignatureRejected, SigningKey, key_id

#: The producer key ``vigil up`` issues for local upstream traffic (the demo, scripts, tests).
LOCAL_PRODUCER = "local"


@dataclass(frozen=True)
class TrustedKey:
    """One public key and what its holder may produce."""

    kid: str
    principal: str
    public: Ed25519PublicKey
    events: frozenset[str]


class TrustStore:
    """Public keys by id, with the authorisation table applied: verify a record, then authorise its type."""

    def __init__(self, keys: Iterable[TrustedKey]) -> None:
        self.keys = {k.kid: k for k in keys}
        self._verifier = RecordVerifier({k.kid: k.public for k in self.keys.values()})

    @classmethod
    def load(cls, directory: Path) -> TrustStore:
        """Read every ``*.json`` entry of ``directory``; a malformed or over-reaching entry raises ValueError."""
        if not directory.is_dir():
            raise FileNotFoundError(f"no trust store at {directory}: create one with `vigil keys init`")
        return cls(_read_entry(path) for path in sorted(directory.glob("*.json")))

    @property
    def signature_checks(self) -> int:
        """Ed25519 verifications done so far (one per distinct signed batch)."""
        return self._verifier.signature_checks

    def verify(self, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> TrustedKey:
        """The signer of a record, or SignatureRejected. Does not look at the event type (see :meth:`authorise`)."""
        return self.keys[self._verifier.verify(value, headers)]

    @staticmethod
    def authorise(signer: TrustedKey, event_type: str) -> None:
        """SignatureRejected(unauthorised_signer) unless ``signer`` may produce ``event_type``."""
        if event_type not in signer.events:
            raise SignatureRejected(
                "unauthorised_signer", f"{signer.principal} (key {signer.kid}) may not produce {event_type[:100]}"
            )


def _read_entry(path: Path) -> TrustedKey:
    try:
        raw = orjson.loads(path.read_bytes())
        principal = str(raw["principal"])
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(raw["public_key"]))
        listed = frozenset(str(e) for e in raw.get("events") or ())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"trust store entry {path} is malformed: {exc}") from exc
    kid = key_id(public)
    if raw.get("kid") not in (None, kid):
        raise ValueError(f"trust store entry {path}: kid {raw.get('kid')!r} is not its key's id {kid}")
    return TrustedKey(kid, principal, public, allowed_events(principal, listed))


def _file_name(principal: str) -> str:
    safe = principal.replace(":", "-")
    if not safe or "/" in safe or safe.startswith("."):
        raise ValueError(f"bad principal name {principal!r}")
    return safe


def trust_dir(keys_dir: Path) -> Path:
    return keys_dir / "trust"


def private_key_path(keys_dir: Path, principal: str) -> Path:
    return keys_dir / "private" / f"{_file_name(principal)}.key"


def load_signing_key(path: Path) -> SigningKey:
    """A private key file written by :func:`issue_key`; FileNotFoundError names the command that makes one."""
    if not path.is_file():
        raise FileNotFoundError(f"no event signing key at {path}: create it with `vigil keys init`")
    raw = orjson.loads(path.read_bytes())
    key = SigningKey.of(str(raw["principal"]), Ed25519PrivateKey.from_private_bytes(bytes.fromhex(raw["seed"])))
    if raw.get("kid") not in (None, key.kid):
        raise ValueError(f"signing key {path}: kid {raw.get('kid')!r} is not its key's id {key.kid}")
    return key


def issue_key(keys_dir: Path, principal: str, events: Iterable[str] = ()) -> SigningKey:
    """Make a new key for ``principal``: its private file (0600, replacing any older one) and a trust entry.

    ``events`` is for producers (checked against :data:`UPSTREAM_EVENTS`); services get theirs from the table.
    """
    listed = frozenset(events)
    allowed_events(principal, listed)  # refuse before writing anything
    key = SigningKey.of(principal, Ed25519PrivateKey.generate())
    private_dir = keys_dir / "private"
    private_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    trust_dir(keys_dir).mkdir(parents=True, exist_ok=True)
    seed = key.private.private_bytes_raw().hex()
    private_path = private_key_path(keys_dir, principal)
    tmp = private_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps({"kid": key.kid, "principal": principal, "seed": seed}))
    entry: dict[str, object] = {
        "kid": key.kid,
        "principal": principal,
        "public_key": key.private.public_key().public_bytes_raw().hex(),
    }
    if listed:
        entry["events"] = sorted(listed)
    (trust_dir(keys_dir) / f"{_file_name(principal)}.{key.kid}.json").write_bytes(
        orjson.dumps(entry, option=orjson.OPT_INDENT_2)
    )
    os.replace(tmp, private_path)
    return key


def ensure_keys(
    keys_dir: Path, services: Iterable[str] = SERVICE_EVENTS, producers: dict[str, frozenset[str]] | None = None
) -> list[str]:
    """Issue a key for every service (and producer) that has no private key file yet; returns the principals issued.

    Idempotent: what ``vigil up`` and ``vigil keys init`` run. ``producers`` defaults to the local producer with every
    upstream event type.
    """
    wanted: dict[str, frozenset[str]] = {service_principal(s): frozenset() for s in services}
    for name, events in (producers if producers is not None else {LOCAL_PRODUCER: UPSTREAM_EVENTS}).items():
        wanted[producer_principal(name)] = events
    issued = []
    for principal, events in wanted.items():
        if not private_key_path(keys_dir, principal).is_file():
            issue_key(keys_dir, principal, events)
            issued.append(principal)
    return issued


def revoke(keys_dir: Path, kid: str) -> list[Path]:
    """Remove every trust entry of key ``kid`` (consumers stop trusting it at their next start)."""
    removed = []
    for path in trust_dir(keys_dir).glob(f"*.{kid}.json"):
        path.unlink()
        removed.append(path)
    return removed


def default_keys_dir(home: Path | None = None) -> Path:
    """Where a stack's event keys are: ``VIGIL_EVENT_KEYS_DIR``, else ``<home>/keys/events`` (home: ``VIGIL_HOME``
    or ``./.vigil``, as ``vigil up`` and the services resolve it)."""
    override = os.environ.get("VIGIL_EVENT_KEYS_DIR")
    if override:
        return Path(override)
    base = home if home is not None else Path(os.environ.get("VIGIL_HOME") or ".vigil")
    return base.absolute() / "keys" / "events"


def local_producer_key(home: Path | None = None) -> SigningKey:
    """The embedded stack's upstream producer key (``vigil up`` issues it): what the demo and scripts sign with."""
    return load_signing_key(private_key_path(default_keys_dir(home), producer_principal(LOCAL_PRODUCER)))
