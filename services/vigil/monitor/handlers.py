"""Control-plane events the monitor consumes through the skeleton's consumer (inbox, retries, dead letters).

Only ``model.version.registered`` (low volume): the reference profile of each version is stored in Postgres, where
the stream processor reads it when a version's first batch arrives. The high-volume streams go through faust
(streams.py).
"""

from __future__ import annotations

from typing import Any

from vigil.bus.consumer import Handler
from vigil.bus.context import HandlerContext
from vigil.events.catalog.models import ModelVersionRegistered
from vigil.monitor import store
from vigil.service.runtime import ServiceRuntime


def build_handlers(runtime: ServiceRuntime) -> dict[str, Handler]:
    async def model_version_registered(ctx: HandlerContext, payload: Any) -> None:
        assert isinstance(payload, ModelVersionRegistered)
        await store.upsert_reference(
            ctx.conn,
            model=payload.model,
            version=payload.version,
            profile=payload.reference_profile,
            uri=payload.reference_profile_uri,
            digest=payload.reference_profile_digest,
            event_id=ctx.event.id,
        )
        streams = runtime.state.get("streams")
        if streams is not None:
            streams.forget_reference(payload.model, payload.version)

    return {ModelVersionRegistered.TYPE: model_version_registered}
