"""Serving one request for a deployment: the part every gateway protocol shares.

:func:`serve` is the one domain function behind ``POST /v1/deployments/{name}/predict`` and the Open Inference
Protocol's ``POST /v2/models/{name}/infer``. The routes only parse the protocol's body into a function that builds
the input matrix for the routed model, and turn :class:`ServeError` / :class:`Served` into their own answers.

Per request: look up the deployment's serving state in memory (:mod:`vigil.deployer.serving_state`: pushed by
NOTIFY at every commit that changes it, so a rollback holds from the next request on every replica), pick the
variant (sticky by ``key``), load the model by digest (cached), build and check the input, predict, score each
row's distance from the training data (:mod:`vigil.deployer.ood_scoring`, when the version's reference profile
has an OOD reference), read the request's values of the deployment's logged attributes
(:mod:`vigil.deployer.attributes`: logged, never fed to the model) — then hand the rows to the background batcher
(and, when the deployment mirrors, a copy for the candidate) without waiting for either. Failures after routing
are counted against the routed version and variant (the monitor's canary error-rate test reads them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from vigil.artifacts import ArtifactError
from vigil.deployer import store
from vigil.deployer.attributes import BadAttribute, Columns, logged_names
from vigil.deployer.batcher import ErrorItem, ErrorReason, LogItem, PredictionBatcher, utc_now
from vigil.deployer.gateway import InputError, ModelCache, TooLarge, Variant, choose_variant
from vigil.deployer.ood_scoring import OODReferences, RowScores
from vigil.deployer.serving_state import ServingState
from vigil.events import new_id
from vigil.modelformat import Model, ModelFormatError, ModelInputError
from vigil.service.runtime import ServiceRuntime

log = logging.getLogger(__name__)

#: What went wrong, protocol-neutral; each route maps it to its status code.
Failure = Literal["not_found", "not_serving", "too_large", "bad_input", "model_unavailable", "model_error"]

#: The predict route's status codes (the Open Inference Protocol answers 400 for ``bad_input`` and ``too_large``).
STATUS: dict[Failure, int] = {
    "not_found": 404,
    "not_serving": 409,
    "too_large": 413,
    "bad_input": 422,
    "model_unavailable": 503,
    "model_error": 500,
}

#: Builds the float64 input matrix (rows × the model's features, in its order) from the request for the routed
#: model; raises InputError / ModelInputError naming the problem. Its second argument: the deployment's logged
#: attributes that are not the model's features — names the input may carry besides the features, left out of
#: the matrix (empty for most deployments).
MatrixBuilder = Callable[[Model, frozenset[str]], npt.NDArray[np.float64]]

#: Reads the request's attribute columns for these names (:mod:`vigil.deployer.attributes`; BadAttribute).
AttributeReader = Callable[[tuple[str, ...]], Columns]

_NO_ATTRIBUTES: frozenset[str] = frozenset()


class ServeError(Exception):
    """A request that could not be answered; ``message`` is safe to return to the client."""

    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message

    @property
    def status(self) -> int:
        return STATUS[self.failure]


@dataclass(frozen=True)
class Served:
    """One answered request: who answered, the ids of its rows, and the model's outputs and scores."""

    deployment: str
    model_name: str
    version: int
    variant: Variant
    request_id: str
    prediction_ids: list[str]
    model: Model
    outputs: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64] | None  # None for a regressor (its output is the value)
    ood: RowScores | None = None  # None when the version has no OOD reference


async def current_route(runtime: ServiceRuntime, name: str) -> store.Route:
    """The serving state of ``name``; ServeError when it does not exist or serves nothing yet."""
    route = await runtime.parts.get(ServingState).route(name)
    if route is None:
        raise ServeError("not_found", f"no deployment {name}")
    if route.stable_version is None or route.stable_digest is None:
        raise ServeError("not_serving", f"deployment {name} serves no version yet")
    return route


