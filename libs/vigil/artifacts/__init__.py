"""Content-addressed artifact storage shared by the trainer (writes), the registry and the deployer (read)."""

from vigil.artifacts.store import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactTampered,
    LocalArtifactStore,
    digest_of,
    open_store,
    parse_digest,
)

__all__ = [
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactStore",
    "ArtifactTampered",
    "LocalArtifactStore",
    "digest_of",
    "open_store",
    "parse_digest",
]
