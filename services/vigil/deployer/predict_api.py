"""The serving gateway's route: ``POST /v1/deployments/{name}/predict``.

Role: ``viewer`` or ``deployer`` (admin passes too). Serving clients are applications given a viewer token;
scientists and auditors are left out on purpose — every answered request becomes production traffic the monitor
judges canaries by, so generating it is a right of its own, not a side effect of reading.

Per request: read the committed serving state (one primary-key query, so a rollback holds from the very next
request on every replica), pick the variant (sticky by ``key``), load the model by digest (cached), check the
input, predict, answer — then hand the rows to the background batcher (and, when the deployment mirrors, a copy
for the candidate) without waiting for either.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from vigil.artifacts import ArtifactError
from vigil.deployer import store
from vigil.deployer.api import DeploymentName, runtime_of
from vigil.deployer.batcher import ErrorItem, ErrorReason, LogItem, PredictionBatcher, utc_now
from vigil.deployer.gateway import InputError, ModelCache, choose_variant, columns_to_matrix, rows_to_matrix
from vigil.deployer.settings import DeployerSettings
from vigil.events import new_id
from vigil.modelformat import ModelFormatError, ModelInputError
from vigil.service.auth import Principal, require
from vigil.service.tokens import Role

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/deployments", tags=["gateway"])

#: Who may generate production traffic (see the module docstring).
Predictor = Annotated[Principal, Depends(require(Role.VIEWER, Role.DEPLOYER))]


class PredictRequest(BaseModel):
    """Exactly one of ``features`` (one row), ``instances`` (rows) or ``columns`` (column-major batch).
    ``key`` makes routing sticky: the same key gets the same version while the candidate's weight only grows."""

    model_config = ConfigDict(extra="forbid")

    features: dict[str, Any] | None = None
    instances: list[dict[str, Any]] | None = None
    columns: dict[str, list[Any]] | None = None
    key: str | None = Field(default=None, min_length=1, max_length=256)


class Prediction(BaseModel):
    prediction_id: str
    output: float
    score: float | None


class PredictResponse(BaseModel):
    deployment: str
    model: str
    version: int
    variant: str
    request_id: str
    predictions: list[Prediction]


@router.post(
    "/{name}/predict",
    response_model=None,
    responses={200: {"model": PredictResponse}, 404: {}, 409: {}, 413: {}, 422: {}, 500: {}, 503: {}},
)
async def predict(name: DeploymentName, body: PredictRequest, request: Request, _user: Predictor) -> Response:
    """Predict with the version the deployment's traffic split picks; returns outputs, version and prediction ids."""
    started = time.perf_counter()
    runtime = runtime_of(request)
    settings: DeployerSettings = request.app.state.settings
    models: ModelCache = runtime.state["models"]
    batcher: PredictionBatcher = runtime.state["batcher"]

    given = sum(x is not None for x in (body.features, body.instances, body.columns))
    if given != 1:
        raise HTTPException(422, "send exactly one of features, instances, columns")

    async with runtime.pool.acquire() as conn:
        route = await store.get_route(conn, name)
    if route is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no deployment {name}")
    if route.stable_version is None or route.stable_digest is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"deployment {name} serves no version yet")

    variant = "stable"
    if route.candidate_version is not None and route.candidate_digest is not None and not route.mirror:
        variant = choose_variant(name, route.candidate_weight, body.key)
    version, digest = (
        (route.candidate_version, route.candidate_digest)
        if variant == "candidate"
        else (route.stable_version, route.stable_digest)
    )
    assert version is not None
    assert digest is not None

    def failed(reason: ErrorReason, rows: int) -> None:
        """Count the failure for the routed version and variant: the monitor's canary error-rate test reads it."""
        batcher.offer_error(
            ErrorItem(name, route.model, version, "candidate" if variant == "candidate" else "stable", reason,
                      max(1, rows), utc_now())
        )  # fmt: skip

    requested_rows = len(body.instances) if body.instances is not None else 1
    if body.columns is not None:
        requested_rows = max((len(v) for v in body.columns.values()), default=1)
    try:
        model = await models.get(digest)
    except (ArtifactError, ModelFormatError) as exc:
        log.error("model unavailable", extra={"deployment": name, "version": version, "error": str(exc)})
        failed("model_unavailable", requested_rows)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"model v{version} is unavailable: {exc}") from exc

    try:
        if body.columns is not None:
            matrix = columns_to_matrix(model.feature_names, body.columns, max_rows=settings.gateway_max_rows)
        else:
            rows = [body.features] if body.features is not None else body.instances or []
            matrix = rows_to_matrix(model.feature_names, rows, max_rows=settings.gateway_max_rows)
        model.check_rows(matrix)  # the model's own input types (an ONNX int64 input takes no fractions)
    except (InputError, ModelInputError) as exc:
        if "exceeds the limit" in str(exc):  # the request's size, not the routed version's doing: not its error
            raise HTTPException(413, str(exc)) from exc
        failed("bad_input", requested_rows)  # rows that do not fit this version's features (they may fit another)
        raise HTTPException(422, str(exc)) from exc

    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow shows as a non-finite score, checked below
            outputs, scores = model.run(matrix)
        if not np.all(np.isfinite(scores)):
            bad = int(np.flatnonzero(~np.isfinite(scores))[0])
            raise ModelFormatError(f"row {bad}: the model's score is not a finite number")
    except Exception as exc:  # the model, not the client, failed: a 500 counted against the routed version
        log.error("model failed", extra={"deployment": name, "version": version, "error": str(exc)})
        failed("model_error", len(matrix))
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR, f"model v{version} failed on this input: {exc}"
        ) from exc
    classifier = model.task != "regression"
    # One UUIDv7 per request; row i is ``<request id>-<i>`` (unique, time-ordered, and it names its request).
    request_id = new_id()
    ids = [f"{request_id}-{i}" for i in range(len(matrix))]
    latency_ms = (time.perf_counter() - started) * 1000
    now = utc_now()
    batcher.offer(
        LogItem(
            deployment=name,
            model=route.model,
            version=version,
            variant="candidate" if variant == "candidate" else "stable",
            feature_names=model.feature_names,
            matrix=matrix,
            prediction_ids=ids,
            latency_ms=latency_ms,
            at=now,
            outputs=outputs,
            scores=scores if classifier else None,
        )
    )
    if route.mirror and route.candidate_version is not None and route.candidate_digest is not None:
        batcher.offer(
            LogItem(
                deployment=name,
                model=route.model,
                version=route.candidate_version,
                variant="shadow",
                feature_names=model.feature_names,
                matrix=matrix,
                prediction_ids=ids,  # the same ids: a label for the request judges both answers
                latency_ms=0.0,
                at=now,
                shadow_digest=route.candidate_digest,
            )
        )
    score_list: list[float | None] = scores.tolist() if classifier else [None] * len(ids)
    # orjson straight to bytes: a 256-row answer is serialised in microseconds, with no model round-trip.
    return Response(
        orjson.dumps(
            {
                "deployment": name,
                "model": route.model,
                "version": version,
                "variant": variant,
                "predictions": [
                    {"prediction_id": pid, "output": out, "score": sc}
                    for pid, out, sc in zip(ids, outputs.tolist(), score_list, strict=True)
                ],
            }
        ),
        media_type="application/json",
    )
