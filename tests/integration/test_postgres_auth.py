"""The embedded Postgres checks passwords (issue #20 item 2): the superuser's is generated once and kept in a 0600
file, a login role's password is checked, and a cluster an older Vigil made with ``trust`` requires passwords after
its first start here. Each case runs a server of its own (initdb takes a few seconds)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from vigil.stack.postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration

REFUSED = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)


def _as(server: EmbeddedPostgres, user: str, password: str | None) -> str:
    secret = f":{password}" if password is not None else ""
    return f"postgresql://{user}{secret}@{server.host}:{server.port}/postgres"


async def _refused(dsn: str) -> str:
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except REFUSED as exc:
        return str(exc)
    await conn.close()
    raise AssertionError(f"{dsn.split('@')[0].rsplit(':', 1)[0]}… was let in")


async def test_superuser_and_roles_need_their_passwords(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg", durable=False) as server:
        secret_file = server.superuser_password_file
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert urlsplit(server.dsn).password == server.superuser_password == secret_file.read_text().strip()

        conn = await asyncpg.connect(server.dsn, timeout=10)
        try:
            assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is True
            await conn.execute("CREATE ROLE clinic_app LOGIN PASSWORD 'right-one'")
        finally:
            await conn.close()

        assert "password authentication failed" in await _refused(_as(server, "postgres", None))
        await _refused(_as(server, "postgres", "guess"))
        await _refused(_as(server, "clinic_app", "wrong-one"))
        await _refused(_as(server, "clinic_app", None))
        conn = await asyncpg.connect(_as(server, "clinic_app", "right-one"), timeout=10)
        try:
            assert await conn.fetchval("SELECT current_user") == "clinic_app"
        finally:
            await conn.close()

        # pg_hba.conf is Vigil's: no rule in it trusts anyone.
        rules = [ln.split() for ln in (server.data_dir / "pg_hba.conf").read_text().splitlines()]
        methods = {r[-1] for r in rules if r and not r[0].startswith("#")}
        assert methods == {"scram-sha-256"}, methods


async def test_a_trusting_cluster_from_before_moves_to_passwords(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    with EmbeddedPostgres(data, durable=False) as server:
        port = server.port
        # Make it what an older Vigil left: trust for everyone, a superuser without a password.
        conn = await asyncpg.connect(server.dsn, timeout=10)
        try:
            await conn.execute("ALTER ROLE postgres PASSWORD NULL")
        finally:
            await conn.close()
    (data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    server.superuser_password_file.unlink()

    with EmbeddedPostgres(data, port, durable=False) as server:
        assert server.superuser_password_file.is_file()
        conn = await asyncpg.connect(server.dsn, timeout=10)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        await _refused(_as(server, "postgres", None))

    # And it stays that way across a plain restart.
    with EmbeddedPostgres(data, port, durable=False) as server:
        await _refused(_as(server, "postgres", None))
        assert await asyncio.wait_for(_fetch_one(server.dsn), timeout=30) == 1


async def _fetch_one(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()
