"""``HandlerContext.after_commit``: callbacks (worker wake-ups) run only once the handler's transaction committed —
so the woken worker can see what the handler wrote — and never for an attempt that rolled back."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace

import pytest

from support.kafka import produce_events
from support.probe import PROBE, ProbeError
from support.services import eventually, running_definition, settings_for
from vigil.bus.consumer import Handler
from vigil.bus.context import HandlerContext
from vigil.events import make_event
from vigil.events.catalog.data import DataUpdated
from vigil.service.runtime import ServiceRuntime
from vigil.service.settings import ServiceSettings

pytestmark = pytest.mark.integration


def _update(producer: str, content: str) -> DataUpdated:
    return DataUpdated(
        dataset="patients",
        content_digest="sha256:" + hashlib.sha256(content.encode()).hexdigest(),
        uri=f"file:///patients/{content}",
        row_count=10,
        producer=producer,
    )


async def test_after_commit_callbacks_see_committed_rows_and_skip_rolled_back_attempts(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str
) -> None:
    seen: dict[str, bool] = {}  # event id → was the handler's row visible from another connection when called?
    checks: list[asyncio.Task[None]] = []

    def handlers(runtime: ServiceRuntime) -> dict[str, Handler]:
        async def visible(event_id: str) -> None:
            async with runtime.pool.acquire() as other:
                n = await other.fetchval("SELECT count(*) FROM effects WHERE event_id = $1", event_id)
            seen[event_id] = n == 1

        async def on_data_updated(ctx: HandlerContext, payload: DataUpdated) -> None:
            event_id = ctx.event.id
            ctx.after_commit(lambda: checks.append(asyncio.get_running_loop().create_task(visible(event_id))))
            await ctx.conn.execute(
                "INSERT INTO effects (event_id, dataset, producer) VALUES ($1, $2, $3)",
                event_id,
                payload.dataset,
                payload.producer,
            )
            if payload.producer == "poison":  # the row and the callback must both vanish with the rollback
                raise ProbeError("refused after registering a callback")

        return {DataUpdated.TYPE: on_data_updated}

    definition = replace(PROBE, handlers=handlers)
    settings = settings_for(ServiceSettings, dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix)
    async with running_definition(definition, settings.model_copy(update={"service_name": "probe"})):
        poison = make_event(_update("poison", "p"), source="test://upstream", actor="system:test")
        good = make_event(_update("ehr", "g"), source="test://upstream", actor="system:test")
        await produce_events(kafka_bootstrap, f"{topic_prefix}vigil.data", [poison, good])

        async def good_checked() -> bool:
            await asyncio.gather(*checks)
            return good.id in seen

        await eventually(good_checked, what="the good event's after-commit callback")
        assert seen == {good.id: True}  # ran after the commit (row visible elsewhere); never for the poison
