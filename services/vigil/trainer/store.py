"""Trainer SQL. Functions take a connection so callers choose the transaction.

Run states: ``queued`` (request recorded) → ``running`` (claimed by one worker, lease held) → ``succeeded`` /
``failed`` / ``cancelled`` / ``superseded`` (finished by its worker) or ``lost`` (lease expired, reaped by any
process). Every finishing update is conditional on ``state = 'running' AND worker = me``, so a run has exactly one
outcome even if a reaper and a slow worker race; and a partial unique index allows one ``succeeded`` run per job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict

from vigil.events import Envelope
from vigil.events.catalog.training import Executor, TrainingRequested

RunState = Literal["queued", "running", "succeeded", "failed", "lost", "cancelled", "superseded"]


class RunBase(BaseModel):
    """One attempt of a training job: what it runs, where, and how it ended."""

    run_id: str
    job_id: str
    attempt: int
    model: str
    state: RunState
    entrypoint: str
    params: dict[str, Any]
    datasets: list[dict[str, Any]]
    code_version: str
    priority: int
    timeout_s: float
    memory_limit_mb: int | None
    #: Where the run executes: the request's executor, or (once a worker claimed it) what the worker resolved;
    #: null while queued without one, or when the run was refused before it had a valid one.
    executor: Executor | None
    worker: str | None
    lease_expires_at: datetime | None
    stop_requested: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    exit_code: int | None
    failure_reason: str | None
    error: str
    metrics: dict[str, float]
    artifact_digest: str | None
    artifact_uri: str | None
    artifact_format: str | None
    artifact_size_bytes: int | None
    profile_digest: str | None
    profile_uri: str | None
    signature: list[dict[str, str]]
    environment: dict[str, Any] | None
    completed_event_id: str | None
    log_lines: int
    log_dropped: int
    metric_points: int


class Run(RunBase):
    """A row of ``runs``: the run plus the request envelope it came from and the reference profile's size."""

    model_config = ConfigDict(frozen=True)

    request: dict[str, Any]
    profile_size_bytes: int | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Run:
        return cls.model_construct(**{name: row[name] for name in cls.model_fields})

    def request_envelope(self) -> Envelope:
        return Envelope.model_validate(self.request)


async def enqueue_run(conn: asyncpg.Connection, run_id: str, request: Envelope, payload: TrainingRequested) -> bool:
    """Record a requested attempt as a queued run (idempotent per job × attempt); supersede older attempts."""
    inserted = await conn.fetchval(
        """
        INSERT INTO runs (run_id, job_id, attempt, model, request, entrypoint, params, datasets, code_version,
                          priority, timeout_s, memory_limit_mb, executor)
        VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::jsonb, $8::jsonb, $9, $10, $11, $12, $13)
        ON CONFLICT (job_id, attempt) DO NOTHING
        RETURNING true
        """,
        run_id,
        payload.job_id,
        payload.attempt,
        payload.model,
        request.model_dump(mode="json"),
        payload.entrypoint,
        payload.params,
        [d.model_dump(mode="json") for d in payload.datasets],
        payload.code_version,
        payload.priority,
        payload.timeout_s,
        payload.memory_limit_mb,
        payload.executor,
    )
    if inserted:
        await stop_runs(conn, payload.job_id, f"superseded by attempt {payload.attempt}", below_attempt=payload.attempt)
    return bool(inserted)


async def stop_runs(
    conn: asyncpg.Connection,
    job_id: str,
    why: str,
    *,
    below_attempt: int | None = None,
    attempt: int | None = None,
    cancelled: bool = False,
) -> None:
    """Queued runs of the job end at once; running ones get a stop request their worker acts on."""
    queued_state = "cancelled" if cancelled else "superseded"
    where = "job_id = $1 AND ($2::int IS NULL OR attempt < $2) AND ($3::int IS NULL OR attempt = $3)"
    await conn.execute(
        f"UPDATE runs SET state = $4, error = $5, finished_at = now() WHERE {where} AND state = 'queued'",
        job_id,
        below_attempt,
        attempt,
        queued_state,
        why,
    )
    await conn.execute(
        f"UPDATE runs SET stop_requested = $4 WHERE {where} AND state = 'running' AND stop_requested IS NULL",
        job_id,
        below_attempt,
        attempt,
        why,
    )


async def claim_next(conn: asyncpg.Connection, worker: str, lease_s: float) -> Run | None:
    """Take the best queued run for this worker (FOR UPDATE SKIP LOCKED: each run goes to one worker only)."""
    row = await conn.fetchrow(
        """
        UPDATE runs SET state = 'running', worker = $1, started_at = now(),
            lease_expires_at = now() + make_interval(secs => $2)
        WHERE run_id = (
            SELECT run_id FROM runs WHERE state = 'queued' ORDER BY priority DESC, queued_at
            LIMIT 1 FOR UPDATE SKIP LOCKED
        )
        RETURNING *
        """,
        worker,
        lease_s,
    )
    return Run.from_row(row) if row else None


async def set_executor(conn: asyncpg.Connection, run_id: str, executor: Executor) -> None:
    """Record the executor a worker resolved for a run whose request named none (so the run's API shows it)."""
    await conn.execute("UPDATE runs SET executor = $2 WHERE run_id = $1 AND executor IS NULL", run_id, executor)


