"""The inbox claim on a real Postgres: new ids are claimed once, in order; repeats inside a batch and redeliveries of
claimed ids are not (``vigil.bus.consumer.claim_inbox``, whose all-new fast path skips the per-delivery filter)."""

from __future__ import annotations

import pytest

from vigil.bus.consumer import claim_inbox
from vigil.bus.context import Delivery
from vigil.events import make_event
from vigil.events.catalog.data import DataUpdated
from vigil.service.db import BUS_MIGRATIONS, create_pool, migrate

pytestmark = pytest.mark.integration


def _deliveries(ids: list[str]) -> list[Delivery]:
    payload = DataUpdated(dataset="d", content_digest="sha256:" + "0" * 64, uri="file:///d", row_count=1, producer="p")
    return [
        Delivery(
            make_event(payload, source="test://inbox", actor="system:test", event_id=i), payload, "vigil.data", 0, n
        )
        for n, i in enumerate(ids)
    ]


async def test_claims_each_new_id_once_and_skips_repeats_and_redeliveries(fresh_db: str) -> None:
    pool = await create_pool(fresh_db, "inboxclaim")
    try:
        await migrate(pool, "inboxclaim", [("bus", BUS_MIGRATIONS)])
        async with pool.acquire() as conn:

            async def claim(ids: list[str]) -> list[str]:
                async with conn.transaction():
                    return [d.envelope.id for d in await claim_inbox(conn, _deliveries(ids))]

            assert await claim(["a", "b", "c"]) == ["a", "b", "c"]  # all new: the fast path
            assert await claim(["d", "e", "d", "f"]) == ["d", "e", "f"]  # a repeat inside the batch, applied once
            assert await claim(["b", "g", "a"]) == ["g"]  # redeliveries of claimed ids
            assert await claim(["a", "b"]) == []
            rows = await conn.fetch('SELECT event_id, "offset" FROM inbox ORDER BY event_id')
            assert [(r["event_id"], r["offset"]) for r in rows] == [
                ("a", 0),
                ("b", 1),
                ("c", 2),
                ("d", 0),
                ("e", 1),
                ("f", 3),
                ("g", 1),
            ]
    finally:
        await pool.close()
