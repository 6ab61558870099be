"""Deployer service definition: rollouts (canary, blue-green, shadow) and the serving gateway.

Besides the skeleton's parts, the deployer runs five of its own, added to ``runtime.parts`` in ``on_start``: the
serving state (``ServingState``, what each deployment serves, in memory), the model cache (``ModelCache``), each
served version's OOD reference (``OODReferences``), the prediction batcher (``PredictionBatcher``) and the rollout
ticker (``Ticker``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from vigil.deployer.api import router
from vigil.deployer.batcher import PredictionBatcher
from vigil.deployer.control import SERVICE_ACTOR
from vigil.deployer.gateway import ModelCache
from vigil.deployer.handlers import build_handlers
from vigil.deployer.oip_api import router as oip_router
from vigil.deployer.ood_scoring import OODReferences
from vigil.deployer.predict_api import router as predict_router
from vigil.deployer.serving_state import ServingState
from vigil.deployer.settings import DeployerSettings
from vigil.deployer.ticker import Ticker
from vigil.events import topics
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition, ServiceRuntime, timed_stop_step

FLUSH_ON_STOP_S = 10.0


async def on_start(runtime: ServiceRuntime) -> None:
    """Serving state → model cache → OOD references → prediction batcher → rollout ticker (which resumes timers
    stored in Postgres)."""
    settings = runtime.settings
    assert isinstance(settings, DeployerSettings)
    serving = runtime.parts.add(
        ServingState(runtime.pool, runtime.schema, refresh_interval_s=settings.serving_refresh_interval_ms / 1000)
    )
    await serving.start()
    models = runtime.parts.add(
        ModelCache(
            settings.artifact_store(),
            settings.model_cache_size,
            onnx_threads=settings.onnx_intra_op_threads,
            onnx_max_bytes=settings.onnx_max_bytes,
        )
    )
    references = runtime.parts.add(OODReferences(runtime.pool, models.store))
    batcher = runtime.parts.add(
        PredictionBatcher(
            runtime.producer,
            models,
            source=runtime.source,
            actor=SERVICE_ACTOR,
            max_rows=settings.gateway_log_max_rows,
            flush_ms=settings.gateway_log_flush_ms,
            max_queued_rows=settings.gateway_log_max_queued_rows,
            references=references,
        )
    )
    await batcher.start()
    ticker = runtime.parts.add(Ticker(runtime.pool, runtime.source, models.warm, settings.rollout_tick_interval_ms))
    await ticker.start()


async def on_stop(runtime: ServiceRuntime) -> None:
    """Ticker first (no new moves), then flush the batcher while the producer still runs. Both stay parts."""
    await runtime.parts.get(Ticker).stop()
    # Best effort, bounded: prediction logs are telemetry (rows that cannot be sent are counted as dropped), and a
    # flush waiting on a slow broker must not hold the whole shutdown past its budget.
    await timed_stop_step("prediction log flush", runtime.parts.get(PredictionBatcher).stop(), FLUSH_ON_STOP_S)
    await runtime.parts.get(ServingState).stop()


DEFINITION = ServiceDefinition(
    name="deployer",
    settings_cls=DeployerSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    consumed_topics=[topics.MODELS, topics.MONITORING],
    handlers=build_handlers,
    routers=[router, predict_router, oip_router],
    on_start=on_start,
    on_stop=on_stop,
)


def make_app(settings: DeployerSettings | None = None) -> FastAPI:
    """The deployer's ASGI app."""
    return create_app(DEFINITION, settings)
