"""Shared pieces of the failover tests (``test_failover_*.py``): a stack with two instances of the services under
test, who holds what (a consumer partition, the outbox relay's lock), and the pause figures each test records.

The pause of a failover is measured, never asserted: each event the test sends carries its send time, the service's
record carries the time it was applied, and the figures (median before the kill, the worst after it) go to
``failover.json`` under the stack's home and are printed; docs/deploy.md quotes a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import psutil
import pytest
from aiokafka import AIOKafkaConsumer
from fault.loop_fault_support import STACK_ENV

from support.netns import Namespace
from vigil.stack.supervisor import RunningStack, ServiceProcess, default_launches, running_stack


@contextlib.contextmanager
def replica_stack(
    home: Path,
    replicas: Mapping[str, int],
    extra_env: Mapping[str, str] | None = None,
    *,
    netns: Namespace | None = None,
    inside: Sequence[str] = (),
) -> Iterator[RunningStack]:
    """The named services (``replicas``: service → instances) with a broker and Postgres of their own.

    With ``netns``, the broker and Postgres listen on its two host-side addresses (every instance reaches them
    there) and the instances named in ``inside`` (keys such as ``monitor-2``) run in the namespace, on its address.
    """
    launches = default_launches(list(replicas), free_ports=True, replicas=replicas)
    where: dict[str, Any] = {}
    if netns is not None:
        launches = [
            dataclasses.replace(lh, host=netns.ns_ip, prefix=netns.prefix) if lh.key in inside else lh
            for lh in launches
        ]
        where = {
            "broker_host": netns.broker_ip,
            "postgres_host": netns.postgres_ip,
            "postgres_clients": (netns.subnet,),
        }
    assert set(inside) <= {lh.key for lh in launches}, f"no such instances: {set(inside)}"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DATABASE_URL", raising=False)
        mp.delenv("VIGIL_DATABASE_URL", raising=False)
        with running_stack(
            home,
            services=launches,
            broker_port=0,
            postgres_port=0,
            postgres_durable=False,
            ready_timeout=180.0,
            extra_env={**STACK_ENV, **(extra_env or {})},
            **where,
        ) as stack:
            yield stack


def client(stack: RunningStack, service: str) -> httpx.AsyncClient:
    """An admin client for a service's front (or one instance, by its key)."""
    return httpx.AsyncClient(
        base_url=stack.url(service),
        timeout=30.0,
        trust_env=False,
        headers={"Authorization": f"Bearer {stack.admin_token}"},
    )


def owner_of_connection(stack: RunningStack, client_port: int) -> ServiceProcess | None:
    """The service instance whose process holds the Postgres connection from local port ``client_port``."""
    for svc in stack.services.values():
        if svc.pid is None:
            continue
        with contextlib.suppress(psutil.Error):
            for conn in psutil.Process(svc.pid).net_connections(kind="tcp"):
                if conn.laddr and conn.laddr.port == client_port:
                    return svc
    return None


def relay_lock_parts(schema: str) -> tuple[int, int]:
    """(classid, objid) under which pg_locks shows the outbox relay's advisory lock of ``schema``
    (the key of vigil.bus.outbox._relay_lock_key, split as Postgres splits a bigint key)."""
    key = int.from_bytes(hashlib.sha256(f"vigil-relay-{schema}".encode()).digest()[:8], "big", signed=True)
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


async def relay_lock_holder_port(conn: asyncpg.Connection, schema: str) -> int | None:
    """The client port of the backend that holds ``schema``'s relay lock right now, if any."""
    classid, objid = relay_lock_parts(schema)
    port: int | None = await conn.fetchval(
        "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid "
        "AND l.objsubid = 1",
        classid,
        objid,
    )
    return port


async def relay_lock_holder_addr(conn: asyncpg.Connection, schema: str) -> str | None:
    """The client address of the backend that holds ``schema``'s relay lock right now, if any (tells an instance
    in a network namespace — tests/support/netns.py — from those on the host)."""
    classid, objid = relay_lock_parts(schema)
    addr = await conn.fetchval(
        "SELECT host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid "
        "AND l.objsubid = 1",
        classid,
        objid,
    )
    return str(addr) if addr is not None else None


async def audit_entries(auditor: httpx.AsyncClient, **filters: Any) -> list[dict[str, Any]]:
    """Every entry of the auditor's chain matching ``filters`` (all pages)."""
    items: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        params = {**filters, "limit": 500} | ({"after": after} if after is not None else {})
        r = await auditor.get("/v1/entries", params=params)
        r.raise_for_status()
        page = r.json()
        items.extend(page["items"])
        if not page.get("next"):
            return items
        after = int(page["next"])


async def assigned_partitions(stack: RunningStack, key: str, topic: str) -> set[int]:
    """Partitions of ``topic`` the instance ``key`` has consumed records from (its ``vigil_consumer_lag`` series):
    valid as "owns" when the group was stable before the first record was sent."""
    async with httpx.AsyncClient(base_url=stack.services[key].url, timeout=10.0, trust_env=False) as c:
        text = (await c.get("/metrics")).text
    out: set[int] = set()
    for line in text.splitlines():
        if line.startswith("vigil_consumer_lag{") and f'topic="{topic}"' in line:
            out.add(int(line.split('partition="')[1].split('"')[0]))
    return out


async def topic_ids(bootstrap: str, topic: str, *, idle_s: float = 3.0) -> list[str]:
    """The ``id`` of every record on ``topic`` (in log order per partition, duplicates kept)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    ids: list[str] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    ids.append(str(json.loads(r.value)["id"]))
                    quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return ids


async def topic_positions(bootstrap: str, topic: str, *, idle_s: float = 3.0) -> list[tuple[str, int, int]]:
    """(``id``, partition, offset) of every record on ``topic`` (duplicates kept: where a copy sits tells how)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out: list[tuple[str, int, int]] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    out.append((str(json.loads(r.value)["id"]), r.partition, r.offset))
                    quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return out


async def topic_records(bootstrap: str, topic: str, *, idle_s: float = 3.0) -> list[dict[str, Any]]:
    """Every record on ``topic`` as parsed JSON (duplicates kept; records that are not JSON objects skipped)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    with contextlib.suppress(ValueError):
                        value = json.loads(r.value)
                        if isinstance(value, dict):
                            out.append(value)
                    quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return out


def pause_figures(latencies_before: list[float], latencies_after: list[float]) -> dict[str, float]:
    """Median apply latency before the kill, and the worst and median after it (seconds)."""
    return {
        "median_before_s": round(float(np.median(latencies_before)), 3) if latencies_before else -1.0,
        "max_after_s": round(max(latencies_after), 3) if latencies_after else -1.0,
        "median_after_s": round(float(np.median(latencies_after)), 3) if latencies_after else -1.0,
    }


def record(home: Path, name: str, figures: dict[str, Any]) -> None:
    """Add ``figures`` under ``name`` to ``<home>/failover.json`` and print them (and append them to the file named
    by ``VIGIL_FAILOVER_FIGURES``, when set, for the benchmark notes)."""
    path = home / "failover.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2))
    print(f"\nfailover figures {name}: {json.dumps(figures)}")
    extra = os.environ.get("VIGIL_FAILOVER_FIGURES")
    if extra:
        with open(extra, "a") as fh:
            fh.write(json.dumps({"test": name, **figures}) + "\n")
