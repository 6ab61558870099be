"""BusProducer signs what it hands over, in order, one signature per batch; replayed records keep their signature;
dead letters keep the original's signing headers under other names."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vigil.bus.dead_letters import DeadLetter
from vigil.bus.producer import BusProducer
from vigil.bus.topics import TopicNamer
from vigil.events.signing import HEADER_SIGNATURE, MAX_BATCH, RecordVerifier, SigningKey

pytestmark = pytest.mark.unit


class FakeKafka:
    """Stands in for AIOKafkaProducer: records what it was handed, acknowledges at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> asyncio.Future:
        self.sent.append((topic, value, list(headers or [])))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(len(self.sent))
        return future


def _producer(key: SigningKey | None) -> tuple[BusProducer, FakeKafka]:
    producer = BusProducer("127.0.0.1:1", service="t", namer=TopicNamer("p."), signer=key)
    fake = FakeKafka()
    producer._producer = fake  # type: ignore[assignment]  # never started: no broker in a unit test
    return producer, fake


async def test_records_are_signed_in_batches_and_keep_their_order() -> None:
    key = SigningKey.of("producer:t", Ed25519PrivateKey.generate())
    producer, fake = _producer(key)
    values = [f"event {i}".encode() for i in range(2 * MAX_BATCH + 44)]
    futures = [await producer.send("vigil.data", v, key="k", headers=[("ce_type", b"x")]) for v in values]
    assert await asyncio.gather(*futures) == list(range(1, len(values) + 1))
    assert [v for _, v, _ in fake.sent] == values and {t for t, _, _ in fake.sent} == {"p.vigil.data"}
    assert producer.signatures == 3
    verifier = RecordVerifier({key.kid: key.private.public_key()})
    for _, value, headers in fake.sent:
        assert headers[0] == ("ce_type", b"x")
        assert verifier.verify(value, headers) == key.kid
    assert verifier.signature_checks == 3


async def test_a_replayed_record_keeps_its_original_signature() -> None:
    original = SigningKey.of("producer:upstream", Ed25519PrivateKey.generate())
    replayer = SigningKey.of("service:registry", Ed25519PrivateKey.generate())
    headers = original.sign_values([b"replayed"])[0]
    producer, fake = _producer(replayer)
    await (await producer.send("vigil.data", b"replayed", headers=headers))
    await (await producer.send("vigil.data", b"fresh"))
    assert fake.sent[0][2] == headers
    assert RecordVerifier({replayer.kid: replayer.private.public_key()}).verify(b"fresh", fake.sent[1][2])


async def test_unsigned_producer_sends_no_signature() -> None:
    producer, fake = _producer(None)
    await (await producer.send("vigil.data", b"x"))
    assert fake.sent[0][2] == [] and producer.signatures == 0


async def test_send_many_hands_over_after_what_send_holds_and_signs_its_batch() -> None:
    key = SigningKey.of("producer:t", Ed25519PrivateKey.generate())
    producer, fake = _producer(key)
    held = await producer.send("vigil.data", b"held first")  # not handed over yet: the coroutine has not yielded
    replayed = SigningKey.of("producer:upstream", Ed25519PrivateKey.generate()).sign_values([b"replayed"])[0]
    records = [("vigil.data", f"batch {i}".encode(), "k", [("ce_type", b"x")]) for i in range(MAX_BATCH + 3)]
    futures = await producer.send_many([*records, ("vigil.models", b"replayed", None, replayed)])
    assert [v for _, v, _ in fake.sent] == [b"held first", *(r[1] for r in records), b"replayed"]
    assert await held == 1 and await asyncio.gather(*futures) == list(range(2, len(records) + 3))
    assert fake.sent[-1][2] == replayed and fake.sent[-1][0] == "p.vigil.models"
    assert producer.signatures == 1 + 2  # the held record's batch, then MAX_BATCH + 3 fresh records
    verifier = RecordVerifier({key.kid: key.private.public_key()})
    assert all(verifier.verify(value, headers) == key.kid for _, value, headers in fake.sent[:-1])


async def test_send_many_gives_a_refused_record_and_those_after_it_the_error() -> None:
    producer, fake = _producer(SigningKey.of("producer:t", Ed25519PrivateKey.generate()))
    accept = fake.send

    async def refuse_the_second(topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> Any:
        if value == b"2":
            raise ValueError("too large")
        return await accept(topic, value, key=key, headers=headers)

    fake.send = refuse_the_second  # type: ignore[method-assign]
    futures = await producer.send_many([("vigil.data", str(i).encode(), None, []) for i in range(1, 5)])
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == 1 and all(isinstance(r, ValueError) for r in results[1:])
    assert [v for _, v, _ in fake.sent] == [b"1"]


def test_dead_letter_renames_the_originals_signing_headers() -> None:
    key = SigningKey.of("producer:t", Ed25519PrivateKey.generate())
    signed = key.sign_values([b"{}"])[0]
    record = ConsumerRecord("p.vigil.data", 0, 7, 0, 0, b"k", b"{}", None, 2, 2, [("ce_type", b"x"), *signed])
    letter = DeadLetter.from_record(
        record, topic="vigil.data", group="g", reason="unsigned", error="e", attempts=1, event_id=None, event_type=None
    )
    names = [k for k, _ in letter.dlq_headers()]
    assert HEADER_SIGNATURE not in names and f"dlq-orig-{HEADER_SIGNATURE}" in names and "ce_type" in names
    assert letter.headers == [("ce_type", b"x"), *signed]  # a replay sends these, signature included


def test_the_key_hash_cache_partitions_as_every_kafka_client_does() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from vigil.bus.producer import KeyHashCache

    cache, default = KeyHashCache(), DefaultPartitioner()
    keys = [f"deployment-{i}".encode() for i in range(300)] + [b"", "patient-risk-é".encode()]
    for count in (1, 3, 4, 12):
        partitions = list(range(count))
        for key in keys * 2:  # the second pass is answered from the memo
            assert cache(key, partitions, partitions) == default(key, partitions, partitions)
    assert cache(None, [0, 1, 2], [2]) == 2  # no key: an available partition, as aiokafka picks it
    cache = KeyHashCache()
    cache.max_keys = 10
    for key in keys:
        cache(key, [0, 1], [0, 1])
    assert len(cache._hashes) <= 10
