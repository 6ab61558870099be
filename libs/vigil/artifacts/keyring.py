"""Artifact encryption keys with ids, so keys can rotate without re-reading every object at once.

A keyring is a small JSON file (mode 0600) holding every key ever used for the store and naming the current one::

    {"version": 1, "current": "k20261206-3f9a1c2b", "keys": {"k20261206-3f9a1c2b": "<64 hex>", ...}}

Why ids: each object names the key that sealed it (the object format is in ``store.py``), so after ``rotate`` new
objects use the new key while old ones still open with theirs; ``rewrap`` re-seals old objects under the current
key when an old key must go. Keys are only ever added by ``rotate``; removing one is a manual act done after
``rewrap`` (an object whose key is gone cannot be read).

The embedded stack creates ``<home>/keys/artifacts.json`` on its first start (``ensure_keyring_file``) so
encryption at rest is on by default; a deployment mounts the same file from a Secret.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEYRING_VERSION = 1
KEY_BYTES = 32  # AES-256
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class KeyringError(Exception):
    """A keyring file is missing, unreadable or malformed (the message names the file and the problem)."""


@dataclass(frozen=True)
class Keyring:
    """Every key of an artifact store by id, and the id of the one that seals new objects."""

    current: str
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        for key_id, key in self.keys.items():
            if not _KEY_ID.match(key_id):
                raise KeyringError(f"bad key id {key_id!r}: letters, digits, '.', '_' or '-', at most 63")
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key {key_id!r} is {len(key)} bytes; an artifact key is {KEY_BYTES} (AES-256)")
        if self.current not in self.keys:
            raise KeyringError(f"the current key {self.current!r} is not in the keyring")

    @property
    def current_key(self) -> bytes:
        return self.keys[self.current]

    @classmethod
    def single(cls, key: bytes) -> Keyring:
        """A keyring of one key given directly (``VIGIL_ARTIFACT_ENCRYPTION_KEY``); its id is derived from the key
        (a hash prefix, never the key), so the same key always has the same id."""
        key_id = "static-" + hashlib.sha256(b"vigil-artifact-key-id\0" + key).hexdigest()[:12]
        return cls(current=key_id, keys={key_id: key})

    def to_json(self) -> dict[str, Any]:
        return {
            "version": KEYRING_VERSION,
            "current": self.current,
            "keys": {key_id: key.hex() for key_id, key in self.keys.items()},
        }

    @classmethod
    def from_json(cls, doc: Any, *, source: str = "keyring") -> Keyring:
        if not isinstance(doc, dict) or doc.get("version") != KEYRING_VERSION:
            raise KeyringError(f"{source}: not a version-{KEYRING_VERSION} artifact keyring")
        keys_doc = doc.get("keys")
        if not isinstance(keys_doc, dict) or not keys_doc:
            raise KeyringError(f"{source}: 'keys' must be a non-empty object of id -> 64 hex")
        keys: dict[str, bytes] = {}
        for key_id, hex_key in keys_doc.items():
            try:
                keys[str(key_id)] = bytes.fromhex(str(hex_key))
            except ValueError as exc:
                raise KeyringError(f"{source}: key {key_id!r} is not hex") from exc
        return cls(current=str(doc.get("current")), keys=keys)


def new_key_id(now: dt.datetime | None = None) -> str:
    """``k<yyyymmdd>-<8 hex>``: sortable by day, unique by its random part."""
    day = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d")
    return f"k{day}-{secrets.token_hex(4)}"


def load_keyring(path: Path) -> Keyring:
    """Read a keyring file; refuse one that others can read (it holds the keys in plain)."""
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise KeyringError(f"cannot read artifact keyring {path}: {exc.strerror or exc}") from exc
    if st.st_mode & 0o077:
        raise KeyringError(
            f"artifact keyring {path} is readable by group or others (mode {st.st_mode & 0o777:o}); chmod 600 it"
        )
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyringError(f"artifact keyring {path} is not JSON: {exc}") from exc
    return Keyring.from_json(doc, source=str(path))


def ensure_keyring_file(path: Path) -> Keyring:
    """The keyring at ``path``, created with one fresh key on first use (0600, in a 0700 directory)."""
    with _locked(path):
        if path.exists():
            return load_keyring(path)
        key_id = new_key_id()
        keyring = Keyring(current=key_id, keys={key_id: secrets.token_bytes(KEY_BYTES)})
        _write(path, keyring)
        return keyring


def rotate_keyring_file(path: Path) -> Keyring:
    """Add a fresh key and make it current; every earlier key stays so existing objects still open."""
    with _locked(path):
        keyring = load_keyring(path)
        key_id = new_key_id()
        while key_id in keyring.keys:  # 32 random bits a day: a clash is possible in principle only
            key_id = new_key_id()
        rotated = Keyring(current=key_id, keys={**keyring.keys, key_id: secrets.token_bytes(KEY_BYTES)})
        _write(path, rotated)
        return rotated


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise writers of one keyring (two `vigil up` or a rotate during a start) with a lock file beside it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, keyring: Keyring) -> None:
    """Atomically replace the file: a crash leaves the old keyring or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keyring-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(keyring.to_json(), out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
