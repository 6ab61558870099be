"""Prediction logging off the response path: a bounded queue drained by one background task.

The gateway hands each answered request to :meth:`PredictionBatcher.offer`, which never waits: when the queue
already holds ``max_queued_rows`` rows the item is dropped and counted (``vigil_gateway_log_dropped_rows_total``) —
serving must not stall because the broker is slow. The task groups items per (deployment, version, variant) and
sends one column-major ``prediction.logged`` per group when it reaches ``max_rows`` rows or ``flush_ms`` after its
first row, splitting any event that would exceed the 1 MiB record limit. Mirrored (shadow) requests are computed
here too, so a shadow model never adds latency to the client's answer (their OOD scores too, under the shadow
version's own reference). Rows scored for OOD carry ``ood`` and ``ood_scores``; a group whose requests were not all
scored sends neither (the monitor then computes the share itself). The deployment's logged attributes (request
fields it declared, :mod:`vigil.deployer.attributes`) go in ``categorical``, one column per attribute aligned with
``prediction_ids``; mirrored rows carry the same values.

The gateway's own errors after routing (the model failed or answered NaN, its artifact is unreadable, the input
does not fit the routed version) are counted here as well, per deployment × version × variant × reason, and sent
as ``metric.observed`` (``name: errors``, value = rows of the failed requests, labels ``variant``, ``model``,
``reason``) on the same schedule, so the monitor's canary error-rate test sees a candidate that fails.

Predictions and error counts go straight to the producer, not through the outbox: they are a high-volume stream
(DESIGN §3) and a crash loses at most the last ``flush_ms`` of them, which the monitor's windows tolerate;
decisions never travel this way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

from vigil.bus.aio import cancel_and_wait
from vigil.bus.producer import BusProducer
from vigil.deployer.attributes import Columns
from vigil.deployer.gateway import ModelCache
from vigil.deployer.ood_scoring import OODReferences, RowScores
from vigil.events import Envelope, check_outgoing, make_event
from vigil.events.catalog.streams import MAX_ROWS, MetricObserved, PredictionLogged
from vigil.events.contracts import MAX_EVENT_BYTES, encode_outgoing
from vigil.modelformat import Model, ModelInputError

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = MAX_EVENT_BYTES  # consumers refuse anything larger (too_large)

LOGGED_ROWS = Counter("vigil_gateway_logged_rows_total", "Prediction rows sent to vigil.predictions", ["variant"])
DROPPED_ROWS = Counter("vigil_gateway_log_dropped_rows_total", "Prediction rows not logged", ["reason"])

ERRORS = Counter("vigil_gateway_errors_total", "Predict requests that failed after routing", ["variant", "reason"])

LogVariant = Literal["stable", "candidate", "shadow"]
ErrorReason = Literal["model_error", "model_unavailable", "bad_input"]


@dataclass
class ErrorItem:
    """A failed request after routing: which version and variant it was routed to, why, and how many rows."""

    deployment: str
    model: str
    version: int
    variant: LogVariant
    reason: ErrorReason
    rows: int
    at: datetime


@dataclass
class LogItem:
    """One request's rows for one served (or mirrored) version. ``shadow_model`` set: outputs computed later."""

    deployment: str
    model: str
    version: int
    variant: LogVariant
    feature_names: tuple[str, ...]
    matrix: npt.NDArray[np.float64]
    prediction_ids: list[str]
    latency_ms: float
    at: datetime
    outputs: npt.NDArray[np.float64] | None = None
    scores: npt.NDArray[np.float64] | None = None
    shadow_digest: str | None = None  # mirrored: the candidate's artifact, run in the background
    ood: RowScores | None = None  # per-row OOD scores and flags (None: the version has no OOD reference)
    attributes: Columns | None = None  # the deployment's logged attributes, one value per row (attributes.py)

    @property
    def rows(self) -> int:
        return len(self.prediction_ids)


GroupKey = tuple[str, str, int, str, tuple[str, ...]]
ErrorKey = tuple[str, str, int, str, str]


