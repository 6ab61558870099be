"""What each consumed event does to the monitor's state: one ``on_<event>`` function per type.

Every input comes through the bus's batch consumer (inbox, retries, dead letters — libs/vigil/bus/consumer.py):
``vigil.predictions``, ``vigil.labels`` and ``vigil.metrics`` fold into window states; ``vigil.models`` brings the
reference profile of each version. :func:`on_batch` runs the handlers of one polled batch in the consumer's
transaction and writes their effects with the inbox rows (batch.py), so an event's effect is applied exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import numpy as np
import orjson

from vigil.bus.context import BatchContext, Delivery
from vigil.events import topics
from vigil.events.catalog.models import ModelVersionRegistered
from vigil.events.catalog.streams import LabelObserved, MetricObserved, PredictionLogged
from vigil.monitor import store, window_store
from vigil.monitor.batch import ROWS, BatchWork, now_ms
from vigil.monitor.engine import MonitorEngine
from vigil.monitor.held import HeldLabels
from vigil.monitor.held_predictions import HELD_PREDICTIONS_DROPPED, over_cap
from vigil.monitor.ingest import BatchColumns, fold_predictions, id_hashes, to_binary
from vigil.monitor.state import WindowState, window_key

log = logging.getLogger(__name__)

#: The stream topics whose consumed positions make the watermark that closes windows (closer.py).
STREAM_TOPICS = (topics.PREDICTIONS, topics.LABELS, topics.METRICS)


async def on_batch(ctx: BatchContext, deliveries: list[Delivery], *, engine: MonitorEngine) -> None:
    """Apply one poll's records of a topic (its partitions together, each in order) in the consumer's transaction."""
    async with engine.lock:
        ctx.emitter.after_commit(engine.begin())
        work = BatchWork(engine, ctx.conn)
        await work.lock([k for d in deliveries if (k := _prediction_window(engine, d)) is not None])
        for delivery in deliveries:
            handler = HANDLERS.get(delivery.envelope.type)
            if handler is not None:
                await handler(work, delivery)
            if delivery.topic in STREAM_TOPICS:
                work.saw(delivery)
        await work.flush()


def _prediction_window(engine: MonitorEngine, delivery: Delivery) -> str | None:
    if delivery.envelope.type != PredictionLogged.TYPE:
        return None
    p = delivery.payload
    assert isinstance(p, PredictionLogged)
    return window_key(p.deployment, p.version, p.variant, engine.start_of(p.first_at.timestamp()))


async def on_model_version_registered(work: BatchWork, delivery: Delivery) -> None:
    """Keep the version's reference profile (inline, or the URI of one too large to travel inline), and fold the
    version's predictions held until now."""
    p = delivery.payload
    assert isinstance(p, ModelVersionRegistered)
    await store.upsert_reference(
        work.conn,
        model=p.model,
        version=p.version,
        profile=p.reference_profile,
        uri=p.reference_profile_uri,
        digest=p.reference_profile_digest,
        event_id=delivery.envelope.id,
    )
    work.engine.references.forget(p.model, p.version)
    held = await window_store.held_windows(work.conn, p.model, p.version)
    if held:  # its predictions that came first (held_predictions.py), folded now with the reference of this row
        await work.engine.references.get(p.model, p.version, work.conn)
        await _fold_held(work, held, "replayed")


async def on_prediction_logged(work: BatchWork, delivery: Delivery) -> None:
    """Fold a batch of predictions — or hold it while its version's registration has not been consumed
    (held_predictions.py)."""
    p = delivery.payload
    assert isinstance(p, PredictionLogged)
    if not await _registered(work, p.model, p.version) and await _hold(work, delivery, p):
        return
    await fold_prediction(work, p, delivery.envelope.id)


async def _registered(work: BatchWork, model: str, version: int) -> bool:
    """Whether the version's registration has been consumed: the cache, and on a miss Postgres itself, on the
    batch's connection (another instance may have stored it since the miss was cached)."""
    refs = work.engine.references
    await refs.get(model, version, work.conn)
    return refs.registered(model, version)


