"""A probe service: the real skeleton and bus with a handler whose effects tests can count and whose failures
they can provoke (``producer == "poison"`` always raises)."""

from __future__ import annotations

from pathlib import Path

from vigil.bus.consumer import Handler
from vigil.bus.context import HandlerContext
from vigil.events import topics
from vigil.events.catalog.data import DataUpdated
from vigil.service.runtime import ServiceDefinition, ServiceRuntime
from vigil.service.settings import ServiceSettings


class ProbeError(RuntimeError):
    """What the probe handler raises for poison input."""


async def on_data_updated(ctx: HandlerContext, payload: DataUpdated) -> None:
    if payload.producer == "poison":
        raise ProbeError(f"probe refuses {payload.dataset}")
    await ctx.conn.execute(
        "INSERT INTO effects (event_id, dataset, producer) VALUES ($1, $2, $3)",
        ctx.event.id,
        payload.dataset,
        payload.producer,
    )


def _handlers(_runtime: ServiceRuntime) -> dict[str, Handler]:
    return {DataUpdated.TYPE: on_data_updated}


PROBE = ServiceDefinition(
    name="probe",
    settings_cls=ServiceSettings,
    migrations_dir=Path(__file__).parent / "probe_migrations",
    consumed_topics=[topics.DATA],
    handlers=_handlers,
)
