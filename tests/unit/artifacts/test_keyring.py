"""Artifact keys with ids: rotation keeps old objects readable, plaintext is refused once encryption is on, and a
sealed object cannot be relabelled with another key id."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vigil.artifacts import ArtifactError, ArtifactTampered, LocalArtifactStore, digest_of, open_store
from vigil.artifacts.keyring import (
    Keyring,
    KeyringError,
    ensure_keyring_file,
    load_keyring,
    rotate_keyring_file,
)
from vigil.service.settings import ServiceSettings, UnsafeProductionSettings

pytestmark = pytest.mark.unit


def _object_path(root: Path, digest: str) -> Path:
    hexd = digest.removeprefix("sha256:")
    return root / "sha256" / hexd[:2] / hexd[2:]


def test_keyring_file_is_created_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "artifacts.json"
    first = ensure_keyring_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o077 == 0
    again = ensure_keyring_file(path)
    assert again == first and len(first.keys) == 1


def test_a_keyring_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "artifacts.json"
    ensure_keyring_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        load_keyring(path)


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"version": 2, "current": "a", "keys": {"a": "00" * 32}}, "version-1"),
        ({"version": 1, "current": "a", "keys": {}}, "non-empty"),
        ({"version": 1, "current": "b", "keys": {"a": "00" * 32}}, "not in the keyring"),
        ({"version": 1, "current": "a", "keys": {"a": "00" * 16}}, "32"),
        ({"version": 1, "current": "../x", "keys": {"../x": "00" * 32}}, "bad key id"),
        ({"version": 1, "current": "a", "keys": {"a": "zz"}}, "not hex"),
    ],
)
def test_malformed_keyrings_are_refused_with_the_reason(doc: object, reason: str) -> None:
    with pytest.raises(KeyringError, match=reason):
        Keyring.from_json(doc)


def test_rotation_seals_new_objects_with_the_new_key_and_old_ones_still_open(tmp_path: Path) -> None:
    keyring_file = tmp_path / "keys.json"
    first = ensure_keyring_file(keyring_file)
    old_store = open_store(tmp_path / "objects", keyring_file=keyring_file)
    old = old_store.put(b"version 1 weights")
    assert old_store.key_id_of(old) == first.current

    rotated = rotate_keyring_file(keyring_file)
    assert rotated.current != first.current and set(rotated.keys) == {first.current, rotated.current}
    store = open_store(tmp_path / "objects", keyring_file=keyring_file)
    new = store.put(b"version 2 weights")
    assert store.key_id_of(new) == rotated.current
    assert store.get(old) == b"version 1 weights"  # sealed with the old key, still readable

    report = store.rewrap()
    assert (report.rewrapped, report.current, report.tampered) == (1, 1, [])
    assert store.key_id_of(old) == rotated.current
    assert store.get(old) == b"version 1 weights"
    # Once everything is under the new key, a keyring without the old key reads the whole store.
    only_new = Keyring(current=rotated.current, keys={rotated.current: rotated.keys[rotated.current]})
    assert LocalArtifactStore(tmp_path / "objects", keyring=only_new).get(old) == b"version 1 weights"


def test_with_encryption_on_a_plaintext_object_is_refused_until_rewrapped(tmp_path: Path) -> None:
    plain = LocalArtifactStore(tmp_path)
    digest = plain.put(b"written before encryption was on")
    store = LocalArtifactStore(tmp_path, encryption_key=os.urandom(32))
    with pytest.raises(ArtifactTampered, match="stored unencrypted"):
        store.get(digest)
    assert store.rewrap().rewrapped == 1
    assert b"written before" not in _object_path(tmp_path, digest).read_bytes()
    assert store.get(digest) == b"written before encryption was on"


def test_a_planted_plaintext_file_with_a_matching_hash_is_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path, encryption_key=os.urandom(32))
    data = b"attacker's model"
    path = _object_path(tmp_path, digest_of(data))
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    with pytest.raises(ArtifactTampered, match="stored unencrypted"):
        store.get(digest_of(data))


def test_relabelling_an_object_with_another_key_id_fails_authentication(tmp_path: Path) -> None:
    keys = {"k-one": os.urandom(32), "k-two": os.urandom(32)}
    store = LocalArtifactStore(tmp_path, keyring=Keyring(current="k-one", keys=keys))
    digest = store.put(b"weights")
    path = _object_path(tmp_path, digest)
    raw = path.read_bytes()
    os.chmod(path, 0o640)
    path.write_bytes(raw.replace(b"k-one", b"k-two", 1))
    with pytest.raises(ArtifactTampered, match="failed authentication"):
        store.get(digest)


def test_objects_of_the_first_format_still_open(tmp_path: Path) -> None:
    key = os.urandom(32)
    data = b"sealed by the first build"
    digest = digest_of(data)
    nonce = os.urandom(12)
    path = _object_path(tmp_path, digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"VGLENC1\0" + nonce + AESGCM(key).encrypt(nonce, data, digest.encode()))
    assert LocalArtifactStore(tmp_path, encryption_key=key).get(digest) == data
    with pytest.raises(ArtifactTampered, match="every key"):
        LocalArtifactStore(tmp_path, encryption_key=os.urandom(32)).get(digest)


def test_settings_find_the_stack_keyring_in_home(tmp_path: Path) -> None:
    settings = ServiceSettings(home=tmp_path)
    assert not settings.artifact_store().encrypted
    ensure_keyring_file(tmp_path / "keys" / "artifacts.json")
    assert settings.artifact_store().encrypted
    with_key = ServiceSettings(home=tmp_path, artifact_encryption_key=os.urandom(32).hex())
    assert with_key.resolved_artifact_keyring_file() is None  # an explicit single key wins over the default file
    both = ServiceSettings(home=tmp_path, artifact_encryption_key="00" * 32, artifact_keyring_file=tmp_path / "x")
    with pytest.raises(ArtifactError, match="not both"):
        both.artifact_store()


def test_production_refuses_to_start_without_artifact_keys(tmp_path: Path) -> None:
    with pytest.raises(UnsafeProductionSettings, match="no artifact encryption key"):
        ServiceSettings(home=tmp_path, environment="production").refuse_unsafe_production()
    ServiceSettings(home=tmp_path, environment="development").refuse_unsafe_production()  # only production refuses
    ensure_keyring_file(tmp_path / "keys" / "artifacts.json")
    ServiceSettings(home=tmp_path, environment="production").refuse_unsafe_production()
    assert json.loads((tmp_path / "keys" / "artifacts.json").read_text())["version"] == 1