async def _hold(work: BatchWork, delivery: Delivery, p: PredictionLogged) -> bool:
    """Hold a batch of an unregistered version; False (fold it now, without the reference) when the hold is full."""
    s = work.engine.settings
    version_held, total_held = await window_store.held_prediction_rows(work.conn, p.model, p.version)
    reason = over_cap(
        p.rows, version_held, total_held,
        per_version=s.prediction_hold_max_rows_per_version, total=s.prediction_hold_max_rows,
    )  # fmt: skip
    if reason is not None:
        HELD_PREDICTIONS_DROPPED.labels("cap").inc(p.rows)
        log.warning(
            "prediction hold full: batch folded without its version's reference (no features, no groups)",
            extra={
                "event_id": delivery.envelope.id, "model": p.model, "version": p.version, "rows": p.rows,
                "cap": reason, "version_held": version_held, "total_held": total_held,
            },
        )  # fmt: skip
        return False
    start = work.engine.start_of(p.first_at.timestamp())
    await window_store.hold_prediction(
        work.conn, event_id=delivery.envelope.id, model=p.model, version=p.version, deployment=p.deployment,
        window_key=window_key(p.deployment, p.version, p.variant, start), start_ms=start, rows=p.rows,
        at_ms=now_ms(), data=orjson.dumps(delivery.envelope.data),
    )  # fmt: skip
    ROWS.labels("predictions", "held").inc(p.rows)
    return True


async def replay_held(work: BatchWork, model: str, version: int) -> int:
    """Fold the held predictions of a version that is registered now, each into the window of its own time, and
    delete them in this transaction; returns the rows folded."""
    held = await window_store.held_windows(work.conn, model, version)
    return await _fold_held(work, held, "replayed")


async def expire_held(work: BatchWork, arrived_before_ms: int) -> int:
    """Fold, without the reference, the held predictions whose version is still unknown after the hold."""
    held = await window_store.held_predictions_before(work.conn, arrived_before_ms)
    return await _fold_held(work, held, "expired")


async def _fold_held(work: BatchWork, held: list[tuple[str, str]], outcome: str) -> int:
    if not held:
        return 0
    await work.lock([key for _, key in held])  # one lock order with the batches: every window up front
    rows = 0
    for event_id, _ in held:
        data = await window_store.take_held_prediction(work.conn, event_id)
        if data is None:
            continue  # taken by another instance meanwhile
        p = PredictionLogged.model_validate(orjson.loads(data))
        await fold_prediction(work, p, event_id)
        ROWS.labels("predictions", outcome).inc(p.rows)
        rows += p.rows
    if outcome == "expired" and rows:
        HELD_PREDICTIONS_DROPPED.labels("expired").inc(rows)
        log.warning(
            "held predictions of an unregistered version folded without its reference (no features, no groups)",
            extra={"rows": rows, "events": len(held)},
        )
    return rows


async def fold_prediction(work: BatchWork, p: PredictionLogged, event_id: str) -> None:
    """Fold a batch of predictions into its window (or count it late when the window closed), keep its join
    columns, and credit labels that were waiting for it."""
    engine = work.engine
    start = engine.start_of(p.first_at.timestamp())
    key = window_key(p.deployment, p.version, p.variant, start)
    ref, digest = await engine.references.get(p.model, p.version, work.conn)
    calibration = engine.references.calibration(p.model, p.version)
    multivariate = engine.references.multivariate(p.model, p.version)
    attribute, groups = await engine.fairness(work.conn, p.deployment, ref)

    def new_window() -> WindowState:
        return WindowState(p.deployment, p.model, p.version, p.variant, start, start + engine.window_ms, digest)

    st = await work.window(key, new_window)
    assert st is not None
    bins = engine.settings.prediction_bins
    if work.closed[key]:  # the window's figures are out: keep the rows joinable, count them as late
        cols = fold_predictions(
            new_window(), p, ref, prediction_bins=bins, fairness_attribute=attribute, fairness_groups=groups
        )
        st.late_rows += p.rows
        ROWS.labels("predictions", "late").inc(p.rows)
    else:
        if st.reference_digest is None:
            st.reference_digest = digest
        cols = fold_predictions(
            st, p, ref, prediction_bins=bins, fairness_attribute=attribute, fairness_groups=groups,
            calibration=calibration,
            multivariate=multivariate, sample_rows=engine.settings.domain_sample_rows,
        )  # fmt: skip
        ROWS.labels("predictions", "applied").inc(p.rows)
    work.touch(key)
    work.add_join(p.deployment, key, event_id, cols)
    await work.join_held(st, cols)


