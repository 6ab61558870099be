"""The gateway's Open Inference Protocol (KServe v2 REST) routes, next to ``POST /v1/deployments/{name}/predict``.

An OIP *model* is a deployment: ``/v2/models/{deployment}/infer`` goes through the same traffic split, shadow
mirroring and prediction logging as the predict route (:func:`vigil.deployer.serving.serve`); the version that
answered is the response's ``model_version``. The deployment's logged attributes travel as ``BYTES`` inputs beside
the features (:mod:`vigil.deployer.oip`), checked and logged as the predict route's, and the model metadata lists
them. Versions are the deployment's to choose, so the protocol's ``/versions/{v}`` paths are refused with a reason.

Every route needs the predict route's roles (viewer or deployer; admin passes): the OIP surface is for serving
clients, and deny-by-default holds for its health routes too (probes use ``/healthz`` and ``/readyz``). Every
failure — auth, a bad body, an unknown deployment — is answered as the protocol says, ``{"error": "..."}``; bad
input is 400 naming the input, never a 5xx.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.types import Scope

from vigil.artifacts import ArtifactError
from vigil.deployer import oip
from vigil.deployer.api import DeploymentName, ModelsDep
from vigil.deployer.attributes import Columns, logged_names
from vigil.deployer.fastpath import admitted, header
from vigil.deployer.gateway import ModelCache
from vigil.deployer.predict_api import Predictor
from vigil.deployer.serving import ServeError, current_route, serve
from vigil.deployer.settings import DeployerSettings
from vigil.modelformat import Model, ModelFormatError
from vigil.service.app import readiness_checks
from vigil.service.deps import RuntimeDep
from vigil.service.http_middleware import fast_path
from vigil.service.runtime import ServiceRuntime


def error(status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    """The protocol's error object: ``{"error": message}`` (plus ``extra`` fields, e.g. ``ready: false``)."""
    return Response(
        orjson.dumps({"error": message, **extra}), status_code=status, media_type="application/json", headers=headers
    )


class OipRoute(APIRoute):
    """Answers what FastAPI would raise — 401/403 from the role check, a refused body size, an invalid path
    parameter — as the protocol's ``{"error": ...}`` instead of ``{"detail": ...}`` (tritonclient reads ``error``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def oip_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                return error(exc.status_code, str(exc.detail), exc.headers)
            except RequestValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
                return error(400, f"invalid request: {problems}")

        return oip_handler


_ERROR_BODY = {
    "application/json": {
        "schema": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    }
}
router = APIRouter(
    prefix="/v2",
    tags=["open inference protocol"],
    route_class=OipRoute,
    # The protocol's error object, not FastAPI's ``{"detail": ...}`` (see OipRoute); 503: not ready / no model.
    responses={
        "4XX": {"description": "Refused; `error` says why", "content": _ERROR_BODY},
        503: {"description": "Not ready, or the model cannot be loaded", "content": _ERROR_BODY},
    },
)

_JSON = "application/json"


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON)


def _client_status(exc: ServeError) -> int:
    """The protocol's 400 for the client's own mistakes; otherwise the predict route's status."""
    return 400 if exc.failure in ("bad_input", "too_large") else exc.status


@router.get("", response_model=None)
async def server_metadata(request: Request, _user: Predictor) -> Response:
    """OIP server metadata: name, version and the extensions served (Triton's binary tensor data)."""
    return _json({"name": "vigil-deployer", "version": request.app.version, "extensions": list(oip.EXTENSIONS)})


@router.get("/health/live", response_model=None)
async def server_live(_user: Predictor) -> Response:
    """OIP liveness: the gateway answers."""
    return _json({"live": True})


@router.get("/health/ready", response_model=None)
async def server_ready(runtime: RuntimeDep, _user: Predictor) -> Response:
    """OIP readiness: Postgres and the broker answer and the consumer runs (the checks of ``/readyz``)."""
    checks = await readiness_checks(runtime)
    failing = {k: v for k, v in checks.items() if v != "ok"}
    if failing:
        return error(503, "not ready: " + ", ".join(f"{k} {v}" for k, v in failing.items()), ready=False)
    return _json({"ready": True})


async def _stable_model(
    runtime: ServiceRuntime, models: ModelCache, name: str
) -> tuple[list[int], Model, tuple[str, ...]] | Response:
    """The versions serving ``name``, stable's model, loaded, and the logged attributes it takes beside its
    features; or the error answer."""
    try:
        route = await current_route(runtime, name)
    except ServeError as exc:
        return error(exc.status, exc.message)
    assert route.stable_version is not None
    assert route.stable_digest is not None
    versions = [route.stable_version]
    digests = [route.stable_digest]
    if route.candidate_version is not None and route.candidate_digest is not None:
        versions.append(route.candidate_version)
        digests.append(route.candidate_digest)
    try:
        loaded = [await models.get(d) for d in digests]
    except (ArtifactError, ModelFormatError) as exc:
        return error(503, f"model of deployment {name} is unavailable: {exc}", ready=False)
    return versions, loaded[0], logged_names(route.logged_attributes, loaded[0].feature_names)


