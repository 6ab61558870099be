"""Moves on deployments, shared by the event handlers, the API and the ticker.

Every move runs in the caller's transaction: lock the deployment row (``FOR UPDATE`` serialises handlers, API and
ticker, across replicas too), load the rollout, apply the pure state machine, emit its events through the outbox,
persist the rollout, derive what the gateway serves, and record the move in ``rollout_history``. A move that does
not fit is recorded as rejected (with the reason) and reported to the caller, never applied.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import asyncpg
from prometheus_client import Counter

from vigil.bus.context import Emitter
from vigil.deployer import store
from vigil.deployer.rollout import InvalidTransition, Phase, RollbackTrigger, Rollout
from vigil.events import Envelope, new_id
from vigil.events.catalog.common import Evidence
from vigil.events.catalog.deployments import DeploymentPromoted, DeploymentRolledBack

log = logging.getLogger(__name__)

SERVICE_ACTOR = "service:deployer"

REJECTED_MOVES = Counter("vigil_deployer_rejected_moves_total", "Rollout moves rejected as out of order", ["action"])

#: Loads a version's artifact and makes a smoke prediction; raises with a reason when the candidate is unusable.
Warmer = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    """What a move did: ``accepted`` with its rollout, or rejected with ``error`` (and an HTTP-ish kind). An
    accepted start may carry an ``error`` too: the rollout was recorded but aborted at once (candidate unusable)."""

    accepted: bool
    error: str = ""
    kind: Literal["ok", "conflict", "not_found"] = "ok"
    rollout_id: str | None = None
    events: tuple[Envelope, ...] = ()


def _rejected(error: str, kind: Literal["conflict", "not_found"] = "conflict") -> Outcome:
    return Outcome(False, error, kind)


async def _emit_all(emitter: Emitter, rollout: Rollout, cause: Envelope | None, actor: str) -> list[Envelope]:
    """Emit a move's events as a chain (each caused by the one before), so the "why" walk passes every step."""
    emitted: list[Envelope] = []
    for payload in rollout.take_events():
        cause = await emitter.emit(payload, cause=cause, actor=actor)
        emitted.append(cause)
    return emitted


async def _sync(conn: asyncpg.Connection, deployment: asyncpg.Record, rollout: Rollout) -> None:
    """Derive the deployment's serving state from its rollout."""
    if rollout.active:
        await store.set_serving(
            conn,
            deployment["name"],
            stable_version=rollout.stable_version,
            candidate_version=rollout.candidate_version,
            candidate_weight=rollout.weight if rollout.strategy == "canary" else 0,
            mirror=rollout.mirrors,
            previous_version=deployment["previous_version"],
            rollout_id=rollout.id,
            last_rollout_id=rollout.id,
        )
        return
    promoted = rollout.phase == Phase.PROMOTED
    await store.set_serving(
        conn,
        deployment["name"],
        stable_version=rollout.candidate_version if promoted else rollout.stable_version,
        candidate_version=None,
        candidate_weight=0,
        mirror=False,
        previous_version=rollout.stable_version if promoted else deployment["previous_version"],
        rollout_id=None,
        last_rollout_id=rollout.id,
    )
    if rollout.phase == Phase.ROLLED_BACK:
        await store.mark_version_failed(conn, rollout.model, rollout.candidate_version)


