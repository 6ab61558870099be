"""What the auditor publishes on vigil.audit, and the stream digests it chains in place of stream payloads.

``audit.entry`` is built from an ``audit_log`` row — the log is the outbox of these events (see ``publisher.py``) —
straight as a canonical envelope dict rather than through the pydantic models (which cost more than the rest of the
entry's work together). Everything in it is a function of the row, so a republished entry is byte-for-byte the same
event: the id is derived from (chain, seq) (:func:`entry_event_id`), the time is the entry's ``recorded_at``. A unit
test keeps this path byte-for-byte equal to the model path and checks it against the ``audit.entry`` contract.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from vigil.auditor.merkle import Frontier
from vigil.auditor.store import AUDITOR_PRINCIPAL, Audited, canonical_event_bytes
from vigil.bus.context import Delivery
from vigil.bus.outbox import OutboxRecord
from vigil.events import canonical_json, dataschema_uri, make_event, parse_json
from vigil.events.catalog.audit import AuditEntry, AuditStreamDigest
from vigil.events.catalog.streams import LabelObserved, PredictionLogged

SOURCE = "vigil://auditor"
ACTOR = "svc:auditor"
_ENTRY_SCHEMA = dataschema_uri(AuditEntry.TYPE, AuditEntry.VERSION)

#: Namespace of ``audit.entry`` event ids: ``uuid5(ENTRY_ID_NAMESPACE, f"{chain}/{seq}")``.
ENTRY_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "vigil://auditor/audit.entry")

#: The ``audit_log`` columns :func:`entry_record` reads.
ENTRY_EVENT_COLUMNS = (
    "seq, event_id, event_type, subject, actor, correlation_id, causation_id, topic, event_sha256, prev_hash, "
    "entry_hash, recorded_at, event"
)


_NAMESPACE_BYTES = ENTRY_ID_NAMESPACE.bytes


def entry_event_id(chain: str, seq: int) -> str:
    """The id of the ``audit.entry`` event of entry ``seq``: a UUIDv5 (RFC 9562 §5.5) of ``"<chain>/<seq>"`` in
    :data:`ENTRY_ID_NAMESPACE` (itself ``uuid5(NAMESPACE_URL, "vigil://auditor/audit.entry")``). The same entry
    always gets the same id, so a consumer recognises a republish (after a broker loss) as the same event.

    Computed as ``uuid.uuid5`` does (SHA-1, version and variant bits), without building ``UUID`` objects; a unit
    test keeps the two equal."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{chain}/{seq}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=64)
def _utc_iso(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z`` (cached: a batch's entries share one ``recorded_at``)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def entry_record(row: Mapping[str, Any], chain: str) -> OutboxRecord:
    """The ``audit.entry`` event of one ``audit_log`` row (caused by the audited event), ready for the producer.

    Headers: ``ce_type``, ``ce_id`` and the audited event's ``traceparent`` (when it had one), so the entry joins
    the trace of the event it records.
    """
    event = parse_json(bytes(row["event"]))
    seq = row["seq"]
    event_id = entry_event_id(chain, seq)
    traceparent = event.get("traceparent")
    envelope = {
        "id": event_id,
        "source": SOURCE,
        "type": AuditEntry.TYPE,
        "specversion": "1.0",
        "time": _utc_iso(row["recorded_at"]),
        "subject": f"audit/{chain}/{seq}",
        "datacontenttype": "application/json",
        "dataschema": _ENTRY_SCHEMA,
        "correlationid": row["correlation_id"],
        "causationid": row["event_id"],
        "actor": ACTOR,
        "traceparent": traceparent,
        "data": {
            "chain": chain,
            "seq": seq,
            "event_id": row["event_id"],
            "event_type": row["event_type"],
            "event_subject": row["subject"],
            "actor": row["actor"],
            "event_time": event["time"],
            "correlationid": row["correlation_id"],
            "causationid": row["causation_id"],
            "topic": row["topic"],
            "event_sha256": row["event_sha256"],
            "prev_hash": row["prev_hash"],
            "entry_hash": row["entry_hash"],
        },
    }
    headers = [("ce_type", b"audit.entry"), ("ce_id", event_id.encode())]
    if traceparent:
        headers.append(("traceparent", traceparent.encode()))
    return OutboxRecord(event_id, AuditEntry.TOPIC, chain, canonical_json(envelope), headers)


def _rows(delivery: Delivery) -> int:
    payload = delivery.payload
    if isinstance(payload, PredictionLogged):
        return payload.rows
    if isinstance(payload, LabelObserved):
        return len(payload.labels)
    return 1


def stream_digests(deliveries: Sequence[Delivery], chain: str) -> list[Audited]:
    """One ``audit.stream_digest`` per (topic, partition) of a batch: offsets, count, rows, Merkle root.

    Leaves are the raw sha256 digests of the events' canonical bytes in offset order, so anyone holding the
    records (the topic, an archive) can recompute the root. The window is ``[first event time, last + 1 µs)``.
    """
    groups: dict[tuple[str, int], list[Delivery]] = {}
    for d in deliveries:
        groups.setdefault((d.topic, d.partition), []).append(d)
    out: list[Audited] = []
    for (topic, partition), group in sorted(groups.items()):
        group.sort(key=lambda d: d.offset)
        frontier = Frontier()
        times: list[datetime] = []
        rows = 0
        for d in group:
            frontier.append(hashlib.sha256(canonical_event_bytes(d.envelope)).digest())
            times.append(datetime.fromisoformat(d.envelope.time.replace("Z", "+00:00")))
            rows += _rows(d)
        digest = AuditStreamDigest(
            chain=chain,
            topic=topic,
            partition=partition,
            from_offset=group[0].offset,
            to_offset=group[-1].offset,
            count=len(group),
            rows=rows,
            merkle_root=frontier.root().hex(),
            window_start=min(times),
            window_end=max(times) + timedelta(microseconds=1),
        )
        envelope = make_event(digest, source=SOURCE, actor=ACTOR)
        out.append(Audited.of(envelope, AuditStreamDigest.TOPIC, AUDITOR_PRINCIPAL))
    return out
