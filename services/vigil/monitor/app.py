"""Monitor service definition: the skeleton (reference profiles via its consumer) plus the faust stream processor.

The faust app starts in the service's ``on_start`` hook — inside FastAPI's lifespan, on the same event loop
(``faust.contrib.asgi.faust_app_running``) — after the pool, migrations, topics and outbox relay exist, and stops
before them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from vigil.events import topics
from vigil.monitor.api import router
from vigil.monitor.handlers import build_handlers
from vigil.monitor.settings import MonitorSettings
from vigil.monitor.streams import MonitorStreams
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition, ServiceRuntime


async def _start_streams(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    assert isinstance(settings, MonitorSettings)
    streams = MonitorStreams(runtime, settings)
    runtime.state["streams"] = streams
    await streams.start()


async def _stop_streams(runtime: ServiceRuntime) -> None:
    streams = runtime.state.pop("streams", None)
    if streams is not None:
        await streams.stop()


async def _restart_streams(runtime: ServiceRuntime) -> None:
    """After a broker loss (the runtime's hook): the faust app starts over on the new log, state carried over."""
    streams = runtime.state.get("streams")
    if isinstance(streams, MonitorStreams):
        await streams.restart_after_broker_loss()


DEFINITION = ServiceDefinition(
    name="monitor",
    settings_cls=MonitorSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    consumed_topics=[topics.MODELS],
    handlers=build_handlers,
    routers=[router],
    on_start=_start_streams,
    on_stop=_stop_streams,
    on_broker_loss=_restart_streams,
)


def make_app(settings: MonitorSettings | None = None) -> FastAPI:
    """The monitor's ASGI app."""
    return create_app(DEFINITION, settings)
