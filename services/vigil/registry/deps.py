"""Shared route dependencies of the registry's API: the runtime, typed path parameters, the artifact store."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from vigil.artifacts import LocalArtifactStore, open_store
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


def runtime_of(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def settings_of(request: Request) -> RegistrySettings:
    settings: RegistrySettings = request.app.state.settings
    return settings


def artifact_store(request: Request) -> LocalArtifactStore:
    """The content-addressed store configured by settings (one per process, built on first use)."""
    return store_of(runtime_of(request))


def store_of(runtime: ServiceRuntime) -> LocalArtifactStore:
    """The runtime's content-addressed store (shared by the routes and the event handlers)."""
    store = runtime.state.get("artifact_store")
    if store is None:
        settings = runtime.settings
        store = open_store(settings.resolved_artifact_root(), settings.artifact_encryption_key)
        runtime.state["artifact_store"] = store
    assert isinstance(store, LocalArtifactStore)
    return store
