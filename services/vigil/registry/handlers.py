"""Registry event handlers: one function per consumed event type, named after it."""

from __future__ import annotations

from vigil.bus.consumer import Handler
from vigil.bus.context import Emitter, HandlerContext
from vigil.events import Envelope, new_id
from vigil.events.catalog.data import DatasetVersionRegistered, DataUpdated
from vigil.registry import store
from vigil.service.runtime import ServiceRuntime


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


def build_handlers(_runtime: ServiceRuntime) -> dict[str, Handler]:
    """Event type → handler."""
    return {DataUpdated.TYPE: on_data_updated}
