"""Content-addressed artifact store: an artifact's name is the sha256 of its bytes.

Why content addressing: the digest travels in events (``training.completed``, ``model.version.registered``) and is
the only thing a reader needs; two trainings that produce identical bytes share one object; and a reader can verify
on every read that the bytes are the ones that were registered. Paths are derived from the validated hex digest
alone, so no user-supplied name ever reaches the filesystem (path traversal is impossible by construction).

Encryption at rest (AES-256-GCM, on by default in the embedded stack) binds the digest and the key id as associated
data, so a ciphertext moved under another digest, or relabelled with another key id, fails authentication. The
digest is always of the plaintext, so it means the same with or without encryption. Each sealed object names its
key (``keyring.py``), so keys rotate: new objects take the current key, old ones open with theirs, and ``rewrap``
moves old objects to the current key. With a keyring configured, an object stored in plain is refused on read (a
planted unencrypted file is not trusted just because its hash matches); ``rewrap`` encrypts such objects left from
before encryption was turned on. The interface is small enough for an S3-compatible implementation.

Object formats: ``VGLENC2\\0`` + key-id length (1 byte) + key id + 12-byte nonce + ciphertext||tag; the first
build's ``VGLENC1\\0`` + nonce + ciphertext||tag (no key id; opened by trying each key) is still read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vigil.artifacts.keyring import Keyring, KeyringError, load_keyring

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_MAGIC_V1 = b"VGLENC1\0"  # first build: magic + 12-byte nonce + ciphertext||tag, digest as associated data
_MAGIC = b"VGLENC2\0"  # magic + key-id length + key id + 12-byte nonce + ciphertext||tag
_NONCE = 12
MAX_ARTIFACT_BYTES = 2 * 1024**3


class ArtifactError(Exception):
    """Base class of artifact store errors (messages are safe to return to API clients)."""


class ArtifactNotFound(ArtifactError):
    pass


class ArtifactTampered(ArtifactError):
    """The stored bytes do not hash to their name (or fail decryption): never hand them out."""


def digest_of(data: bytes) -> str:
    """``sha256:<hex>`` of bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_digest(digest: str) -> str:
    """Validate ``sha256:<64 hex>`` and return the hex part; anything else is refused."""
    match = _DIGEST.match(digest) if isinstance(digest, str) else None
    if match is None:
        raise ArtifactError(f"not a sha256 digest: {digest[:80]!r}" if isinstance(digest, str) else "not a digest")
    return match.group(1)


class ArtifactStore(ABC):
    """Put/get bytes by their digest. Implementations verify the digest on every read."""

    @abstractmethod
    def put(self, data: bytes) -> str:
        """Store bytes; return their digest. Idempotent."""

    @abstractmethod
    def get(self, digest: str) -> bytes:
        """The bytes with this digest, verified; ArtifactNotFound / ArtifactTampered otherwise."""

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    def uri(self, digest: str) -> str:
        """A URI naming the object (for events and lineage)."""


