"""`vigil tokens create|list|revoke`, and what a service's token store makes of the file (issue #25 item 2)."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vigil.cli.main import app
from vigil.cli.tokens import parse_expiry
from vigil.service.auth import TokenStore
from vigil.service.tokens import Role, TokenRecord, issue_token, load_tokens, save_tokens, token_digest
from vigil.stack.state import StackPaths

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def vigil(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_create_prints_the_token_once_and_stores_only_its_digest(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, out, err = vigil("tokens", "create", "--role", "viewer", "--role", "scientist", "--name", "alice",
                           "--home", str(home))  # fmt: skip
    assert code == 0, err
    token = out.strip()
    assert token.startswith("vgl_") and "\n" not in token
    assert "alice" in err and "shown only now" in err
    path = StackPaths(home).tokens_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in path.read_text()
    (record,) = load_tokens(path).values()
    assert record.sha256 == token_digest(token)
    assert (record.principal, record.roles) == ("alice", frozenset({Role.VIEWER, Role.SCIENTIST}))
    assert record.expires_at is not None and record.created_at is not None
    assert record.expires_at - record.created_at == dt.timedelta(days=90)  # the default expiry
    assert not list(path.parent.glob("*.tmp"))

    again = vigil("tokens", "create", "--role", "viewer", "--name", "alice", "--home", str(home))
    assert again[0] == 1 and "exists" in again[2]
    assert vigil("tokens", "create", "--role", "root", "--name", "x", "--home", str(home))[0] == 2
    assert vigil("tokens", "create", "--role", "viewer", "--name", "admin", "--home", str(home))[0] == 2


def test_list_and_revoke_keep_vigil_ups_tokens_and_the_others(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    admin = issue_token("admin", {Role.ADMIN})[1]
    service = issue_token("service:registry", {Role.VIEWER})[1]
    save_tokens(path, [admin, service])
    code, out, _ = vigil("tokens", "create", "-r", "deployer", "-n", "ci", "--expires", "never", "--json",
                         "--file", str(path))  # fmt: skip
    assert code == 0
    created = json.loads(out)
    assert (created["name"], created["roles"], created["expires_at"]) == ("ci", ["deployer"], None)
    assert vigil("tokens", "create", "-r", "viewer", "-n", "bob", "--file", str(path))[0] == 0

    code, out, _ = vigil("tokens", "list", "--json", "--file", str(path))
    listed = {t["name"]: t for t in json.loads(out)}
    assert {n: t["kind"] for n, t in listed.items()} == {
        "admin": "admin", "service:registry": "service", "ci": "user", "bob": "user"
    }  # fmt: skip
    assert "sha256" not in out and created["token"] not in out
    plain = vigil("tokens", "list", "--file", str(path))[1].splitlines()  # not a terminal: tab-separated lines
    assert plain[1].split("\t") == ["name", "kind", "roles", "created", "expires"]
    assert any(line.split("\t")[:3] == ["ci", "user", "deployer"] for line in plain)

    code, out, _ = vigil("tokens", "revoke", "ci", "--file", str(path))
    assert code == 0 and "revoked" in out
    assert {r.principal for r in load_tokens(path).values()} == {"admin", "service:registry", "bob"}
    assert vigil("tokens", "revoke", "ci", "--file", str(path))[0] == 1  # gone already
    assert vigil("tokens", "revoke", "admin", "--file", str(path))[0] == 1
    assert vigil("tokens", "revoke", "service:registry", "--file", str(path))[0] == 1
    assert len(load_tokens(path)) == 3


def test_a_running_store_refuses_a_revoked_token_at_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token, record = issue_token("alice", {Role.VIEWER})
    other = issue_token("bob", {Role.VIEWER})[1]
    save_tokens(path, [record, other])
    store = TokenStore(path)
    assert store.lookup(token) == record
    before = path.stat()
    save_tokens(path, [other])  # same size class, maybe the same mtime tick: the rename is what tells
    assert path.stat().st_ino != before.st_ino
    assert store.lookup(token) is None


def test_expiry_is_checked_on_every_request_without_a_file_change(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    clock = [NOW]
    token, record = issue_token("ci", {Role.DEPLOYER}, expires_at=NOW + dt.timedelta(minutes=5))
    save_tokens(path, [record])
    store = TokenStore(path, clock=lambda: clock[0])
    assert store.lookup(token) == record
    clock[0] = NOW + dt.timedelta(minutes=5)
    assert store.lookup(token) is None
    assert store.lookup(token, include_expired=True) == record


def test_records_round_trip_and_old_files_still_load(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"sha256": "ab", "principal": "old", "roles": ["viewer"]}]}))
    assert load_tokens(path)["ab"] == TokenRecord("ab", "old", frozenset({Role.VIEWER}))
    record = TokenRecord("cd", "new", frozenset({Role.AUDITOR}), NOW, NOW + dt.timedelta(days=1))
    save_tokens(path, [record])
    assert load_tokens(path) == {"cd": record}


def test_parse_expiry() -> None:
    assert parse_expiry("never", NOW) is None
    assert parse_expiry("90d", NOW) == NOW + dt.timedelta(days=90)
    assert parse_expiry("12h", NOW) == NOW + dt.timedelta(hours=12)
    assert parse_expiry("2w", NOW) == NOW + dt.timedelta(weeks=2)
    assert parse_expiry("2026-03-01", NOW) == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert parse_expiry("2026-03-01T08:00:00+01:00", NOW) == dt.datetime(2026, 3, 1, 7, tzinfo=dt.UTC)
    for bad in ("0d", "soon", "2025-01-01", "5y"):
        with pytest.raises(ValueError, match=r"positive|use never|already past"):
            parse_expiry(bad, NOW)