@dataclass
class _Errors:
    rows: int = 0
    since: float = 0.0
    first_at: datetime | None = None


@dataclass
class _Group:
    items: list[LogItem] = field(default_factory=list)
    rows: int = 0
    since: float = 0.0


class PredictionBatcher:
    """Bounded, non-blocking prediction logger (one background task per process)."""

    def __init__(
        self,
        producer: BusProducer,
        models: ModelCache,
        *,
        source: str,
        actor: str,
        max_rows: int = 2_000,
        flush_ms: int = 200,
        max_queued_rows: int = 200_000,
        references: OODReferences | None = None,
    ) -> None:
        self.producer = producer
        self.models = models
        self.references = references  # scores mirrored rows under the shadow version's OOD reference
        self.source = source
        self.actor = actor
        self.max_rows = min(max_rows, MAX_ROWS)
        self.flush_s = flush_ms / 1000
        self.max_queued_rows = max_queued_rows
        self._queue: asyncio.Queue[LogItem | ErrorItem] = asyncio.Queue()
        self._errors: dict[ErrorKey, _Errors] = {}
        self._queued_rows = 0
        self._groups: dict[GroupKey, _Group] = {}
        self._task: asyncio.Task[None] | None = None
        self.sent_events = 0
        #: feature names → bytes per row of the last prediction.logged with them (see :func:`_encode`).
        self._row_bytes: dict[tuple[str, ...], float] = {}

    # ------------------------------------------------------------------ producer side (request path)
    def offer(self, item: LogItem) -> bool:
        """Queue ``item`` without waiting; False (and counted) when the queue is full."""
        if self._queued_rows + item.rows > self.max_queued_rows:
            DROPPED_ROWS.labels("queue_full").inc(item.rows)
            return False
        self._queued_rows += item.rows
        self._queue.put_nowait(item)
        return True

    def offer_error(self, item: ErrorItem) -> None:
        """Count a failed request (never waits; error counts are tiny, so they are never dropped)."""
        ERRORS.labels(item.variant, item.reason).inc()
        self._queue.put_nowait(item)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prediction-batcher")

    async def stop(self) -> None:
        """Stop the task and flush whatever is queued (best effort)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        while not self._queue.empty():
            self._add(self._queue.get_nowait())
        for key in list(self._groups):
            await self._flush(key)
        for ekey in list(self._errors):
            await self._flush_errors(ekey)

    # ------------------------------------------------------------------ consumer side (background)
    async def _run(self) -> None:
        while True:
            timeout = self._next_deadline()
            try:  # not wait_for: on 3.11 it can swallow a cancellation that lands as an item arrives (bus/aio.py)
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
                self._add(item)
                while not self._queue.empty():  # drain what is there without yielding per item
                    self._add(self._queue.get_nowait())
            except TimeoutError:
                pass
            now = time.monotonic()
            for key in [k for k, g in self._groups.items() if g.rows >= self.max_rows or now - g.since >= self.flush_s]:
                await self._flush(key)
            for ekey in [k for k, e in self._errors.items() if now - e.since >= self.flush_s]:
                await self._flush_errors(ekey)

    def _next_deadline(self) -> float | None:
        if not self._groups and not self._errors:
            return None
        oldest = min([g.since for g in self._groups.values()] + [e.since for e in self._errors.values()])
        return max(0.0, oldest + self.flush_s - time.monotonic())

    def _add(self, item: LogItem | ErrorItem) -> None:
        if isinstance(item, ErrorItem):
            ekey: ErrorKey = (item.deployment, item.model, item.version, item.variant, item.reason)
            errors = self._errors.get(ekey)
            if errors is None:
                errors = self._errors[ekey] = _Errors(since=time.monotonic(), first_at=item.at)
            errors.rows += item.rows
            return
        self._queued_rows -= item.rows
        key: GroupKey = (item.deployment, item.model, item.version, item.variant, item.feature_names)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(since=time.monotonic())
        group.items.append(item)
        group.rows += item.rows

    async def _flush(self, key: GroupKey) -> None:
        group = self._groups.pop(key, None)
        if group is None or not group.items:
            return
        try:
            items = [item for item in group.items if await self._complete(item)]
            if items:
                await self._send(items)
        except Exception:
            DROPPED_ROWS.labels("send_failed").inc(group.rows)
            log.exception("could not log predictions", extra={"deployment": key[0], "rows": group.rows})

    async def _flush_errors(self, key: ErrorKey) -> None:
        """One ``metric.observed`` per deployment × version × variant × reason and flush interval."""
        errors = self._errors.pop(key, None)
        if errors is None or not errors.rows:
            return
        deployment, model, version, variant, reason = key
        payload = MetricObserved(
            deployment=deployment,
            version=version,
            name="errors",
            value=float(errors.rows),
            time=errors.first_at or utc_now(),
            unit="rows",
            labels={"variant": variant, "model": model, "reason": reason},
        )
        envelope = make_event(payload, source=self.source, actor=self.actor)
        try:
            check_outgoing(envelope)
            await self.producer.send(
                payload.TOPIC,
                envelope.canonical_bytes(),
                key=deployment,
            )
            self.sent_events += 1
        except Exception:
            log.exception("could not report gateway errors", extra={"deployment": deployment, "rows": errors.rows})

    async def _complete(self, item: LogItem) -> bool:
        """Run the candidate on a mirrored item; False if it cannot take stable's input (schema differs)."""
        if item.shadow_digest is None or item.outputs is not None:
            return True
        model = await self.models.get(item.shadow_digest)
        if model.feature_names != item.feature_names:
            if set(model.feature_names) != set(item.feature_names):
                DROPPED_ROWS.labels("shadow_schema_mismatch").inc(item.rows)
                return False
            order = [item.feature_names.index(n) for n in model.feature_names]
            item.matrix, item.feature_names = item.matrix[:, order], model.feature_names
        try:
            model.check_rows(item.matrix)
        except ModelInputError:  # stable took it, the candidate's input types do not (e.g. int64 vs fractions)
            DROPPED_ROWS.labels("shadow_bad_input").inc(item.rows)
            return False
        started = time.perf_counter()
        _infer(item, model)
        item.latency_ms = (time.perf_counter() - started) * 1000
        if self.references is not None:
            scorer = await self.references.scorer(item.model, item.version, model.feature_names)
            item.ood = scorer.score(item.matrix) if scorer is not None else None
        return True

    async def _send(self, items: Sequence[LogItem]) -> None:
        shape = items[0].feature_names
        encoded = _encode(_payload(items), self.source, self.actor, self._row_bytes.get(shape, 0.0))
        self._row_bytes[shape] = max(len(value) / part.rows for part, _, value in encoded)
        for part, _envelope, value in encoded:
            await self.producer.send(
                part.TOPIC,
                value,
                key=part.deployment,
            )
            self.sent_events += 1
            LOGGED_ROWS.labels(part.variant).inc(part.rows)