async def renew_lease(conn: asyncpg.Connection, run_id: str, worker: str, lease_s: float) -> tuple[bool, str | None]:
    """Extend the lease; returns (still ours, stop request)."""
    row = await conn.fetchrow(
        "UPDATE runs SET lease_expires_at = now() + make_interval(secs => $3) "
        "WHERE run_id = $1 AND worker = $2 AND state = 'running' RETURNING stop_requested",
        run_id,
        worker,
        lease_s,
    )
    return (row is not None, row["stop_requested"] if row else None)


async def finish(conn: asyncpg.Connection, run_id: str, worker: str, state: str, values: dict[str, Any]) -> Run | None:
    """Finish a run this worker still owns; None if it was reaped meanwhile (its outcome is then not ours to give)."""
    cols = list(values)
    sets = ", ".join(f"{c} = ${i + 4}" for i, c in enumerate(cols))
    row = await conn.fetchrow(
        f"UPDATE runs SET state = $3, finished_at = now(){', ' + sets if sets else ''} "
        "WHERE run_id = $1 AND worker = $2 AND state = 'running' RETURNING *",
        run_id,
        worker,
        state,
        *values.values(),
    )
    return Run.from_row(row) if row else None


async def expired_runs(conn: asyncpg.Connection, limit: int) -> list[Run]:
    rows = await conn.fetch(
        "SELECT * FROM runs WHERE state = 'running' AND lease_expires_at < now() ORDER BY lease_expires_at "
        "LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [Run.from_row(r) for r in rows]


async def mark_lost(conn: asyncpg.Connection, run_id: str, error: str) -> Run:
    row = await conn.fetchrow(
        "UPDATE runs SET state = 'lost', failure_reason = 'worker_lost', error = $2, finished_at = now(), "
        "duration_s = EXTRACT(EPOCH FROM now() - started_at) WHERE run_id = $1 RETURNING *",
        run_id,
        error,
    )
    return Run.from_row(row)


async def append_logs(conn: asyncpg.Connection, run_id: str, lines: list[tuple[str, str]], max_lines: int) -> None:
    """Append log lines up to ``max_lines`` per run; beyond it lines are only counted (``log_dropped``)."""
    current = await conn.fetchrow("SELECT log_lines FROM runs WHERE run_id = $1 FOR UPDATE", run_id)
    if current is None:
        return
    start = int(current["log_lines"])
    keep = lines[: max(0, max_lines - start)]
    if keep:
        await conn.executemany(
            "INSERT INTO run_logs (run_id, seq, stream, line) VALUES ($1, $2, $3, $4)",
            [(run_id, start + i + 1, stream, line.replace("\x00", "")) for i, (stream, line) in enumerate(keep)],
        )
    await conn.execute(
        "UPDATE runs SET log_lines = log_lines + $2, log_dropped = log_dropped + $3 WHERE run_id = $1",
        run_id,
        len(keep),
        len(lines) - len(keep),
    )


async def append_metrics(conn: asyncpg.Connection, run_id: str, points: list[dict[str, Any]], max_points: int) -> None:
    current = await conn.fetchval("SELECT metric_points FROM runs WHERE run_id = $1 FOR UPDATE", run_id)
    if current is None:
        return
    keep = points[: max(0, max_points - int(current))]
    rows = []
    for p in keep:
        step = p.get("step")
        rows.append(
            (run_id, str(p.get("name", ""))[:128], int(step) if isinstance(step, int) else None, float(p["value"]))
        )
    if rows:
        await conn.executemany("INSERT INTO run_metrics (run_id, name, step, value) VALUES ($1, $2, $3, $4)", rows)
        await conn.execute("UPDATE runs SET metric_points = metric_points + $2 WHERE run_id = $1", run_id, len(rows))


async def get_run(conn: asyncpg.Connection, run_id: str) -> Run | None:
    row = await conn.fetchrow("SELECT * FROM runs WHERE run_id = $1", run_id)
    return Run.from_row(row) if row else None


async def list_runs(
    conn: asyncpg.Connection,
    *,
    job_id: str | None,
    model: str | None,
    state: str | None,
    limit: int,
    after: str | None,
) -> list[Run]:
    rows = await conn.fetch(
        "SELECT * FROM runs WHERE ($1::text IS NULL OR job_id = $1) AND ($2::text IS NULL OR model = $2) "
        "AND ($3::text IS NULL OR state = $3) AND ($4::text IS NULL OR run_id > $4) ORDER BY run_id LIMIT $5",
        job_id,
        model,
        state,
        after,
        limit,
    )
    return [Run.from_row(r) for r in rows]


async def run_logs(conn: asyncpg.Connection, run_id: str, *, after: int, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT seq, stream, line, at FROM run_logs WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        run_id,
        after,
        limit,
    )
    return [dict(r) for r in rows]


async def run_metrics(
    conn: asyncpg.Connection, run_id: str, *, name: str | None, after: int, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, name, step, value, at FROM run_metrics WHERE run_id = $1 AND ($2::text IS NULL OR name = $2) "
        "AND id > $3 ORDER BY id LIMIT $4",
        run_id,
        name,
        after,
        limit,
    )
    return [dict(r) for r in rows]
