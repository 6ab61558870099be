"""A reference profile too large to travel inline is read from the shared artifact store, digest-verified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from vigil.artifacts import LocalArtifactStore
from vigil.kernels.profile import DatasetProfile
from vigil.monitor.caches import ReferenceCache

pytestmark = pytest.mark.unit


def test_profile_from_store_verifies_and_refuses_mismatch(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    rng = np.random.default_rng(0)
    profile = DatasetProfile.build(np.asfortranarray(rng.normal(size=(500, 3))), numeric_names=["a", "b", "c"])
    raw = orjson.dumps(profile.to_dict(), option=orjson.OPT_SORT_KEYS)
    digest = store.put(raw)
    cache = ReferenceCache(None, store, retry_s=1.0)  # type: ignore[arg-type]  # no pool: never reads Postgres here

    body = cache._from_store(store.uri(digest), digest)
    assert body is not None
    assert DatasetProfile.from_dict(body).numeric is not None

    other = "sha256:" + "0" * 64
    assert cache._from_store(store.uri(digest), other) is None
    assert cache._from_store(store.uri(other), None) is None
