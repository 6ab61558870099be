"""The artifact store refuses tampered bytes, odd names and wrong keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vigil.artifacts import ArtifactError, ArtifactNotFound, ArtifactTampered, LocalArtifactStore, digest_of

pytestmark = pytest.mark.unit


def test_round_trip_and_idempotent_put(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = store.put(b"model bytes")
    assert digest == digest_of(b"model bytes")
    assert store.put(b"model bytes") == digest
    assert store.get(digest) == b"model bytes"
    assert store.exists(digest)


def test_tampered_bytes_are_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = store.put(b"weights")
    path = next(p for p in (tmp_path / "sha256").rglob("*") if p.is_file())
    os.chmod(path, 0o640)
    path.write_bytes(b"evil weights")
    with pytest.raises(ArtifactTampered, match="does not match its digest"):
        store.get(digest)


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/etc/passwd", "sha256:../../x", "sha256:" + "g" * 64, "sha256:" + "A" * 64, "md5:abc", ""],
)
def test_hostile_names_never_reach_the_filesystem(tmp_path: Path, name: str) -> None:
    store = LocalArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match="not a sha256 digest"):
        store.get(name)


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound):
        LocalArtifactStore(tmp_path).get("sha256:" + "0" * 64)


def test_encryption_at_rest(tmp_path: Path) -> None:
    key = os.urandom(32)
    store = LocalArtifactStore(tmp_path, encryption_key=key)
    digest = store.put(b"secret model")
    raw = next(p for p in (tmp_path / "sha256").rglob("*") if p.is_file()).read_bytes()
    assert b"secret model" not in raw
    assert store.get(digest) == b"secret model"
    with pytest.raises(ArtifactError, match="not in the keyring"):
        LocalArtifactStore(tmp_path, encryption_key=os.urandom(32)).get(digest)
    with pytest.raises(ArtifactError, match="no key"):
        LocalArtifactStore(tmp_path).get(digest)


def test_putting_the_same_bytes_again_repairs_a_corrupt_copy(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = store.put(b"weights")
    path = next(p for p in (tmp_path / "sha256").rglob("*") if p.is_file())
    os.chmod(path, 0o640)
    path.write_bytes(b"rot")
    assert store.put(b"weights") == digest
    assert store.get(digest) == b"weights"
