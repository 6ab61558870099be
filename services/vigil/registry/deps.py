"""Shared pieces of the registry's API: typed path parameters, role aliases, its settings and artifact store."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from vigil.artifacts import LocalArtifactStore
from vigil.events.catalog.data import NAME_PATTERN
from vigil.registry.settings import RegistrySettings
from vigil.service.auth import Principal, require
from vigil.service.bounds import Integer
from vigil.service.runtime import ServiceRuntime
from vigil.service.tokens import Role

ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="model name")]
DatasetName = Annotated[str, Path(pattern=NAME_PATTERN, description="dataset name")]
AliasName = Annotated[str, Path(pattern=NAME_PATTERN, description="alias name, e.g. champion")]
VersionNo = Annotated[Integer, Path(ge=1, description="version number")]

#: Moving aliases: scientists move their own aliases; ``champion`` additionally needs deployer (checked in route).
AliasMover = Annotated[Principal, Depends(require(Role.SCIENTIST, Role.DEPLOYER))]
#: Reading artifact bytes: the people who build models and the deployer that serves them.
ArtifactReader = Annotated[Principal, Depends(require(Role.SCIENTIST, Role.DEPLOYER))]


def settings_of(runtime: ServiceRuntime) -> RegistrySettings:
    settings = runtime.settings
    assert isinstance(settings, RegistrySettings)
    return settings


def store_of(runtime: ServiceRuntime) -> LocalArtifactStore:
    """The runtime's content-addressed store, configured by settings and built on first use (shared by the routes
    and the event handlers)."""
    settings = runtime.settings
    return runtime.parts.get_or_add(LocalArtifactStore, settings.artifact_store)
