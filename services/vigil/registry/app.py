"""Registry service definition: the skeleton plus the registry's room."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from vigil.events import topics
from vigil.registry.aliases_api import router as aliases_router
from vigil.registry.api import router
from vigil.registry.artifacts_api import router as artifacts_router
from vigil.registry.cards_api import router as cards_router
from vigil.registry.handlers import build_handlers
from vigil.registry.lineage_api import router as lineage_router
from vigil.registry.models_api import router as models_router
from vigil.registry.settings import RegistrySettings
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="registry",
    settings_cls=RegistrySettings,
    migrations_dir=Path(__file__).parent / "migrations",
    consumed_topics=[topics.DATA, topics.TRAINING, topics.DEPLOYMENTS],
    handlers=build_handlers,
    routers=[router, models_router, aliases_router, artifacts_router, lineage_router, cards_router],
)


def make_app(settings: RegistrySettings | None = None) -> FastAPI:
    """The registry's ASGI app."""
    return create_app(DEFINITION, settings)
