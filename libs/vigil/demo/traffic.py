"""Live traffic for the demo: a steady stream of prediction requests drawn from a population, and the true outcomes
of those predictions a little later — the way a clinic's requests and, days later, its lab results reach a platform.

The population can be switched while traffic flows (the world changes under a served model); the counts per
version and variant feed the demo's live table.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
import numpy.typing as npt

from vigil.demo import loop

#: ``(rows, seed) -> (features, outcomes)``; features in the deployment's feature order.
Population = Callable[[int, int], tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]]
#: ``(rows, seed) -> {field: values}``: request fields beside the features (logged by the gateway, not model inputs).
Attributes = Callable[[int, int], dict[str, list[str | None]]]


@dataclass
class TrafficCounts:
    """What the simulator has done so far (read by the live view; only the simulator writes it)."""

    population: str = "-"
    served: Counter[tuple[int, str]] = field(default_factory=Counter)
    labelled: int = 0
    failed_requests: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class _PendingOutcomes:
    due: float
    prediction_ids: list[str]
    truth: list[int]


class TrafficSimulator:
    """Sends ``rows_per_request`` rows every ``1 / requests_per_s`` seconds through the gateway of ``deployment``
    (with ``attributes``' fields beside the features when given) and publishes each answered row's outcome
    ``label_delay_s`` later. Failed requests are counted, not raised: the platform may be mid-rollout, and a real
    client would retry rather than stop the world."""

    def __init__(
        self,
        deployer: httpx.AsyncClient,
        token: str,
        deployment: str,
        features: Sequence[str],
        labels: loop.LabelPublisher,
        *,
        rows_per_request: int = 20,
        requests_per_s: float = 3.0,
        label_delay_s: float = 2.0,
        attributes: Attributes | None = None,
    ) -> None:
        self._deployer = deployer
        self._token = token
        self._deployment = deployment
        self._features = list(features)
        self._labels = labels
        self._rows = rows_per_request
        self._interval = 1.0 / requests_per_s
        self._label_delay = label_delay_s
        self._attributes = attributes
        self._population: Population | None = None
        self._seed = 10_000
        self._pending: deque[_PendingOutcomes] = deque()
        self.counts = TrafficCounts()

    def switch(self, name: str, population: Population) -> None:
        """From the next request on, rows come from ``population``."""
        self._population = population
        self.counts.population = name

    async def run(self) -> None:
        """Send traffic until cancelled (outcomes still pending at cancellation are dropped, as in life)."""
        next_at = time.monotonic()
        while True:
            if self._population is not None:
                await self._request(self._population)
            await self._publish_due_outcomes()
            next_at += self._interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _request(self, population: Population) -> None:
        self._seed += 1
        x, y = population(self._rows, self._seed)
        extra = self._attributes(len(x), self._seed) if self._attributes is not None else None
        try:
            served = await loop.send_traffic(
                self._deployer,
                self._token,
                self._deployment,
                x,
                self._features,
                rows_per_request=self._rows,
                attributes=extra,
            )
        except (RuntimeError, httpx.HTTPError) as exc:
            self.counts.failed_requests += 1
            self.counts.last_error = str(exc)[:200]
            return
        for s in served:
            self.counts.served[(s.version, s.variant)] += 1
        self._pending.append(
            _PendingOutcomes(
                due=time.monotonic() + self._label_delay,
                prediction_ids=[s.prediction_id for s in served],
                truth=[int(v) for v in y[: len(served)]],
            )
        )

    async def _publish_due_outcomes(self) -> None:
        ids: list[str] = []
        truth: list[int] = []
        now = time.monotonic()
        while self._pending and self._pending[0].due <= now:
            batch = self._pending.popleft()
            ids.extend(batch.prediction_ids)
            truth.extend(batch.truth)
        if ids:
            await self._labels.publish(self._deployment, ids, truth)
            self.counts.labelled += len(ids)
