"""Registry settings."""

from __future__ import annotations

from pydantic import Field

from vigil.datasets.locations import DatasetRootsSettings


class RegistrySettings(DatasetRootsSettings):
    """Registry knobs (env ``VIGIL_…``). ``dataset_roots`` (shared with the trainer): announcements of
    ``file://`` URIs outside them are refused."""

    service_name: str = "registry"
    http_port: int = 8101
    #: Largest artifact accepted over HTTP (also bounded by ``http_max_body_bytes``). Trainers write bigger
    #: artifacts straight into the shared content-addressed store.
    artifact_max_upload_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    #: Largest total uncompressed size of an uploaded .npz (zip bombs are refused before any array is read).
    artifact_max_npz_uncompressed_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    #: ONNX graphs larger than this are refused at registration (the ``artifact`` gate says so).
    onnx_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: OpenLineage namespace of the registry's datasets, jobs and models.
    lineage_namespace: str = Field(default="vigil", min_length=1, max_length=256)
