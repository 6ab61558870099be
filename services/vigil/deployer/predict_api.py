"""The serving gateway's route: ``POST /v1/deployments/{name}/predict``.

Role: ``predictor`` (admin passes too). Serving clients are applications given a predictor token; viewers,
scientists, deployers and auditors are left out on purpose — every answered request becomes production traffic the
monitor judges canaries by, so generating it is a right of its own, not a side effect of reading or deploying.

The route parses the body (one row, rows, or columns; besides the features, a row may carry the deployment's
logged attributes — :mod:`vigil.deployer.attributes`), and calls :func:`vigil.deployer.serving.serve` — routing,
model, checks, prediction and logging, shared with the Open Inference Protocol's ``/v2`` routes (``oip_api``).
Well-formed, authorised requests take the route's fast path (``_predict_fast``: the same answer without FastAPI's
routing walk and dependency solving); the rest get the route's full handling.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Scope

from vigil.deployer.api import DeploymentName
from vigil.deployer.attributes import Columns, from_columns, from_rows
from vigil.deployer.fastpath import PREDICTORS, admitted, json_body
from vigil.deployer.gateway import columns_to_matrix, rows_to_matrix
from vigil.deployer.serving import ServeError, serve
from vigil.deployer.settings import DeployerSettings
from vigil.modelformat import Model
from vigil.service.auth import Principal
from vigil.service.deps import RuntimeDep
from vigil.service.http_middleware import fast_path
from vigil.service.runtime import ServiceRuntime

router = APIRouter(prefix="/v1/deployments", tags=["gateway"])

#: Who may generate production traffic (see the module docstring).
Predictor = Annotated[Principal, Depends(PREDICTORS)]


#: Bounds of a request's routing ``key`` (characters).
KEY_LENGTH = (1, 256)


class PredictRequest(BaseModel):
    """Exactly one of ``features`` (one row), ``instances`` (rows) or ``columns`` (column-major batch).
    ``key`` makes routing sticky: the same key gets the same version while the candidate's weight only grows.
    A row (or the columns) may also carry the deployment's ``logged_attributes``: logged, never fed to the model."""

    model_config = ConfigDict(extra="forbid")

    features: dict[str, Any] | None = None
    instances: list[dict[str, Any]] | None = None
    columns: dict[str, list[Any]] | None = None
    key: str | None = Field(default=None, min_length=KEY_LENGTH[0], max_length=KEY_LENGTH[1])


class Prediction(BaseModel):
    prediction_id: str
    output: float
    score: float | None
    #: True: the input is unlike the version's training data (its reference's OOD rule, docs/deployer.md); null
    #: when the version has no OOD reference.
    ood: bool | None = None


class PredictResponse(BaseModel):
    deployment: str
    model: str
    version: int
    variant: str
    request_id: str
    predictions: list[Prediction]


_FIELDS = frozenset(PredictRequest.model_fields)


def _checked(parsed: Any) -> PredictRequest | None:
    """``PredictRequest`` from JSON as orjson parsed it, when it plainly fits the model (its fields, their
    container types, the key's length): the checks pydantic would make, without copying every row. None when in
    doubt — pydantic then judges."""
    if type(parsed) is not dict or not parsed.keys() <= _FIELDS:
        return None
    features, instances, columns, key = (parsed.get(f) for f in ("features", "instances", "columns", "key"))
    if features is not None and type(features) is not dict:
        return None
    if instances is not None and (type(instances) is not list or any(type(row) is not dict for row in instances)):
        return None
    if columns is not None and (type(columns) is not dict or any(type(c) is not list for c in columns.values())):
        return None
    if key is not None and (type(key) is not str or not KEY_LENGTH[0] <= len(key) <= KEY_LENGTH[1]):
        return None
    return PredictRequest.model_construct(features=features, instances=instances, columns=columns, key=key)


async def _predict_fast(scope: Scope, params: dict[str, str], raw: bytes) -> Response | None:
    """The route below without FastAPI's machinery, for an admitted request (:mod:`vigil.deployer.fastpath`) whose
    JSON body parses and validates; anything else (None) gets the route's full handling and its error answers."""
    name = params["name"]
    runtime = admitted(scope, name)
    if runtime is None or not json_body(scope):
        return None
    try:
        parsed = orjson.loads(raw)
        body = _checked(parsed) or PredictRequest.model_validate(parsed)
    except (orjson.JSONDecodeError, ValidationError):
        return None
    try:
        return await answer(runtime, name, body)
    except HTTPException as exc:  # what FastAPI's handler answers for it
        return Response(
            orjson.dumps({"detail": exc.detail}), exc.status_code, exc.headers, media_type="application/json"
        )


@router.post(
    "/{name}/predict",
    response_model=None,
    responses={200: {"model": PredictResponse}, 404: {}, 409: {}, 413: {}, 422: {}, 500: {}, 503: {}},
)
@fast_path(_predict_fast)
async def predict(name: DeploymentName, body: PredictRequest, runtime: RuntimeDep, _user: Predictor) -> Response:
    """Predict with the version the deployment's traffic split picks; returns outputs, version and prediction ids."""
    return await answer(runtime, name, body)


async def answer(runtime: ServiceRuntime, name: str, body: PredictRequest) -> Response:
    """Serve a parsed request (HTTPException for what the client must change)."""
    settings = runtime.settings
    assert isinstance(settings, DeployerSettings)
    given = sum(x is not None for x in (body.features, body.instances, body.columns))
    if given != 1:
        raise HTTPException(422, "send exactly one of features, instances, columns")
    requested_rows = len(body.instances) if body.instances is not None else 1
    if body.columns is not None:
        requested_rows = max((len(v) for v in body.columns.values()), default=1)

    rows = [body.features] if body.features is not None else body.instances or []

    def build(model: Model, extra: frozenset[str]) -> npt.NDArray[np.float64]:
        if body.columns is not None:
            return columns_to_matrix(model.feature_names, body.columns, max_rows=settings.gateway_max_rows, extra=extra)
        return rows_to_matrix(model.feature_names, rows, max_rows=settings.gateway_max_rows, extra=extra)

    def attributes(names: tuple[str, ...]) -> Columns:
        """The logged attributes, from the same rows or columns as the features (read after ``build``)."""
        if body.columns is not None:
            return from_columns(body.columns, names, requested_rows)
        return from_rows(rows, names)

    try:
        served = await serve(runtime, name, build, key=body.key, requested_rows=requested_rows, attributes=attributes)
    except ServeError as exc:
        raise HTTPException(exc.status, exc.message) from exc
    n = len(served.prediction_ids)
    scores: list[float | None] = served.scores.tolist() if served.scores is not None else [None] * n
    ood: list[bool | None] = served.ood.flags.tolist() if served.ood is not None else [None] * n
    # orjson straight to bytes: a 256-row answer is serialised in microseconds, with no model round-trip.
    return Response(
        orjson.dumps(
            {
                "deployment": served.deployment,
                "model": served.model_name,
                "version": served.version,
                "variant": served.variant,
                "request_id": served.request_id,
                "predictions": [
                    {"prediction_id": pid, "output": out, "score": sc, "ood": o}
                    for pid, out, sc, o in zip(served.prediction_ids, served.outputs.tolist(), scores, ood, strict=True)
                ],
            }
        ),
        media_type="application/json",
    )
