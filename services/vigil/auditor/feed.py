"""What the auditor publishes on vigil.audit, and the stream digests it chains in place of stream payloads.

``audit.entry`` is written once per chained entry, so it is built straight as a canonical envelope dict rather
than through the pydantic models (which cost more than the rest of the entry's work together). A unit test keeps
the two paths byte-for-byte equal and checks the result against the ``audit.entry`` contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from vigil.auditor.merkle import Frontier
from vigil.auditor.store import Appended, Audited
from vigil.bus.context import Delivery
from vigil.bus.outbox import OutboxRecord
from vigil.bus.tracing import inject_headers
from vigil.events import canonical_json, dataschema_uri, make_event, new_id
from vigil.events.catalog.audit import AuditEntry, AuditStreamDigest
from vigil.events.catalog.streams import LabelObserved, PredictionLogged
from vigil.events.envelope import utc_now_iso

SOURCE = "vigil://auditor"
ACTOR = "svc:auditor"
_ENTRY_SCHEMA = dataschema_uri(AuditEntry.TYPE, AuditEntry.VERSION)


def entry_record(
    appended: Appended, chain: str, now_iso: str | None = None, trace: list[tuple[str, bytes]] | None = None
) -> OutboxRecord:
    """The ``audit.entry`` event of one appended entry, as an outbox record (caused by the audited event).

    ``trace`` is the batch's trace-context headers, computed once per batch (the context is the same for all).
    """
    env = appended.item.envelope
    f = appended.fields
    event_id = new_id()
    envelope = {
        "id": event_id,
        "source": SOURCE,
        "type": AuditEntry.TYPE,
        "specversion": "1.0",
        "time": now_iso or utc_now_iso(),
        "subject": f"audit/{chain}/{f.seq}",
        "datacontenttype": "application/json",
        "dataschema": _ENTRY_SCHEMA,
        "correlationid": env.correlationid,
        "causationid": env.id,
        "actor": ACTOR,
        "traceparent": env.traceparent,
        "data": {
            "chain": chain,
            "seq": f.seq,
            "event_id": f.event_id,
            "event_type": f.event_type,
            "event_subject": f.subject,
            "actor": f.actor,
            "event_time": env.time,
            "correlationid": env.correlationid,
            "causationid": env.causationid,
            "topic": appended.item.topic,
            "event_sha256": f.event_sha256,
            "prev_hash": appended.prev_hash,
            "entry_hash": appended.entry_hash,
        },
    }
    if trace is None:
        trace = inject_headers([])
    headers = [("ce_type", b"audit.entry"), ("ce_id", event_id.encode()), *trace]
    return OutboxRecord(event_id, AuditEntry.TOPIC, chain, canonical_json(envelope), headers)


def entry_records(appended: Sequence[Appended], chain: str) -> list[OutboxRecord]:
    now_iso = utc_now_iso()
    trace = inject_headers([])
    return [entry_record(a, chain, now_iso, trace) for a in appended]


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
            frontier.append(bytes.fromhex(d.envelope.digest()))
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
        out.append(Audited.of(envelope, AuditStreamDigest.TOPIC))
    return out
