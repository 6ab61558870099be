"""``vigil keys init-signers|issue-producer|issue-service|signers|revoke-signer`` against a temporary directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vigil.cli.main import app
from vigil.events.trust import TrustStore, load_signing_key, private_key_path, trust_dir

pytestmark = pytest.mark.unit


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["keys", *args])
    return result.exit_code, result.output


def test_issue_list_rotate_revoke(tmp_path: Path) -> None:
    code, out = _run("init-signers", "--dir", str(tmp_path), "--json")
    assert code == 0 and "service:monitor" in json.loads(out)["issued"]
    code, out = _run("issue-producer", "ehr", "--events", "label.observed", "--dir", str(tmp_path), "--json")
    assert code == 0, out
    issued = json.loads(out)
    assert load_signing_key(Path(issued["private_key"])).kid == issued["kid"]

    code, out = _run("issue-producer", "evil", "--events", "rollback.requested", "--dir", str(tmp_path))
    assert code == 1 and "upstream" in out
    assert not private_key_path(tmp_path, "producer:evil").exists()

    old = load_signing_key(private_key_path(tmp_path, "service:monitor")).kid
    code, out = _run("issue-service", "monitor", "--dir", str(tmp_path), "--json")
    new = json.loads(out)["kid"]
    code, out = _run("signers", "--dir", str(tmp_path), "--json")
    listed = {row["kid"]: row for row in json.loads(out)}
    assert {old, new} <= set(listed) and listed[issued["kid"]]["events"] == ["label.observed"]

    assert _run("revoke-signer", old, "--dir", str(tmp_path))[0] == 0
    assert old not in TrustStore.load(trust_dir(tmp_path)).keys
    assert _run("revoke-signer", old, "--dir", str(tmp_path))[0] == 1
