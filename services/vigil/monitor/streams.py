"""The monitor's stream processor: a faust-streaming app (agents + tables) running inside the FastAPI lifespan.

Topology (one faust app per service instance, app id ``<group prefix>vigil-monitor-streams``, which is also its
consumer group and the prefix of its changelog topics, so every test is isolated by its prefix):

- agent ``predictions`` on vigil.predictions, agent ``labels`` on vigil.labels, agent ``metrics`` on vigil.metrics.
  All three topics are keyed by deployment with the same partition count, so they are co-partitioned: the worker
  that owns deployment D's predictions also owns D's labels, metrics and table rows. No ``group_by`` is needed
  (it would add a repartition topic round trip for records that are already keyed by deployment).
- table ``windows``: window key → serialised :class:`WindowState` (mergeable kernel states, never raw rows).
- table ``joins``: one value per prediction batch: the compact columns the label join needs (joins.py).
- timer ``closer`` (every ``tick_s``): closes windows whose end + grace has passed, revises closed windows that
  received late labels, computes figures and decisions and commits them through the Postgres outbox.

Every message is handled inside ``try``: a bad record is dead-lettered (``dead_letters`` table + vigil.dlq via the
outbox, with the reason) and the agent moves on — an exception never reaches faust, whose agents would otherwise
stop consuming silently (faust-streaming #175, #523).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AsyncExitStack
from contextvars import ContextVar
from typing import Any

import asyncpg
import faust
import numpy as np
import numpy.typing as npt
import orjson
from faust.contrib.asgi import faust_app_running
from prometheus_client import Counter, Gauge

from vigil.artifacts import ArtifactError, open_store
from vigil.bus.consumer import INFRA_ERRORS
from vigil.bus.context import Emitter
from vigil.bus.dead_letters import DeadLetter, record_dead_letter
from vigil.events import ContractError, Envelope, new_id, topics
from vigil.events.catalog.streams import LabelObserved, MetricObserved, PredictionLogged
from vigil.kernels.fairness import GroupRates
from vigil.kernels.profile import DatasetProfile
from vigil.kernels.quality import BinaryClassificationState
from vigil.monitor import faust_fixes, store
from vigil.monitor.broker_loss import changelog_records, default_partition, reseed_changelogs
from vigil.monitor.decisions import evaluate
from vigil.monitor.figures import Figures, compute_figures, window_event
from vigil.monitor.held import HeldIndex, HeldLabels
from vigil.monitor.ingest import BatchColumns, decode_stream_event, fold_predictions, id_hashes, to_binary
from vigil.monitor.joins import JoinIndex, LabelledSet, decode_batch, decode_labelled, encode_batch, encode_labelled
from vigil.monitor.offset_watch import OffsetWatch, Verdict
from vigil.monitor.policy import Policy
from vigil.monitor.settings import MonitorSettings
from vigil.monitor.state import WindowState, window_key
from vigil.service.runtime import ServiceRuntime

log = logging.getLogger(__name__)

ROWS = Counter("vigil_monitor_rows_total", "Stream rows processed by the monitor", ["stream", "outcome"])
WINDOWS_CLOSED = Counter("vigil_monitor_windows_closed_total", "Windows closed or revised", ["kind"])
DECISIONS = Counter("vigil_monitor_decisions_total", "Decision events emitted", ["type"])
LIVE_WINDOWS = Gauge("vigil_monitor_live_windows", "Window states held in the windows table")
HELD_DROPPED = Counter(
    "vigil_monitor_held_labels_dropped_total",
    "Labels held for a prediction that never arrived: dropped when too old or evicted by the per-deployment cap",
    ["reason"],
)
HELD_ROWS = Gauge("vigil_monitor_held_labels", "Labels held while waiting for their predictions")
OFFSET_SEEKS = Counter(
    "vigil_monitor_offset_seeks_total",
    "Stream partitions sought back because records were read but never delivered (offset_watch.py)",
    ["reason"],
)
CHANGELOG_RETRIES = Counter(
    "vigil_monitor_changelog_retries_total", "Table changelog writes that failed and were sent again", ["table"]
)

# The changelog writes of the record being handled, per agent task (each agent runs in its own task, so a
# ContextVar keeps the three agents' writes apart): (table, key, partition, future).
_UNSETTLED: ContextVar[list[tuple[Any, str, int, asyncio.Future[Any]]] | None] = ContextVar(
    "vigil_monitor_unsettled_changelog", default=None
)


class MonitorStreams:
    """The faust app and the state around it (one per running service)."""

    def __init__(self, runtime: ServiceRuntime, settings: MonitorSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.pool = runtime.pool
        self._artifacts = open_store(settings.resolved_artifact_root(), settings.artifact_encryption_key)
        self.window_ms = round(settings.window_s * 1000)
        self.live: dict[str, WindowState] = {}
        self.indexes: dict[str, JoinIndex] = defaultdict(JoinIndex)
        self.batch_keys: dict[str, set[str]] = defaultdict(set)  # window key → joins table keys
        self.held_labels: dict[str, HeldIndex] = defaultdict(HeldIndex)  # deployment → labels waiting (held.py)
        self.labelled: dict[str, LabelledSet] = defaultdict(LabelledSet)  # window key → predictions with a label
        self.labelled_keys: dict[str, set[str]] = defaultdict(set)  # window key → labelled table keys
        self._index_built = False
        self._references: dict[tuple[str, int], tuple[float, DatasetProfile | None, str | None]] = {}
        self._policies: dict[str, tuple[float, int, Policy]] = {}
        self._close_lock = asyncio.Lock()
        self._stack = AsyncExitStack()
        self.dead_lettered = 0
        self.restarts = 0  # faust apps replaced after a broker loss
        self._stopping = False
        self.watch = OffsetWatch(stall_s=settings.offset_stall_s)
        self._stream_topics = {runtime.namer.physical(t) for t in (topics.PREDICTIONS, topics.LABELS, topics.METRICS)}
        faust_fixes.apply()
        self.app = self._build_app()

    # -- faust app -----------------------------------------------------------------------------------------------
    def _build_app(self) -> faust.App:
        s = self.settings
        namer = self.runtime.namer
        app = faust.App(
            f"{s.kafka_group_prefix}vigil-monitor-streams",
            broker=[f"kafka://{b.strip()}" for b in s.kafka_bootstrap_servers.split(",")],
            store="memory://",
            autodiscover=False,
            web_enabled=False,
            topic_partitions=s.kafka_topic_partitions,
            topic_replication_factor=s.kafka_replication_factor,
            topic_disable_leader=True,
            table_standby_replicas=0,
            broker_commit_interval=s.faust_commit_interval_s,
            broker_session_timeout=s.faust_broker_session_timeout_s,
            broker_heartbeat_interval=s.faust_broker_heartbeat_interval_s,
            consumer_auto_offset_reset="earliest",
            producer_max_request_size=4 * 1024 * 1024,
            stream_wait_empty=False,
        )
        schema: Any = faust.Schema(key_type=str, value_type=bytes, key_serializer="json", value_serializer="raw")
        self.windows = app.Table("windows", default=None, schema=schema, partitions=s.kafka_topic_partitions)
        self.joins = app.Table("joins", default=None, schema=schema, partitions=s.kafka_topic_partitions)
        self.held = app.Table("held", default=None, schema=schema, partitions=s.kafka_topic_partitions)
        self.labelled_table = app.Table("labelled", default=None, schema=schema, partitions=s.kafka_topic_partitions)
        for logical, handler in (
            (topics.PREDICTIONS, self.on_prediction),
            (topics.LABELS, self.on_label),
            (topics.METRICS, self.on_metric),
        ):
            topic = app.topic(
                namer.physical(logical), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
            )
            app.agent(topic, name=f"vigil-monitor-{logical}")(self._agent(logical, handler))
        app.timer(interval=s.tick_s, name="vigil-monitor-closer")(self._tick)
        app.timer(interval=1.0, name="vigil-monitor-offset-watch")(self._watch_offsets)
        app.on_partitions_assigned.connect(self._on_assigned)
        self.watch.reset()
        return app

    def _agent(self, logical: str, handler: Any) -> Any:
        async def agent(stream: Any) -> None:
            # Manual acks: a record the offset watch skips (records before it never arrived) must stay unacked,
            # or the commit would pass it before its copy, fetched again after the seek, is handled.
            async for event in stream.noack().events():
                if await self._admitted(logical, event):
                    await self._safely(logical, event, handler)
                    event.ack()

        agent.__name__ = agent.__qualname__ = f"monitor_{logical.replace('.', '_')}"
        return agent

    async def start(self) -> None:
        await self._stack.enter_async_context(
            faust_app_running(self.app, stop_timeout=self.settings.faust_stop_timeout_s)
        )

    async def stop(self) -> None:
        self._stopping = True
        async with self._close_lock:  # a broker-loss restart in flight finishes first, and starts nothing after this
            await self._stack.aclose()

    async def restart_after_broker_loss(self) -> None:
        """The broker came back without its log: keep the table state, forget the old log, run a new faust app
        with the same id (why and how: broker_loss.py)."""
        async with self._close_lock:
            if self._stopping:
                return
            old = self.app
            consumer: Any = old.consumer  # faust keeps its ack bookkeeping on the concrete consumer
            for pending in (consumer._acked, consumer._acked_index, consumer._gap):
                pending.clear()  # stopping commits what was acked: offsets of the old log, wrong on the new one
            consumer._n_acked = 0
            try:
                await self._stack.aclose()
            except Exception:  # an app that crashed on the lost log may fail to stop cleanly; its state is ours
                log.exception("stopping the faust app after the broker loss failed")
            self._stack = AsyncExitStack()
            rows, partition_of = await self._state_for_a_new_log()
            s = self.settings
            app_id = old.conf.id
            changelogs = {name: f"{app_id}-{name}-changelog" for name in rows}
            records = changelog_records(((changelogs[n], r) for n, r in rows.items()), partition_of)
            written = await reseed_changelogs(
                s.kafka_bootstrap_servers,
                records,
                list(changelogs.values()),
                s.kafka_topic_partitions,
                s.kafka_replication_factor,
            )
            self.app = self._build_app()
            await self.start()
            self.restarts += 1
            log.warning(
                "faust app restarted after a broker loss",
                extra={"windows": len(rows["windows"]), "changelog_records": written},
            )

    async def _state_for_a_new_log(self) -> tuple[dict[str, dict[str, bytes]], Callable[[str], int]]:
        """Every live row of the four tables with the old log's offsets forgotten (window metric marks, the held
        labels' provenance), and the partition each key's rows go to (the one its deployment's records came from)."""
        self._ensure_index()
        for key in list(self.windows.keys()):
            await self._load(key)
        for st in self.live.values():
            st.offsets.clear()
        for held in self.held_labels.values():
            for entry in held.entries.values():
                entry.offset = -1
        rows = {
            "windows": {k: st.to_bytes() for k, st in self.live.items()},
            "held": {k: e.to_bytes() for h in self.held_labels.values() for k, e in h.entries.items()},
            "joins": _table_bytes(self.joins),
            "labelled": _table_bytes(self.labelled_table),
        }
        known = {st.deployment: st.partition for st in self.live.values() if st.partition is not None}
        known.update({e.deployment: e.partition for h in self.held_labels.values() for e in h.entries.values()})
        partitions = self.settings.kafka_topic_partitions

        def partition_of(key: str) -> int:
            deployment = key.split("|", 1)[0]
            found = known.get(deployment)
            return found if found is not None else default_partition(deployment, partitions)

        return rows, partition_of

    # -- per message ---------------------------------------------------------------------------------------------
    async def _admitted(self, logical: str, event: Any) -> bool:
        """Ask the offset watch whether to handle this record (offset_watch.py); seek back when records before it
        were never delivered. False = skip it unacked: it comes again after the seek."""
        msg = event.message
        consumer: Any = self.app.consumer
        tp = msg.tp
        verdict = self.watch.admit(tp, msg.offset, consumer._committed_offset[tp], time.monotonic())
        if verdict.verdict is Verdict.SKIP:
            ROWS.labels(logical, "out_of_order").inc()
            if verdict.seek_to is not None:
                await self._seek_back(tp, verdict.seek_to, "gap", got=msg.offset)
            return False
        if verdict.verdict is Verdict.GAP_ACCEPTED and verdict.gap is not None:
            faust_fixes.accept_gap(consumer, tp, *verdict.gap)
            OFFSET_SEEKS.labels("gap_accepted").inc()
            log.error(
                "offsets missing from the log after repeated seeks; moving past them",
                extra={"topic": tp.topic, "partition": tp.partition, "from": verdict.gap[0], "to": verdict.gap[1]},
            )
        return True

    async def _seek_back(self, tp: Any, offset: int, why: str, **extra: Any) -> None:
        OFFSET_SEEKS.labels(why).inc()
        log.warning(
            "records were read but not delivered; seeking back",
            extra={"topic": tp.topic, "partition": tp.partition, "offset": offset, "reason": why, **extra},
        )
        try:  # seek_wait: in the consumer's own thread (Consumer.seek calls aiokafka from this one, and loses races)
            await self.app.consumer.seek_wait({tp: offset})
        except Exception:  # a partition revoked meanwhile: the rebalance resets the watch and seeks anyway
            log.exception("seek back failed", extra={"topic": tp.topic, "partition": tp.partition})

    async def _watch_offsets(self) -> None:
        """Timer: seek back partitions whose last records were read but never delivered (offset_watch.stalled).

        Not while faust rebalances or recovers tables: it holds the stream partitions still then, and seeks them to
        their committed offsets itself when it resumes — a seek of ours on top only logged a needless warning.
        """
        if getattr(self.app, "rebalancing", False) or getattr(self.app, "in_recovery", False):
            return
        try:
            consumer: Any = self.app.consumer
            now = time.monotonic()
            highwaters = {}
            for tp in consumer.assignment():
                if tp.topic in self._stream_topics:
                    self.watch.track(tp, consumer._committed_offset[tp], now)
                    highwaters[tp] = consumer.highwater(tp)
            for tp, offset in self.watch.stalled(highwaters, now):
                await self._seek_back(tp, offset, "stalled")
        except Exception:
            log.exception("offset watch failed; will retry at the next tick")

    async def _on_assigned(self, *_: Any, **__: Any) -> None:
        self.watch.reset()  # positions start over from the committed offsets
        # Partitions new to this member are recovered into the tables next (before any record is handled): the
        # in-memory indexes must take in their rows too, not only those of the first assignment (_ensure_index).
        self._index_built = False

    async def _safely(self, logical: str, event: Any, handler: Any) -> None:
        """Handle one record, then wait until the broker has every changelog write it made (see :meth:`_put`)
        before returning — faust acks the record (making its offset committable) only once this returns."""
        unsettled: list[tuple[Any, str, int, asyncio.Future[Any]]] = []
        token = _UNSETTLED.set(unsettled)
        try:
            await self._handle(logical, event, handler)
        finally:
            _UNSETTLED.reset(token)
        await self._settle(unsettled)

    async def _handle(self, logical: str, event: Any, handler: Any) -> None:
        """Decode and handle one record; never let an exception reach faust. Infrastructure errors are retried
        (the record is not at fault); anything else dead-letters the record with its reason."""
        msg = event.message
        envelope: Envelope | None = None
        try:
            envelope, payload = decode_stream_event(event.value)
        except ContractError as exc:
            await self._dead_letter(logical, msg, exc.reason, exc.detail, None, None)
            return
        except Exception as exc:  # a decoder bug must not kill the agent either
            await self._dead_letter(logical, msg, "decode_failed", repr(exc), None, None)
            return
        while True:
            try:
                await handler(envelope, payload, msg.partition, msg.offset)
                return
            except INFRA_ERRORS as exc:
                log.warning("database unavailable; retrying record", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
            except Exception as exc:
                log.exception("monitor handler failed; dead-lettering", extra={"event_id": envelope.id})
                await self._dead_letter(logical, msg, "handler_failed", repr(exc), envelope.id, envelope.type)
                return

    async def _dead_letter(
        self, logical: str, msg: Any, reason: str, error: str, event_id: str | None, event_type: str | None
    ) -> None:
        group = self.app.conf.id
        value = msg.value if isinstance(msg.value, bytes | type(None)) else bytes(msg.value)
        identity = event_id or "sha256:" + hashlib.sha256(value or b"").hexdigest()
        key = msg.key.decode(errors="replace") if isinstance(msg.key, bytes) else None
        letter = DeadLetter(
            dedupe_key=f"{group}|{logical}|{identity}",
            group=group,
            topic=logical,
            partition=msg.partition,
            offset=msg.offset,
            key=key,
            value=value,
            headers=[(k, v) for k, v in (msg.headers or [])],
            reason=reason,
            error=error[:4000],
            attempts=1,
            event_id=event_id,
            event_type=event_type,
        )
        while True:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await record_dead_letter(conn, letter)
                break
            except INFRA_ERRORS as exc:
                log.warning("database unavailable; retrying dead letter", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
        self.dead_lettered += 1
        ROWS.labels(logical, "dead_lettered").inc()
        log.error("dead-lettered record", extra={"topic": logical, "reason": reason, "error": error[:300]})

    # -- state access --------------------------------------------------------------------------------------------
    def _profile_from_store(self, uri: str, digest: str | None) -> dict[str, Any] | None:
        """A reference profile too large to travel inline, read from the shared artifact store (digest-verified)."""
        named = uri.removeprefix("vigil-artifact://")
        if digest is not None and digest != named:
            log.error("reference profile URI and digest disagree", extra={"uri": uri, "digest": digest})
            return None
        try:
            body = orjson.loads(self._artifacts.get(named))
        except (ArtifactError, orjson.JSONDecodeError) as exc:
            log.error("reference profile unreadable", extra={"uri": uri, "error": str(exc)})
            return None
        return body if isinstance(body, dict) else None

    async def reference(self, model: str, version: int) -> tuple[DatasetProfile | None, str | None]:
        """The version's reference profile (cached; a miss is re-checked after ``policy_cache_s``)."""
        now = time.monotonic()
        hit = self._references.get((model, version))
        if hit is not None and (hit[1] is not None or now - hit[0] < max(self.settings.policy_cache_s, 0.5)):
            return hit[1], hit[2]
        async with self.pool.acquire() as conn:
            body, digest, uri = await store.get_reference(conn, model, version)
        if body is None and uri is not None:
            body = await asyncio.to_thread(self._profile_from_store, uri, digest)
        profile = None
        if body is not None:
            try:
                profile = DatasetProfile.from_dict(body)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("unusable reference profile", extra={"model": model, "version": version, "error": repr(exc)})
        self._references[(model, version)] = (now, profile, digest)
        return profile, digest

    def forget_reference(self, model: str, version: int) -> None:
        self._references.pop((model, version), None)

    async def policy(self, conn: asyncpg.Connection, deployment: str) -> tuple[int, Policy]:
        now = time.monotonic()
        hit = self._policies.get(deployment)
        if hit is not None and now - hit[0] < self.settings.policy_cache_s:
            return hit[1], hit[2]
        version, policy, _ = await store.current_policy(conn, deployment)
        self._policies[deployment] = (now, version, policy)
        return version, policy

    def forget_policy(self, deployment: str) -> None:
        self._policies.pop(deployment, None)

    async def _load(self, key: str) -> WindowState | None:
        st = self.live.get(key)
        if st is not None:
            return st
        raw = _as_bytes(self.windows.get(key))
        if raw is None:
            return None
        head = WindowState.from_bytes(raw, None)  # model/version first, then again with the reference
        ref, _ = await self.reference(head.model, head.version)
        st = WindowState.from_bytes(raw, ref) if ref is not None else head
        self.live[key] = st
        return st

    def _save(self, st: WindowState, partition: int) -> None:
        st.partition = partition
        self._put(self.windows, st.key, st.to_bytes())

    def _put(self, table: Any, key: str, value: bytes) -> None:
        """``table[key] = value``, keeping the changelog write's future so the record is not acked before it lands.

        Why: faust commits a source offset once the record is acked, after ``producer.flush()`` — but the
        producer buffer's flush gives up after 0.1 s without a message handed on (``ProducerBuffer.flush_atmost``)
        and commits anyway. With ~40 kB window values, 2 busy cores and the agents running on during the commit,
        changelog writes were still in faust's buffer when the offsets of the records that made them were
        committed: a kill -9 then lost applied records for good (docs/faults.md). Waiting for the writes in the
        agent (:meth:`_settle`) makes "changelog before offset" hold whatever faust's flush does."""
        partition = table.partition_for_key(key)  # the current record's partition (co-partitioned topics)
        fut = table.send_changelog(partition, key, value)
        table.data[key] = value
        unsettled = _UNSETTLED.get()
        if unsettled is not None:
            unsettled.append((table, key, fut.message.partition, fut))

    async def _settle(self, unsettled: list[tuple[Any, str, int, asyncio.Future[Any]]]) -> None:
        """Wait until the broker acknowledged every changelog write in ``unsettled``; a failed write is sent again
        with the key's *current* value (later writes of the same key supersede it, and a tombstone stays one), so
        memory and changelog agree before the record is acked. Blocks the agent while the broker is away — the
        record must not be acked meanwhile."""
        while unsettled:
            await asyncio.wait([fut for *_, fut in unsettled])
            failed = [(t, k, p) for t, k, p, fut in unsettled if fut.cancelled() or fut.exception() is not None]
            unsettled.clear()
            if not failed:
                return
            log.warning("changelog write failed; sending it again", extra={"writes": len(failed)})
            await asyncio.sleep(0.5)
            for table, key, partition in failed:
                CHANGELOG_RETRIES.labels(table.name).inc()
                unsettled.append((table, key, partition, table.send_changelog(partition, key, table.data.get(key))))

    async def _settle_now(self) -> None:
        """Wait for the current record's changelog writes so far (an ordering point, see _record_labelled)."""
        unsettled = _UNSETTLED.get()
        if unsettled:
            await self._settle(unsettled)

    def _ensure_index(self) -> None:
        """After a restart or a new assignment, take the recovered tables' rows into the in-memory indexes.

        Runs at the first record handled after each partition assignment (faust recovers the tables before it
        delivers records). Not only once per process: a restarted member is often assigned some partitions first
        and the rest a rebalance later (when the group evicts the member it replaces), and the rows recovered for
        those must be joinable too, or labels for their predictions wait as held until they expire — bug 3's
        second under-count (docs/faults.md). Idempotent: rows already indexed are skipped, and entries already in
        memory are kept (they are the newer copy: every change is made in memory, then written to the table).
        """
        if self._index_built:
            return
        self._index_built = True
        for key, value in list(self.joins.items()):
            window = key.rsplit("|", 1)[0]  # joins keys are <window key>|<event id>
            if key in self.batch_keys.get(window, ()):
                continue
            raw = _as_bytes(value)
            if raw is None:
                continue
            window, cols = decode_batch(raw)
            deployment = window.split("|", 1)[0]
            self.indexes[deployment].add(window, cols)
            self.batch_keys[window].add(key)
        for key, value in list(self.held.items()):
            raw = _as_bytes(value)
            if raw is not None:
                entry = HeldLabels.from_bytes(raw)
                self.held_labels[entry.deployment].entries.setdefault(key, entry)
        for key, value in list(self.labelled_table.items()):
            raw = _as_bytes(value)
            if raw is not None:
                window, hashes = decode_labelled(raw)
                if key not in self.labelled_keys.get(window, ()):
                    self.labelled[window].add(hashes)
                    self.labelled_keys[window].add(key)

    def _start_of(self, ts: float) -> int:
        return int(math.floor(ts * 1000 / self.window_ms) * self.window_ms)

    # -- handlers ------------------------------------------------------------------------------------------------
    async def on_prediction(self, env: Envelope, p: Any, partition: int, offset: int) -> None:
        if not isinstance(p, PredictionLogged):
            ROWS.labels("predictions", "ignored").inc()
            return
        self._ensure_index()
        start = self._start_of(p.first_at.timestamp())
        key = window_key(p.deployment, p.version, p.variant, start)
        st = await self._load(key)
        ref, digest = await self.reference(p.model, p.version)
        if st is None:
            st = WindowState(p.deployment, p.model, p.version, p.variant, start, start + self.window_ms, digest)
            self.live[key] = st
        batch_key = f"{key}|{env.id}"
        attribute = await self._fairness_attribute(p.deployment)
        if env.id in st.events or batch_key in self.batch_keys[key]:
            # a redelivery (the window holds this event) or a re-sent copy of a batch the join holds (same event id:
            # its join rows are written only once the window state that counts it is on the broker, below)
            if batch_key not in self.batch_keys[key]:  # a crash came between the two writes: restore the join rows
                scratch = WindowState(p.deployment, p.model, p.version, p.variant, start, st.end)
                cols = fold_predictions(scratch, p, ref, prediction_bins=self.settings.prediction_bins,
                                        fairness_attribute=attribute)  # fmt: skip
                self.indexes[p.deployment].add(key, cols)
                self.batch_keys[key].add(batch_key)
                self._put(self.joins, batch_key, encode_batch(key, cols))
            ROWS.labels("predictions", "duplicate").inc(p.rows)
            return
        if st.closing or st.db_labels is not None:  # the window is closed: keep the rows joinable, not counted
            scratch = WindowState(p.deployment, p.model, p.version, p.variant, start, st.end)
            cols = fold_predictions(scratch, p, ref, prediction_bins=self.settings.prediction_bins,
                                    fairness_attribute=attribute)  # fmt: skip
            st.late_rows += p.rows
            ROWS.labels("predictions", "late").inc(p.rows)
        else:
            if st.reference_digest is None:
                st.reference_digest = digest
            cols = fold_predictions(st, p, ref, prediction_bins=self.settings.prediction_bins,
                                    fairness_attribute=attribute)  # fmt: skip
            ROWS.labels("predictions", "applied").inc(p.rows)
        self.indexes[p.deployment].add(key, cols)  # in memory at once: the labels agent may look it up next
        self.batch_keys[key].add(batch_key)
        credited = await self._join_held(st, cols)
        st.events.add(env.id)
        self._save(st, partition)
        # The window state first, then the join rows and labelled marks: those say "this batch / label is in the
        # window" to a later re-send, so they must never reach the broker without the state they describe.
        await self._settle_now()
        self._put(self.joins, batch_key, encode_batch(key, cols))
        for table_key, hashes in credited:
            self._record_labelled(key, table_key, hashes)

    async def _join_held(self, st: WindowState, cols: BatchColumns) -> list[tuple[str, npt.NDArray[np.uint64]]]:
        """Credit labels that arrived before this batch (held.py) to the batch's window.

        The window records each joined label record's event id, so a redelivery of that label record is recognised
        as applied. The held entry is kept (marked matched) until its age runs out: a mirrored copy of the same
        request may still come. Returns the ``labelled`` table writes to make once the window state is saved."""
        credited: list[tuple[str, npt.NDArray[np.uint64]]] = []
        for hit in self.held_labels[st.deployment].match(cols.hashes):
            entry = hit.entry
            entry.matched[hit.label_rows] = True
            self._put(self.held, hit.key, entry.to_bytes())
            fresh = self.labelled[st.key].fresh(cols.hashes[hit.batch_rows])
            if not fresh.all():  # two held records (two event ids) labelling the same prediction: the first wins
                ROWS.labels("labels", "duplicate").inc(int((~fresh).sum()))
            rows, label_rows = hit.batch_rows[fresh], hit.label_rows[fresh]
            if not rows.size:
                continue
            y, pred = entry.labels[label_rows], cols.preds[rows].astype(np.int64)
            await self._apply_labels(st, y, pred, cols.scores[rows], cols.groups[rows])
            st.events.add(hit.key.rsplit("|", 1)[-1])  # the held label record's event id (key: deployment|id)
            self.labelled[st.key].add(cols.hashes[rows])
            credited.append((f"{st.key}|h|{hit.key}", cols.hashes[rows]))
            ROWS.labels("labels", "joined_held").inc(int(rows.size))
        return credited

    def _record_labelled(self, window: str, table_key: str, hashes: npt.NDArray[np.uint64]) -> None:
        """Persist that ``hashes`` took their label in ``window`` (the ``labelled`` table, so a restart still
        knows; the caller has added them to ``self.labelled`` already). One table value per (window, label record);
        a second write under the same key extends it. Written *after* the window state: if a crash loses this write
        but not the window's, the redelivered record is caught by the window's event ids; the other way round the
        label would be skipped as a duplicate and lost."""
        self.labelled[window].add(hashes)
        self.labelled_keys[window].add(table_key)
        old = _as_bytes(self.labelled_table.get(table_key))
        if old is not None:
            hashes = np.union1d(decode_labelled(old)[1], hashes)
        self._put(self.labelled_table, table_key, encode_labelled(window, hashes))

    async def _fairness_attribute(self, deployment: str) -> str | None:
        async with self.pool.acquire() as conn:
            _, policy = await self.policy(conn, deployment)
        return policy.fairness.attribute or self.settings.fairness_attribute

    async def on_label(self, env: Envelope, p: Any, partition: int, offset: int) -> None:
        if not isinstance(p, LabelObserved):
            return
        self._ensure_index()
        hashes = id_hashes([lab.prediction_id for lab in p.labels])
        y_all = to_binary([lab.label for lab in p.labels])
        m = self.indexes[p.deployment].lookup(hashes)
        if not m.found.all():  # the prediction may not be here yet: hold the label (held.py)
            self._hold(p.deployment, f"{p.deployment}|{env.id}", hashes[~m.found], y_all[~m.found], partition, offset)
        y = y_all[m.rows]
        keys = np.array(m.windows, dtype=object)
        for key in sorted(set(m.windows)):  # a loop over windows, not rows
            st = await self._load(key)
            if st is None:
                ROWS.labels("labels", "expired").inc(int((keys == key).sum()))
                continue
            if env.id in st.events:  # a redelivery (or an upstream re-send) of a record this window has applied
                ROWS.labels("labels", "duplicate").inc(int((keys == key).sum()))
                continue
            rows = np.flatnonzero(keys == key)
            h = hashes[m.rows[rows]]
            fresh = self.labelled[key].fresh(h)
            if not fresh.all():  # the prediction has its label already (a re-sent event, or a second opinion)
                ROWS.labels("labels", "duplicate").inc(int((~fresh).sum()))
            rows = rows[fresh]
            if rows.size:
                await self._apply_labels(st, y[rows], m.preds[rows].astype(np.int64), m.scores[rows], m.groups[rows])
            st.events.add(env.id)
            self._save(st, partition)
            if rows.size:
                await self._settle_now()  # the window state first (see _record_labelled)
                self._record_labelled(key, f"{key}|l|{env.id}", h[fresh])
            ROWS.labels("labels", "applied").inc(int(rows.size))

    def _hold(
        self,
        deployment: str,
        key: str,
        hashes: npt.NDArray[np.uint64],
        y: npt.NDArray[np.int64],
        partition: int,
        offset: int,
    ) -> None:
        entry = HeldLabels(deployment, hashes, y, np.zeros(hashes.size, dtype=bool), int(time.time() * 1000),
                           partition, offset)  # fmt: skip
        ROWS.labels("labels", "held").inc(entry.rows)
        self._put(self.held, key, entry.to_bytes())
        for old_key, old in self.held_labels[deployment].hold(key, entry, self.settings.label_hold_max_rows):
            HELD_DROPPED.labels("cap").inc(old.unmatched)
            self._tombstone(self.held, old_key, old.partition)
        HELD_ROWS.set(sum(h.rows for h in self.held_labels.values()))

    async def _apply_labels(
        self,
        st: WindowState,
        yt: npt.NDArray[np.int64],
        pred: npt.NDArray[np.int64],
        raw_scores: npt.NDArray[np.float32],
        groups_raw: npt.NDArray[np.int16],
    ) -> None:
        """Fold labelled rows (label, predicted class, score, group) into a window's quality and fairness state."""
        scores = np.where(np.isnan(raw_scores), pred, raw_scores).astype(np.float64)
        if st.quality is None:
            st.quality = BinaryClassificationState(self.settings.score_bins)
        st.quality.update(yt, np.where(yt >= 0, scores, np.nan))
        st.confusion.update(yt, pred)
        attribute = await self._fairness_attribute(st.deployment)
        ref, _ = await self.reference(st.model, st.version)
        if attribute and ref is not None and ref.categorical is not None and attribute in ref.categorical.names:
            n_groups = ref.categorical.categories[ref.categorical.names.index(attribute)].size + 1
            if st.fairness is None or st.fairness.n_groups != n_groups:
                st.fairness = GroupRates(n_groups)
            st.fairness.update(groups_raw.astype(np.int64), yt, pred)
        st.labels += int((yt >= 0).sum())

    async def on_metric(self, env: Envelope, p: Any, partition: int, offset: int) -> None:
        if not isinstance(p, MetricObserved):
            return
        start = self._start_of(p.time.timestamp())
        variant = p.labels.get("variant", "stable")
        version = p.version if p.version is not None else self._version_at(p.deployment, variant, start)
        if version is None:
            ROWS.labels("metrics", "no_version").inc()
            return
        key = window_key(p.deployment, version, variant, start)
        st = await self._load(key)
        if st is None:
            model = p.labels.get("model") or next(
                (w.model for w in self.live.values() if w.deployment == p.deployment and w.version == version), None
            )
            if model is None:
                ROWS.labels("metrics", "unknown_model").inc()
                return
            _, digest = await self.reference(model, version)
            st = WindowState(p.deployment, model, version, variant, start, start + self.window_ms, digest)
            self.live[key] = st
        if st.seen("m", partition, offset) or st.closing or st.db_labels is not None:
            ROWS.labels("metrics", "duplicate_or_late").inc()
            return
        name = p.name
        if name in ("latency_ms", "latency"):
            st.latency.update(np.array([p.value], dtype=np.float64))
        elif name in ("errors", "error_count"):
            st.errors += max(0, int(p.value))
        elif name in ("requests", "request_count"):
            st.requests += max(0, int(p.value))
        else:
            ROWS.labels("metrics", "ignored").inc()
        st.mark("m", partition, offset)
        self._save(st, partition)

    def _version_at(self, deployment: str, variant: str, start: int) -> int | None:
        """The version that served ``variant`` (stable unless the metric says otherwise) of ``deployment`` in the
        window starting at ``start``, for a metric that names no version: the version of that window's prediction
        state, else the version of the latest earlier window of that variant still in memory. None when the
        monitor has seen no traffic of it (the metric is then dropped and counted)."""
        best: tuple[int, int] | None = None  # (window start, version)
        for w in self.live.values():
            if w.deployment != deployment or w.variant != variant or w.start > start:
                continue
            if best is None or (w.start, w.version) > best:
                best = (w.start, w.version)
        return best[1] if best is not None else None

    # -- closing windows -----------------------------------------------------------------------------------------
    async def _tick(self) -> None:
        try:
            await self.close_due()
        except Exception:
            log.exception("window closer failed; will retry at the next tick")

    async def close_due(self, now: float | None = None) -> int:
        """Close every window past its end + grace, and revise closed windows that got labels since."""
        async with self._close_lock:
            now_ms = (now if now is not None else time.time()) * 1000
            for key in list(self.windows.keys()):
                if key not in self.live:
                    await self._load(key)
            LIVE_WINDOWS.set(len(self.live))
            grace = self.settings.window_grace_s * 1000
            due = [
                st
                for st in self.live.values()
                if st.end + grace <= now_ms and (st.db_labels is None or st.labels != st.db_labels)
            ]
            groups: dict[tuple[str, int], list[WindowState]] = defaultdict(list)
            for st in due:
                groups[(st.deployment, st.start)].append(st)
            closed = 0
            for (_, _), states in sorted(groups.items(), key=lambda kv: kv[0][1]):
                closed += await self._close_group(states)
            self._prune(now_ms)
            self._expire_held(now_ms)
            return closed

    async def _close_group(self, states: list[WindowState]) -> int:
        states.sort(key=lambda s: (s.variant != "stable", s.version))
        for st in states:
            st.closing = True
        settled: list[tuple[WindowState, int]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            emitter = Emitter(conn, self.runtime.source, "service:monitor")
            changed: list[tuple[Figures, int, Envelope]] = []
            for st in states:
                kind = "tumbling"
                row = await store.window_row_for_update(
                    conn, st.deployment, st.version, st.variant, kind, _ts(st.start)
                )
                if row is not None and int(row["labels"]) >= st.labels:
                    settled.append((st, int(row["labels"])))
                    continue
                ref, _ = await self.reference(st.model, st.version)
                _, policy = await self.policy(conn, st.deployment)
                baseline = await store.baseline_hist(conn, st.deployment, st.version, policy.drift.min_samples)
                attribute = policy.fairness.attribute or self.settings.fairness_attribute
                labels_seen = st.labels  # the labels agent may fold more while we await below
                fig = compute_figures(st, ref, baseline_hist=baseline, sensitive_attribute=attribute)
                revision = 0 if row is None else int(row["revision"]) + 1
                env = await emitter.emit(window_event(fig, revision))
                await store.save_window(conn, fig, revision, env.id)
                changed.append((fig, revision, env))
                settled.append((st, labels_seen))
                WINDOWS_CLOSED.labels("tumbling" if revision == 0 else "revision").inc()
            await self._decide(conn, emitter, changed)
            if any(rev == 0 for _, rev, _ in changed):
                await self._rolling(conn, emitter, [st for st in states if st.db_labels is None])
        for st, labels in settled:  # only after the commit: a failed transaction is retried at the next tick
            st.db_labels = labels
        return len(changed)

    async def _decide(
        self, conn: asyncpg.Connection, emitter: Emitter, changed: list[tuple[Figures, int, Envelope]]
    ) -> None:
        todo: dict[tuple[str, int, str, str], tuple[Figures, int, Envelope | None]] = {}
        for fig, revision, window_env in changed:
            todo[(fig["deployment"], fig["version"], fig["variant"], fig["start"])] = (fig, revision, window_env)
            if fig["variant"] == "stable":  # a revised stable window changes its candidate's comparison
                found = await store.window_at(conn, fig["deployment"], "candidate", fig["start"])
                if found is not None:
                    cfig, crev = found
                    todo.setdefault(
                        (cfig["deployment"], cfig["version"], "candidate", cfig["start"]), (cfig, crev, None)
                    )
        for (deployment, version, variant, start), (fig, revision, env) in todo.items():
            policy_version, policy = await self.policy(conn, deployment)
            hist = await store.history(conn, deployment, version, variant, start, 100)
            peer = None
            if variant in ("candidate", "shadow"):  # a shadow is judged against stable like a canary
                found = await store.window_at(conn, deployment, "stable", start)
                peer = found[0] if found is not None else None
            for d in evaluate(policy, policy_version, fig, hist, peer, revision=revision):
                event_id = new_id()
                claimed = await store.claim_decision(
                    conn,
                    dedupe_key=d.dedupe_key,
                    deployment=deployment,
                    event_type=d.payload.TYPE,
                    event_id=event_id,
                    window_start=start,
                    policy_version=policy_version,
                    payload=d.payload.to_data(),
                )
                if claimed:
                    await emitter.emit(d.payload, cause=env, event_id=event_id)
                    DECISIONS.labels(d.payload.TYPE).inc()

    async def _rolling(self, conn: asyncpg.Connection, emitter: Emitter, states: list[WindowState]) -> None:
        """The rolling long window: the merge of the last ``rolling_windows`` tumbling windows still in memory."""
        n = self.settings.rolling_windows
        if n <= 1:
            return
        for st in states:
            parts = sorted(
                (w for w in self.live.values()
                 if (w.deployment, w.version, w.variant) == (st.deployment, st.version, st.variant)
                 and st.start - (n - 1) * self.window_ms <= w.start <= st.start),
                key=lambda w: w.start,
            )  # fmt: skip
            if len(parts) < 2:
                continue
            merged = parts[0]
            for w in parts[1:]:
                merged = merged.merge(w)
            ref, _ = await self.reference(st.model, st.version)
            fig = compute_figures(merged, ref, kind="rolling")
            env = await emitter.emit(window_event(fig, 0))
            await store.save_window(conn, fig, 0, env.id)
            WINDOWS_CLOSED.labels("rolling").inc()

    def _prune(self, now_ms: float) -> None:
        """Forget windows (state and join rows) past the label horizon; tombstone them in the changelogs."""
        horizon = self.settings.label_horizon_s * 1000
        expired = [
            st
            for st in self.live.values()
            if st.db_labels is not None and st.end + horizon < now_ms and not self._busy(st)
        ]
        if not expired:
            return
        by_dep: dict[str, set[str]] = defaultdict(set)
        for st in expired:
            by_dep[st.deployment].add(st.key)
            self.live.pop(st.key, None)
            tables: tuple[tuple[Any, list[str]], ...] = (
                (self.windows, [st.key]),
                (self.joins, sorted(self.batch_keys.pop(st.key, set()))),
                (self.labelled_table, sorted(self.labelled_keys.pop(st.key, set()))),
            )
            self.labelled.pop(st.key, None)
            for table, table_keys in tables:
                for k in table_keys:
                    self._tombstone(table, k, st.partition)
        for dep, dropped in by_dep.items():
            self.indexes[dep].drop_windows(dropped)

    def _tombstone(self, table: Any, key: str, partition: int | None) -> None:
        """Delete a table row from outside an event (the timer): memory, then a tombstone to its changelog."""
        table.data.pop(key, None)
        if partition is not None:
            table.send_changelog(partition, key, None)

    def _expire_held(self, now_ms: float) -> None:
        """Drop held labels past ``label_hold_s``; those that never matched a prediction are counted."""
        max_age = self.settings.label_hold_s * 1000
        for held in self.held_labels.values():
            for key, entry in held.expire(now_ms, max_age):
                HELD_DROPPED.labels("expired").inc(entry.unmatched)
                ROWS.labels("labels", "unmatched").inc(entry.unmatched)
                self._tombstone(self.held, key, entry.partition)
        HELD_ROWS.set(sum(h.rows for h in self.held_labels.values()))

    @staticmethod
    def _busy(st: WindowState) -> bool:
        return st.db_labels is None or st.labels != st.db_labels


def _table_bytes(table: Any) -> dict[str, bytes]:
    """A table's live rows as ``{key: bytes}`` (tombstoned rows are gone from ``data`` already)."""
    out: dict[str, bytes] = {}
    for key, value in list(table.data.items()):
        raw = _as_bytes(value)
        if raw is not None:
            out[key] = raw
    return out


def _as_bytes(value: Any) -> bytes | None:
    """A table value as bytes: faust hands values recovered from a changelog back in other shapes than it was
    given (str or the parsed JSON object) — normalise them."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


def _ts(ms: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC)
