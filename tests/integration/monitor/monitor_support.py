"""Helpers of the monitor's integration tests: a running monitor, reference profiles and synthetic traffic."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from support.kafka import produce_events, read_all
from support.services import RunningService, Tokens, make_tokens, running, settings_for
from vigil.events import Envelope, make_event, topics
from vigil.events.catalog.models import ModelVersionRegistered
from vigil.events.catalog.streams import LabelObserved, ObservedLabel, PredictionLogged
from vigil.kernels.profile import DatasetProfile
from vigil.monitor.app import make_app
from vigil.monitor.settings import MonitorSettings
from vigil.monitor.state import WindowState

FEATURES = ["f0", "f1", "f2"]
REGIONS = np.array(["north", "south"])


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def reference(seed: int = 0, rows: int = 20_000) -> DatasetProfile:
    rng = np.random.default_rng(seed)
    x = np.asfortranarray(rng.normal(size=(rows, len(FEATURES))))
    regions = REGIONS[rng.integers(0, 2, size=rows)]
    return DatasetProfile.build(x, [regions], numeric_names=FEATURES, categorical_names=["region"], n_bins=64)


def registered(model: str, version: int, profile: DatasetProfile) -> Envelope:
    body = profile.to_dict()
    return make_event(
        ModelVersionRegistered(
            model=model,
            version=version,
            source="manual",
            artifact_digest=sha(f"{model}{version}"),
            artifact_uri=f"file:///a/{model}/{version}",
            artifact_format="json",
            reference_profile=body,
            reference_profile_digest=sha(orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()),
        ),
        source="vigil://test",
        actor="svc:test",
    )


def batch(
    deployment: str,
    model: str,
    version: int,
    variant: str,
    at: datetime,
    rows: int,
    *,
    seed: int,
    shift: dict[str, float] | None = None,
    latency_ms: float = 20.0,
    ids: list[str] | None = None,
    flip: float = 0.0,
) -> tuple[Envelope, list[str], np.ndarray[Any, Any]]:
    """A prediction batch; returns the event, its prediction ids and each row's true label (for later labels)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES)))
    for j, name in enumerate(FEATURES):
        x[:, j] += (shift or {}).get(name, 0.0)
    truth = (x[:, 0] + 0.3 * rng.normal(size=rows) > 0).astype(int)
    score = 1 / (1 + np.exp(-3 * x[:, 0]))
    ids = ids or [uuid.uuid4().hex for _ in range(rows)]
    outputs = (score >= 0.5).astype(int)
    flipped = rng.random(rows) < flip  # a worse model: some outputs inverted
    outputs = np.where(flipped, 1 - outputs, outputs)
    payload = PredictionLogged(
        deployment=deployment,
        model=model,
        version=version,
        variant=variant,
        first_at=at,
        last_at=at,
        prediction_ids=ids,
        numeric={name: x[:, j].tolist() for j, name in enumerate(FEATURES)},
        categorical={"region": REGIONS[rng.integers(0, 2, size=rows)].tolist()},
        outputs=outputs.astype(float).tolist(),
        scores=np.where(flipped, 1 - score, score).tolist(),
        latency_ms=(latency_ms * (0.8 + 0.4 * rng.random(rows))).tolist(),
    )
    return make_event(payload, source="vigil://gateway", actor="svc:deployer"), ids, (truth, outputs)


def labels(deployment: str, ids: list[str], truth: np.ndarray[Any, Any]) -> list[Envelope]:
    out = []
    for i in range(0, len(ids), 1000):
        chunk = [
            ObservedLabel(prediction_id=p, label=float(t))
            for p, t in zip(ids[i : i + 1000], truth[i : i + 1000], strict=True)
        ]
        out.append(make_event(LabelObserved(deployment=deployment, labels=chunk), source="vigil://up", actor="svc:up"))
    return out


def window_start(now: float, window_s: float, ahead: int = 0) -> datetime:
    """The start of the window ``ahead`` windows after the one containing ``now``."""
    start = (np.floor(now / window_s) + ahead) * window_s
    return datetime.fromtimestamp(float(start), UTC)


def window_with_room(window_s: float, room_s: float, now: float | None = None) -> datetime:
    """The start of the earliest window that is still open ``room_s`` from now (its end is at least that far off):
    a test that needs a window to stay open while it does something gets exactly that long, not "the next window",
    which is up to a whole window more. Rows may carry this start as their time even when it is already past."""
    now = time.time() if now is None else now
    start = np.ceil((now + room_s - window_s) / window_s) * window_s
    return datetime.fromtimestamp(float(start), UTC)


@dataclass
class Monitor:
    service: RunningService
    tokens: Tokens
    bootstrap: str
    prefix: str
    settings: MonitorSettings

    @property
    def client(self):  # type: ignore[no-untyped-def]
        return self.service.client

    def h(self, role: str) -> dict[str, str]:
        return self.tokens.headers(role)

    async def publish(self, topic: str, *events: Envelope, key: str) -> None:
        await produce_events(self.bootstrap, f"{self.prefix}{topic}", list(events), key=key.encode())

    async def monitoring_events(self, *, expect: int = 10_000, timeout: float = 3.0) -> list[dict[str, Any]]:
        records = await read_all(self.bootstrap, f"{self.prefix}{topics.MONITORING}", expect=expect, timeout=timeout)
        return [orjson.loads(r.value) for r in records]

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self.service.runtime.pool.acquire() as conn:
            return list(await conn.fetch(sql, *args))

    async def window(self, key: str) -> WindowState | None:
        """A window's committed state, read from Postgres (where the monitor keeps it) — counts, not profiles."""
        rows = await self.fetch("SELECT state FROM window_state WHERE key = $1", key)
        return WindowState.from_bytes(bytes(rows[0]["state"]), None) if rows else None

    async def windows(self) -> list[WindowState]:
        """Every committed window state."""
        return [
            WindowState.from_bytes(bytes(r["state"]), None) for r in await self.fetch("SELECT state FROM window_state")
        ]

    async def held_rows(self, deployment: str) -> int:
        """Labels held for ``deployment`` (waiting for their predictions)."""
        rows = await self.fetch("SELECT coalesce(sum(rows), 0) AS n FROM held_labels WHERE deployment = $1", deployment)
        return int(rows[0]["n"])


def monitor_settings(
    fresh_db: str, kafka_bootstrap: str, prefix: str, tokens: Tokens, **overrides: Any
) -> MonitorSettings:
    values: dict[str, Any] = {
        "window_s": 2.0,
        "window_grace_s": 1.0,
        "tick_s": 0.25,
        "rolling_windows": 3,
        "policy_cache_s": 0.0,
        **overrides,
    }
    return settings_for(
        MonitorSettings, dsn=fresh_db, bootstrap=kafka_bootstrap, prefix=prefix, tokens=tokens, **values
    )


@asynccontextmanager
async def run_monitor(settings: MonitorSettings, tokens: Tokens, bootstrap: str, prefix: str) -> AsyncIterator[Monitor]:
    async with running(make_app(settings)) as service:
        yield Monitor(service, tokens, bootstrap, prefix, settings)


def tokens_in(tmp: Path) -> Tokens:
    return make_tokens(tmp)
