"""Scheduler service definition (skeleton: the shared runtime, health, info and dead-letter routes)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from vigil.events import topics
from vigil.scheduler.settings import SchedulerSettings
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="scheduler",
    settings_cls=SchedulerSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    consumed_topics=[topics.DATA, topics.MONITORING, topics.TRAINING],
)


def make_app(settings: SchedulerSettings | None = None) -> FastAPI:
    """The scheduler's ASGI app."""
    return create_app(DEFINITION, settings)
