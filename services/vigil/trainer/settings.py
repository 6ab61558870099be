"""Trainer settings."""

from __future__ import annotations

from vigil.service.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """Trainer knobs (env ``VIGIL_…``)."""

    service_name: str = "trainer"
    http_port: int = 8103
