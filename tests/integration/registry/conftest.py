"""Fixture of the registry's integration tests: a running registry against the real broker and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from registry_support import Registry

from support.services import make_tokens, running, settings_for
from vigil.registry.app import make_app
from vigil.registry.settings import RegistrySettings


@pytest.fixture
async def registry(kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path) -> AsyncIterator[Registry]:
    tokens = make_tokens(tmp_path)
    artifact_root = tmp_path / "artifacts"
    settings = settings_for(
        RegistrySettings,
        dsn=fresh_db,
        bootstrap=kafka_bootstrap,
        prefix=topic_prefix,
        tokens=tokens,
        artifact_root=artifact_root,
        artifact_max_upload_bytes=256 * 1024,
        artifact_max_npz_uncompressed_bytes=16 * 1024 * 1024,
        # registry_support announces file:///data/… URIs; a trainer of this stack would read /data.
        dataset_roots=[Path("/data"), tmp_path / "data"],
    )
    async with running(make_app(settings)) as service:
        yield Registry(service, tokens, kafka_bootstrap, topic_prefix, artifact_root)
