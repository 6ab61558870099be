"""The trust store: public keys of every signer and what each may produce; private keys on disk; key issuance.

Layout of an event-keys directory (``<VIGIL_HOME>/keys/events`` on the embedded stack, ``event_keys_dir`` in
settings)::

    trust/<principal>.<kid>.json   {"kid", "principal", "public_key" (hex), "events" (producers only)}   0644
    private/<principal>.key        {"kid", "principal", "seed" (hex)}                                      0600

A principal is ``service-<name>`` or ``producer-<name>`` in file names (``service:<name>`` inside). Consumers read
``trust/`` at start and again whenever its entries change (looked at no more than once a second, and at once when a
record names a key they do not know), so a producer key issued or a key revoked takes effect in running services
without a restart; a service reads its own ``private/`` file. Rotation adds a key (the old trust entry stays until
revoked, so records in flight still verify). See docs/security.md.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
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
#: How often a consumer looks for changed trust entries in the normal course (a directory listing and a stat each).
RELOAD_INTERVAL_S = 1.0
#: How soon after its last look a record signed by an unknown key makes the store look again: a new producer's first
#: record is not refused for arriving in the second after its key was issued, while a flood of records under made-up
#: key ids costs at most one listing per this interval.
UNKNOWN_KEY_RECHECK_S = 0.05

_log = logging.getLogger(__name__)

#: What identifies the state of a trust directory: each entry's name, size and modification time.
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class TrustedKey:
    """One public key and what its holder may produce."""

    kid: str
    principal: str
    public: Ed25519PublicKey
    events: frozenset[str]


class TrustStore:
    """Public keys by id, with the authorisation table applied: verify a record, then authorise its type.

    A store loaded from a directory (:meth:`load`) follows it: :meth:`refresh` re-reads the entries when any was
    added, removed or rewritten. A directory that no longer reads cleanly (a half-copied or over-reaching entry) keeps
    the keys last read and logs why — a typo in one entry must not make a running service refuse every record.
    """

    def __init__(self, keys: Iterable[TrustedKey], directory: Path | None = None) -> None:
        self.directory = directory
        self._checks_before = 0
        self._install(keys)
        self._fingerprint = _fingerprint(directory) if directory is not None else ()
        self._looked_at = time.monotonic()

    def _install(self, keys: Iterable[TrustedKey]) -> None:
        self.keys = {k.kid: k for k in keys}
        self._verifier = RecordVerifier({k.kid: k.public for k in self.keys.values()})

    @classmethod
    def load(cls, directory: Path) -> TrustStore:
        """Read every ``*.json`` entry of ``directory``; a malformed or over-reaching entry raises ValueError."""
        if not directory.is_dir():
            raise FileNotFoundError(f"no trust store at {directory}: create one with `vigil keys init`")
        return cls(_read_entries(directory), directory=directory)

    def refresh(self, *, min_interval: float = RELOAD_INTERVAL_S) -> bool:
        """Re-read the directory if its entries changed and ``min_interval`` passed since the last look; True when
        the keys were replaced."""
        now = time.monotonic()
        if self.directory is None or now - self._looked_at < min_interval:
            return False
        self._looked_at = now
        fingerprint = _fingerprint(self.directory)
        if fingerprint == self._fingerprint:
            return False
        try:
            keys = list(_read_entries(self.directory))
        except (OSError, ValueError) as exc:
            _log.error("trust store %s changed but does not read cleanly; keeping the keys read before: %s",
                       self.directory, exc)  # fmt: skip
            self._fingerprint = fingerprint  # logged once per change, not once per look
            return False
        before = set(self.keys)
        self._checks_before += self._verifier.signature_checks
        self._install(keys)
        self._fingerprint = fingerprint
        _log.info("trust store %s reloaded: %d keys added, %d removed",
                  self.directory, len(set(self.keys) - before), len(before - set(self.keys)))  # fmt: skip
        return True

    @property
    def signature_checks(self) -> int:
        """Ed25519 verifications done so far (one per distinct signed batch)."""
        return self._checks_before + self._verifier.signature_checks

    def verify(self, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> TrustedKey:
        """The signer of a record, or SignatureRejected. Does not look at the event type (see :meth:`authorise`).

        A key the store does not know makes it look at its directory again first (rate-limited): the key may
        have been issued after the last look.
        """
        try:
            return self.keys[self._verifier.verify(value, headers)]
        except SignatureRejected as exc:
            if exc.reason != "unknown_key" or not self.refresh(min_interval=UNKNOWN_KEY_RECHECK_S):
                raise
        return self.keys[self._verifier.verify(value, headers)]

    @staticmethod
    def authorise(signer: TrustedKey, event_type: str) -> None:
        """SignatureRejected(unauthorised_signer) unless ``signer`` may produce ``event_type``."""
        if event_type not in signer.events:
            raise SignatureRejected(
                "unauthorised_signer", f"{signer.principal} (key {signer.kid}) may not produce {event_type[:100]}"
            )


def _fingerprint(directory: Path) -> Fingerprint:
    entries = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.endswith(".json"):
                    with_stat = entry.stat()
                    entries.append((entry.name, with_stat.st_size, with_stat.st_mtime_ns))
    except FileNotFoundError:
        return ()
    return tuple(sorted(entries))


def _read_entries(directory: Path) -> list[TrustedKey]:
    return [_read_entry(path) for path in sorted(directory.glob("*.json"))]


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
    # Scratch files of their own (mkstemp: 0600, a unique name), renamed into place: two issuers at once never write
    # into one shared ``.tmp`` and move each other's half-written file in; the last rename wins whole.
    fd, tmp_name = tempfile.mkstemp(dir=private_dir, prefix=f".{private_path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps({"kid": key.kid, "principal": principal, "seed": seed}))
        out.flush()
        os.fsync(out.fileno())
    entry: dict[str, object] = {
        "kid": key.kid,
        "principal": principal,
        "public_key": key.private.public_key().public_bytes_raw().hex(),
    }
    if listed:
        entry["events"] = sorted(listed)
    entry_path = trust_dir(keys_dir) / f"{_file_name(principal)}.{key.kid}.json"
    # Renamed into place: running consumers never read half an entry. Dot-named, so the store's listing skips it.
    fd, entry_name = tempfile.mkstemp(dir=trust_dir(keys_dir), prefix=f".{entry_path.name}.", suffix=".tmp")
    entry_tmp = Path(entry_name)
    os.fchmod(fd, 0o644)  # a public key: readable by every consumer, as before
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(entry, option=orjson.OPT_INDENT_2))
    os.replace(entry_tmp, entry_path)
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
    """Remove every trust entry of key ``kid`` (running consumers stop trusting it within about a second)."""
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
