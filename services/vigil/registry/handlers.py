"""Registry event handlers: one function per consumed event type, named after it."""

from __future__ import annotations

import logging
from functools import partial

from vigil.bus.consumer import Handler
from vigil.bus.context import Emitter, HandlerContext
from vigil.events import Envelope, new_id
from vigil.events.catalog.data import DatasetVersionRegistered, DataUpdated
from vigil.events.catalog.deployments import (
    DeploymentAborted,
    DeploymentCreated,
    DeploymentPromoted,
    DeploymentRolledBack,
    DeploymentRolloutStarted,
)
from vigil.events.catalog.training import TrainingCompleted
from vigil.registry import store
from vigil.registry.artifact_check import check_artifact
from vigil.registry.decisions import CHAMPION, NewVersion, decide_candidate, move_alias
from vigil.registry.deps import settings_of, store_of
from vigil.service.runtime import ServiceRuntime

log = logging.getLogger(__name__)


async def apply_data_updated(
    emitter: Emitter, cause: Envelope, update: DataUpdated
) -> tuple[store.DatasetVersion, bool]:
    """Store the dataset version (idempotent per digest) and, if new, emit ``dataset.version.registered``.

    Returns the version and whether it was created. Shared by the consumer and the HTTP route, so both paths have
    the same effects.
    """
    registered_event_id = new_id()  # fixed first so the row can name the event that announced it
    version, created = await store.insert_dataset_version(
        emitter.conn,
        update,
        source_event_id=cause.id,
        registered_event_id=registered_event_id,
        created_by=cause.actor,
    )
    if created:
        await emitter.emit(
            DatasetVersionRegistered(
                dataset=version.dataset,
                version=version.version,
                content_digest=version.content_digest,
                uri=version.uri,
                columns=update.columns,
                row_count=version.row_count,
                producer=version.producer,
                parent_version=version.parent_version,
            ),
            cause=cause,
            event_id=registered_event_id,
        )
    return version, created


async def on_data_updated(ctx: HandlerContext, payload: DataUpdated) -> None:
    """An upstream system announced data: register it as a dataset version."""
    await apply_data_updated(ctx.emitter, ctx.event, payload)


async def on_training_completed(ctx: HandlerContext, payload: TrainingCompleted, *, runtime: ServiceRuntime) -> None:
    """A training run finished: check its artifact, evaluate the model's gates → ``model.version.registered`` or
    ``…rejected``.

    Idempotent per (model, run id) on top of the inbox, so a duplicated event (new id, same run) creates nothing.
    """
    artifact = await check_artifact(
        store_of(runtime),
        payload.artifact_digest,
        payload.artifact_format,
        payload.signature,
        max_bytes=settings_of(runtime).onnx_max_bytes,
    )
    decision = await decide_candidate(
        ctx.emitter,
        ctx.event,
        ctx.event.actor,
        NewVersion(
            model=payload.model,
            run_id=payload.run_id,
            source="training",
            job_id=payload.job_id,
            attempt=payload.attempt,
            artifact_digest=payload.artifact_digest,
            artifact_uri=payload.artifact_uri,
            artifact_format=payload.artifact_format,
            artifact_size_bytes=payload.artifact_size_bytes,
            params=dict(payload.params),
            metrics=dict(payload.metrics),
            reference_profile=payload.reference_profile,
            reference_profile_uri=payload.reference_profile_uri,
            reference_profile_digest=payload.reference_profile_digest,
            signature=list(payload.signature),
            datasets=list(payload.datasets),
            code_version=payload.code_version,
            environment=payload.environment.model_dump(mode="json"),
            artifact=artifact,
        ),
    )
    if not decision.created:
        log.info("training run decided before", extra={"model": payload.model, "run_id": payload.run_id})


#: (version, role, status) of one model version a deployment event speaks of; a None version is skipped.
VersionRole = tuple[int | None, str, str]


