"""Deployer event handlers: one function per consumed event type, named after it.

Each runs in the consumer's transaction (inbox row + effects + outbox). A verdict or rollback request that does
not fit the rollout's state is recorded as a rejected move in ``rollout_history`` and logged as a warning: the
event is valid, only stale or out of order, so it is neither applied nor dead-lettered.
"""

from __future__ import annotations

import logging
from functools import partial

from vigil.bus.consumer import Handler
from vigil.bus.context import HandlerContext
from vigil.deployer import control, store
from vigil.deployer.control import SERVICE_ACTOR
from vigil.deployer.gateway import ModelCache
from vigil.deployer.rollout import Rollout
from vigil.events.catalog.deployments import AnalysisVerdict
from vigil.events.catalog.models import ModelVersionRegistered
from vigil.events.catalog.monitoring import RollbackRequested
from vigil.service.runtime import ServiceRuntime

log = logging.getLogger(__name__)


async def on_model_version_registered(
    ctx: HandlerContext, payload: ModelVersionRegistered, *, runtime: ServiceRuntime
) -> None:
    """A version passed its gates: remember it; deployments of its model with ``auto`` policy roll it out, the
    others note it as pending until someone starts the rollout through the API."""
    gates_passed = all(g.passed for g in payload.gates)
    created = await store.insert_model_version(
        ctx.conn,
        model=payload.model,
        version=payload.version,
        artifact_digest=payload.artifact_digest,
        artifact_format=payload.artifact_format,
        gates_passed=gates_passed,
        event=ctx.event,
    )
    if not created:
        return  # the same version announced again (a replayed event with a new id)
    for name in await store.deployments_of_model(ctx.conn, payload.model):
        dep = await store.get_deployment(ctx.conn, name, lock=True)
        assert dep is not None
        if dep["auto_deploy"] == "auto" and gates_passed:
            outcome = await control.start_rollout(
                ctx.conn,
                ctx.emitter,
                deployment=name,
                version=payload.version,
                trigger="auto",
                actor=SERVICE_ACTOR,
                warm=runtime.parts.get(ModelCache).warm,
            )
            if not outcome.accepted:
                log.info("no automatic rollout", extra={"deployment": name, "reason": outcome.error})
        elif payload.version > (dep["stable_version"] or 0) and payload.version > (dep["pending_version"] or 0):
            await store.set_pending(ctx.conn, name, payload.version)


async def on_analysis_verdict(ctx: HandlerContext, payload: AnalysisVerdict, *, runtime: ServiceRuntime) -> None:
    """The monitor judged an analysis window: Successful moves on, Failed rolls back, Inconclusive pauses."""
    dep = await store.get_deployment(ctx.conn, payload.deployment, lock=True)
    if dep is None:
        log.warning("verdict for an unknown deployment", extra={"deployment": payload.deployment})
        return
    target = payload.rollout_id or dep["rollout_id"]
    if target is None:
        log.warning("verdict with no rollout in flight", extra={"deployment": payload.deployment})
        return
    row = await store.get_rollout(ctx.conn, target)
    if row is not None and payload.step_index is None:
        # A verdict that does not name its step (the monitor judges windows, not steps) counts only for the step
        # that waits now, and only if its window began after that step did: a late or revised verdict about
        # traffic at an earlier weight must never pass a later analysis step.
        entered = await store.current_step_entered_at(ctx.conn, target)
        if entered is not None and payload.window.start < entered:
            await control.refuse(
                ctx.conn,
                row,
                "verdict",
                ctx.event.actor,
                ctx.event,
                f"verdict about a window starting {payload.window.start.isoformat()}, before step "
                f"{row['step_index']} began at {entered.isoformat()}",
            )
            return
    if row is not None and row["candidate_version"] != payload.candidate_version:
        await control.refuse(
            ctx.conn,
            row,
            "verdict",
            ctx.event.actor,
            ctx.event,
            f"verdict about v{payload.candidate_version}, but rollout {target} rolls out v{row['candidate_version']}",
        )
        return

    def apply(rollout: Rollout) -> None:
        rollout.verdict(
            payload.verdict,
            candidate_samples=payload.candidate_samples,
            stable_samples=payload.stable_samples if payload.stable_version is not None else rollout.min_samples,
            step_index=payload.step_index,
            event_id=ctx.event.id,
            evidence=payload.evidence,
            policy_version=payload.policy_version,
            reason=payload.reason,
        )

    await control.move(
        ctx.conn,
        ctx.emitter,
        deployment=payload.deployment,
        rollout_id=target,
        action=f"verdict:{payload.verdict}",
        actor=SERVICE_ACTOR,
        apply=apply,
        # The rollout's own last event is the cause, the verdict is evidence (its id travels in the payload as
        # verdict_event_id): "why is v7 serving?" then walks promoted ← analysis passed ← rollout started ← v7
        # registered ← training, as DESIGN §1 tells it, instead of stopping at the monitor's verdict.
        cause=None,
        warm=runtime.parts.get(ModelCache).warm,
    )


async def on_rollback_requested(ctx: HandlerContext, payload: RollbackRequested, *, runtime: ServiceRuntime) -> None:
    """The monitor wants stable back: all traffic returns to it, the candidate fails, the evidence is copied."""
    outcome = await control.rollback(
        ctx.conn,
        ctx.emitter,
        deployment=payload.deployment,
        trigger="monitor",
        reason=f"{payload.reason}: {payload.detail}" if payload.detail else payload.reason,
        actor=SERVICE_ACTOR,
        rollout_id=payload.rollout_id,
        candidate_version=payload.candidate_version,
        evidence=payload.evidence,
        policy_version=payload.policy_version,
        cause=ctx.event,
        warm=runtime.parts.get(ModelCache).warm,
    )
    if not outcome.accepted:
        log.warning("rollback request not applied", extra={"deployment": payload.deployment, "reason": outcome.error})


def build_handlers(runtime: ServiceRuntime) -> dict[str, Handler]:
    """Event type → handler, each bound to the runtime (whose model cache warms candidates; added in ``on_start``)."""
    return {
        ModelVersionRegistered.TYPE: partial(on_model_version_registered, runtime=runtime),
        AnalysisVerdict.TYPE: partial(on_analysis_verdict, runtime=runtime),
        RollbackRequested.TYPE: partial(on_rollback_requested, runtime=runtime),
    }
