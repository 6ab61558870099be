"""Trainer service definition: the skeleton plus the runs API and the worker pool that executes runs."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from vigil.events import topics
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition, ServiceRuntime
from vigil.trainer.api import router
from vigil.trainer.handlers import build_handlers
from vigil.trainer.log_expiry import LogExpiry
from vigil.trainer.settings import TrainerSettings
from vigil.trainer.worker import WorkerPool


async def start_workers(runtime: ServiceRuntime) -> None:
    """Start the workers (and the reaper) before the consumer, so the first request can wake them."""
    settings = runtime.settings
    assert isinstance(settings, TrainerSettings)
    workers = runtime.parts.add(WorkerPool(runtime.pool, settings, runtime.source))
    await workers.start()
    await runtime.parts.add(LogExpiry(runtime.pool, settings.trainer_log_retention_days)).start()


async def stop_workers(runtime: ServiceRuntime) -> None:
    """Stop the workers; the pool stays a part, so a handler still running may wake it (a no-op once stopped)."""
    await runtime.parts.get(LogExpiry).stop()
    await runtime.parts.get(WorkerPool).stop()


DEFINITION = ServiceDefinition(
    name="trainer",
    settings_cls=TrainerSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    consumed_topics=[topics.TRAINING],
    handlers=build_handlers,
    routers=[router],
    on_start=start_workers,
    on_stop=stop_workers,
)


def make_app(settings: TrainerSettings | None = None) -> FastAPI:
    """The trainer's ASGI app."""
    return create_app(DEFINITION, settings)
