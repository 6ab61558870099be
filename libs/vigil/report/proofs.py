"""RFC 6962 inclusion proofs and checkpoint signatures, checked here from the definitions in docs/audit.md.

Written from the documentation, not imported from the auditor: a pack's verification must not trust the code that
produced the log. Every function answers with the reason a check failed (or None), so the verifier can name it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vigil.events import canonical_json

#: The fields of a checkpoint its Ed25519 signature covers (the ``audit.checkpoint`` payload less ``signature``).
SIGNED_FIELDS = ("chain", "from_seq", "to_seq", "merkle_root", "last_entry_hash", "algorithm", "key_id")


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def event_sha256(event: dict[str, Any]) -> str:
    """sha256 of the event's canonical bytes (sorted keys, compact, UTF-8) — what the entry recorded."""
    return hashlib.sha256(canonical_json(event)).hexdigest()


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256(prev_hash ‖ "\\n" ‖ canonical JSON of the entry's hashed fields); ``signer`` only when recorded."""
    when = datetime.fromisoformat(str(entry["event_time"]).replace("Z", "+00:00")).astimezone(UTC)
    fields: dict[str, Any] = {
        "seq": entry["seq"],
        "event_id": entry["event_id"],
        "type": entry["event_type"],
        "subject": entry["subject"],
        "actor": entry["actor"],
        "time": when.isoformat(timespec="microseconds"),
        "event_sha256": entry["event_sha256"],
    }
    if entry.get("signer") is not None:
        fields["signer"] = entry["signer"]
    return hashlib.sha256(str(entry["prev_hash"]).encode() + b"\n" + canonical_json(fields)).hexdigest()


def leaf_hash(entry_hash_hex: str) -> bytes:
    """RFC 6962 leaf: sha256(0x00 ‖ entry hash bytes)."""
    return _sha(b"\x00" + bytes.fromhex(entry_hash_hex))


def root_from_path(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes | None:
    """Fold an audit path to the root along RFC 6962's recursive PATH definition; None if the path has the wrong
    length for (index, size). The last path element is the sibling nearest the root."""
    if not 0 <= index < size:
        return None
    if size == 1:
        return leaf if not path else None
    if not path:
        return None
    split = 1
    while split * 2 < size:
        split *= 2
    if index < split:
        left = root_from_path(index, split, leaf, path[:-1])
        return None if left is None else _sha(b"\x01" + left + path[-1])
    right = root_from_path(index - split, size - split, leaf, path[:-1])
    return None if right is None else _sha(b"\x01" + path[-1] + right)


def public_key(text: str) -> tuple[str, Ed25519PublicKey]:
    """(key id, key) from the raw 32-byte key in hex or base64; key id = first 16 hex of sha256(raw).

    Raises ValueError with a one-line reason for anything else."""
    text = text.strip()
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError("a public key must be 32 bytes in hex or base64") from exc
    if len(raw) != 32:
        raise ValueError("a public key must be 32 bytes")
    return hashlib.sha256(raw).hexdigest()[:16], Ed25519PublicKey.from_public_bytes(raw)


def checkpoint_problem(checkpoint: dict[str, Any], key_id: str, key: Ed25519PublicKey) -> str | None:
    """None if the checkpoint is signed by ``key``, else why not."""
    missing = [f for f in (*SIGNED_FIELDS, "signature") if f not in checkpoint]
    if missing:
        return f"the checkpoint lacks {', '.join(missing)}"
    if checkpoint["key_id"] != key_id:
        return f"the checkpoint is signed by key {checkpoint['key_id']}, not by the given key {key_id}"
    message = canonical_json({k: checkpoint[k] for k in SIGNED_FIELDS})
    try:
        key.verify(base64.b64decode(str(checkpoint["signature"])), message)
    except (InvalidSignature, ValueError, binascii.Error):
        return "the checkpoint's signature does not verify with the given key"
    return None


def inclusion_problem(cited: dict[str, Any], checkpoint: dict[str, Any]) -> str | None:
    """None if the cited entry (``entry``, ``event``, ``audit_path``) is in the checkpoint's tree, else why not.

    Chain: event bytes → event_sha256 → entry_hash → leaf → audit path → the checkpoint's Merkle root."""
    try:
        entry, event, path_hex = cited["entry"], cited["event"], cited["audit_path"]
    except (KeyError, TypeError):
        return "the pack carries no entry, event and audit path for it"
    try:
        if event_sha256(event) != entry["event_sha256"]:
            return "its event does not hash to the entry's event_sha256 (the event was altered)"
        for column, key in (("event_id", "id"), ("event_type", "type"), ("subject", "subject"), ("actor", "actor")):
            if entry.get(column) != event.get(key):
                return f"the entry's {column} does not match its event"
        if entry_hash(entry) != entry["entry_hash"]:
            return "the entry's fields do not hash to its entry_hash (the entry was altered)"
        path = [bytes.fromhex(h) for h in path_hex]
        root = root_from_path(int(entry["seq"]) - 1, int(checkpoint["to_seq"]), leaf_hash(entry["entry_hash"]), path)
    except (KeyError, TypeError, ValueError) as exc:
        return f"its entry or proof is malformed ({type(exc).__name__}: {exc})"
    if root is None:
        return f"its audit path ({len(path_hex)} hashes) does not fit a tree of {checkpoint['to_seq']} entries"
    if root.hex() != checkpoint["merkle_root"]:
        return "its audit path does not lead to the checkpoint's Merkle root"
    return None
