"""The checkpoint signing key (Ed25519) and the exact bytes a checkpoint signature covers.

The key comes from settings (hex or base64 seed), else from a key file; with neither, a key is generated once and
written to ``<home>/auditor/signing.key`` (mode 0600). The private key never appears in logs, reprs or responses.

Signed message: canonical JSON (sorted keys, compact, UTF-8) of the ``audit.checkpoint`` payload without
``signature``, i.e. ``{algorithm, chain, from_seq, key_id, last_entry_hash, merkle_root, to_seq}``. Anyone holding
the event and the public key can check it with any Ed25519 library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vigil.events import canonical_json
from vigil.service.secret_file import publish_secret_once

log = logging.getLogger(__name__)


class SigningKeyError(ValueError):
    """The configured key cannot be read (the message never contains key material)."""


def _decode_32(text: str, what: str) -> bytes:
    """32 bytes from 64 hex chars or (url-safe) base64; the error never echoes the text."""
    text = text.strip()
    raw: bytes | None = None
    if len(text) == 64:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        padded = text + "=" * (-len(text) % 4)
        for altchars in (None, b"-_"):
            try:
                raw = base64.b64decode(padded, altchars=altchars, validate=True)
                break
            except (ValueError, binascii.Error):
                continue
    if raw is None:
        raise SigningKeyError(f"{what} is neither 64 hex chars nor base64")
    if len(raw) != 32:
        raise SigningKeyError(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


def key_id(public: Ed25519PublicKey) -> str:
    """First 16 hex chars of sha256 of the raw public key."""
    return hashlib.sha256(raw_public(public)).hexdigest()[:16]


def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_from_text(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_decode_32(text, "public key"))


@dataclass(frozen=True)
class Signer:
    """The auditor's signing key plus the public keys it trusts for verification (its own and earlier ones)."""

    private: Ed25519PrivateKey
    trusted: Mapping[str, Ed25519PublicKey]

    def __repr__(self) -> str:  # never show key material
        return f"Signer(key_id={self.key_id!r})"

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message)).decode()

    def verify(self, kid: str, message: bytes, signature: str) -> str | None:
        """None if valid, else the reason."""
        public = self.trusted.get(kid)
        if public is None:
            return f"signed by unknown key {kid}"
        try:
            public.verify(base64.b64decode(signature), message)
        except (InvalidSignature, ValueError, binascii.Error):
            return "signature does not verify"
        return None


def checkpoint_message(payload: Mapping[str, Any]) -> bytes:
    """The bytes a checkpoint signature covers: its payload without ``signature``, canonical JSON."""
    return canonical_json({k: v for k, v in payload.items() if k != "signature"})


def _load_file(path: Path) -> Ed25519PrivateKey:
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{path} does not hold an Ed25519 private key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_decode_32(data.decode("ascii", "replace"), f"key file {path}"))


def _generate(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    # Two auditors starting at once must not overwrite each other's key, and the loser must never read a half-written
    # one (with O_EXCL on the key file itself, a second auditor read it empty in a fresh-clone CI run and exited):
    # published whole or not at all, first wins, the loser reads the winner's.
    if not publish_secret_once(path, seed.hex() + "\n").written:
        return _load_file(path)
    log.warning("generated a new audit signing key", extra={"key_file": str(path), "key_id": key_id(key.public_key())})
    return key


def load_signer(
    key_text: str | None, key_file: Path, trusted_public: Iterable[str] = (), *, generate: bool = True
) -> Signer:
    """The signer from settings: ``key_text`` if given, else ``key_file``, else a new key written to ``key_file``."""
    if key_text:
        private = Ed25519PrivateKey.from_private_bytes(_decode_32(key_text, "audit_signing_key"))
    elif key_file.exists():
        private = _load_file(key_file)
    elif generate:
        private = _generate(key_file)
    else:
        raise SigningKeyError(f"no signing key configured and {key_file} does not exist")
    trusted = {key_id(private.public_key()): private.public_key()}
    for text in trusted_public:
        public = public_key_from_text(text)
        trusted[key_id(public)] = public
    return Signer(private, trusted)
