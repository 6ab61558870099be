"""``vigil up`` on its embedded Postgres runs each service as its own role (issue #20 item 2).

The stack is started twice on one home (the second start must find the roles, passwords and schemas it made): each
service's connections are its own role's — the auditor's the append-only writer's — the passwords are kept 0600,
the writer cannot delete from the log and another service's role cannot read it.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import asyncpg
import pytest

from vigil.stack.roles import ServiceRoles
from vigil.stack.supervisor import default_launches, running_stack

pytestmark = pytest.mark.e2e


async def _sessions(dsn: str) -> dict[str, set[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT application_name, usename FROM pg_stat_activity WHERE application_name LIKE 'vigil-%'"
        )
    finally:
        await conn.close()
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["application_name"], set()).add(r["usename"])
    return out


async def _refused(dsn: str, sql: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    except asyncpg.InsufficientPrivilegeError as exc:
        return str(exc)
    finally:
        await conn.close()
    raise AssertionError(f"{sql} was allowed")


def test_services_connect_as_their_own_roles_across_restarts(tmp_path: Path) -> None:
    roles = ServiceRoles()
    launches = default_launches(["registry", "auditor"], free_ports=True)
    for _start in range(2):
        with running_stack(
            tmp_path / "home", services=launches, broker_port=0, postgres_port=0, postgres_durable=False,
            echo=lambda _msg: None,
        ) as stack:  # fmt: skip
            sessions = asyncio.run(_sessions(stack.database_url))
            assert sessions.get("vigil-auditor") == {roles.audit_writer}, sessions
            assert sessions.get("vigil-registry") == {roles.owner("registry")}, sessions
            secrets_file = stack.paths.postgres_roles
            assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
            assert stat.S_IMODE(secrets_file.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE(stack.paths.logs.stat().st_mode) == 0o700  # not readable by the training sandbox
            passwords = json.loads(secrets_file.read_text())
            host = stack.database_url.split("@", 1)[1]
            writer = f"postgresql://{roles.audit_writer}:{passwords[roles.audit_writer]}@{host}"
            registry = f"postgresql://{roles.owner('registry')}:{passwords[roles.owner('registry')]}@{host}"
            assert "permission denied" in asyncio.run(_refused(writer, "DELETE FROM auditor.audit_log"))
            assert "must be owner" in asyncio.run(_refused(writer, "ALTER TABLE auditor.audit_log DISABLE TRIGGER ALL"))
            assert "permission denied" in asyncio.run(_refused(registry, "SELECT 1 FROM auditor.audit_log"))
