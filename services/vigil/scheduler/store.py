"""Scheduler SQL. Functions take a connection so callers choose the transaction.

Policies and dataset versions are plain rows. Jobs change state only through :func:`move`, which locks the job row,
asks :mod:`vigil.scheduler.machine` whether the transition is allowed, applies it, records it in
``job_transitions`` and emits ``job.state_changed`` through the outbox — all in the caller's transaction. A refused
transition is recorded in ``rejected_transitions`` and logged; it never raises, so a late or duplicate event is
settled (and its inbox row written) instead of being retried into the dead-letter topic.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vigil.bus.context import Emitter
from vigil.events import Envelope, canonical_json, new_id
from vigil.events.catalog.common import NAME_PATTERN, Params
from vigil.events.catalog.training import ENTRYPOINT_PATTERN, Executor, JobState, JobStateChanged
from vigil.scheduler.cron import valid_cron
from vigil.scheduler.machine import ACTIVE, TERMINAL, InvalidTransition, check_event_transition, check_transition
from vigil.service.bounds import INT_MAX, SafeText

log = logging.getLogger(__name__)

REJECTED = Counter(
    "vigil_scheduler_rejected_transitions_total", "Job transitions refused by the state machine", ["requested"]
)
TRANSITIONS = Counter("vigil_scheduler_transitions_total", "Job transitions applied", ["to_state"])

SERVICE_ACTOR = "service:scheduler"


DatasetName = Annotated[str, Field(pattern=NAME_PATTERN)]


class PolicyBase(BaseModel):
    """How and when a model is retrained: what a scientist sets (``PUT /v1/policies/{model}``)."""

    datasets: list[DatasetName] = Field(min_length=1, max_length=64, description="datasets the model trains on")
    entrypoint: str = Field(pattern=ENTRYPOINT_PATTERN, description="training function, `package.module:function`")
    params: Params = Field(default_factory=dict)
    code_version: Annotated[SafeText, Field(min_length=1, max_length=128)]
    debounce_s: float = Field(default=60.0, ge=0, le=7 * 86400, description="coalescing window after a signal")
    cron: str | None = Field(default=None, max_length=128, description="5-field cron schedule (UTC)")
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_concurrent: int = Field(default=1, ge=1, le=1000, description="jobs of this model scheduled or running")
    cooldown_s: float = Field(default=0.0, ge=0, le=30 * 86400, description="pause after a job failed")
    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff_base_s: float = Field(default=30.0, ge=0, le=86400)
    backoff_max_s: float = Field(default=3600.0, ge=0, le=7 * 86400)
    timeout_s: float = Field(default=3600.0, gt=0, le=604800)
    memory_limit_mb: int | None = Field(default=None, ge=64, le=INT_MAX)
    executor: Executor | None = Field(
        default=None,
        description="where runs execute: `local` (the trainer's host) or `ray` (its Ray cluster); null = the "
        "trainer's default (VIGIL_TRAINER_EXECUTOR)",
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _cron_parses(self) -> PolicyBase:
        if self.cron is not None and not valid_cron(self.cron):
            raise ValueError(f"not a valid cron expression: {self.cron!r}")
        return self


class Policy(PolicyBase):
    """A row of ``policies``: the settings plus what the scheduler keeps (cron and cooldown times, revision)."""

    model_config = ConfigDict(frozen=True)

    model: str
    next_cron_at: datetime | None
    cooldown_until: datetime | None
    revision: int
    updated_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Policy:
        return cls.model_construct(**{name: row[name] for name in cls.model_fields})


class JobBase(BaseModel):
    """A training job: what it trains on and with what, and where it stands."""

    id: str
    model: str
    idempotency_key: str
    state: JobState
    attempt: int
    max_attempts: int
    priority: int
    trigger: str
    trigger_event_ids: list[str]
    datasets: list[dict[str, Any]]
    entrypoint: str
    params: dict[str, Any]
    code_version: str
    timeout_s: float
    memory_limit_mb: int | None
    executor: Executor | None
    next_attempt_at: datetime
    state_since: datetime
    deadline_at: datetime | None
    run_id: str | None
    last_reason: str
    result: dict[str, Any] | None
    created_by: str
    created_at: datetime
    finished_at: datetime | None


class Job(JobBase):
    """A row of ``jobs``: the job plus its retry backoff and the event that created it."""

    model_config = ConfigDict(frozen=True)

    backoff_base_s: float
    backoff_max_s: float
    cause: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Job:
        return cls.model_construct(**{name: row[name] for name in cls.model_fields})

    def cause_envelope(self) -> Envelope | None:
        """The event that created the job (events the ticker emits for it are caused by it)."""
        return Envelope.model_validate(self.cause) if self.cause else None


def idempotency_key(model: str, datasets: list[dict[str, Any]], code_version: str, params: dict[str, Any]) -> str:
    """sha256 of the job's inputs: model, dataset digests (order-free), code version and params (canonical JSON).

    Two requests with the same inputs would train the same model, so they are one job. Where it trains (the
    policy's ``executor``), its limits and its priority are not inputs: changing them alone makes no new job.
    """
    body = {
        "model": model,
        "datasets": sorted([d["dataset"], d["content_digest"]] for d in datasets),
        "code_version": code_version,
        "params": params,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


# -- policies ------------------------------------------------------------------------------------------------------


async def upsert_policy(conn: asyncpg.Connection, values: dict[str, Any], *, actor: str) -> Policy:
    """Create or replace a model's policy; ``revision`` counts the replacements."""
    cols = [
        "datasets", "entrypoint", "params", "code_version", "debounce_s", "cron", "next_cron_at", "priority",
        "max_concurrent", "cooldown_s", "max_attempts", "backoff_base_s", "backoff_max_s", "timeout_s",
        "memory_limit_mb", "executor", "enabled",
    ]  # fmt: skip
    args = [values[c] for c in cols]
    placeholders = ", ".join(f"${i + 2}" for i in range(len(cols)))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
    row = await conn.fetchrow(
        f"""
        INSERT INTO policies (model, {", ".join(cols)}, updated_by) VALUES ($1, {placeholders}, ${len(cols) + 2})
        ON CONFLICT (model) DO UPDATE SET {updates}, updated_by = EXCLUDED.updated_by,
            revision = policies.revision + 1, updated_at = now()
        RETURNING *
        """,
        values["model"],
        *args,
        actor,
    )
    return Policy.from_row(row)


async def get_policy(conn: asyncpg.Connection, model: str, *, lock: bool = False) -> Policy | None:
    row = await conn.fetchrow("SELECT * FROM policies WHERE model = $1" + (" FOR UPDATE" if lock else ""), model)
    return Policy.from_row(row) if row else None


async def list_policies(conn: asyncpg.Connection, *, limit: int, after: str | None) -> list[Policy]:
    rows = await conn.fetch(
        "SELECT * FROM policies WHERE ($1::text IS NULL OR model > $1) ORDER BY model LIMIT $2", after, limit
    )
    return [Policy.from_row(r) for r in rows]


async def delete_policy(conn: asyncpg.Connection, model: str) -> bool:
    deleted = await conn.fetchval("DELETE FROM policies WHERE model = $1 RETURNING model", model)
    if deleted is not None:
        await conn.execute(
            "UPDATE triggers SET state = 'skipped', note = 'policy deleted', closed_at = now() "
            "WHERE model = $1 AND state = 'open'",
            model,
        )
    return deleted is not None


async def policies_for_dataset(conn: asyncpg.Connection, dataset: str) -> list[Policy]:
    rows = await conn.fetch("SELECT * FROM policies WHERE enabled AND $1 = ANY(datasets) ORDER BY model", dataset)
    return [Policy.from_row(r) for r in rows]


async def start_cooldown(conn: asyncpg.Connection, model: str) -> None:
    await conn.execute(
        "UPDATE policies SET cooldown_until = now() + make_interval(secs => cooldown_s) "
        "WHERE model = $1 AND cooldown_s > 0",
        model,
    )


# -- dataset versions and triggers ---------------------------------------------------------------------------------


async def record_dataset_version(
    conn: asyncpg.Connection, dataset: str, version: int, digest: str, uri: str, event_id: str
) -> bool:
    """Remember the newest version of a dataset; an older version arriving late does not replace it."""
    changed = await conn.fetchval(
        """
        INSERT INTO dataset_versions (dataset, version, content_digest, uri, event_id) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (dataset) DO UPDATE SET version = EXCLUDED.version, content_digest = EXCLUDED.content_digest,
            uri = EXCLUDED.uri, event_id = EXCLUDED.event_id, updated_at = now()
        WHERE dataset_versions.version < EXCLUDED.version
        RETURNING true
        """,
        dataset,
        version,
        digest,
        uri,
        event_id,
    )
    return bool(changed)


async def dataset_refs(conn: asyncpg.Connection, datasets: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Latest known version of each dataset as a ``DatasetRef`` dict, and the names with no known version."""
    rows = await conn.fetch("SELECT * FROM dataset_versions WHERE dataset = ANY($1::text[])", datasets)
    found = {r["dataset"]: r for r in rows}
    refs = [
        {"dataset": d, "version": found[d]["version"], "content_digest": found[d]["content_digest"],
         "uri": found[d]["uri"]}
        for d in datasets
        if d in found
    ]  # fmt: skip
    return refs, [d for d in datasets if d not in found]


async def signal(
    conn: asyncpg.Connection,
    model: str,
    kind: str,
    *,
    debounce_s: float,
    event_id: str | None,
    cause: Envelope | None,
) -> int:
    """Open the model's debounce window (due ``debounce_s`` from now) or add this signal to the open one.

    The window is fixed from its first signal, so a steady stream of updates cannot postpone training forever;
    the job that fires uses the newest dataset versions known at that time.
    """
    trigger_id: int = await conn.fetchval(
        """
        INSERT INTO triggers (model, kind, due_at, event_ids, cause)
        VALUES ($1, $2, now() + make_interval(secs => $3), $4::text[], $5::jsonb)
        ON CONFLICT (model) WHERE state = 'open' DO UPDATE SET
            event_ids = (triggers.event_ids || EXCLUDED.event_ids)[1:256],
            signals = triggers.signals + 1,
            cause = COALESCE(EXCLUDED.cause, triggers.cause)
        RETURNING id
        """,
        model,
        kind,
        debounce_s,
        [event_id] if event_id else [],
        cause.model_dump(mode="json") if cause is not None else None,
    )
    return trigger_id


async def due_triggers(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM triggers WHERE state = 'open' AND due_at <= now() ORDER BY due_at LIMIT $1 "
            "FOR UPDATE SKIP LOCKED",
            limit,
        )
    )


async def close_trigger(
    conn: asyncpg.Connection, trigger_id: int, state: str, *, job_id: str | None = None, note: str = ""
) -> None:
    await conn.execute(
        "UPDATE triggers SET state = $2, job_id = $3, note = $4, closed_at = now() WHERE id = $1",
        trigger_id,
        state,
        job_id,
        note,
    )


async def list_triggers(conn: asyncpg.Connection, model: str | None, *, limit: int, after: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, model, kind, state, opened_at, due_at, event_ids, signals, job_id, note, closed_at "
        "FROM triggers WHERE ($1::text IS NULL OR model = $1) AND id > $2 ORDER BY id LIMIT $3",
        model,
        after,
        limit,
    )
    return [dict(r) for r in rows]


# -- jobs ----------------------------------------------------------------------------------------------------------


async def create_job(
    conn: asyncpg.Connection,
    emitter: Emitter,
    policy: Policy,
    datasets: list[dict[str, Any]],
    *,
    trigger: str,
    trigger_event_ids: list[str],
    cause: Envelope | None,
    actor: str,
    params: dict[str, Any] | None = None,
    executor: Executor | None = None,
    key_salt: str | None = None,
) -> tuple[Job, bool]:
    """Create the job for these inputs unless a live or succeeded job with the same idempotency key exists (a
    failed or cancelled one does not block a new attempt). Returns (job, created). ``params`` override the
    policy's params, ``executor`` (when set) the policy's executor."""
    params = {**policy.params, **(params or {})}
    key = idempotency_key(policy.model, datasets, policy.code_version, params)
    if key_salt is not None:  # a forced re-run: same inputs, deliberately a new job
        key = hashlib.sha256(f"{key}:{key_salt}".encode()).hexdigest()
    job_id = new_id()
    row = await conn.fetchrow(
        """
        INSERT INTO jobs (id, model, idempotency_key, state, max_attempts, priority, trigger, trigger_event_ids,
                          datasets, entrypoint, params, code_version, timeout_s, memory_limit_mb, backoff_base_s,
                          backoff_max_s, cause, created_by, executor)
        VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7::text[], $8::jsonb, $9, $10::jsonb, $11, $12, $13, $14, $15,
                $16::jsonb, $17, $18)
        ON CONFLICT (idempotency_key) WHERE state NOT IN ('failed', 'cancelled') DO NOTHING
        RETURNING *
        """,
        job_id,
        policy.model,
        key,
        policy.max_attempts,
        policy.priority,
        trigger,
        trigger_event_ids[-256:],
        datasets,
        policy.entrypoint,
        params,
        policy.code_version,
        policy.timeout_s,
        policy.memory_limit_mb,
        policy.backoff_base_s,
        policy.backoff_max_s,
        cause.model_dump(mode="json") if cause is not None else None,
        actor,
        executor or policy.executor,
    )
    if row is None:
        existing = await conn.fetchrow(
            "SELECT * FROM jobs WHERE idempotency_key = $1 AND state NOT IN ('failed', 'cancelled')", key
        )
        if existing is None:  # the live one failed between our insert and this read: try again
            return await create_job(
                conn,
                emitter,
                policy,
                datasets,
                trigger=trigger,
                trigger_event_ids=trigger_event_ids,
                cause=cause,
                actor=actor,
                params=params,
                executor=executor,
                key_salt=key_salt,
            )
        return Job.from_row(existing), False
    job = Job.from_row(row)
    envelope = await emitter.emit(
        JobStateChanged(
            model=job.model,
            job_id=job.id,
            attempt=job.attempt,
            from_state=None,
            to_state="pending",
            reason=f"{trigger} trigger ({len(trigger_event_ids)} signal(s))",
        ),
        cause=cause,
        actor=actor,
    )
    await _record_transition(conn, job, None, "pending", job.attempt, envelope, f"created by {trigger} trigger")
    TRANSITIONS.labels("pending").inc()
    return job, True


async def get_job(conn: asyncpg.Connection, job_id: str, *, lock: bool = False) -> Job | None:
    row = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1" + (" FOR UPDATE" if lock else ""), job_id)
    return Job.from_row(row) if row else None


async def list_jobs(
    conn: asyncpg.Connection, *, model: str | None, state: str | None, limit: int, after: str | None
) -> list[Job]:
    rows = await conn.fetch(
        "SELECT * FROM jobs WHERE ($1::text IS NULL OR model = $1) AND ($2::text IS NULL OR state = $2) "
        "AND ($3::text IS NULL OR id > $3) ORDER BY id LIMIT $4",
        model,
        state,
        after,
        limit,
    )
    return [Job.from_row(r) for r in rows]


async def transitions_of(conn: asyncpg.Connection, job_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM job_transitions WHERE job_id = $1 ORDER BY id", job_id)
    return [dict(r) for r in rows]


async def rejections(conn: asyncpg.Connection, job_id: str | None, *, limit: int, after: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM rejected_transitions WHERE ($1::text IS NULL OR job_id = $1) AND id > $2 ORDER BY id LIMIT $3",
        job_id,
        after,
        limit,
    )
    return [dict(r) for r in rows]


async def _record_transition(
    conn: asyncpg.Connection,
    job: Job,
    from_state: JobState | None,
    to_state: JobState,
    attempt: int,
    envelope: Envelope,
    reason: str,
) -> None:
    await conn.execute(
        "INSERT INTO job_transitions (job_id, from_state, to_state, attempt, reason, event_id, actor) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        job.id,
        from_state,
        to_state,
        attempt,
        reason[:1024],
        envelope.id,
        envelope.actor,
    )


async def _reject(
    conn: asyncpg.Connection,
    job_id: str,
    current: str,
    requested: JobState,
    attempt: int | None,
    exc: InvalidTransition | str,
    event: Envelope | None,
) -> None:
    detail = str(exc)
    log.warning(
        "job transition refused",
        extra={"job_id": job_id, "from_state": current, "to_state": requested, "attempt": attempt, "detail": detail,
               "event_id": event.id if event else None, "event_type": event.type if event else None},
    )  # fmt: skip
    REJECTED.labels(requested).inc()
    await conn.execute(
        "INSERT INTO rejected_transitions (job_id, current_state, requested_state, attempt, event_id, event_type, "
        "detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        job_id,
        current,
        requested,
        attempt,
        event.id if event else None,
        event.type if event else None,
        detail[:2048],
    )


async def move(
    conn: asyncpg.Connection,
    emitter: Emitter,
    job_id: str,
    to_state: JobState,
    *,
    reason: str,
    cause: Envelope | None,
    actor: str | None = None,
    event_attempt: int | None = None,
    deadline_in_s: float | None = None,
    retry_in_s: float = 0.0,
    run_id: str | None = None,
    result: dict[str, Any] | None = None,
) -> Job | None:
    """Apply one transition of a job, record it and emit ``job.state_changed``; None if it was refused (recorded).

    ``event_attempt`` (set for trainer reports) must equal the job's current attempt. Going back to ``pending``
    opens the next attempt, due ``retry_in_s`` from now. ``deadline_in_s`` arms the timeout of ``scheduled`` /
    ``running``.
    """
    job = await get_job(conn, job_id, lock=True)
    if job is None:
        await _reject(conn, job_id, "unknown", to_state, event_attempt, "no such job", cause)
        return None
    try:
        if event_attempt is not None:
            check_event_transition(job.state, job.attempt, to_state, event_attempt)
        else:
            check_transition(job.state, to_state)
    except InvalidTransition as exc:
        await _reject(conn, job.id, job.state, to_state, event_attempt, exc, cause)
        return None
    attempt = job.attempt + 1 if to_state == "pending" else job.attempt
    row = await conn.fetchrow(
        """
        UPDATE jobs SET state = $2, attempt = $3, state_since = now(), last_reason = $4,
            deadline_at = CASE WHEN $5::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $5) END,
            next_attempt_at = CASE WHEN $2 = 'pending' THEN now() + make_interval(secs => $6) ELSE next_attempt_at END,
            run_id = COALESCE($7, run_id),
            result = COALESCE($8::jsonb, result),
            finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'cancelled') THEN now() ELSE NULL END
        WHERE id = $1
        RETURNING *
        """,
        job.id,
        to_state,
        attempt,
        reason[:1024],
        deadline_in_s if to_state in ACTIVE else None,
        retry_in_s,
        run_id,
        result,
    )
    moved = Job.from_row(row)
    envelope = await emitter.emit(
        JobStateChanged(
            model=job.model,
            job_id=job.id,
            attempt=job.attempt,
            from_state=job.state,
            to_state=to_state,
            reason=reason[:1024],
        ),
        cause=cause,
        actor=actor,
    )
    await _record_transition(conn, job, job.state, to_state, job.attempt, envelope, reason)
    if to_state == "failed":
        await start_cooldown(conn, job.model)
    TRANSITIONS.labels(to_state).inc()
    return moved


async def active_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Jobs in ``scheduled`` or ``running`` per model."""
    rows = await conn.fetch("SELECT model, count(*) AS n FROM jobs WHERE state IN ('scheduled', 'running') GROUP BY 1")
    return {r["model"]: int(r["n"]) for r in rows}


async def ready_jobs(conn: asyncpg.Connection, limit: int) -> list[tuple[Job, int]]:
    """Pending jobs whose backoff and model cooldown have passed, best priority first, with their model's cap."""
    rows = await conn.fetch(
        """
        SELECT j.*, COALESCE(p.max_concurrent, 1) AS model_cap FROM jobs j LEFT JOIN policies p USING (model)
        WHERE j.state = 'pending' AND j.next_attempt_at <= now()
          AND (p.cooldown_until IS NULL OR p.cooldown_until <= now())
        ORDER BY j.priority DESC, j.id
        LIMIT $1
        """,
        limit,
    )
    return [(Job.from_row(r), int(r["model_cap"])) for r in rows]


async def overdue_jobs(conn: asyncpg.Connection, limit: int) -> list[Job]:
    rows = await conn.fetch(
        "SELECT * FROM jobs WHERE state IN ('scheduled', 'running') AND deadline_at < now() ORDER BY deadline_at "
        "LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [Job.from_row(r) for r in rows]


def is_terminal(state: str) -> bool:
    return state in TERMINAL
