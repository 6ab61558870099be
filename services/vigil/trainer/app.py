"""Trainer service definition (skeleton: the shared runtime, health, info and dead-letter routes)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from vigil.events import topics
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition
from vigil.trainer.settings import TrainerSettings

DEFINITION = ServiceDefinition(
    name="trainer",
    settings_cls=TrainerSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    consumed_topics=[topics.TRAINING],
)


def make_app(settings: TrainerSettings | None = None) -> FastAPI:
    """The trainer's ASGI app."""
    return create_app(DEFINITION, settings)
