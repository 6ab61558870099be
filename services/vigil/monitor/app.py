"""Monitor service definition (skeleton: the shared runtime, health, info and dead-letter routes)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from vigil.events import topics
from vigil.monitor.settings import MonitorSettings
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="monitor",
    settings_cls=MonitorSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    consumed_topics=[topics.PREDICTIONS, topics.LABELS, topics.METRICS, topics.MODELS],
)


def make_app(settings: MonitorSettings | None = None) -> FastAPI:
    """The monitor's ASGI app."""
    return create_app(DEFINITION, settings)