def _infer(item: LogItem, model: Model) -> None:
    outputs, scores = model.run(item.matrix)
    item.outputs = outputs
    item.scores = scores if model.task != "regression" else None


def _payload(items: Sequence[LogItem]) -> PredictionLogged:
    first = items[0]
    matrix = np.concatenate([i.matrix for i in items]) if len(items) > 1 else first.matrix
    outputs = np.concatenate([i.outputs for i in items if i.outputs is not None])
    with_scores = all(i.scores is not None for i in items)
    scores = np.concatenate([i.scores for i in items if i.scores is not None]).tolist() if with_scores else None
    latency: list[float] = []
    ids: list[str] = []
    for item in items:
        latency.extend([item.latency_ms] * item.rows)
        ids.extend(item.prediction_ids)
    ood_scores, ood = _ood_columns(items)
    return PredictionLogged.model_construct(
        deployment=first.deployment,
        model=first.model,
        version=first.version,
        variant=first.variant,
        first_at=min(i.at for i in items),
        last_at=max(i.at for i in items),
        prediction_ids=ids,
        numeric={name: matrix[:, j].tolist() for j, name in enumerate(first.feature_names)},
        categorical=_categorical(items),
        outputs=outputs.tolist(),
        scores=scores,
        latency_ms=latency,
        ood_scores=ood_scores,
        ood=ood,
    )


