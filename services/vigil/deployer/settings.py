"""Deployer settings."""

from __future__ import annotations

from vigil.service.settings import ServiceSettings


class DeployerSettings(ServiceSettings):
    """Deployer knobs (env ``VIGIL_…``)."""

    service_name: str = "deployer"
    http_port: int = 8104