async def move(
    conn: asyncpg.Connection,
    emitter: Emitter,
    *,
    deployment: str,
    rollout_id: str,
    action: str,
    actor: str,
    apply: Callable[[Rollout], None],
    cause: Envelope | None = None,
    warm: Warmer | None = None,
) -> Outcome:
    """Apply one move (``apply``) to a rollout and persist everything it changed, or record why it was refused."""
    dep = await store.get_deployment(conn, deployment, lock=True)
    row = await store.get_rollout(conn, rollout_id, lock=True)
    if dep is None or row is None or row["deployment"] != deployment:
        return _rejected(f"no rollout {rollout_id} on deployment {deployment}", "not_found")
    rollout = store.rollout_from_row(row)
    before_phase, before_step = rollout.phase, rollout.step_index
    cause = cause or await store.last_event_of(conn, rollout_id)
    try:
        apply(rollout)
    except InvalidTransition as exc:
        REJECTED_MOVES.labels(action).inc()
        log.warning(
            "rollout move rejected",
            extra={"deployment": deployment, "rollout_id": rollout_id, "action": action, "reason": str(exc)},
        )
        await store.record_history(
            conn,
            rollout_id=rollout_id,
            action=action,
            accepted=False,
            from_phase=before_phase.value,
            to_phase=before_phase.value,
            step_index=before_step,
            actor=actor,
            detail=str(exc),
            cause_event_id=cause.id if cause is not None else None,
        )
        return Outcome(False, str(exc), "conflict", rollout_id)
    return await _persist(conn, emitter, dep, rollout, action, actor, cause, before_phase, before_step, warm)


async def _persist(
    conn: asyncpg.Connection,
    emitter: Emitter,
    dep: asyncpg.Record,
    rollout: Rollout,
    action: str,
    actor: str,
    cause: Envelope | None,
    before_phase: Phase,
    before_step: int,
    warm: Warmer | None,
) -> Outcome:
    emitted = await _emit_all(emitter, rollout, cause, actor)
    await store.save_rollout(conn, rollout, last_event=emitted[-1] if emitted else None)
    await _sync(conn, dep, rollout)
    await store.record_history(
        conn,
        rollout_id=rollout.id,
        action=action,
        accepted=True,
        from_phase=before_phase.value,
        to_phase=rollout.phase.value,
        step_index=before_step,
        actor=actor,
        cause_event_id=cause.id if cause is not None else None,
        event_ids=[e.id for e in emitted],
    )
    if not rollout.active and warm is not None:
        await start_pending(conn, emitter, dep["name"], warm=warm)
    return Outcome(True, rollout_id=rollout.id, events=tuple(emitted))


