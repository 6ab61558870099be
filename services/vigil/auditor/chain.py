"""The hash chain: how an audit entry's hash is computed, and how the chain is verified.

Kept free of I/O so the same code serves the writer, ``verify`` and any independent checker.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from vigil.auditor.merkle import Frontier
from vigil.events import canonical_json, parse_json

GENESIS_HASH = "0" * 64


_CANONICAL_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def normalise_time(value: str | datetime) -> str:
    """One spelling of an instant (UTC, microseconds), whether it comes from an event or a timestamptz column."""
    if isinstance(value, str) and _CANONICAL_UTC.match(value):  # what make_event writes: skip the parse
        return value[:-1] + "+00:00"
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
    #: The verified producer (docs/security.md); covered by the hash when set, absent from older entries.
    signer: str | None = None

    def canonical(self) -> bytes:
        fields: dict[str, str | int] = {
            "seq": self.seq,
            "event_id": self.event_id,
            "type": self.event_type,
            "subject": self.subject,
            "actor": self.actor,
            "time": self.event_time,
            "event_sha256": self.event_sha256,
        }
        if self.signer is not None:
            fields["signer"] = self.signer
        return canonical_json(fields)


def entry_hash(prev_hash: str, fields: EntryFields) -> str:
    """sha256(prev_hash || "\\n" || canonical(fields)) as hex."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + fields.canonical()).hexdigest()


def entry_hash_of(
    prev_hash: str,
    seq: int,
    event_id: str,
    event_type: str,
    subject: str,
    actor: str,
    time: str,
    event_sha256: str,
    signer: str | None = None,
) -> str:
    """:func:`entry_hash` without building :class:`EntryFields` first (the writer's hot loop; equal by test).

    The dict is written in sorted key order, so plain ``orjson.dumps`` gives the canonical bytes (every value is a
    str or an int, which canonical JSON writes the same way).
    """
    fields = {
        "actor": actor,
        "event_id": event_id,
        "event_sha256": event_sha256,
        "seq": seq,
        "subject": subject,
        "time": time,
        "type": event_type,
    }
    if signer is not None:  # sorted order: "signer" sorts between "seq" and "subject"
        fields = (
            {k: fields[k] for k in ("actor", "event_id", "event_sha256", "seq")}
            | {"signer": signer}
            | {k: fields[k] for k in ("subject", "time", "type")}
        )
    return hashlib.sha256(b"%s\n%s" % (prev_hash.encode(), orjson.dumps(fields))).hexdigest()


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
    checkpoints_checked: int = 0
    bad_checkpoint: int | None = None  # to_seq of the first checkpoint that does not hold


@dataclass(frozen=True)
class CheckpointClaim:
    """What a stored checkpoint claims: the root and last entry hash of the tree over entries 1..to_seq."""

    to_seq: int
    merkle_root: str
    last_entry_hash: str
    signature_problem: str | None  # None when the signature verified against a trusted key


class ChainVerifier:
    """Streaming verification: feed entries in seq order; holds O(log n) state, never the chain.

    Checks each entry (event bytes ↔ sha256 ↔ columns, prev_hash link, entry_hash), rebuilds the RFC 6962 tree
    incrementally and compares its root with every checkpoint as the chain reaches the checkpoint's size. Starting
    from a checkpoint (``start_seq`` = its ``to_seq + 1``, ``expected_prev`` = its last entry hash, ``frontier`` =
    its frontier) verifies a log whose older entries expired.
    """

    def __init__(
        self,
        checkpoints: Iterable[CheckpointClaim] = (),
        *,
        expected_prev: str = GENESIS_HASH,
        start_seq: int = 1,
        frontier: Frontier | None = None,
    ) -> None:
        self.prev = expected_prev
        self.expected_seq = start_seq
        self.checked = 0
        self.frontier = frontier or Frontier()
        if self.frontier.size != start_seq - 1:
            raise ValueError("the frontier must cover exactly the entries before start_seq")
        self.pending = sorted((c for c in checkpoints if c.to_seq >= start_seq), key=lambda c: c.to_seq)
        self._next = 0
        self.checkpoints_checked = 0
        self.failure: VerifyResult | None = None

    def _fail(self, seq: int | None, problem: str, checkpoint: int | None = None) -> VerifyResult:
        self.failure = VerifyResult(False, self.checked, seq, problem, self.checkpoints_checked, checkpoint)
        return self.failure

    def feed(self, entry: StoredEntry) -> VerifyResult | None:
        """Check one entry; returns the failure (and keeps it) at the first problem, else None."""
        if self.failure is not None:
            return self.failure
        f = entry.fields
        if f.seq != self.expected_seq:
            if f.seq < self.expected_seq:
                return self._fail(f.seq, f"entry {f.seq} is out of order (expected {self.expected_seq})")
            return self._fail(self.expected_seq, f"entry {self.expected_seq} is missing (found {f.seq})")
        if hashlib.sha256(entry.event).hexdigest() != f.event_sha256:
            return self._fail(f.seq, "event bytes do not match event_sha256")
        mismatch = _columns_disagree_with_event(f, entry.event)
        if mismatch:
            return self._fail(f.seq, f"column {mismatch} does not match the stored event")
        if entry.prev_hash != self.prev:
            return self._fail(f.seq, "prev_hash does not match the previous entry")
        if entry_hash(self.prev, f) != entry.entry_hash:
            return self._fail(f.seq, "entry_hash does not match its fields")
        self.prev = entry.entry_hash
        self.expected_seq += 1
        self.checked += 1
        self.frontier.append(bytes.fromhex(entry.entry_hash))
        while self._next < len(self.pending) and self.pending[self._next].to_seq == f.seq:
            problem = self._check_checkpoint(self.pending[self._next])
            if problem:
                return self._fail(f.seq, problem, self.pending[self._next].to_seq)
            self._next += 1
            self.checkpoints_checked += 1
        return None

    def _check_checkpoint(self, claim: CheckpointClaim) -> str | None:
        if claim.signature_problem:
            return f"checkpoint 1..{claim.to_seq}: {claim.signature_problem}"
        if claim.last_entry_hash != self.prev:
            return f"checkpoint 1..{claim.to_seq}: last_entry_hash differs from entry {claim.to_seq}"
        if self.frontier.root().hex() != claim.merkle_root:
            return f"checkpoint 1..{claim.to_seq}: Merkle root differs from the entries 1..{claim.to_seq}"
        return None

    def finish(self) -> VerifyResult:
        """The verdict once every entry was fed: checkpoints beyond the last entry mean the tail was removed."""
        if self.failure is not None:
            return self.failure
        if self._next < len(self.pending):
            claim = self.pending[self._next]
            return self._fail(
                self.expected_seq,
                f"entry {self.expected_seq} is missing: checkpoint 1..{claim.to_seq} was signed over it",
                claim.to_seq,
            )
        return VerifyResult(True, self.checked, checkpoints_checked=self.checkpoints_checked)


def verify_entries(
    entries: Iterable[StoredEntry],
    *,
    expected_prev: str = GENESIS_HASH,
    start_seq: int = 1,
    checkpoints: Iterable[CheckpointClaim] = (),
    frontier: Frontier | None = None,
) -> VerifyResult:
    """Recompute the chain (and checkpoint roots); name the first entry that does not hold."""
    verifier = ChainVerifier(checkpoints, expected_prev=expected_prev, start_seq=start_seq, frontier=frontier)
    for entry in entries:
        if verifier.feed(entry) is not None:
            break
    return verifier.finish()


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
