"""Auditor service definition."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from vigil.auditor.api import router
from vigil.auditor.handlers import build_batch_handler
from vigil.auditor.settings import AuditorSettings
from vigil.events import topics
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="auditor",
    settings_cls=AuditorSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    # Control-plane topics are audited event by event; streams get per-window digests (see docs/audit.md).
    consumed_topics=list(topics.CONTROL_PLANE),
    batch_handler=build_batch_handler,
    routers=[router],
)


def make_app(settings: AuditorSettings | None = None) -> FastAPI:
    """The auditor's ASGI app."""
    return create_app(DEFINITION, settings)
