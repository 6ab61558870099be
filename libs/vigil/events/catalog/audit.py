"""Audit events: the auditor republishes its hash chain on vigil.audit so downstream systems (SIEMs) can follow it.

Written by the auditor alone; infinite retention. All are keyed by ``chain`` (one hash chain per auditor deployment,
``"audit"`` by default), so the topic is read in chain order.

- ``audit.entry``: one control-plane event became entry ``seq``; ``entry_hash = sha256(prev_hash ‖ fields)``.
- ``audit.stream_digest``: a window of a high-volume stream (predictions, labels, metrics) covered without copying
  its payloads: the count and the Merkle root of the records' canonical sha256s over an offset range.
- ``audit.checkpoint``: a signed Merkle root (RFC 6962) over entries ``from_seq..to_seq``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field, model_validator

from vigil.events import topics
from vigil.events.catalog.common import NAME_PATTERN, EventId, Hex64
from vigil.events.payload import EventPayload, register

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
#: Ed25519 signature (64 bytes) in unpadded or padded base64url/base64.
SIGNATURE_PATTERN = r"^[A-Za-z0-9+/_-]{86}={0,2}$"


class _AuditEvent(EventPayload):
    TOPIC: ClassVar[str] = topics.AUDIT
    KEY_FIELD: ClassVar[str] = "chain"

    chain: str = Field(default="audit", pattern=NAME_PATTERN)


@register
class AuditEntry(_AuditEvent):
    """One audited event: its identity, who/what/when, the sha256 of its canonical envelope, and the chain link."""

    TYPE: ClassVar[str] = "audit.entry"

    seq: int = Field(ge=1)
    event_id: EventId
    event_type: str = Field(pattern=EVENT_TYPE_PATTERN, max_length=128)
    event_subject: str = Field(min_length=1, max_length=512)
    actor: str = Field(min_length=1, max_length=256)
    event_time: AwareDatetime
    correlationid: EventId
    causationid: EventId | None = None
    topic: str = Field(pattern=TOPIC_PATTERN)
    event_sha256: Hex64
    prev_hash: Hex64
    entry_hash: Hex64

    def subject(self) -> str:
        return f"audit/{self.chain}/{self.seq}"


@register
class AuditCheckpoint(_AuditEvent):
    """A signed Merkle root over a contiguous range of entries; ``last_entry_hash`` ties it to the chain."""

    TYPE: ClassVar[str] = "audit.checkpoint"

    from_seq: int = Field(ge=1)
    to_seq: int = Field(ge=1)
    merkle_root: Hex64
    last_entry_hash: Hex64
    algorithm: Literal["ed25519"] = "ed25519"
    signature: str = Field(pattern=SIGNATURE_PATTERN)
    key_id: str = Field(min_length=1, max_length=128)

    @model_validator(mode="after")
    def _range(self) -> AuditCheckpoint:
        if self.to_seq < self.from_seq:
            raise ValueError("to_seq must be >= from_seq")
        return self

    def subject(self) -> str:
        return f"audit/{self.chain}/checkpoint/{self.from_seq}-{self.to_seq}"


@register
class AuditStreamDigest(_AuditEvent):
    """Per-window digest of one partition of a stream topic: offsets ``from_offset..to_offset`` inclusive."""

    TYPE: ClassVar[str] = "audit.stream_digest"

    topic: str = Field(pattern=TOPIC_PATTERN)
    partition: int = Field(ge=0)
    from_offset: int = Field(ge=0)
    to_offset: int = Field(ge=0)
    count: int = Field(ge=0)
    rows: int | None = Field(default=None, ge=0)
    merkle_root: Hex64
    window_start: AwareDatetime
    window_end: AwareDatetime

    @model_validator(mode="after")
    def _range(self) -> AuditStreamDigest:
        if self.to_offset < self.from_offset:
            raise ValueError("to_offset must be >= from_offset")
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        return self

    def subject(self) -> str:
        return f"stream/{self.topic}/{self.partition}/{self.from_offset}-{self.to_offset}"
