"""Auditor settings."""

from __future__ import annotations

from vigil.service.settings import ServiceSettings


class AuditorSettings(ServiceSettings):
    """Auditor knobs (env ``VIGIL_…``)."""

    service_name: str = "auditor"
    http_port: int = 8106
