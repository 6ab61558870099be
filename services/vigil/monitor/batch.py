"""One consumed batch's working set: the windows it touches, the join rows and held labels it writes.

Handlers (handlers.py) fold events into the windows they get from :meth:`BatchWork.window`; :meth:`BatchWork.flush`
then writes every touched window, the new join rows and the watermarks in the batch's transaction — the one that
also writes the inbox rows, so either all of a batch's effects and its "applied" marks commit, or none do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import asyncpg
import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

from vigil.bus.context import Delivery
from vigil.kernels.fairness import GroupRates
from vigil.kernels.quality import BinaryClassificationState
from vigil.monitor import window_store
from vigil.monitor.engine import MonitorEngine
from vigil.monitor.held import HeldLabels, evict_over_cap, match_held
from vigil.monitor.ingest import BatchColumns
from vigil.monitor.joins import encode_batch
from vigil.monitor.state import WindowState

ROWS = Counter("vigil_monitor_rows_total", "Stream rows processed by the monitor", ["stream", "outcome"])
HELD_DROPPED = Counter(
    "vigil_monitor_held_labels_dropped_total",
    "Labels held for a prediction that never arrived: dropped when too old or evicted by the per-deployment cap",
    ["reason"],
)


class BatchWork:
    """The state one batch reads and writes (see module docstring)."""

    def __init__(self, engine: MonitorEngine, conn: asyncpg.Connection) -> None:
        self.engine = engine
        self.conn = conn
        self.windows: dict[str, WindowState] = {}
        self.closed: dict[str, bool] = {}  # window key → its figures were stored already (rows arriving are late)
        self._touched: set[str] = set()
        self._joins: list[tuple[str, str, str, BatchColumns]] = []  # (deployment, window, event id, columns)
        self._held: dict[str, list[HeldLabels]] = {}
        self._held_changed: dict[int, HeldLabels] = {}
        self._event_ms: dict[tuple[str, int], int] = {}

    # -- windows -------------------------------------------------------------------------------------------------
    async def window(self, key: str, make: Callable[[], WindowState] | None = None) -> WindowState | None:
        """The window ``key``, its row locked for this transaction; a new one from ``make`` when there is none
        (None when there is none and no ``make``: the window expired, or never existed)."""
        await self.lock([key])
        if key not in self.windows:
            if make is None:
                return None
            self.windows[key], self.closed[key] = make(), False
        return self.windows[key]

    async def lock(self, keys: list[str]) -> None:
        """Lock several windows in key order up front (fewer round trips, and one lock order for every writer)."""
        todo = sorted(set(keys) - self.windows.keys())
        if not todo:
            return
        rows = await window_store.lock_windows(self.conn, todo)
        for key, row in rows.items():
            self.windows[key] = await self.engine.state(self.conn, key, int(row["seq"]))
            self.closed[key] = row["closed_labels"] is not None

    def touch(self, key: str) -> None:
        self._touched.add(key)

    def saw(self, delivery: Delivery) -> None:
        """Advance the event-time watermark of the delivery's partition (closer.py)."""
        at_ms = int(datetime.fromisoformat(delivery.envelope.time).timestamp() * 1000)
        k = (delivery.topic, delivery.partition)
        if at_ms > self._event_ms.get(k, -1):
            self._event_ms[k] = at_ms

    # -- label join ----------------------------------------------------------------------------------------------
    def add_join(self, deployment: str, window: str, event_id: str, cols: BatchColumns) -> None:
        self._joins.append((deployment, window, event_id, cols))

    async def apply_labels(
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
            st.quality = BinaryClassificationState(self.engine.settings.score_bins)
        st.quality.update(yt, np.where(yt >= 0, scores, np.nan))
        st.confusion.update(yt, pred)
        ref, _ = await self.engine.references.get(st.model, st.version)
        _, groups = await self.engine.fairness(self.conn, st.deployment, ref)
        if groups is not None:
            n_groups = groups.size + 1
            if st.fairness is None or st.fairness.n_groups != n_groups:
                st.fairness = GroupRates(n_groups)
            st.fairness.update(groups_raw.astype(np.int64), yt, pred)
        st.labels += int((yt >= 0).sum())
        self.touch(st.key)

    async def credit(
        self, st: WindowState, hashes: npt.NDArray[np.uint64], y: npt.NDArray[np.int64], cols_rows: BatchColumns
    ) -> int:
        """Apply labels ``y`` for predictions ``hashes`` of window ``st`` — those not labelled before (the first
        label of a prediction wins); ``cols_rows`` holds the predictions' columns aligned with ``hashes``."""
        fresh = await window_store.claim_labelled(self.conn, st.key, hashes)
        if not fresh.all():
            ROWS.labels("labels", "duplicate").inc(int((~fresh).sum()))
        if fresh.any():
            await self.apply_labels(
                st, y[fresh], cols_rows.preds[fresh].astype(np.int64), cols_rows.scores[fresh], cols_rows.groups[fresh]
            )
        return int(fresh.sum())

    # -- held labels ---------------------------------------------------------------------------------------------
    async def held(self, deployment: str) -> list[HeldLabels]:
        if deployment not in self._held:
            self._held[deployment] = await window_store.held_for(self.conn, [deployment])
        return self._held[deployment]

    async def hold(self, entry: HeldLabels) -> None:
        """Hold a label record's unmatched labels; evict the deployment's oldest beyond the cap."""
        entries = await self.held(entry.deployment)
        entries.append(entry)
        ROWS.labels("labels", "held").inc(entry.rows)
        evicted = evict_over_cap(entries, self.engine.settings.label_hold_max_rows)
        for old in evicted:
            HELD_DROPPED.labels("cap").inc(old.unmatched)
            entries.remove(old)
        await window_store.drop_held(self.conn, evicted)
        await window_store.hold(self.conn, entry)

    async def join_held(self, st: WindowState, cols: BatchColumns) -> None:
        """Credit labels that arrived before this batch (held.py) to the batch's window. A matched entry stays held
        (marked) until its age runs out: a mirrored copy of the same request may still come."""
        for hit in match_held(await self.held(st.deployment), cols.hashes):
            hit.entry.matched[hit.label_rows] = True
            self._held_changed[id(hit.entry)] = hit.entry
            rows = hit.batch_rows
            part = BatchColumns(cols.hashes[rows], cols.scores[rows], cols.preds[rows], cols.groups[rows])
            credited = await self.credit(st, part.hashes, hit.entry.labels[hit.label_rows], part)
            ROWS.labels("labels", "joined_held").inc(credited)

    # -- the end of the batch ------------------------------------------------------------------------------------
    async def flush(self) -> None:
        """Write every effect of the batch in its transaction (see module docstring)."""
        engine = self.engine
        if self._joins:
            rows = [(d, w, e, encode_batch(w, c)) for d, w, e, c in self._joins]
            ids = await window_store.add_join_batches(self.conn, rows)
            for row_id, (deployment, window, _, cols) in zip(ids, self._joins, strict=True):
                engine.indexed(deployment, row_id, window, cols)
        for entry in self._held_changed.values():
            await window_store.update_held(self.conn, entry)
        for key in sorted(self._touched):
            st = self.windows[key]
            seq = await window_store.save_state(
                self.conn, key=key, deployment=st.deployment, model=st.model, version=st.version,
                variant=st.variant, start_ms=st.start, end_ms=st.end, state=st.to_bytes(), labels=st.labels,
            )  # fmt: skip
            engine.stored(key, seq, st)
        await window_store.advance_watermarks(self.conn, self._event_ms)


def now_ms() -> int:
    return int(time.time() * 1000)
