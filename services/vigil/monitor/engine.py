"""The monitor's runtime part: caches over its Postgres state, the lock that orders batches and the closer.

Postgres holds the truth (window_store.py). This object only keeps copies that are cheap to check:
- window states, each with the ``seq`` of the row it was read from or written as — a batch locks the row and uses
  the copy only when the seq still matches (another instance, or the closer, may have written since);
- per deployment, the label-join index over ``join_batches``, extended by the rows above the last id it loaded.

A batch mutates copies before its transaction commits. If the commit does not happen (the handler raised, the
connection died), the next batch finds :attr:`_unconfirmed` still set and drops every copy, so a rolled-back
change can never be read back from memory.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import numpy as np
import numpy.typing as npt

from vigil.kernels.profile import DatasetProfile
from vigil.monitor import window_store
from vigil.monitor.caches import PolicyCache, ReferenceCache
from vigil.monitor.groups import fairness_groups
from vigil.monitor.ingest import BatchColumns
from vigil.monitor.joins import JoinIndex
from vigil.monitor.settings import MonitorSettings
from vigil.monitor.state import WindowState


@dataclass
class JoinCache:
    """One deployment's join index and how far it has read ``join_batches``."""

    index: JoinIndex = field(default_factory=JoinIndex)
    high: int = 0  # every row with an id up to this one is in the index
    own: set[int] = field(default_factory=set)  # ids above ``high`` this instance indexed when it wrote them


class MonitorEngine:
    """Caches, lock and settings shared by the batch handlers, the closer and the API (see module docstring)."""

    def __init__(self, settings: MonitorSettings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.window_ms = round(settings.window_s * 1000)
        self.references = ReferenceCache(pool, settings.artifact_store(), settings.policy_cache_s)
        self.policies = PolicyCache(settings.policy_cache_s)
        #: Batches and the closer take turns: both read and write the same windows and caches.
        self.lock = asyncio.Lock()
        #: Most recently used first out: open windows are touched by every batch; a closed one that takes a late
        #: label is read again from its row (a decoded state is ~0.2 MB for 20 features × 1 024 bins).
        self._states: OrderedDict[str, tuple[int, WindowState]] = OrderedDict()
        self._max_states = settings.state_cache_windows
        self._joins: dict[str, JoinCache] = {}
        self._unconfirmed = False

    # -- batch bracket -------------------------------------------------------------------------------------------
    def begin(self) -> Callable[[], None]:
        """Start a batch (under :attr:`lock`); returns the callback to run once its transaction committed."""
        if self._unconfirmed:
            self.invalidate()
        self._unconfirmed = True

        def confirm() -> None:
            self._unconfirmed = False

        return confirm

    def invalidate(self) -> None:
        """Forget every copy (a batch's transaction did not commit)."""
        self._states.clear()
        self._joins.clear()
        self.references.clear()

    # -- window states -------------------------------------------------------------------------------------------
    def start_of(self, ts: float) -> int:
        """The start (epoch ms) of the window containing ``ts`` (epoch seconds)."""
        return int(math.floor(ts * 1000 / self.window_ms) * self.window_ms)

    async def state(self, conn: asyncpg.Connection, key: str, seq: int) -> WindowState:
        """The state of a locked window row whose current seq is ``seq`` (the copy, or read and decoded)."""
        hit = self._states.get(key)
        if hit is not None and hit[0] == seq:
            self._states.move_to_end(key)
            return hit[1]
        raw = (await window_store.load_states(conn, [key]))[key]
        head = WindowState.from_bytes(raw, None)  # model/version first, then again with the reference
        ref, _ = await self.references.get(head.model, head.version)
        st = WindowState.from_bytes(raw, ref) if ref is not None else head
        self.stored(key, seq, st)
        return st

    def stored(self, key: str, seq: int, st: WindowState) -> None:
        self._states[key] = (seq, st)
        self._states.move_to_end(key)
        while len(self._states) > self._max_states:
            self._states.popitem(last=False)

    def forget_windows(self, expired: list[tuple[str, str]]) -> None:
        """Drop the copies of windows deleted past the label horizon."""
        by_deployment: dict[str, set[str]] = {}
        for deployment, key in expired:
            self._states.pop(key, None)
            by_deployment.setdefault(deployment, set()).add(key)
        for deployment, keys in by_deployment.items():
            cache = self._joins.get(deployment)
            if cache is not None:
                cache.index.drop_windows(keys)

    # -- label join ----------------------------------------------------------------------------------------------
    async def join_index(self, conn: asyncpg.Connection, deployment: str) -> JoinIndex:
        """The deployment's join index with every committed (or this transaction's) batch in it."""
        cache = self._joins.setdefault(deployment, JoinCache())
        ids, rows = await window_store.join_rows_after(conn, deployment, cache.high, cache.own)
        for _, window, cols in rows:
            cache.index.add(window, cols)
        if ids:
            cache.high = ids[-1]
            cache.own = {i for i in cache.own if i > cache.high}
        return cache.index

    def indexed(self, deployment: str, row_id: int, window: str, cols: BatchColumns) -> None:
        """A batch this instance wrote as ``row_id``: into the index now, skipped when the id is read back."""
        cache = self._joins.setdefault(deployment, JoinCache())
        cache.index.add(window, cols)
        cache.own.add(row_id)

    async def fairness(
        self, conn: asyncpg.Connection, deployment: str, reference: DatasetProfile | None
    ) -> tuple[str | None, npt.NDArray[np.str_] | None]:
        """The deployment's sensitive attribute and its groups for a version with ``reference`` (monitor/groups.py);
        groups None = no fairness figures."""
        _, policy = await self.policies.get(conn, deployment)
        attribute = policy.fairness.attribute or self.settings.fairness_attribute
        return attribute, fairness_groups(attribute, reference, policy.fairness.groups)
