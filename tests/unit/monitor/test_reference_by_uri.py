"""A reference profile too large to travel inline is read from the shared artifact store, digest-verified."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from vigil.artifacts import LocalArtifactStore
from vigil.kernels.profile import DatasetProfile
from vigil.monitor.streams import MonitorStreams

pytestmark = pytest.mark.unit


def test_profile_from_store_verifies_and_refuses_mismatch(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    rng = np.random.default_rng(0)
    profile = DatasetProfile.build(np.asfortranarray(rng.normal(size=(500, 3))), numeric_names=["a", "b", "c"])
    raw = orjson.dumps(profile.to_dict(), option=orjson.OPT_SORT_KEYS)
    digest = store.put(raw)
    fake = SimpleNamespace(_artifacts=store)

    body = MonitorStreams._profile_from_store(fake, store.uri(digest), digest)  # type: ignore[arg-type]
    assert body is not None
    assert DatasetProfile.from_dict(body).numeric is not None

    other = "sha256:" + "0" * 64
    assert MonitorStreams._profile_from_store(fake, store.uri(digest), other) is None  # type: ignore[arg-type]
    assert MonitorStreams._profile_from_store(fake, store.uri(other), None) is None  # type: ignore[arg-type]