async def start_rollout(
    conn: asyncpg.Connection,
    emitter: Emitter,
    *,
    deployment: str,
    version: int,
    trigger: Literal["auto", "api"],
    actor: str,
    warm: Warmer,
) -> Outcome:
    """Roll ``version`` out on ``deployment`` under its strategy (or serve it at once if nothing serves yet).

    Automatic starts queue behind a rollout in flight (``pending_version``) and skip failed or older versions; API
    starts are refused in those cases with the reason.
    """
    # Warm first, without the row lock: loading an artifact can take seconds, and the lock serialises every move on
    # the deployment (verdicts, ticks, API calls). The deployment's model never changes, so the version read here
    # is the one checked under the lock below; a cache hit makes the warm-up cheap if it is needed again.
    peek = await store.get_deployment(conn, deployment)
    if peek is None:
        return _rejected(f"no deployment {deployment}", "not_found")
    mv = await store.get_model_version(conn, peek["model"], version)
    if mv is None:
        return _rejected(f"model {peek['model']} has no registered version {version}", "not_found")
    try:
        await warm(mv["artifact_digest"])
        warm_error = ""
    except Exception as exc:  # any failure to load or predict disqualifies the candidate
        warm_error = f"candidate v{version} failed to warm: {exc}"[:1000]
        log.warning("candidate failed to warm", extra={"deployment": deployment, "version": version})

    dep = await store.get_deployment(conn, deployment, lock=True)
    if dep is None:
        return _rejected(f"no deployment {deployment}", "not_found")
    # Versions are immutable but their status is not: a rollback (under this lock) may have marked this one failed
    # since it was read above, so read it again now that nothing else can.
    mv = await store.get_model_version(conn, dep["model"], version) or mv
    registered = Envelope.model_validate(mv["registered_event"])
    if dep["rollout_id"] is not None:
        if trigger == "auto":
            if version > (dep["pending_version"] or 0):
                await store.set_pending(conn, deployment, version)
            return _rejected(f"rollout {dep['rollout_id']} is in progress; version {version} waits as pending")
        return _rejected(f"rollout {dep['rollout_id']} is in progress on {deployment}; promote, abort or roll it back")
    stable = dep["stable_version"]
    if version == stable:
        return _rejected(f"version {version} already serves {deployment}")
    if trigger == "auto" and (mv["status"] == "failed" or (stable is not None and version < stable)):
        return _rejected(f"version {version} is failed or older than stable {stable}; not rolled out automatically")
    if dep["pending_version"] is not None and dep["pending_version"] <= version:
        await store.set_pending(conn, deployment, None)

    if stable is None:
        if warm_error:
            return _rejected(warm_error)
        # Nothing serves yet: the first version serves at once (there is no stable to compare it with).
        promoted = await emitter.emit(
            DeploymentPromoted(
                deployment=deployment,
                model=dep["model"],
                version=version,
                previous_version=None,
                approved_by=actor if trigger == "api" else None,
            ),
            cause=registered,
            actor=actor,
        )
        await store.set_serving(
            conn,
            deployment,
            stable_version=version,
            candidate_version=None,
            candidate_weight=0,
            mirror=False,
            previous_version=None,
            rollout_id=None,
            last_rollout_id=dep["last_rollout_id"],
        )
        return Outcome(True, events=(promoted,))

    rollout = Rollout(
        id=new_id(),
        deployment=deployment,
        model=dep["model"],
        strategy=dep["strategy"],
        stable_version=stable,
        candidate_version=version,
        steps=store.steps_of(dep["steps"]),
        min_samples=dep["min_samples"],
    )
    await store.insert_rollout(conn, rollout, trigger=trigger, started_by=actor)
    rollout.start(trigger)
    if warm_error:
        rollout.abort(warm_error)  # recorded and announced; the candidate never got traffic
    outcome = await _persist(conn, emitter, dep, rollout, "start", actor, registered, Phase.PROGRESSING, 0, warm)
    return replace(outcome, error=warm_error) if warm_error else outcome


async def start_pending(conn: asyncpg.Connection, emitter: Emitter, deployment: str, *, warm: Warmer) -> None:
    """After a rollout ends, an auto deployment starts the version that waited behind it."""
    dep = await store.get_deployment(conn, deployment, lock=True)
    if dep is None or dep["auto_deploy"] != "auto" or dep["pending_version"] is None or dep["rollout_id"]:
        return
    outcome = await start_rollout(
        conn,
        emitter,
        deployment=deployment,
        version=dep["pending_version"],
        trigger="auto",
        actor=SERVICE_ACTOR,
        warm=warm,
    )
    if not outcome.accepted:
        await store.set_pending(conn, deployment, None)


