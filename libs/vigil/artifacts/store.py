"""Content-addressed artifact store: an artifact's name is the sha256 of its bytes.

Why content addressing: the digest travels in events (``training.completed``, ``model.version.registered``) and is
the only thing a reader needs; two trainings that produce identical bytes share one object; and a reader can verify
on every read that the bytes are the ones that were registered. Paths are derived from the validated hex digest
alone, so no user-supplied name ever reaches the filesystem (path traversal is impossible by construction).

Optional encryption at rest (AES-256-GCM) binds the digest as associated data, so a ciphertext moved under another
digest fails authentication. The digest is always of the plaintext, so it means the same with or without
encryption. The interface is small enough for an S3-compatible implementation (put/get/exists/delete by digest).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_MAGIC = b"VGLENC1\0"  # marks an encrypted object: magic + 12-byte nonce + ciphertext||tag
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

    def __init__(self, root: Path, *, encryption_key: bytes | None = None) -> None:
        if encryption_key is not None and len(encryption_key) != 32:
            raise ArtifactError("the artifact encryption key must be 32 bytes (AES-256)")
        self.root = root
        self._aead = AESGCM(encryption_key) if encryption_key is not None else None

    def _path(self, digest: str) -> Path:
        hexd = parse_digest(digest)
        return self.root / "sha256" / hexd[:2] / hexd[2:]

    def put(self, data: bytes) -> str:
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
        payload = self._seal(digest, data)
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
        return digest

    def get(self, digest: str) -> bytes:
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

    def _seal(self, digest: str, data: bytes) -> bytes:
        if self._aead is None:
            return data
        nonce = os.urandom(12)
        return _MAGIC + nonce + self._aead.encrypt(nonce, data, digest.encode())

    def _open(self, digest: str, stored: bytes) -> bytes:
        if not stored.startswith(_MAGIC):
            return stored
        if self._aead is None:
            raise ArtifactError(f"artifact {digest} is encrypted and no key is configured")
        nonce, sealed = stored[len(_MAGIC) : len(_MAGIC) + 12], stored[len(_MAGIC) + 12 :]
        try:
            return self._aead.decrypt(nonce, sealed, digest.encode())
        except InvalidTag as exc:
            raise ArtifactTampered(f"artifact {digest} failed authentication; refusing to load it") from exc


def open_store(root: Path, encryption_key_hex: str | None = None) -> LocalArtifactStore:
    """The store configured by settings (``VIGIL_ARTIFACT_ROOT``, ``VIGIL_ARTIFACT_ENCRYPTION_KEY`` as 64 hex)."""
    key = bytes.fromhex(encryption_key_hex) if encryption_key_hex else None
    return LocalArtifactStore(root, encryption_key=key)
