"""The hash chain: how an audit entry's hash is computed, and how the chain is verified.

Kept free of I/O so the same code serves the writer, ``verify`` and any independent checker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from vigil.events import canonical_json, parse_json

GENESIS_HASH = "0" * 64


def normalise_time(value: str | datetime) -> str:
    """One spelling of an instant (UTC, microseconds), whether it comes from an event or a timestamptz column."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class EntryFields:
    """The fields an entry hash covers (everything a reader relies on)."""

    seq: int
    event_id: str
    event_type: str
    subject: str
    actor: str
    event_time: str
    event_sha256: str

    def canonical(self) -> bytes:
        return canonical_json(
            {
                "seq": self.seq,
                "event_id": self.event_id,
                "type": self.event_type,
                "subject": self.subject,
                "actor": self.actor,
                "time": self.event_time,
                "event_sha256": self.event_sha256,
            }
        )


def entry_hash(prev_hash: str, fields: EntryFields) -> str:
    """sha256(prev_hash || "\\n" || canonical(fields)) as hex."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + fields.canonical()).hexdigest()


@dataclass(frozen=True)
class StoredEntry:
    """An entry as read back from storage, with the event bytes it claims to cover."""

    fields: EntryFields
    prev_hash: str
    entry_hash: str
    event: bytes


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries_checked: int
    first_bad_seq: int | None = None
    problem: str | None = None


def verify_entries(
    entries: Iterable[StoredEntry], *, expected_prev: str = GENESIS_HASH, start_seq: int = 1
) -> VerifyResult:
    """Recompute the chain; name the first entry that does not hold (altered, missing, reordered)."""
    prev = expected_prev
    expected_seq = start_seq
    checked = 0
    for entry in entries:
        f = entry.fields
        if f.seq != expected_seq:
            return VerifyResult(False, checked, expected_seq, f"entry {expected_seq} is missing (found {f.seq})")
        if hashlib.sha256(entry.event).hexdigest() != f.event_sha256:
            return VerifyResult(False, checked, f.seq, "event bytes do not match event_sha256")
        mismatch = _columns_disagree_with_event(f, entry.event)
        if mismatch:
            return VerifyResult(False, checked, f.seq, f"column {mismatch} does not match the stored event")
        if entry.prev_hash != prev:
            return VerifyResult(False, checked, f.seq, "prev_hash does not match the previous entry")
        if entry_hash(prev, f) != entry.entry_hash:
            return VerifyResult(False, checked, f.seq, "entry_hash does not match its fields")
        prev = entry.entry_hash
        expected_seq += 1
        checked += 1
    return VerifyResult(True, checked)


def _columns_disagree_with_event(fields: EntryFields, event: bytes) -> str | None:
    """The first indexed column that differs from the event bytes it was extracted from, if any."""
    try:
        raw = parse_json(event)
        expected = {
            "event_id": raw["id"],
            "event_type": raw["type"],
            "subject": raw["subject"],
            "actor": raw["actor"],
            "event_time": normalise_time(raw["time"]),
        }
    except Exception:
        return "event"
    for name, value in expected.items():
        if getattr(fields, name) != value:
            return name
    return None
