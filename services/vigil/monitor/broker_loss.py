"""Carrying the monitor's table state across a broker that lost its log (the memory-only embedded broker).

Why the faust app is replaced rather than kept: it remembers positions in the *old* log. Its consumer drops every
record whose offset is below the offset it last read (the new log starts at 0 again), its table recovery refuses a
changelog partition whose highwater is below the offset it had reached (``ConsistencyError``, and the app stops
consuming for good), and the window states' per-partition offset marks and the held labels' provenance name old-log
offsets too. The table *contents* are still right — they are in this process's memory, while the broker's copy, the
changelog, is gone.

So :meth:`MonitorStreams.restart_after_broker_loss` snapshots the tables with the offsets forgotten
(:func:`changelog_records`), stops the app without committing acks from the old log, writes the snapshot into the
re-created changelog topics (:func:`reseed_changelogs`) and starts a new app with the same id, whose recovery reads
the state back through faust's normal path. After the loss,
redelivery is absorbed by event ids — a batch's join key, a prediction's labelled mark — which do not depend on
offsets. What the broker held but nobody had consumed is gone with it: the outboxes republish decisions, the
gateway's prediction log is best-effort by design (docs/deployer.md).

A race left open: had the old app's consumer re-joined the group on the new broker and committed its last old-log
acks there before the loss is noticed, the new app would start at those offsets and skip as many records of the new
log. On Tansu a re-join takes seconds and the epoch watch notices a loss within ``broker_epoch_check_interval_ms``,
so the hook clears the acks first; a commit of offset 0 on the group's behalf would close it, but Tansu refuses
commits from outside the group (UnknownMemberId), so it is not attempted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from vigil.bus.topics import ensure_topics

log = logging.getLogger(__name__)

#: ``topic → [(partition, key bytes, value bytes)]``: what the changelog topics must hold again.
ChangelogRecords = dict[str, list[tuple[int, bytes, bytes]]]


def default_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as aiokafka and the Java client use) gives ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def changelog_records(
    tables: Iterable[tuple[str, dict[str, bytes]]], partition_of: Callable[[str], int]
) -> ChangelogRecords:
    """One changelog record per live table row: ``tables`` is ``(changelog topic, {key: value})``, keys are
    serialised as faust's ``json`` key serializer does, ``partition_of`` maps a table key to its partition."""
    out: ChangelogRecords = defaultdict(list)
    for topic, rows in tables:
        for key, value in rows.items():
            if value is not None:
                out[topic].append((partition_of(key), orjson.dumps(key), value))
    return dict(out)


async def reseed_changelogs(
    bootstrap_servers: str, records: ChangelogRecords, topics: list[str], partitions: int, replication_factor: int
) -> int:
    """Create the (compacted) changelog topics again and write ``records`` into them; returns the records written."""
    await ensure_topics(
        bootstrap_servers, topics, partitions, replication_factor, topic_configs={"cleanup.policy": "compact"}
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", max_request_size=4 * 1024 * 1024)
    try:
        await producer.start()
        futures: list[Any] = []
        for topic, rows in records.items():
            for partition, key, value in rows:
                futures.append(await producer.send(topic, value, key=key, partition=partition))
        for fut in futures:
            await fut
        return len(futures)
    finally:
        await producer.stop()
