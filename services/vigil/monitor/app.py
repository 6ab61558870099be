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
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition, ServiceRuntime


def engine_of(runtime: ServiceRuntime) -> MonitorEngine:
    """The monitor's runtime part (created with the batch handler, before the consumer starts)."""
    engine = runtime.state.get("monitor")
    if not isinstance(engine, MonitorEngine):
        settings = runtime.settings
        assert isinstance(settings, MonitorSettings)
        engine = MonitorEngine(settings, runtime.pool)
        runtime.state["monitor"] = engine
    return engine


def _batch_handler(runtime: ServiceRuntime) -> BatchHandler:
    return partial(on_batch, engine_of(runtime))


async def _start_closer(runtime: ServiceRuntime) -> None:
    closer = WindowCloser(engine_of(runtime), runtime.consumer, runtime.source)
    runtime.state["closer"] = closer
    await closer.start()


async def _stop_closer(runtime: ServiceRuntime) -> None:
    closer = runtime.state.pop("closer", None)
    if isinstance(closer, WindowCloser):
        await closer.stop()


DEFINITION = ServiceDefinition(
    name="monitor",
    settings_cls=MonitorSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    consumed_topics=[topics.MODELS, topics.PREDICTIONS, topics.LABELS, topics.METRICS],
    batch_handler=_batch_handler,
    routers=[router],
    on_start=_start_closer,
    on_stop=_stop_closer,
)


def make_app(settings: MonitorSettings | None = None) -> FastAPI:
    """The monitor's ASGI app."""
    return create_app(DEFINITION, settings)