@router.get("/models/{name}", response_model=None)
async def model_metadata(name: DeploymentName, runtime: RuntimeDep, models: ModelsDep, _user: Predictor) -> Response:
    """OIP model metadata of a deployment: the versions serving it and stable's inputs (its logged attributes
    among them, as BYTES) and outputs."""
    found = await _stable_model(runtime, models, name)
    if isinstance(found, Response):
        return found
    versions, model, attributes = found
    return _json(oip.model_metadata(name, versions, oip.signature_of(model), attributes))


@router.get("/models/{name}/ready", response_model=None)
async def model_ready(name: DeploymentName, runtime: RuntimeDep, models: ModelsDep, _user: Predictor) -> Response:
    """OIP model readiness: the deployment serves a version and every version it routes to is loaded."""
    found = await _stable_model(runtime, models, name)
    if isinstance(found, Response):
        return found
    return _json({"name": name, "ready": True})


async def _infer_fast(scope: Scope, params: dict[str, str], raw: bytes) -> Response | None:
    """The route below without FastAPI's machinery, for an admitted request (:mod:`vigil.deployer.fastpath`); the
    rest (None) gets the route's full handling and its error answers."""
    runtime = admitted(scope, params["name"])
    if runtime is None:
        return None
    return await answer_infer(runtime, params["name"], raw, header(scope, oip.HEADER_LENGTH.encode()))


@router.post("/models/{name}/infer", response_model=None)
@fast_path(_infer_fast)
async def infer(name: DeploymentName, request: Request, runtime: RuntimeDep, _user: Predictor) -> Response:
    """OIP inference through the deployment's traffic split, shadow mirroring and prediction logging.

    Tensors: one input per feature (``[N]`` or ``[N, 1]``), or one ``[N, F]`` input in the model's feature order;
    besides them, the deployment's logged attributes as ``BYTES`` inputs (``[N]`` or ``[N, 1]``, one UTF-8 string
    per row); JSON data or Triton's binary tensor data. Outputs ``score`` and ``label`` (classifier) or ``value``. The
    response's ``id`` echoes the request's, else the gateway's request id; ``parameters`` carry ``request_id``
    (row i's prediction id is ``<request_id>-<i>``), ``variant`` and the registry ``model``."""
    return await answer_infer(runtime, name, await request.body(), request.headers.get(oip.HEADER_LENGTH))


async def answer_infer(runtime: ServiceRuntime, name: str, raw: bytes, header_length: str | None) -> Response:
    """Parse, serve and answer one infer request; every refusal as the protocol's error object."""
    settings = runtime.settings
    assert isinstance(settings, DeployerSettings)
    try:
        body = oip.parse_infer_request(raw, header_length)
    except oip.OipError as exc:
        return error(400, str(exc))
    signatures: dict[int, oip.Signature] = {}
    rows = [body.rows]

    def build(model: Model, logged: frozenset[str]) -> npt.NDArray[np.float64]:
        signature = signatures[id(model)] = oip.signature_of(model)
        oip.check_requested(signature, body.outputs)
        matrix = oip.tensors_to_matrix(signature, body.inputs, max_rows=settings.gateway_max_rows, attributes=logged)
        rows[0] = len(matrix)
        return matrix

    def attributes(names: tuple[str, ...]) -> Columns:
        """The logged attributes, from their BYTES inputs (read after ``build``, which checked their shapes)."""
        return oip.attribute_columns(body.inputs, names, rows[0])

    try:
        served = await serve(runtime, name, build, key=body.key, requested_rows=body.rows, attributes=attributes)
    except ServeError as exc:
        return error(_client_status(exc), exc.message)
    signature = signatures[id(served.model)]
    content, header_length_out = oip.infer_response(
        model_name=name,
        model_version=str(served.version),
        request_id=body.id if body.id is not None else served.request_id,
        parameters={"request_id": served.request_id, "variant": served.variant, "model": served.model_name},
        signature=signature,
        tensors=oip.output_tensors(signature, served.outputs, served.scores),
        requested=body.outputs,
        binary_output=body.binary_output,
    )
    if header_length_out is None:
        return Response(content, media_type=_JSON)
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_length_out)},
    )


@router.api_route(
    "/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"], response_model=None, include_in_schema=False
)
async def not_served(rest: str, _user: Predictor) -> Response:
    """Any other ``/v2`` path: the protocol's error object, saying why."""
    if rest.startswith("models/") and "/versions/" in rest:
        return error(
            400,
            "versions are chosen by the deployment's traffic split; call /v2/models/{deployment}/… without a version",
        )
    return error(404, f"no Open Inference Protocol route /v2/{rest[:200]}")