async def record_versions(ctx: HandlerContext, deployment: str, model: str, *versions: VersionRole) -> None:
    """Remember what role each named version plays on ``deployment`` now (lineage), in the event's transaction."""
    for version, role, status in versions:
        if version is not None:
            await store.record_deployment_version(
                ctx.conn,
                deployment=deployment,
                model=model,
                version=version,
                role=role,
                status=status,
                event_id=ctx.event.id,
            )


async def on_deployment_created(ctx: HandlerContext, payload: DeploymentCreated) -> None:
    """A deployment exists; remember the stable version it serves (lineage)."""
    await record_versions(ctx, payload.deployment, payload.model, (payload.stable_version, "stable", "serving"))


async def on_deployment_rollout_started(ctx: HandlerContext, payload: DeploymentRolloutStarted) -> None:
    """A candidate is being rolled out next to stable (lineage)."""
    await record_versions(
        ctx,
        payload.deployment,
        payload.model,
        (payload.candidate_version, "candidate", "rolling_out"),
        (payload.stable_version, "stable", "serving"),
    )


async def on_deployment_promoted(ctx: HandlerContext, payload: DeploymentPromoted) -> None:
    """The candidate became stable: ``champion`` moves to it (cause ``promotion``)."""
    replaced = payload.previous_version if payload.previous_version != payload.version else None
    await record_versions(
        ctx,
        payload.deployment,
        payload.model,
        (payload.version, "stable", "serving"),
        (replaced, "stable", "replaced"),
    )
    approved = f", approved by {payload.approved_by}" if payload.approved_by else ""
    await move_alias(
        ctx.emitter,
        model=payload.model,
        alias=CHAMPION,
        to_version=payload.version,
        cause="promotion",
        actor=ctx.event.actor,
        cause_event=ctx.event,
        deployment=payload.deployment,
        reason=f"promoted on deployment {payload.deployment}{approved}",
    )


async def on_deployment_rolled_back(ctx: HandlerContext, payload: DeploymentRolledBack) -> None:
    """Traffic went back to stable: ``champion`` stays, or returns to stable if it named the failed version."""
    await record_versions(
        ctx,
        payload.deployment,
        payload.model,
        (payload.failed_version, "candidate", "rolled_back"),
        (payload.stable_version, "stable", "serving"),
    )
    await store.lock_model(ctx.conn, payload.model)  # read and move the alias under one lock
    champion = await store.get_alias(ctx.conn, payload.model, CHAMPION)
    if champion is None or champion["version"] != payload.failed_version:
        return  # champion never moved to the failed version (or moved on since): it stays
    await move_alias(
        ctx.emitter,
        model=payload.model,
        alias=CHAMPION,
        to_version=payload.stable_version,
        cause="rollback",
        actor=ctx.event.actor,
        cause_event=ctx.event,
        deployment=payload.deployment,
        reason=f"rolled back on deployment {payload.deployment} ({payload.trigger}): {payload.reason}",
    )


async def on_deployment_aborted(ctx: HandlerContext, payload: DeploymentAborted) -> None:
    """A rollout stopped without promotion; the candidate is marked aborted (lineage)."""
    await record_versions(ctx, payload.deployment, payload.model, (payload.candidate_version, "candidate", "aborted"))


def build_handlers(runtime: ServiceRuntime) -> dict[str, Handler]:
    """Event type → handler (the ones that need the service's settings or parts get the runtime bound)."""
    return {
        DataUpdated.TYPE: on_data_updated,
        TrainingCompleted.TYPE: partial(on_training_completed, runtime=runtime),
        DeploymentCreated.TYPE: on_deployment_created,
        DeploymentRolloutStarted.TYPE: on_deployment_rollout_started,
        DeploymentPromoted.TYPE: on_deployment_promoted,
        DeploymentRolledBack.TYPE: on_deployment_rolled_back,
        DeploymentAborted.TYPE: on_deployment_aborted,
    }
