"""The window closer: closes windows behind the watermark, revises windows that got late labels, decides.

**When a window closes.** Not when the wall clock passes its end: after a restart or a slow spell the stream
partitions hold a backlog, and a window closed then would miss the rows still in it (tried on the faust monitor:
after a kill -9, 40–68 % of a downtime window's predictions ended as late rows while all its labels counted).
Each stream partition (predictions, labels, metrics) has a watermark in ``stream_watermarks``: the event time of
the newest record consumed from it, or — when the consumer has read everything the broker had — the time of the
fetch that showed it (``EventConsumer.caught_up_ms``, less :data:`CAUGHT_UP_SLACK_MS`). A window closes once the
slowest watermark of all partitions has passed its end plus ``window_grace_s``; records produced up to the grace
after the window's end still count.

**What closing does**, in one transaction per group of windows that share a deployment and start (stable first,
so a candidate is judged against its stable window's figures): figures from the state, ``monitor.window`` with a
revision number, decisions from the policy (deduplicated by key, so a retried close emits nothing twice), and the
rolling long window. Windows and held labels past their horizon are deleted afterwards.

**The domain classifier** (domain.py) takes ~0.4 s per window, so it runs on a worker thread before the group's
lock is taken (the batches go on meanwhile); the close under the lock finds its result cached, or — when a batch
changed the window's sample in between — awaits a fresh one. Tumbling windows only: the rolling window re-judges
rows its tumbling windows were judged on.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import partial

import asyncpg
from prometheus_client import Counter, Gauge

from vigil.bus.consumer import EventConsumer
from vigil.bus.context import Emitter
from vigil.events import Envelope, new_id, topics
from vigil.monitor import store, window_store
from vigil.monitor.batch import HELD_DROPPED, ROWS, BatchWork
from vigil.monitor.decisions import episode_start, evaluate, stable_peers
from vigil.monitor.domain import DomainOpinions
from vigil.monitor.engine import MonitorEngine
from vigil.monitor.figures import Figures, compute_figures, window_event
from vigil.monitor.gauges import export_window
from vigil.monitor.groups import fairness_groups, group_names
from vigil.monitor.handlers import STREAM_TOPICS, expire_held, replay_held
from vigil.monitor.held_predictions import HELD_PREDICTION_ROWS
from vigil.monitor.state import WindowState
from vigil.service.periodic import PeriodicTask

log = logging.getLogger(__name__)

#: A fetch that showed a partition's end is trusted for what the broker had this long before it returned
#: (records acknowledged to their producer just before the fetch may not be in its highwater yet).
CAUGHT_UP_SLACK_MS = 1000

WINDOWS_CLOSED = Counter("vigil_monitor_windows_closed_total", "Windows closed or revised", ["kind"])
DECISIONS = Counter("vigil_monitor_decisions_total", "Decision events emitted", ["type"])
LIVE_WINDOWS = Gauge("vigil_monitor_live_windows", "Window states kept in Postgres (open or still revisable)")
HELD_ROWS = Gauge("vigil_monitor_held_labels", "Labels held while waiting for their predictions")
WATERMARK_LAG = Gauge("vigil_monitor_watermark_lag_seconds", "Wall clock minus the slowest stream watermark")


class WindowCloser(PeriodicTask):
    """Every ``tick_s``: advance watermarks, close and revise due windows, expire old state."""

    def __init__(self, engine: MonitorEngine, consumer: EventConsumer | None, source: str) -> None:
        super().__init__("monitor-window-closer", engine.settings.tick_s)
        self.engine = engine
        self.consumer = consumer
        self.source = source
        self.opinions = DomainOpinions()

    async def tick(self) -> int:
        return await self.close_due()

    async def stop(self) -> None:
        await super().stop()
        self.opinions.close()

    async def close_due(self, now: float | None = None) -> int:
        """One pass; returns how many window figures it stored."""
        engine = self.engine
        s = engine.settings
        now_ms = int((now if now is not None else time.time()) * 1000)
        await self._release_held(now_ms)
        async with engine.pool.acquire() as conn:
            await window_store.advance_watermarks(conn, self._caught_up())
            low = await window_store.low_watermark(conn, {t: self._partitions()[t] for t in STREAM_TOPICS})
            if low is None:
                return 0
            WATERMARK_LAG.set(max(0.0, (now_ms - low) / 1000))
            due = await window_store.due_windows(conn, low - round(s.window_grace_s * 1000))
        groups: dict[tuple[str, int], list[str]] = defaultdict(list)
        for r in due:
            groups[(r["deployment"], int(r["start_ms"]))].append(r["key"])
        closed = 0
        for (_, _), keys in sorted(groups.items(), key=lambda kv: kv[0][1]):
            await self._prepare_domain(keys)
            async with engine.lock:
                closed += await self._close_group(keys)
        await self._expire(now_ms)
        return closed

    async def _release_held(self, now_ms: int) -> None:
        """Fold held predictions (held_predictions.py) whose version is registered now — the registration's batch
        folds those it sees; this catches a batch another instance held meanwhile — and, without the reference,
        those whose version is still unknown ``prediction_hold_s`` after they arrived *and* after every partition of
        ``vigil.models`` was read to its end (so a restart after a long stop does not give up on them before it has
        read the registrations). One transaction per step, like a batch's."""
        engine = self.engine
        async with engine.pool.acquire() as conn:
            ready = await window_store.held_versions_registered(conn)
            models_read = await window_store.low_watermark(conn, {topics.MODELS: self._partitions()[topics.MODELS]})
            bound = now_ms - round(engine.settings.prediction_hold_s * 1000)
            if models_read is not None:
                bound = min(bound, models_read)
            expiring = models_read is not None and bool(await window_store.held_predictions_before(conn, bound))
        steps = [partial(replay_held, model=m, version=v) for m, v in ready]
        if expiring:
            steps.append(partial(expire_held, arrived_before_ms=bound))
        for step in steps:
            async with engine.lock:
                confirm = engine.begin()
                async with engine.pool.acquire() as conn, conn.transaction():
                    work = BatchWork(engine, conn)
                    await step(work)
                    await work.flush()
                confirm()

    def _partitions(self) -> dict[str, int]:
        """Partitions per stream topic: as the broker's metadata has them, else as this service creates them."""
        known = self.consumer.partition_counts() if self.consumer is not None else {}
        default = self.engine.settings.kafka_topic_partitions
        return {t: known.get(t) or default for t in (*STREAM_TOPICS, topics.MODELS)}

    def _caught_up(self) -> dict[tuple[str, int], int]:
        """Caught-up times of the stream partitions (the watermark) and of ``vigil.models``' (read to its end then:
        the held predictions' expiry waits for it; ``low_watermark`` of the streams does not read these rows)."""
        if self.consumer is None:
            return {}
        read = (*STREAM_TOPICS, topics.MODELS)
        return {k: at - CAUGHT_UP_SLACK_MS for k, at in self.consumer.caught_up_ms().items() if k[0] in read}

    async def _prepare_domain(self, keys: list[str]) -> None:
        """Run the domain classifier of due windows before the lock (results cached in :attr:`opinions`)."""
        engine = self.engine
        if engine.settings.domain_sample_rows <= 0:
            return
        async with engine.pool.acquire() as conn:
            raw = await window_store.load_states(conn, keys)
        for data in raw.values():
            st = WindowState.from_bytes(data, None)
            await engine.references.get(st.model, st.version)
            await self.opinions.figures(st, engine.references.multivariate(st.model, st.version))

    async def _close_group(self, keys: list[str]) -> int:
        engine = self.engine
        async with engine.pool.acquire() as conn, conn.transaction():
            rows = await window_store.lock_for_close(conn, keys)
            if rows and await window_store.held_at(conn, rows[0]["deployment"], int(rows[0]["start_ms"])):
                return 0  # a batch held predictions of this start since due_windows: wait for them (a fresh read)
            states: list[tuple[WindowState, int]] = []
            for r in rows:
                head = WindowState.from_bytes(bytes(r["state"]), None)
                ref, _ = await engine.references.get(head.model, head.version)
                st = WindowState.from_bytes(bytes(r["state"]), ref) if ref is not None else head
                states.append((st, int(r["labels"])))
            states.sort(key=lambda sl: (sl[0].variant != "stable", sl[0].version))
            emitter = Emitter(conn, self.source, "service:monitor")
            changed: list[tuple[Figures, int, Envelope]] = []
            first_close: list[WindowState] = []
            for st, labels in states:
                start = datetime.fromtimestamp(st.start / 1000, UTC)
                row = await store.window_row_for_update(conn, st.deployment, st.version, st.variant, "tumbling", start)
                await window_store.mark_closed(conn, st.key, labels)
                if row is not None and int(row["labels"]) >= labels:
                    continue  # the stored figures count these labels already
                ref, _ = await engine.references.get(st.model, st.version)
                _, policy = await engine.policies.get(conn, st.deployment)
                baseline = await store.baseline_hist(conn, st.deployment, st.version, policy.drift.min_samples)
                attribute = policy.fairness.attribute or engine.settings.fairness_attribute
                groups = fairness_groups(attribute, ref, policy.fairness.groups)
                mvref = engine.references.multivariate(st.model, st.version)
                domain = await self.opinions.figures(st, mvref) if engine.settings.domain_sample_rows > 0 else None
                fig = compute_figures(
                    st, ref, baseline_hist=baseline, sensitive_attribute=attribute, multivariate=mvref, domain=domain,
                    fairness_groups=group_names(groups) if groups is not None else None,
                )  # fmt: skip
                export_window(fig)
                revision = 0 if row is None else int(row["revision"]) + 1
                env = await emitter.emit(window_event(fig, revision))
                await store.save_window(conn, fig, revision, env.id)
                changed.append((fig, revision, env))
                if revision == 0:
                    first_close.append(st)
                WINDOWS_CLOSED.labels("tumbling" if revision == 0 else "revision").inc()
            await self._decide(conn, emitter, changed)
            await self._rolling(conn, emitter, first_close)
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
            policy_version, policy = await self.engine.policies.get(conn, deployment)
            hist = await store.history(conn, deployment, version, variant, start, 100)
            peer, peers = None, None
            if variant in ("candidate", "shadow"):  # a shadow is judged against stable like a canary
                at, begin = datetime.fromisoformat(start), datetime.fromisoformat(episode_start(hist, fig))
                around = await store.figures_between(conn, deployment, begin, at + timedelta(milliseconds=1))
                peers = stable_peers(around, version)  # the stable windows of its rollout so far
                peer = peers.get(at)
            for d in evaluate(policy, policy_version, fig, hist, peer, revision=revision, peers=peers):
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
        """The rolling long window: the merge of the last ``rolling_windows`` tumbling windows still kept."""
        n = self.engine.settings.rolling_windows
        if n <= 1:
            return
        for st in states:
            from_ms = st.start - (n - 1) * self.engine.window_ms
            raw = await window_store.series_states(conn, st.deployment, st.version, st.variant, from_ms, st.start)
            if len(raw) < 2:
                continue
            ref, _ = await self.engine.references.get(st.model, st.version)
            parts = [WindowState.from_bytes(b, ref) for b in raw]
            merged = parts[0]
            for w in parts[1:]:
                merged = merged.merge(w)
            fig = compute_figures(
                merged, ref, kind="rolling", multivariate=self.engine.references.multivariate(st.model, st.version)
            )
            env = await emitter.emit(window_event(fig, 0))
            await store.save_window(conn, fig, 0, env.id)
            WINDOWS_CLOSED.labels("rolling").inc()

    async def _expire(self, now_ms: int) -> None:
        """Delete windows past the label horizon (with their join rows) and held labels past their hold."""
        s = self.engine.settings
        async with self.engine.lock, self.engine.pool.acquire() as conn, conn.transaction():
            expired = await window_store.expire_windows(conn, now_ms - round(s.label_horizon_s * 1000))
            for entry in await window_store.expire_held(conn, now_ms - round(s.label_hold_s * 1000)):
                HELD_DROPPED.labels("expired").inc(entry.unmatched)
                ROWS.labels("labels", "unmatched").inc(entry.unmatched)
            LIVE_WINDOWS.set(await conn.fetchval("SELECT count(*) FROM window_state"))
            HELD_ROWS.set(await window_store.held_rows(conn))
            HELD_PREDICTION_ROWS.set(await window_store.held_prediction_total(conn))
        self.engine.forget_windows(expired)
