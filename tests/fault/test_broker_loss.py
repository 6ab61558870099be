"""The embedded broker keeps its log in memory. Kill it, start it empty: the outbox republishes what was lost and
inboxes absorb what was not — nothing missing, nothing doubled."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import psutil
import pytest

from support.services import Tokens, eventually, make_tokens, running, settings_for
from support.testinfra import KafkaUnderTest
from vigil.auditor.app import make_app as make_auditor
from vigil.auditor.settings import AuditorSettings
from vigil.bus.epoch import BrokerEpochWatch
from vigil.bus.producer import BusProducer
from vigil.bus.topics import EPOCH_TOPIC, TopicNamer, ensure_topics
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings

pytestmark = pytest.mark.fault


def body(n: int) -> dict[str, Any]:
    return {
        "dataset": "labs",
        "content_digest": "sha256:" + hashlib.sha256(f"labs-{n}".encode()).hexdigest(),
        "uri": f"file:///labs/{n}.parquet",
        "row_count": n,
        "producer": "lims",
    }


async def test_broker_restarted_empty_outbox_republishes_and_nothing_is_doubled(
    kafka_bootstrap: str, broker_control: KafkaUnderTest, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    common = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    # the files it announces are made up: a registry that allows their folder (it refuses unreadable file:// URIs)
    registry_settings = settings_for(RegistrySettings, **common, dataset_roots=[Path("/labs")])
    async with running(make_registry(registry_settings)) as registry:
        for n in range(1, 4):
            r = await registry.client.post("/v1/data-updates", json=body(n), headers=tokens.headers("scientist"))
            assert r.status_code == 201, r.text

        async def all_published() -> bool:
            pending = await registry.runtime.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            return pending == 0

        await eventually(all_published, what="the outbox drained to the broker")

        # The six events are on the broker, nobody has consumed them — and the broker loses everything.
        broker_control.restart()
        await eventually(lambda: _losses(registry.runtime), timeout=60, what="the registry noticing the loss")

        # The auditor starts only now: it can only see the events if the registry republished them.
        async with running(make_auditor(settings_for(AuditorSettings, **common))) as auditor:

            async def entries() -> list[dict[str, Any]]:
                resp = await auditor.client.get(
                    "/v1/entries", params={"subject_prefix": "dataset/labs"}, headers=tokens.headers("auditor")
                )
                items: list[dict[str, Any]] = resp.json()["items"]
                return items if len(items) >= 6 else []

            found = await eventually(entries, timeout=60, what="all six events audited after the loss")
            assert sorted(e["event_type"] for e in found) == ["data.updated"] * 3 + ["dataset.version.registered"] * 3
            assert len({e["event_id"] for e in found}) == 6

            # The registry re-read its own republished data.updated events: its inbox made them no-ops.
            versions = await registry.client.get("/v1/datasets/labs/versions", headers=tokens.headers("viewer"))
            assert [v["version"] for v in versions.json()["items"]] == [1, 2, 3]
            verify = await auditor.client.get("/v1/verify", headers=tokens.headers("auditor"))
            assert verify.json()["ok"] is True


async def _losses(runtime: Any) -> int:
    return int(runtime.epoch.losses)


class _CountedWatch(BrokerEpochWatch):
    """The watch, counting the checks it has finished."""

    checks = 0

    async def _sentinel_present(self) -> bool | None:
        present = await super()._sentinel_present()
        self.checks += 1
        return present

    async def checked(self, n: int) -> None:
        async def done() -> bool:
            return self.checks >= n

        await eventually(done, timeout=30, what=f"{n} epoch checks")


def _client_sockets_to(bootstrap: str) -> set[int]:
    """Local ports of the machine's client sockets to the broker, open or closed within the last minute (TIME_WAIT:
    the side that closes first, here the client, keeps its socket in that state for 60 s)."""
    port = int(bootstrap.rsplit(":", 1)[1])
    return {
        c.laddr.port
        for c in psutil.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status in (psutil.CONN_ESTABLISHED, psutil.CONN_TIME_WAIT)
    }


async def test_the_epoch_watch_checks_over_open_connections_and_still_notices_a_loss(
    kafka_bootstrap: str, broker_control: KafkaUnderTest, topic_prefix: str
) -> None:
    """Twenty checks, one reading consumer: no connection is opened per check (each used to open two, with their
    handshakes). After the broker comes back empty the watch still sees the loss, and goes on watching the new log."""
    namer = TopicNamer(topic_prefix)
    epoch_topic = namer.physical(EPOCH_TOPIC)
    await ensure_topics(kafka_bootstrap, [epoch_topic], partitions=1, replication_factor=1)
    producer = BusProducer(kafka_bootstrap, service="probe", namer=namer, signer=None)
    await producer.start()
    lost = asyncio.Event()

    async def on_loss() -> None:
        await ensure_topics(kafka_bootstrap, [epoch_topic], partitions=1, replication_factor=1)
        lost.set()

    watch = _CountedWatch(kafka_bootstrap, producer, on_loss, service="probe", interval_s=0.05)
    try:
        await watch.start()
        await watch.checked(3)
        before, first = _client_sockets_to(kafka_bootstrap), watch.checks
        await watch.checked(first + 20)
        after = _client_sockets_to(kafka_bootstrap)
        assert after - before == set(), f"sockets opened during {watch.checks - first} checks: {sorted(after - before)}"
        assert watch.losses == 0

        broker_control.restart()
        await asyncio.wait_for(lost.wait(), timeout=60)  # the watch noticed the lost log
        assert watch.losses == 1
        await watch.checked(watch.checks + 5)  # checks of the new log
        assert watch.losses == 1  # the new sentinel is found: no second loss
    finally:
        await watch.stop()
        await producer.stop()
