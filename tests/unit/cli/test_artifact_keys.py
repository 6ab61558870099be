"""`vigil keys rotate|rewrap` on a stack home: a running store picks up the new key without a restart, and rewrap
moves every old object to it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vigil.artifacts import ArtifactTampered, LocalArtifactStore
from vigil.artifacts.keyring import ensure_keyring_file, load_keyring
from vigil.cli.artifact_keys import app

pytestmark = pytest.mark.unit


def test_rotate_then_rewrap_on_a_live_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    keyring_file = home / "keys" / "artifacts.json"
    first = ensure_keyring_file(keyring_file).current
    store = LocalArtifactStore(home / "artifacts", keyring_file=keyring_file)  # as a running service holds it
    old = store.put(b"sealed before the rotation")
    assert store.key_id_of(old) == first

    rotated = CliRunner().invoke(app, ["rotate", "--home", str(home), "--json"])
    assert rotated.exit_code == 0, rotated.output
    doc = json.loads(rotated.output)
    assert doc["previous"] == first and doc["current"] != first and set(doc["keys"]) == {first, doc["current"]}

    new = store.put(b"sealed after the rotation")  # same store object: the keyring file is re-read on change
    assert store.key_id_of(new) == doc["current"]
    assert store.get(old) == b"sealed before the rotation"

    rewrapped = CliRunner().invoke(app, ["rewrap", "--home", str(home), "--json"])
    assert rewrapped.exit_code == 0, rewrapped.output
    assert json.loads(rewrapped.output) | {"root": None} == {
        "root": None, "rewrapped": 1, "already_current": 1, "tampered": []
    }  # fmt: skip
    assert store.key_id_of(old) == doc["current"]
    assert load_keyring(keyring_file).current == doc["current"]


def test_rewrap_reports_an_object_that_fails_its_check_and_exits_1(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ensure_keyring_file(home / "keys" / "artifacts.json")
    store = LocalArtifactStore(home / "artifacts", keyring_file=home / "keys" / "artifacts.json")
    digest = store.put(b"weights")
    path = next(p for p in (home / "artifacts" / "sha256").rglob("*") if p.is_file())
    os.chmod(path, 0o640)
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))  # one bit of the tag flipped
    CliRunner().invoke(app, ["rotate", "--home", str(home)])
    result = CliRunner().invoke(app, ["rewrap", "--home", str(home)])
    assert result.exit_code == 1 and digest in result.output, result.output
    with pytest.raises(ArtifactTampered):
        store.get(digest)


def test_rewrap_without_a_keyring_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["rewrap", "--home", str(tmp_path)])
    assert result.exit_code == 1 and "no artifact keyring" in result.output


def test_init_prepares_a_home_production_accepts_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vigil.auditor.settings import AuditorSettings
    from vigil.service.auth import TokenStore

    monkeypatch.delenv("VIGIL_EVENT_KEYS_DIR", raising=False)  # the session's test keys: not this home's
    home = tmp_path / "home"
    first = CliRunner().invoke(app, ["init", "--home", str(home), "--json"])
    assert first.exit_code == 0, first.output
    doc = json.loads(first.output)
    assert len(doc["created"]) == 3 + 6 + 1  # + one event key per service and the local producer's
    assert Path(doc["event_keys_dir"]).is_relative_to(home)
    for name in ("artifact_keyring", "audit_signing_key", "admin_token"):
        assert Path(doc[name]).stat().st_mode & 0o777 == 0o600, name
    AuditorSettings(home=home, environment="production").refuse_unsafe_production()  # nothing missing
    admin = Path(doc["admin_token"]).read_text().strip()
    record = TokenStore(Path(doc["tokens_file"]), refuse_dev_tokens=True).lookup(admin)
    assert record is not None and record.principal == "admin"

    before = {name: Path(doc[name]).read_bytes() for name in ("artifact_keyring", "audit_signing_key", "admin_token")}
    again = CliRunner().invoke(app, ["init", "--home", str(home), "--json"])
    assert again.exit_code == 0 and json.loads(again.output)["created"] == []
    assert before == {name: Path(doc[name]).read_bytes() for name in before}