class LocalArtifactStore(ArtifactStore):
    """Objects under ``root/sha256/ab/cdef…`` (fan-out by the first byte), written atomically."""

    def __init__(
        self,
        root: Path,
        *,
        encryption_key: bytes | None = None,
        keyring: Keyring | None = None,
        keyring_file: Path | None = None,
    ) -> None:
        if sum(x is not None for x in (encryption_key, keyring, keyring_file)) > 1:
            raise ArtifactError("give one of an encryption key, a keyring or a keyring file")
        if encryption_key is not None:
            if len(encryption_key) != 32:
                raise ArtifactError("the artifact encryption key must be 32 bytes (AES-256)")
            keyring = Keyring.single(encryption_key)
        self.root = root
        self.keyring_file = keyring_file
        self._keyring_seen: tuple[int, int, int] | None = None
        self._use(keyring)
        self._reload_keyring()  # a bad keyring file stops the service at start, not at its first artifact

    def _use(self, keyring: Keyring | None) -> None:
        self.keyring = keyring
        self._aeads = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()} if keyring else {}

    def _reload_keyring(self) -> None:
        """Re-read the keyring file when it changed (``vigil keys rotate`` replaces it): a rotation takes effect at
        the next put or get, with no restart. A file that became unreadable keeps the keys already loaded."""
        if self.keyring_file is None:
            return
        try:
            st = self.keyring_file.stat()
        except OSError as exc:
            if self.keyring is None:
                raise ArtifactError(f"cannot read artifact keyring {self.keyring_file}: {exc.strerror}") from exc
            return
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen == self._keyring_seen:
            return
        try:
            self._use(load_keyring(self.keyring_file))
        except KeyringError as exc:
            if self.keyring is None:
                raise ArtifactError(str(exc)) from exc
            log.error("artifact keyring unreadable; keeping the keys loaded before", extra={"error": str(exc)})
            return
        self._keyring_seen = seen

    @property
    def encrypted(self) -> bool:
        """True when objects are sealed on write and plaintext objects are refused on read."""
        return self.keyring is not None

    def _path(self, digest: str) -> Path:
        hexd = parse_digest(digest)
        return self.root / "sha256" / hexd[:2] / hexd[2:]

    def put(self, data: bytes) -> str:
        self._reload_keyring()
        if len(data) > MAX_ARTIFACT_BYTES:
            raise ArtifactError(f"artifact of {len(data)} bytes exceeds {MAX_ARTIFACT_BYTES}")
        digest = digest_of(data)
        path = self._path(digest)
        if path.exists():
            try:
                self.get(digest)
                return digest  # already stored, intact
            except ArtifactTampered:
                path.unlink()  # a corrupt copy: writing the same bytes again repairs it
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_atomically(path, self._seal(digest, data))
        return digest

    @staticmethod
    def _write_atomically(path: Path, payload: bytes) -> None:
        """Write beside, fsync, then rename over: a reader sees the old object or the new one, never a torn one."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o440)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, digest: str) -> bytes:
        self._reload_keyring()
        path = self._path(digest)
        try:
            stored = path.read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"no artifact {digest}") from exc
        data = self._open(digest, stored)
        if digest_of(data) != digest:
            raise ArtifactTampered(f"artifact {digest} does not match its digest; refusing to load it")
        return data

    def exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def uri(self, digest: str) -> str:
        return f"vigil-artifact://{digest}"

    def key_id_of(self, digest: str) -> str | None:
        """The id of the key that sealed this object; None for a plaintext or first-build (unnamed key) object."""
        try:
            with self._path(digest).open("rb") as fh:
                return self._sealed_key_id(fh.read(len(_MAGIC) + 1 + 255))
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"no artifact {digest}") from exc

    def rewrap(self) -> RewrapReport:
        """Re-seal every object not sealed with the current key (older keys, the first build's format, or plain
        objects from before encryption was on). Each object is verified against its digest before it is rewritten,
        atomically; a tampered one is left as it is and counted."""
        self._reload_keyring()
        if self.keyring is None:
            raise ArtifactError("rewrap needs an artifact keyring (encryption is not configured)")
        report = RewrapReport()
        for path in self._object_paths():
            digest = "sha256:" + path.parent.name + path.name
            stored = path.read_bytes()
            if self._sealed_key_id(stored) == self.keyring.current:
                report.current += 1
                continue
            try:
                data = self._open(digest, stored, allow_plaintext=True)
                if digest_of(data) != digest:
                    raise ArtifactTampered(digest)
            except ArtifactError:
                report.tampered.append(digest)
                continue
            self._write_atomically(path, self._seal(digest, data))
            report.rewrapped += 1
        return report

    def _object_paths(self) -> Iterator[Path]:
        base = self.root / "sha256"
        if not base.is_dir():
            return
        for fan in sorted(base.iterdir()):
            if fan.is_dir() and len(fan.name) == 2:
                yield from (p for p in sorted(fan.iterdir()) if p.is_file() and not p.name.startswith("."))

    @staticmethod
    def _sealed_key_id(stored: bytes) -> str | None:
        if not stored.startswith(_MAGIC) or len(stored) <= len(_MAGIC):
            return None
        size = stored[len(_MAGIC)]
        return stored[len(_MAGIC) + 1 : len(_MAGIC) + 1 + size].decode("ascii", "replace")

    def _seal(self, digest: str, data: bytes) -> bytes:
        if self.keyring is None:
            return data
        key_id = self.keyring.current.encode("ascii")
        nonce = os.urandom(_NONCE)
        sealed = self._aeads[self.keyring.current].encrypt(nonce, data, digest.encode() + b"\0" + key_id)
        return _MAGIC + bytes([len(key_id)]) + key_id + nonce + sealed

    def _open(self, digest: str, stored: bytes, *, allow_plaintext: bool = False) -> bytes:
        if stored.startswith(_MAGIC):
            return self._open_v2(digest, stored)
        if stored.startswith(_MAGIC_V1):
            return self._open_v1(digest, stored)
        if self.keyring is not None and not allow_plaintext:
            raise ArtifactTampered(
                f"artifact {digest} is stored unencrypted but encryption at rest is on; refusing to load it"
                " (objects from before encryption was turned on are re-sealed by `vigil keys rewrap`)"
            )
        return stored

    def _open_v2(self, digest: str, stored: bytes) -> bytes:
        if self.keyring is None:
            raise ArtifactError(f"artifact {digest} is encrypted and no key is configured")
        size = stored[len(_MAGIC)] if len(stored) > len(_MAGIC) else 0
        start = len(_MAGIC) + 1
        key_id = stored[start : start + size]
        aead = self._aeads.get(key_id.decode("ascii", "replace"))
        if aead is None:
            raise ArtifactError(
                f"artifact {digest} was sealed with key {key_id.decode('ascii', 'replace')!r}, not in the keyring"
            )
        nonce = stored[start + size : start + size + _NONCE]
        try:
            return aead.decrypt(nonce, stored[start + size + _NONCE :], digest.encode() + b"\0" + key_id)
        except InvalidTag as exc:
            raise ArtifactTampered(f"artifact {digest} failed authentication; refusing to load it") from exc

    def _open_v1(self, digest: str, stored: bytes) -> bytes:
        if not self._aeads:
            raise ArtifactError(f"artifact {digest} is encrypted and no key is configured")
        nonce, sealed = stored[len(_MAGIC_V1) : len(_MAGIC_V1) + _NONCE], stored[len(_MAGIC_V1) + _NONCE :]
        for aead in self._aeads.values():  # the first format names no key: the one that authenticates is it
            try:
                return aead.decrypt(nonce, sealed, digest.encode())
            except InvalidTag:
                continue
        raise ArtifactTampered(f"artifact {digest} failed authentication with every key; refusing to load it")


@dataclass
class RewrapReport:
    """What ``rewrap`` did: objects re-sealed, objects already under the current key, digests left as tampered."""

    rewrapped: int = 0
    current: int = 0
    tampered: list[str] = field(default_factory=list)


def open_store(
    root: Path, encryption_key_hex: str | None = None, *, keyring_file: Path | None = None
) -> LocalArtifactStore:
    """The store configured by settings: ``VIGIL_ARTIFACT_ROOT``, and either a keyring file
    (``VIGIL_ARTIFACT_KEYRING_FILE``, default ``<home>/keys/artifacts.json`` when it exists) or one key
    (``VIGIL_ARTIFACT_ENCRYPTION_KEY``, 64 hex). Neither: objects are stored in plain."""
    if keyring_file is not None:
        if encryption_key_hex:
            raise ArtifactError("configure an artifact keyring file or an encryption key, not both")
        return LocalArtifactStore(root, keyring_file=keyring_file)
    key = bytes.fromhex(encryption_key_hex) if encryption_key_hex else None
    return LocalArtifactStore(root, encryption_key=key)
