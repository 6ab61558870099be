"""Monitor service definition: the skeleton's batch consumer on the three streams and ``vigil.models``, the routes,
and the window closer started and stopped with the service."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fastapi import FastAPI

from vigil.bus.consumer import BatchHandler
from vigil.events import topics
from vigil.monitor.api import router
from vigil.monitor.closer import WindowCloser
from vigil.monitor.engine import MonitorEngine
from vigil.monitor.handlers import on_batch
from vigil.monitor.settings import MonitorSettings
from vigil.monitor.window_state_api import router as window_state_router
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition, ServiceRuntime


def _batch_handler(runtime: ServiceRuntime) -> BatchHandler:
    """The engine is the monitor's part: made here, before the consumer starts, and bound to the batch handler."""
    settings = runtime.settings
    assert isinstance(settings, MonitorSettings)
    engine = runtime.parts.add(MonitorEngine(settings, runtime.pool))
    return partial(on_batch, engine=engine)


async def _start_closer(runtime: ServiceRuntime) -> None:
    closer = runtime.parts.add(WindowCloser(runtime.parts.get(MonitorEngine), runtime.consumer, runtime.source))
    await closer.start()


async def _stop_closer(runtime: ServiceRuntime) -> None:
    await runtime.parts.get(WindowCloser).stop()


DEFINITION = ServiceDefinition(
    name="monitor",
    settings_cls=MonitorSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    consumed_topics=[topics.MODELS, topics.PREDICTIONS, topics.LABELS, topics.METRICS],
    batch_handler=_batch_handler,
    routers=[router, window_state_router],
    on_start=_start_closer,
    on_stop=_stop_closer,
)


def make_app(settings: MonitorSettings | None = None) -> FastAPI:
    """The monitor's ASGI app."""
    return create_app(DEFINITION, settings)