async def rollback(
    conn: asyncpg.Connection,
    emitter: Emitter,
    *,
    deployment: str,
    trigger: RollbackTrigger,
    reason: str,
    actor: str,
    rollout_id: str | None = None,
    candidate_version: int | None = None,
    evidence: Sequence[Evidence] = (),
    policy_version: int | None = None,
    cause: Envelope | None = None,
    warm: Warmer | None = None,
) -> Outcome:
    """Send all traffic back to stable.

    During a rollout: the candidate fails and the rollout ends ``rolled_back``. After a promotion (no rollout in
    flight, the targeted rollout is the last one and promoted): the previous stable — kept warm — serves again.
    ``rollout_id`` / ``candidate_version`` name what the requester judged; a request about anything else is
    refused as out of order.
    """
    dep = await store.get_deployment(conn, deployment, lock=True)
    if dep is None:
        return _rejected(f"no deployment {deployment}", "not_found")
    target = rollout_id or dep["rollout_id"] or dep["last_rollout_id"]
    if target is None:
        return _rejected(f"deployment {deployment} has no rollout to roll back", "conflict")
    row = await store.get_rollout(conn, target, lock=True)
    if row is None or row["deployment"] != deployment:
        return _rejected(f"no rollout {target} on deployment {deployment}", "not_found")
    if candidate_version is not None and row["candidate_version"] != candidate_version:
        return await refuse(
            conn,
            row,
            "rollback",
            actor,
            cause,
            f"rollback names v{candidate_version}, but rollout {target} rolls out v{row['candidate_version']}",
        )
    request_id = cause.id if cause is not None and trigger != "api" else None

    if row["phase"] == Phase.PROMOTED.value:
        if (
            target != dep["last_rollout_id"]
            or dep["stable_version"] != row["candidate_version"]
            or dep["previous_version"] != row["stable_version"]
        ):
            return await refuse(conn, row, "rollback", actor, cause, f"rollout {target} is no longer what serves")
        return await _revert(
            conn, emitter, dep, row, trigger, reason, actor, evidence, policy_version, cause, request_id
        )

    def apply(r: Rollout) -> None:
        r.rollback(trigger, reason, evidence=evidence, policy_version=policy_version, request_event_id=request_id)

    return await move(
        conn,
        emitter,
        deployment=deployment,
        rollout_id=target,
        action="rollback",
        actor=actor,
        apply=apply,
        cause=cause,
        warm=warm,
    )


async def refuse(
    conn: asyncpg.Connection, row: asyncpg.Record, action: str, actor: str, cause: Envelope | None, reason: str
) -> Outcome:
    """Record a move on ``row``'s rollout as rejected (out of order or about something else), loudly."""
    REJECTED_MOVES.labels(action).inc()
    log.warning("rollout move rejected", extra={"rollout_id": row["id"], "action": action, "reason": reason})
    await store.record_history(
        conn,
        rollout_id=row["id"],
        action=action,
        accepted=False,
        from_phase=row["phase"],
        to_phase=row["phase"],
        step_index=row["step_index"],
        actor=actor,
        detail=reason,
        cause_event_id=cause.id if cause is not None else None,
    )
    return Outcome(False, reason, "conflict", row["id"])


async def _revert(
    conn: asyncpg.Connection,
    emitter: Emitter,
    dep: asyncpg.Record,
    row: asyncpg.Record,
    trigger: RollbackTrigger,
    reason: str,
    actor: str,
    evidence: Sequence[Evidence],
    policy_version: int | None,
    cause: Envelope | None,
    request_id: str | None,
) -> Outcome:
    """Blue-green's instant rollback after a switch: the previous stable serves again, the promoted one failed."""
    cause = cause or await store.last_event_of(conn, row["id"])
    event = await emitter.emit(
        DeploymentRolledBack(
            deployment=dep["name"],
            model=dep["model"],
            rollout_id=row["id"],
            stable_version=row["stable_version"],
            failed_version=row["candidate_version"],
            trigger=trigger,
            reason=reason[:1024],
            request_event_id=request_id,
            evidence=list(evidence)[:256],
            policy_version=policy_version,
        ),
        cause=cause,
        actor=actor,
    )
    await store.set_serving(
        conn,
        dep["name"],
        stable_version=row["stable_version"],
        candidate_version=None,
        candidate_weight=0,
        mirror=False,
        previous_version=None,
        rollout_id=None,
        last_rollout_id=row["id"],
    )
    await store.mark_version_failed(conn, dep["model"], row["candidate_version"])
    await store.record_history(
        conn,
        rollout_id=row["id"],
        action="revert",
        accepted=True,
        from_phase=row["phase"],
        to_phase=row["phase"],
        step_index=row["step_index"],
        actor=actor,
        detail=reason,
        cause_event_id=cause.id if cause is not None else None,
        event_ids=[event.id],
    )
    return Outcome(True, rollout_id=row["id"], events=(event,))