def _categorical(items: Sequence[LogItem]) -> dict[str, list[str | None]]:
    """The group's logged attributes, one column per name any request in it sent, aligned with its
    ``prediction_ids`` (null for the rows of a request without that name). Empty without attributes."""
    if all(i.attributes is None for i in items):
        return {}
    if len(items) == 1:
        return dict(items[0].attributes or {})
    names = dict.fromkeys(name for i in items if i.attributes is not None for name in i.attributes)
    columns: dict[str, list[str | None]] = {name: [] for name in names}
    for item in items:
        given = item.attributes or {}
        for name, column in columns.items():
            column.extend(given.get(name) or [None] * item.rows)
    return columns


def _ood_columns(items: Sequence[LogItem]) -> tuple[list[float] | None, list[bool] | None]:
    """The group's ``ood_scores`` and ``ood`` columns; (None, None) unless every request in it was scored."""
    scored = [i.ood for i in items if i.ood is not None]
    if len(scored) != len(items):
        return None, None
    if len(scored) == 1:
        rows = scored[0]
    else:
        rows = RowScores(np.concatenate([o.scores for o in scored]), np.concatenate([o.flags for o in scored]))
    return rows.logged_scores(), rows.flags.tolist()


#: Split a batch ahead of encoding when its estimated size passes this share of the record limit (the estimate is
#: the bytes per row of the last event of the same group; rows differ in length, so leave some room).
SPLIT_AT = 0.85


def _encode(
    payload: PredictionLogged, source: str, actor: str, row_bytes: float = 0.0
) -> list[tuple[PredictionLogged, Envelope, bytes]]:
    """Envelope, contract check (as every produced event) and bytes; a batch over the record limit is halved.

    One pass: :func:`encode_outgoing` checks the contract and returns the canonical bytes (serialising the
    envelope twice — once to check, once to send — was a quarter of the gateway's CPU at batch 256). With
    ``row_bytes`` (from an earlier event of this group), a batch expected to pass the limit is split before it is
    encoded, instead of encoding it whole to find out."""
    rows = payload.rows
    if row_bytes > 0 and rows > 1:
        parts = math.ceil(rows * row_bytes / (MAX_RECORD_BYTES * SPLIT_AT))
        if parts > 1:
            step = math.ceil(rows / parts)
            return [
                encoded
                for lo in range(0, rows, step)
                for encoded in _encode(_rows(payload, lo, min(rows, lo + step)), source, actor)
            ]
    envelope = make_event(payload, source=source, actor=actor)
    value = encode_outgoing(envelope)
    if len(value) <= MAX_RECORD_BYTES or rows <= 1:
        return [(payload, envelope, value)]
    half = rows // 2
    return _encode(_rows(payload, 0, half), source, actor) + _encode(_rows(payload, half, rows), source, actor)


def _rows(payload: PredictionLogged, lo: int, hi: int) -> PredictionLogged:
    return PredictionLogged.model_construct(
        **{
            **payload.__dict__,
            "prediction_ids": payload.prediction_ids[lo:hi],
            "numeric": {k: v[lo:hi] for k, v in payload.numeric.items()},
            "categorical": {k: v[lo:hi] for k, v in payload.categorical.items()},
            "outputs": payload.outputs[lo:hi],
            "scores": payload.scores[lo:hi] if payload.scores is not None else None,
            "ood_scores": payload.ood_scores[lo:hi] if payload.ood_scores is not None else None,
            "ood": payload.ood[lo:hi] if payload.ood is not None else None,
            "latency_ms": payload.latency_ms[lo:hi],
            "first_at": payload.first_at,
            "last_at": payload.last_at,
        }
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
