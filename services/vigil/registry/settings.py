"""Registry settings."""

from __future__ import annotations

from vigil.service.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    """Registry knobs (env ``VIGIL_…``)."""

    service_name: str = "registry"
    http_port: int = 8101
