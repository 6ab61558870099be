"""Deployer service definition (skeleton: the shared runtime, health, info and dead-letter routes)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from vigil.deployer.settings import DeployerSettings
from vigil.events import topics
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="deployer",
    settings_cls=DeployerSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    consumed_topics=[topics.MODELS, topics.MONITORING],
)


def make_app(settings: DeployerSettings | None = None) -> FastAPI:
    """The deployer's ASGI app."""
    return create_app(DEFINITION, settings)
