"""The monitor counts the gateway's logged OOD flags (``prediction.logged`` ``ood``, #21 item 4) instead of
recomputing them, and scores the rows itself for events that carry none."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from vigil.events.catalog.streams import PredictionLogged
from vigil.kernels.profile import DatasetProfile
from vigil.monitor.ingest import fold_predictions
from vigil.monitor.multivariate import parse_multivariate
from vigil.monitor.state import WindowState
from vigil.trainer.profiling import reference_profile_dict

pytestmark = pytest.mark.unit

NAMES = ["a", "b", "c", "d"]
BODY = orjson.loads(orjson.dumps(reference_profile_dict(np.random.default_rng(0).normal(size=(10_000, 4)), NAMES)))
REF = DatasetProfile.from_dict(BODY)
MV = parse_multivariate(BODY, REF)


def _payload(x: np.ndarray, ood: list[bool] | None) -> PredictionLogged:
    n = x.shape[0]
    now = datetime.now(UTC)
    return PredictionLogged(
        deployment="d",
        model="m",
        version=1,
        variant="stable",
        first_at=now,
        last_at=now,
        prediction_ids=[uuid.uuid4().hex for _ in range(n)],
        numeric={name: x[:, j].tolist() for j, name in enumerate(NAMES)},
        outputs=[0.0] * n,
        scores=[0.4] * n,
        latency_ms=[1.0] * n,
        ood_scores=[2.0 if f else 0.5 for f in ood] if ood is not None else None,
        ood=ood,
    )


def _fold(payload: PredictionLogged) -> WindowState:
    st = WindowState("d", "m", 1, "stable", 0, 60_000)
    fold_predictions(st, payload, REF, prediction_bins=10, fairness_attribute=None, multivariate=MV)
    return st


def test_logged_flags_are_counted_and_unflagged_events_are_scored_here() -> None:
    assert MV is not None
    x = np.random.default_rng(1).normal(size=(40, 4))
    x[:3, 2] = 50.0  # three rows 50σ out
    computed = _fold(_payload(x, None))
    assert computed.ood is not None and computed.ood.count == 40
    assert computed.ood.flagged == int(MV.flags(x).sum()) >= 3
    # Flags that disagree with the monitor's own rule show they are the ones counted (a gateway's are the same
    # reference's rule, so in service the two agree).
    forged = [False] * 40
    forged[10] = forged[11] = True
    logged = _fold(_payload(x, forged))
    assert logged.ood is not None and (logged.ood.count, logged.ood.flagged) == (40, 2)
    assert logged.reconstruction == computed.reconstruction  # the window's error state does not depend on them
