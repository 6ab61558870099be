"""HTTP edges through a running registry: authentication, roles, invalid and oversized bodies, hostile names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support.services import Tokens, make_tokens, running, settings_for
from vigil.cli.main import app
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings

pytestmark = pytest.mark.integration

GOOD = {
    "dataset": "vitals",
    "content_digest": "sha256:" + "ab" * 32,
    "uri": "file:///vitals/1.csv",
    "row_count": 5,
    "producer": "icu",
}


async def test_tokens_roles_bodies_and_names(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    settings = settings_for(
        RegistrySettings,
        dsn=fresh_db,
        bootstrap=kafka_bootstrap,
        prefix=topic_prefix,
        tokens=tokens,
        http_max_body_bytes=64 * 1024,
        dataset_roots=[Path("/vitals")],  # GOOD's file:// URI is one a trainer could read
    )
    async with running(make_registry(settings)) as registry:
        client = registry.client

        # No token, a wrong token, a wrong scheme → 401 with a reason.
        assert (await client.get("/v1/datasets")).status_code == 401
        r = await client.get("/v1/datasets", headers={"Authorization": "Bearer vgl_not-a-real-token"})
        assert r.status_code == 401
        assert r.json()["detail"] == "invalid token"
        assert (await client.get("/v1/datasets", headers={"Authorization": "Basic dXNlcjpwdw=="})).status_code == 401

        # A valid token whose roles do not fit → 403 naming the roles needed.
        r = await client.post("/v1/data-updates", json=GOOD, headers=tokens.headers("viewer"))
        assert r.status_code == 403
        assert "scientist" in r.json()["detail"]
        assert (await client.get("/v1/datasets", headers=tokens.headers("nobody"))).status_code == 403
        assert (await client.post("/v1/dlq/1/replay", headers=tokens.headers("scientist"))).status_code == 403

        # Admin passes every check.
        assert (await client.post("/v1/data-updates", json=GOOD, headers=tokens.headers("admin"))).status_code == 201

        scientist = tokens.headers("scientist")
        bad_bodies = [
            {**GOOD, "content_digest": "md5:123"},
            {**GOOD, "row_count": -1},
            {**GOOD, "dataset": "../../etc/passwd"},
            {**GOOD, "dataset": "/abs"},
            {**GOOD, "unexpected": True},
            {k: v for k, v in GOOD.items() if k != "uri"},
            [GOOD],
        ]
        for body in bad_bodies:
            r = await client.post("/v1/data-updates", json=body, headers=scientist)
            assert r.status_code == 422, body
            assert r.json()["detail"], "a 4xx must say why"
        r = await client.post(
            "/v1/data-updates", content=b"{not json", headers={**scientist, "Content-Type": "application/json"}
        )
        assert r.status_code == 422

        # Oversized: refused before parsing, by declared length and by streamed length.
        huge = {**GOOD, "uri": "x" * 100_000}
        r = await client.post("/v1/data-updates", json=huge, headers=scientist)
        assert r.status_code == 413

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(20):
                yield b"x" * 8192

        r = await client.post(
            "/v1/data-updates", content=chunks(), headers={**scientist, "Content-Type": "application/json"}
        )
        assert r.status_code == 413

        # Hostile path parameters never reach SQL as names.
        for name in ["..%2F..%2Fetc", "a%00b", "x" * 300]:
            r = await client.get(f"/v1/datasets/{name}/versions", headers=scientist)
            assert r.status_code in (404, 422), name
        assert (await client.get("/v1/datasets/vitals/versions/0", headers=scientist)).status_code == 422
        assert (await client.get("/v1/datasets/vitals/versions/9", headers=scientist)).status_code == 404

        # Nothing above broke the service.
        assert (await client.get("/readyz")).status_code == 200


async def test_tokens_from_the_cli_work_at_once_and_stop_when_revoked_or_expired(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Issue #25 item 2: `vigil tokens create` / `revoke` against the file a running service reads, no restart."""
    tokens: Tokens = make_tokens(tmp_path)
    settings = settings_for(
        RegistrySettings, dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=topic_prefix, tokens=tokens
    )
    runner = CliRunner()

    def vigil(*args: str) -> str:
        result = runner.invoke(app, ["tokens", *args, "--file", str(tokens.file)])
        assert result.exit_code == 0, result.output
        return result.stdout.strip()

    async with running(make_registry(settings)) as registry:
        client = registry.client
        alice = {"Authorization": f"Bearer {vigil('create', '--role', 'viewer', '--name', 'alice')}"}
        assert (await client.get("/v1/datasets", headers=alice)).status_code == 200
        assert (await client.post("/v1/data-updates", json=GOOD, headers=alice)).status_code == 403  # viewer only
        assert (await client.get("/v1/datasets", headers=tokens.headers("viewer"))).status_code == 200  # kept

        vigil("revoke", "alice")
        r = await client.get("/v1/datasets", headers=alice)
        assert (r.status_code, r.json()["detail"]) == (401, "invalid token")
        assert (await client.get("/v1/datasets", headers=tokens.headers("viewer"))).status_code == 200

        brief = {"Authorization": f"Bearer {vigil('create', '--role', 'viewer', '--name', 'brief', '--expires', '2s')}"}
        assert (await client.get("/v1/datasets", headers=brief)).status_code == 200
        await asyncio.sleep(2.2)  # no file change: the expiry alone refuses it
        r = await client.get("/v1/datasets", headers=brief)
        assert (r.status_code, r.json()["detail"]) == (401, "token expired")
