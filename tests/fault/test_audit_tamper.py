"""Tampering behind the append-only trigger's back, as a superuser: an altered row, a deleted row, a reordered row,
a cut tail and a forged checkpoint are each caught by ``vigil audit verify`` (the real CLI against the auditor on a
real port), which names the entry. A prefix removed under retention verifies from its checkpoint; the same gap
without an expiry record does not."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from support.kafka import produce_events
from support.services import Tokens, eventually, make_tokens, settings_for
from vigil.auditor.app import make_app
from vigil.auditor.settings import AuditorSettings
from vigil.cli.audit import app as audit_cli
from vigil.events import make_event
from vigil.events.catalog.data import DataUpdated

pytestmark = pytest.mark.fault

EVENTS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def served(settings: AuditorSettings) -> AsyncIterator[str]:
    """The auditor under uvicorn on a free port (the CLI talks real HTTP)."""
    port = _free_port()
    config = uvicorn.Config(make_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _true(server.started), timeout=90, what="uvicorn started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _true(value: bool) -> bool:
    return value


async def cli_verify(url: str, token: str, *extra: str) -> tuple[int, str]:
    result = await asyncio.to_thread(
        CliRunner().invoke, audit_cli, ["verify", "--url", url, "--token", token, *extra], catch_exceptions=False
    )
    return result.exit_code, result.output


@asynccontextmanager
async def superuser(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser session with triggers off (session_replication_role = replica)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET session_replication_role = replica")
        yield conn
    finally:
        await conn.close()


def _event(n: int) -> Any:
    payload = DataUpdated(
        dataset="labs",
        content_digest="sha256:" + hashlib.sha256(f"labs-{n}".encode()).hexdigest(),
        uri=f"file:///labs/{n}.parquet",
        row_count=n,
        producer="lims",
    )
    return make_event(payload, source="lims://export", actor="system:lims")


async def test_tampering_is_detected_and_named(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens: Tokens = make_tokens(tmp_path)
    token = tokens.by_role["auditor"]
    settings = settings_for(
        AuditorSettings,
        dsn=fresh_db,
        bootstrap=kafka_bootstrap,
        prefix=topic_prefix,
        tokens=tokens,
        home=tmp_path,
        audit_checkpoint_every_entries=10,
        audit_checkpoint_interval_s=0.3,
    )
    async with served(settings) as url, httpx.AsyncClient(base_url=url, headers=tokens.headers("auditor")) as http:
        await produce_events(kafka_bootstrap, topic_prefix + "vigil.data", [_event(n) for n in range(EVENTS)])

        # Probe through the database, not the API: reads are audited, and entries 1..EVENTS must be the events.
        probe = await asyncpg.connect(fresh_db)
        try:

            async def checkpointed() -> bool:
                covered = await probe.fetchval("SELECT max(to_seq) FROM auditor.audit_checkpoints")
                return covered is not None and covered >= EVENTS

            await eventually(checkpointed, what="a checkpoint over all events")
            types = await probe.fetch("SELECT event_type FROM auditor.audit_log WHERE seq <= $1", EVENTS)
            assert {r["event_type"] for r in types} == {"data.updated"}
        finally:
            await probe.close()
        # Reads are audited too, so the chain keeps growing; tamper only with the first EVENTS entries.
        code, out = await cli_verify(url, token)
        assert code == 0, out
        assert "OK" in out

        async def failure() -> tuple[int, str]:
            code, out = await cli_verify(url, token)
            report = (await http.get("/v1/verify")).json()
            assert not report["ok"]
            return code, f"{out}\n{report['first_bad_seq']}: {report['problem']}"

        async def ok_again() -> None:
            code, out = await cli_verify(url, token)
            assert code == 0, out

        row = dict(await _row(fresh_db, 12))

        # 1. A row altered behind the trigger (trigger disabled with ALTER TABLE).
        admin = await asyncpg.connect(fresh_db)
        try:
            await admin.execute("ALTER TABLE auditor.audit_log DISABLE TRIGGER audit_log_no_update")
            await admin.execute("UPDATE auditor.audit_log SET actor = 'user:mallory' WHERE seq = 12")
            await admin.execute("ALTER TABLE auditor.audit_log ENABLE TRIGGER audit_log_no_update")
        finally:
            await admin.close()
        code, out = await failure()
        assert code == 1 and "entry 12" in out and "actor" in out, out

        # … and a cleverer one: event bytes, their sha256 and the columns all rewritten consistently.
        forged_event = bytes(row["event"]).replace(b'"row_count":11', b'"row_count":99')
        assert forged_event != bytes(row["event"])
        async with superuser(fresh_db) as su:
            await su.execute(
                "UPDATE auditor.audit_log SET actor = $1, event = $2, event_sha256 = $3 WHERE seq = 12",
                row["actor"],
                forged_event,
                hashlib.sha256(forged_event).hexdigest(),
            )
        code, out = await failure()
        assert code == 1 and "entry 12" in out and "entry_hash" in out, out
        async with superuser(fresh_db) as su:
            await su.execute(
                "UPDATE auditor.audit_log SET event = $1, event_sha256 = $2 WHERE seq = 12",
                row["event"],
                row["event_sha256"],
            )
        await ok_again()

        # 2. A deleted row.
        saved = dict(await _row(fresh_db, 17))
        async with superuser(fresh_db) as su:
            await su.execute("DELETE FROM auditor.audit_log WHERE seq = 17")
        code, out = await failure()
        assert code == 1 and "entry 17" in out and "missing" in out, out
        await _insert(fresh_db, saved)
        await ok_again()

        # 3. A reordered row: entries 20 and 21 swap places.
        async with superuser(fresh_db) as su, su.transaction():
            await su.execute("UPDATE auditor.audit_log SET seq = -20 WHERE seq = 20")
            await su.execute("UPDATE auditor.audit_log SET seq = 20 WHERE seq = 21")
            await su.execute("UPDATE auditor.audit_log SET seq = 21 WHERE seq = -20")
        code, out = await failure()
        assert code == 1 and "entry 20" in out, out
        async with superuser(fresh_db) as su, su.transaction():
            await su.execute("UPDATE auditor.audit_log SET seq = -21 WHERE seq = 21")
            await su.execute("UPDATE auditor.audit_log SET seq = 21 WHERE seq = 20")
            await su.execute("UPDATE auditor.audit_log SET seq = 20 WHERE seq = -21")
        await ok_again()

        # 4. A forged checkpoint root: its signature no longer matches (server and CLI both say so).
        async with superuser(fresh_db) as su:
            cp = await su.fetchrow("SELECT to_seq, merkle_root FROM auditor.audit_checkpoints ORDER BY to_seq LIMIT 1")
            await su.execute(
                "UPDATE auditor.audit_checkpoints SET merkle_root = $1 WHERE to_seq = $2", "ab" * 32, cp["to_seq"]
            )
        code, out = await failure()
        assert code == 1 and f"checkpoint 1..{cp['to_seq']}" in out and "signature" in out, out
        async with superuser(fresh_db) as su:
            await su.execute(
                "UPDATE auditor.audit_checkpoints SET merkle_root = $1 WHERE to_seq = $2",
                cp["merkle_root"],
                cp["to_seq"],
            )
        await ok_again()

        # A pinned key that did not sign these checkpoints: the CLI refuses them although the server is content.
        key = (await http.get("/v1/keys")).json()
        code, out = await cli_verify(url, token, "--public-key", key["public_key_hex"])
        assert code == 0, out
        code, out = await cli_verify(url, token, "--public-key", "3b" * 32)
        assert code == 1 and "not trusted here" in out, out

        # 5. Retention: entries 1..k removed at a checkpoint boundary. Without an expiry record that is a deleted
        # entry 1; with one, verification starts from the checkpoint's frontier and last entry hash.
        async with superuser(fresh_db) as su:
            k = await su.fetchval("SELECT min(to_seq) FROM auditor.audit_checkpoints WHERE to_seq >= 10")
            await su.execute("DELETE FROM auditor.audit_log WHERE seq <= $1", k)
        code, out = await failure()
        assert code == 1 and "entry 1" in out, out
        async with superuser(fresh_db) as su:
            await su.execute(
                "INSERT INTO auditor.audit_expirations (through_seq, actor, reason) VALUES ($1, 'user:dba', 'test')", k
            )
        code, out = await cli_verify(url, token)
        assert code == 0, out
        report = (await http.get("/v1/verify")).json()
        assert report["ok"] and report["started_after_checkpoint"] == k and report["checkpoints_checked"] >= 1

        # 6. The tail cut off after a checkpoint was signed over it.
        async with superuser(fresh_db) as su:
            last = await su.fetchval("SELECT max(to_seq) FROM auditor.audit_checkpoints")
            await su.execute("DELETE FROM auditor.audit_log WHERE seq >= $1", last)
        code, out = await failure()
        # (Reads appended again after the cut, so entry `last` now exists with other content, or not at all.)
        assert code == 1 and f"entry {last}" in out and f"checkpoint 1..{last}" in out, out


async def _row(dsn: str, seq: int) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM auditor.audit_log WHERE seq = $1", seq)
        assert row is not None
        return row
    finally:
        await conn.close()


async def _insert(dsn: str, row: dict[str, Any]) -> None:
    columns = list(row)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"INSERT INTO auditor.audit_log ({', '.join(columns)}) VALUES ({placeholders})", *row.values()
        )
    finally:
        await conn.close()


async def test_a_tail_cut_with_its_checkpoints_is_caught_only_by_the_witness(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Whoever can delete rows can cut the tail *and* the checkpoints over it: what is left is a consistent signed
    prefix, and verification of the database alone passes. The checkpoints the auditor also appended to its witness
    file (outside the database) name the cut."""
    tokens: Tokens = make_tokens(tmp_path)
    token = tokens.by_role["auditor"]
    witness = tmp_path / "elsewhere" / "witness.jsonl"
    settings = settings_for(
        AuditorSettings,
        dsn=fresh_db,
        bootstrap=kafka_bootstrap,
        prefix=topic_prefix,
        tokens=tokens,
        home=tmp_path,
        audit_checkpoint_every_entries=10,
        audit_checkpoint_interval_s=0.3,
        audit_witness_file=witness,
        audit_signing_key_file=tmp_path / "signing.key",  # the same key across the restart below
    )

    def witnessed() -> list[int]:
        if not witness.exists():
            return []
        return [json.loads(line)["to_seq"] for line in witness.read_text().splitlines()]

    async with served(settings) as url:
        await produce_events(kafka_bootstrap, topic_prefix + "vigil.data", [_event(n) for n in range(EVENTS)])

        async def all_witnessed() -> bool:
            return bool(witnessed()) and max(witnessed()) >= EVENTS

        await eventually(all_witnessed, what="checkpoints over every event in the witness file")
        code, out = await cli_verify(url, token, "--witness", str(witness))
        assert code == 0, out
        assert "witnessed checkpoints" in out

        async def two_witnessed() -> bool:  # the verify's reads are audited: a later checkpoint covers them
            return len(witnessed()) >= 2

        await eventually(two_witnessed, what="a second checkpoint in the witness file")
    lines = witnessed()
    assert lines == sorted(lines) and len(lines) == len(set(lines)) >= 2, lines  # appended in order, never twice

    # The auditor is down; the log is cut back to its first checkpoint, the later checkpoints with it.
    cut = lines[0]
    async with superuser(fresh_db) as su:
        await su.execute("DELETE FROM auditor.audit_log WHERE seq > $1", cut)
        await su.execute("DELETE FROM auditor.audit_checkpoints WHERE to_seq > $1", cut)

    async with served(settings) as url:
        code, out = await cli_verify(url, token)
        assert code == 0, out  # the database alone cannot tell: a consistent, signed prefix
        code, out = await cli_verify(url, token, "--witness", str(witness))
        assert code == 1, out
        assert f"witnessed checkpoint 1..{lines[1]}" in out, out
    assert witnessed()[: len(lines)] == lines  # the restarted auditor appended, never rewrote the witness