async def serve(
    runtime: ServiceRuntime,
    name: str,
    build: MatrixBuilder,
    *,
    key: str | None,
    requested_rows: int,
    attributes: AttributeReader | None = None,
) -> Served:
    """Route, load, check, predict and log one request for deployment ``name`` (see the module docstring).

    ``requested_rows`` is the request's row count as the route sees it before parsing (for the error counts of a
    request that fails before its matrix exists). ``attributes`` reads the request's values of the deployment's
    logged attributes (None: the protocol carries none; they are then not accepted as input either)."""
    started = time.perf_counter()
    models = runtime.parts.get(ModelCache)
    references = runtime.parts.get(OODReferences)
    batcher = runtime.parts.get(PredictionBatcher)
    route = await current_route(runtime, name)

    variant: Variant = "stable"
    if route.candidate_version is not None and route.candidate_digest is not None and not route.mirror:
        variant = choose_variant(name, route.candidate_weight, key)
    version, digest = (
        (route.candidate_version, route.candidate_digest)
        if variant == "candidate"
        else (route.stable_version, route.stable_digest)
    )
    assert version is not None
    assert digest is not None

    def failed(reason: ErrorReason, rows: int) -> None:
        """Count the failure for the routed version and variant: the monitor's canary error-rate test reads it."""
        batcher.offer_error(ErrorItem(name, route.model, version, variant, reason, max(1, rows), utc_now()))

    try:
        model = await models.get(digest)
    except (ArtifactError, ModelFormatError) as exc:
        log.error("model unavailable", extra={"deployment": name, "version": version, "error": str(exc)})
        failed("model_unavailable", requested_rows)
        raise ServeError("model_unavailable", f"model v{version} is unavailable: {exc}") from exc

    logged: tuple[str, ...] = ()
    if route.logged_attributes and attributes is not None:
        logged = logged_names(route.logged_attributes, model.feature_names)
    try:
        matrix = build(model, frozenset(logged) if logged else _NO_ATTRIBUTES)
        model.check_rows(matrix)  # the model's own input types (an ONNX int64 input takes no fractions)
    except TooLarge as exc:  # the request's size, not the routed version's doing: not its error
        raise ServeError("too_large", str(exc)) from exc
    except (InputError, ModelInputError) as exc:
        failed("bad_input", requested_rows)  # rows that do not fit this version's features (they may fit another)
        raise ServeError("bad_input", str(exc)) from exc
    columns: Columns | None = None
    if logged and attributes is not None:
        try:
            columns = attributes(logged)
        except BadAttribute as exc:  # the client's to fix whichever version answers: not the version's error
            raise ServeError("bad_input", str(exc)) from exc

    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow shows as a non-finite score, checked below
            outputs, scores = model.run(matrix)
        if not np.all(np.isfinite(scores)):
            bad = int(np.flatnonzero(~np.isfinite(scores))[0])
            raise ModelFormatError(f"row {bad}: the model's score is not a finite number")
    except Exception as exc:  # the model, not the client, failed: a 500 counted against the routed version
        log.error("model failed", extra={"deployment": name, "version": version, "error": str(exc)})
        failed("model_error", len(matrix))
        raise ServeError("model_error", f"model v{version} failed on this input: {exc}") from exc

    ood = await _ood(references, route.model, version, model, matrix)
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
            variant=variant,
            feature_names=model.feature_names,
            matrix=matrix,
            prediction_ids=ids,
            latency_ms=latency_ms,
            at=now,
            outputs=outputs,
            scores=scores if classifier else None,
            ood=ood,
            attributes=columns,
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
                attributes=columns,
            )
        )
    return Served(
        deployment=name,
        model_name=route.model,
        version=version,
        variant=variant,
        request_id=request_id,
        prediction_ids=ids,
        model=model,
        outputs=outputs,
        scores=scores if classifier else None,
        ood=ood,
    )


async def _ood(
    references: OODReferences, model_name: str, version: int, model: Model, matrix: npt.NDArray[np.float64]
) -> RowScores | None:
    """The rows' OOD scores under the version's reference; None without one. Never fails the request: a scoring
    problem is logged and the rows go out unscored (the monitor then computes the share itself)."""
    scorer = await references.scorer(model_name, version, model.feature_names)
    if scorer is None:
        return None
    try:
        return scorer.score(matrix)
    except Exception as exc:
        log.error("OOD scoring failed", extra={"model": model_name, "version": version, "error": repr(exc)})
        return None
