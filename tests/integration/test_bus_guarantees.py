"""Bus guarantees through the real broker and Postgres: dead letters, contract checks, redelivery after a crash."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from support.kafka import produce_events, produce_raw, read_all
from support.probe import PROBE
from support.services import eventually, running_definition, settings_for
from support.signing import as_version_1, signed_headers
from vigil.bus.consumer import EventConsumer
from vigil.events import make_event
from vigil.events.catalog.data import DataUpdated
from vigil.service.settings import ServiceSettings

pytestmark = pytest.mark.integration


def update(producer: str, dataset: str = "patients", content: str = "x") -> DataUpdated:
    return DataUpdated(
        dataset=dataset,
        content_digest="sha256:" + hashlib.sha256(content.encode()).hexdigest(),
        uri=f"file:///{dataset}/{content}",
        row_count=10,
        producer=producer,
    )


def event_bytes(producer: str, **changes: object) -> bytes:
    """A valid data.updated envelope, optionally with top-level attributes or data fields changed."""
    raw = make_event(update(producer), source="test://upstream", actor="system:test").model_dump(mode="json")
    for key, value in changes.items():
        if key.startswith("data."):
            raw["data"][key[5:]] = value
        else:
            raw[key] = value
    return orjson.dumps(raw)


def probe_settings(dsn: str, bootstrap: str, prefix: str, **overrides: object) -> ServiceSettings:
    return settings_for(ServiceSettings, dsn=dsn, bootstrap=bootstrap, prefix=prefix, service_name="probe", **overrides)


async def count(service: object, sql: str, *args: object) -> int:
    async with service.runtime.pool.acquire() as conn:  # type: ignore[attr-defined]
        return int(await conn.fetchval(sql, *args))


async def test_failing_handler_dead_letters_after_max_attempts_and_partition_moves_on(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str
) -> None:
    async with running_definition(PROBE, probe_settings(fresh_db, kafka_bootstrap, topic_prefix)) as probe:
        poison = make_event(update("poison"), source="test://upstream", actor="system:test")
        good = make_event(update("ehr", content="y"), source="test://upstream", actor="system:test")
        await produce_events(kafka_bootstrap, f"{topic_prefix}vigil.data", [poison, good])

        await eventually(lambda: count(probe, "SELECT count(*) FROM effects"), what="the good event applied")
        rows = await probe.runtime.pool.fetch("SELECT * FROM dead_letters")
        assert len(rows) == 1
        letter = rows[0]
        assert letter["event_id"] == poison.id
        assert letter["reason"] == "handler_failed"
        assert letter["attempts"] == 3
        assert "probe refuses" in letter["error"]
        assert await count(probe, "SELECT count(*) FROM effects WHERE event_id = $1", good.id) == 1

        dlq = await read_all(kafka_bootstrap, f"{topic_prefix}vigil.dlq", expect=1)
        assert len(dlq) == 1
        headers = dict(dlq[0].headers)
        assert headers["dlq_reason"] == b"handler_failed"
        assert headers["dlq_attempts"] == b"3"
        assert dlq[0].value == poison.canonical_bytes()


async def test_contract_violations_are_dead_lettered_with_reasons_and_nothing_crashes(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str
) -> None:
    async with running_definition(PROBE, probe_settings(fresh_db, kafka_bootstrap, topic_prefix)) as probe:
        bad = [
            b"{not json",
            b"[1, 2, 3]",
            event_bytes("ehr", **{"data.row_count": -5}),  # payload breaks its schema
            event_bytes("ehr", **{"data.extra": "nope"}),  # unknown field
            event_bytes(
                "ehr", type="data.exploded", dataschema="https://vigil.dev/schemas/events/data.exploded/v1.json"
            ),  # unknown type
            event_bytes("ehr", type="model.version.registered"),  # type and dataschema disagree
            event_bytes("ehr", dataschema="https://vigil.dev/schemas/events/data.updated/v9.json"),
            event_bytes("ehr", **{"data.uri": "x" * 1_100_000}),  # over the 1 MiB event limit
            b'{"id": "x", "data": NaN}',
        ]
        good = make_event(update("ehr", content="z"), source="test://upstream", actor="system:test")
        await produce_raw(kafka_bootstrap, f"{topic_prefix}vigil.data", [*bad, good.canonical_bytes()])

        await eventually(lambda: count(probe, "SELECT count(*) FROM effects"), what="the good event applied")
        reasons = sorted(r["reason"] for r in await probe.runtime.pool.fetch("SELECT reason FROM dead_letters"))
        assert reasons == sorted(
            [
                "malformed_json",
                "schema_violation",
                "schema_violation",
                "schema_violation",
                "unknown_type",
                "dataschema_mismatch",
                "unknown_version",
                "too_large",
                "malformed_json",
            ]
        )
        # A parseable envelope that broke its contract is recorded under the id and type it claims (issue #25 item 5);
        # records with no envelope to read (not JSON, not an object, over the size limit) have none.
        claimed = {envelope["id"]: envelope["type"] for envelope in map(orjson.loads, bad[2:7])}
        letters = await probe.runtime.pool.fetch("SELECT event_id, event_type, reason FROM dead_letters")
        assert {r["event_id"]: r["event_type"] for r in letters if r["event_id"] is not None} == claimed
        assert sorted(r["reason"] for r in letters if r["event_id"] is None) == sorted(
            ["malformed_json", "malformed_json", "schema_violation", "too_large"]
        )
        ready = await probe.client.get("/readyz")
        assert ready.status_code == 200, ready.text


async def test_crash_between_effect_and_commit_redelivers_without_reapplying(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str
) -> None:
    settings = probe_settings(fresh_db, kafka_bootstrap, topic_prefix)
    async with running_definition(PROBE, settings) as probe:
        first = probe.runtime.consumer
        assert first is not None

        async def crash_before_commit(*_args: object) -> None:  # the process "dies" before the offset commit
            return None

        first._commit = crash_before_commit  # type: ignore[method-assign]
        event = make_event(update("ehr"), source="test://upstream", actor="system:test")
        await produce_events(kafka_bootstrap, f"{topic_prefix}vigil.data", [event])
        await eventually(lambda: count(probe, "SELECT count(*) FROM effects"), what="the effect")
        await first.stop()

        # A new member of the same group gets the uncommitted record again; the inbox recognises it.
        second = EventConsumer(
            kafka_bootstrap, probe.runtime.pool, first.config, first.namer, handlers=first.handlers, trust=first.trust
        )
        await second.start()
        try:
            await eventually(lambda: _skipped(second), what="the redelivery")
        finally:
            await second.stop()
        assert await count(probe, "SELECT count(*) FROM effects") == 1
        assert second.applied == 0


async def _skipped(consumer: EventConsumer) -> int:
    return consumer.skipped


async def test_records_signed_in_the_first_wire_format_are_still_applied_and_still_checked(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str
) -> None:
    """Records produced before the one-header signature (``vigil-kid``/``vigil-sig``/``vigil-proof``), and dead
    letters replayed with those headers, go through the real broker and consumer like new ones: applied when the
    signature stands, dead-lettered with the reason when it does not."""
    async with running_definition(PROBE, probe_settings(fresh_db, kafka_bootstrap, topic_prefix)) as probe:
        old = make_event(update("ehr", content="old"), source="test://upstream", actor="system:test")
        tampered = make_event(update("ehr", content="tampered"), source="test://upstream", actor="system:test")
        new = make_event(update("ehr", content="new"), source="test://upstream", actor="system:test")
        signed_value = tampered.canonical_bytes()
        changed = signed_value.replace(b'"row_count":10', b'"row_count":11')  # after signing: still schema-valid
        assert changed != signed_value
        records = [
            (old.canonical_bytes(), as_version_1(signed_headers(old.canonical_bytes()))),
            (changed, as_version_1(signed_headers(signed_value))),
            (new.canonical_bytes(), signed_headers(new.canonical_bytes())),
        ]
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for value, headers in records:
                await producer.send_and_wait(f"{topic_prefix}vigil.data", value, key=b"k", headers=headers)
        finally:
            await producer.stop()

        await eventually(
            lambda: count(probe, "SELECT count(*) FROM effects WHERE event_id = $1", new.id), what="the new record"
        )
        assert await count(probe, "SELECT count(*) FROM effects WHERE event_id = $1", old.id) == 1
        assert await count(probe, "SELECT count(*) FROM effects WHERE event_id = $1", tampered.id) == 0
        letters = await probe.runtime.pool.fetch("SELECT reason, value FROM dead_letters")
        assert [(r["reason"], bytes(r["value"])) for r in letters] == [("bad_signature", records[1][0])]


async def test_after_a_small_poll_the_consumer_lingers_before_the_next(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str
) -> None:
    """An event produced right after the previous one was applied waits for the linger (``kafka_poll_linger_ms``):
    the next poll comes that much later. Fetches are answered within 50 ms here, so without the linger the gap is
    far below the 0.9 s asserted."""
    settings = probe_settings(
        fresh_db, kafka_bootstrap, topic_prefix, kafka_fetch_max_wait_ms=50, kafka_poll_linger_ms=900
    )
    async with running_definition(PROBE, settings) as probe:
        first = make_event(update("ehr", content="first"), source="test://upstream", actor="system:test")
        await produce_events(kafka_bootstrap, f"{topic_prefix}vigil.data", [first])
        await eventually(lambda: count(probe, "SELECT count(*) FROM effects"), what="the first event applied")
        second = make_event(update("ehr", content="second"), source="test://upstream", actor="system:test")
        await produce_events(kafka_bootstrap, f"{topic_prefix}vigil.data", [second])

        async def both() -> int:
            return await count(probe, "SELECT count(*) FROM effects") >= 2

        await eventually(both, what="the second event applied")
        times = {
            row["event_id"]: row["applied_at"]
            for row in await probe.runtime.pool.fetch("SELECT event_id, applied_at FROM effects")
        }
        assert (times[second.id] - times[first.id]).total_seconds() >= 0.9
