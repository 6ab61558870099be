"""Scheduler service definition: the skeleton plus policies, jobs and the ticker that drives them."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from vigil.events import topics
from vigil.scheduler.api import router
from vigil.scheduler.handlers import build_handlers
from vigil.scheduler.settings import SchedulerSettings
from vigil.scheduler.ticker import Ticker
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition, ServiceRuntime


async def start_ticker(runtime: ServiceRuntime) -> None:
    """Start the ticker before the consumer, so handlers can wake it."""
    settings = runtime.settings
    assert isinstance(settings, SchedulerSettings)
    ticker = runtime.parts.add(Ticker(runtime.pool, settings, runtime.source))
    await ticker.start()


async def stop_ticker(runtime: ServiceRuntime) -> None:
    """Stop the ticker; it stays a part, so a handler still running may wake it (a no-op once stopped)."""
    await runtime.parts.get(Ticker).stop()


DEFINITION = ServiceDefinition(
    name="scheduler",
    settings_cls=SchedulerSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    consumed_topics=[topics.DATA, topics.MONITORING, topics.TRAINING],
    handlers=build_handlers,
    routers=[router],
    on_start=start_ticker,
    on_stop=stop_ticker,
)


def make_app(settings: SchedulerSettings | None = None) -> FastAPI:
    """The scheduler's ASGI app."""
    return create_app(DEFINITION, settings)
