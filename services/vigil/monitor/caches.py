"""Read-through caches of what the monitor looks up per batch: reference profiles (their calibration maps and
PCA/OOD references) and policies.

Both are small, change rarely and are read on every batch and every close; a miss goes to Postgres (and, for a
profile too large to travel inline, to the artifact store, digest-verified).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
import orjson

from vigil.artifacts import ArtifactError, ArtifactStore
from vigil.kernels.ood import OODReference
from vigil.kernels.profile import DatasetProfile
from vigil.monitor import store
from vigil.monitor.estimates import ReferenceCalibration, parse_calibration
from vigil.monitor.multivariate import parse_multivariate
from vigil.monitor.policy import Policy

log = logging.getLogger(__name__)


class ReferenceCache:
    """Reference profiles per (model, version); a miss is re-checked after ``retry_s`` (the profile may arrive)."""

    def __init__(self, pool: asyncpg.Pool, artifacts: ArtifactStore, retry_s: float) -> None:
        self._pool = pool
        self._artifacts = artifacts
        self._retry_s = max(retry_s, 0.5)
        self._entries: dict[tuple[str, int], tuple[float, DatasetProfile | None, str | None]] = {}
        self._calibrations: dict[tuple[str, int], ReferenceCalibration | None] = {}
        self._multivariate: dict[tuple[str, int], OODReference | None] = {}
        self._registered: set[tuple[str, int]] = set()

    async def get(
        self, model: str, version: int, conn: asyncpg.Connection | None = None
    ) -> tuple[DatasetProfile | None, str | None]:
        """(profile, digest) of a version; (None, None) while the monitor has not seen it registered.

        With ``conn`` (a batch's transaction) a miss is read again at once on that connection: a registration
        consumed in this very transaction — whose held predictions are folded in it (held_predictions.py) — is
        not visible to the pool yet. What is read there is cached before it commits; a batch that does not commit
        makes the engine :meth:`clear` the cache."""
        now = time.monotonic()
        hit = self._entries.get((model, version))
        if hit is not None and (
            hit[1] is not None
            or (now - hit[0] < self._retry_s and (conn is None or (model, version) in self._registered))
        ):
            return hit[1], hit[2]
        if conn is not None:
            found = await store.get_reference(conn, model, version)
        else:
            async with self._pool.acquire() as own:
                found = await store.get_reference(own, model, version)
        body, digest, uri = found if found is not None else (None, None, None)
        if found is not None:
            self._registered.add((model, version))
        if body is None and uri is not None:
            body = await asyncio.to_thread(self._from_store, uri, digest)
        profile = None
        if body is not None:
            try:
                profile = DatasetProfile.from_dict(body)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("unusable reference profile", extra={"model": model, "version": version, "error": repr(exc)})
        self._entries[(model, version)] = (now, profile, digest)
        self._calibrations[(model, version)] = parse_calibration(body) if profile is not None else None
        self._multivariate[(model, version)] = parse_multivariate(body, profile) if profile is not None else None
        return profile, digest

    def registered(self, model: str, version: int) -> bool:
        """Whether :meth:`get` found the version registered (with or without a usable profile). Once seen, for good:
        a registration is never withdrawn."""
        return (model, version) in self._registered

    def calibration(self, model: str, version: int) -> ReferenceCalibration | None:
        """The calibration map of a version's profile as last read by :meth:`get` (None: none, or not read yet)."""
        return self._calibrations.get((model, version))

    def multivariate(self, model: str, version: int) -> OODReference | None:
        """The PCA reference + OOD thresholds of a version's profile as last read by :meth:`get` (None: none)."""
        return self._multivariate.get((model, version))

    def clear(self) -> None:
        """Forget everything (a batch that may have read an uncommitted registration did not commit)."""
        self._entries.clear()
        self._calibrations.clear()
        self._multivariate.clear()
        self._registered.clear()

    def forget(self, model: str, version: int) -> None:
        self._entries.pop((model, version), None)
        self._calibrations.pop((model, version), None)
        self._multivariate.pop((model, version), None)

    def _from_store(self, uri: str, digest: str | None) -> dict[str, Any] | None:
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


class PolicyCache:
    """The policy in force per deployment, re-read at most every ``ttl_s`` (the API forgets an edited one at once)."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[float, int, Policy]] = {}

    async def get(self, conn: asyncpg.Connection, deployment: str) -> tuple[int, Policy]:
        now = time.monotonic()
        hit = self._entries.get(deployment)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1], hit[2]
        version, policy, _ = await store.current_policy(conn, deployment)
        self._entries[deployment] = (now, version, policy)
        return version, policy

    def forget(self, deployment: str) -> None:
        self._entries.pop(deployment, None)
