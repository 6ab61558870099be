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
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import faust
import numpy as np
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
from vigil.monitor import store
from vigil.monitor.decisions import evaluate
from vigil.monitor.figures import Figures, compute_figures, window_event
from vigil.monitor.ingest import decode_stream_event, fold_predictions, id_hashes, to_binary
from vigil.monitor.joins import JoinIndex, decode_batch, encode_batch
from vigil.monitor.policy import Policy
from vigil.monitor.settings import MonitorSettings
from vigil.monitor.state import WindowState, window_key
from vigil.service.runtime import ServiceRuntime

log = logging.getLogger(__name__)

ROWS = Counter("vigil_monitor_rows_total", "Stream rows processed by the monitor", ["stream", "outcome"])
WINDOWS_CLOSED = Counter("vigil_monitor_windows_closed_total", "Windows closed or revised", ["kind"])
DECISIONS = Counter("vigil_monitor_decisions_total", "Decision events emitted", ["type"])
LIVE_WINDOWS = Gauge("vigil_monitor_live_windows", "Window states held in the windows table")


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
        self._index_built = False
        self._references: dict[tuple[str, int], tuple[float, DatasetProfile | None, str | None]] = {}
        self._policies: dict[str, tuple[float, int, Policy]] = {}
        self._close_lock = asyncio.Lock()
        self._stack = AsyncExitStack()
        self.dead_lettered = 0
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
        return app

    def _agent(self, logical: str, handler: Any) -> Any:
        async def agent(stream: Any) -> None:
            async for event in stream.events():
                await self._safely(logical, event, handler)

        agent.__name__ = agent.__qualname__ = f"monitor_{logical.replace('.', '_')}"
        return agent

    async def start(self) -> None:
        await self._stack.enter_async_context(faust_app_running(self.app, stop_timeout=30.0))

    async def stop(self) -> None:
        await self._stack.aclose()

    # -- per message ---------------------------------------------------------------------------------------------
    async def _safely(self, logical: str, event: Any, handler: Any) -> None:
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
        self.windows[st.key] = st.to_bytes()

    def _ensure_index(self) -> None:
        """After a restart, rebuild the label join index from the recovered ``joins`` table (once)."""
        if self._index_built:
            return
        self._index_built = True
        for key, value in list(self.joins.items()):
            raw = _as_bytes(value)
            if raw is None:
                continue
            window, cols = decode_batch(raw)
            deployment = window.split("|", 1)[0]
            self.indexes[deployment].add(window, cols)
            self.batch_keys[window].add(key)

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
        if st.seen("p", partition, offset):
            ROWS.labels("predictions", "duplicate").inc(p.rows)
            return
        attribute = await self._fairness_attribute(p.deployment)
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
        batch_key = f"{key}|{env.id}"
        self.indexes[p.deployment].add(key, cols)
        self.batch_keys[key].add(batch_key)
        self.joins[batch_key] = encode_batch(key, cols)
        st.mark("p", partition, offset)
        self._save(st, partition)

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
        ROWS.labels("labels", "unmatched").inc(int((~m.found).sum()))
        y = y_all[m.found]
        keys = np.array(m.windows, dtype=object)
        attribute = await self._fairness_attribute(p.deployment)
        for key in sorted(set(m.windows)):  # a loop over windows, not rows
            st = await self._load(key)
            if st is None:
                ROWS.labels("labels", "expired").inc(int((keys == key).sum()))
                continue
            if st.seen("l", partition, offset):
                continue
            rows = keys == key
            yt, pred = y[rows], m.preds[rows].astype(np.int64)
            scores = np.where(np.isnan(m.scores[rows]), pred, m.scores[rows]).astype(np.float64)
            if st.quality is None:
                st.quality = BinaryClassificationState(self.settings.score_bins)
            st.quality.update(yt, np.where(yt >= 0, scores, np.nan))
            st.confusion.update(yt, pred)
            groups = m.groups[rows].astype(np.int64)
            ref, _ = await self.reference(st.model, st.version)
            if attribute and ref is not None and ref.categorical is not None and attribute in ref.categorical.names:
                n_groups = ref.categorical.categories[ref.categorical.names.index(attribute)].size + 1
                if st.fairness is None or st.fairness.n_groups != n_groups:
                    st.fairness = GroupRates(n_groups)
                st.fairness.update(groups, yt, pred)
            st.labels += int((yt >= 0).sum())
            st.mark("l", partition, offset)
            self._save(st, partition)
            ROWS.labels("labels", "applied").inc(int(rows.sum()))

    async def on_metric(self, env: Envelope, p: Any, partition: int, offset: int) -> None:
        if not isinstance(p, MetricObserved):
            return
        if p.version is None:
            ROWS.labels("metrics", "no_version").inc()
            return
        start = self._start_of(p.time.timestamp())
        variant = p.labels.get("variant", "stable")
        key = window_key(p.deployment, p.version, variant, start)
        st = await self._load(key)
        if st is None:
            model = p.labels.get("model") or next(
                (w.model for w in self.live.values() if w.deployment == p.deployment and w.version == p.version), None
            )
            if model is None:
                ROWS.labels("metrics", "unknown_model").inc()
                return
            _, digest = await self.reference(model, p.version)
            st = WindowState(p.deployment, model, p.version, variant, start, start + self.window_ms, digest)
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
            )
            for table, table_keys in tables:
                for k in table_keys:
                    table.data.pop(k, None)
                    if st.partition is not None:
                        table.send_changelog(st.partition, k, None)
        for dep, dropped in by_dep.items():
            self.indexes[dep].drop_windows(dropped)

    @staticmethod
    def _busy(st: WindowState) -> bool:
        return st.db_labels is None or st.labels != st.db_labels


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