async def on_label_observed(work: BatchWork, delivery: Delivery) -> None:
    """Join labels to their predictions' windows (first label of a prediction wins); hold the ones whose
    prediction has not arrived yet."""
    p = delivery.payload
    assert isinstance(p, LabelObserved)
    hashes = id_hashes([lab.prediction_id for lab in p.labels])
    y_all = to_binary([lab.label for lab in p.labels])
    index = await work.engine.join_index(work.conn, p.deployment)
    m = index.lookup(hashes)
    if not m.found.all():
        missing = ~m.found
        entry = HeldLabels(
            p.deployment, delivery.envelope.id, hashes[missing], y_all[missing],
            np.zeros(int(missing.sum()), dtype=bool), now_ms(),
        )  # fmt: skip
        await work.hold(entry)
    keys = np.array(m.windows, dtype=object)
    for key in sorted(set(m.windows)):  # a loop over windows, not rows
        rows = np.flatnonzero(keys == key)
        st = await work.window(key)
        if st is None:
            ROWS.labels("labels", "expired").inc(int(rows.size))
            continue
        part = BatchColumns(hashes[m.rows[rows]], m.scores[rows], m.preds[rows], m.groups[rows])
        applied = await work.credit(st, part.hashes, y_all[m.rows[rows]], part)
        ROWS.labels("labels", "applied").inc(applied)


async def on_metric_observed(work: BatchWork, delivery: Delivery) -> None:
    """Fold an operational measurement (latency, errors, requests) into the window of the version it names, or of
    the version that served its variant then."""
    p = delivery.payload
    assert isinstance(p, MetricObserved)
    engine = work.engine
    start = engine.start_of(p.time.timestamp())
    variant = p.labels.get("variant", "stable")
    version = p.version
    if version is None:
        version = await window_store.version_at(work.conn, p.deployment, variant, start)
    if version is None:
        ROWS.labels("metrics", "no_version").inc()
        return
    key = window_key(p.deployment, version, variant, start)
    st = await work.window(key)
    if st is None:
        model = p.labels.get("model") or await window_store.model_of(work.conn, p.deployment, version)
        if model is None:
            ROWS.labels("metrics", "unknown_model").inc()
            return
        _, digest = await engine.references.get(model, version)
        st = await work.window(
            key, lambda: WindowState(p.deployment, model, version, variant, start, start + engine.window_ms, digest)
        )
        assert st is not None
    if work.closed[key]:
        ROWS.labels("metrics", "late").inc()
        return
    if p.name in ("latency_ms", "latency"):
        st.latency.update(np.array([p.value], dtype=np.float64))
    elif p.name in ("errors", "error_count"):
        st.errors += max(0, int(p.value))
    elif p.name in ("requests", "request_count"):
        st.requests += max(0, int(p.value))
    else:
        ROWS.labels("metrics", "ignored").inc()
        return
    work.touch(key)


HANDLERS: dict[str, Callable[[BatchWork, Delivery], Awaitable[None]]] = {
    ModelVersionRegistered.TYPE: on_model_version_registered,
    PredictionLogged.TYPE: on_prediction_logged,
    LabelObserved.TYPE: on_label_observed,
    MetricObserved.TYPE: on_metric_observed,
}
