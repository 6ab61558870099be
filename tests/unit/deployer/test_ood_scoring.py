"""The gateway's per-request OOD scores (#21 item 4): its one-pass scorer against a plain SVD computation and the
kernel's own rule, laid out for a model whose features come in another order; and the logged columns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from vigil.artifacts import LocalArtifactStore
from vigil.deployer.batcher import LogItem, _encode, _payload, _rows
from vigil.deployer.ood_scoring import SCORE_CAP, OODReferences, RowScores, scorer_for
from vigil.events.catalog.streams import PredictionLogged
from vigil.events.contracts import decode_event
from vigil.kernels.multivariate import fit_pca_reference
from vigil.kernels.ood import OODReference, fit_ood

pytestmark = pytest.mark.unit

REF_NAMES = ("a", "b", "c", "d", "e", "f")
#: The model takes the reference's features in another order, plus one the profile does not cover.
MODEL_NAMES = ("f", "extra", "c", "a", "e", "b", "d")


def correlated(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows with a fixed correlation structure and mixed scales and offsets (reference feature order)."""
    mix = np.random.default_rng(0).normal(size=(6, 6)) * np.linspace(0.2, 3, 6)
    return rng.normal(size=(n, 6)) @ mix + np.arange(6) * 10


def naive_scores(ref_rows: np.ndarray, x: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Mahalanobis distance on the kept axes and reconstruction error by a plain SVD of the standardised reference
    (population sd): transform, inverse-transform, Euclidean norm of the difference."""
    mean, sd = ref_rows.mean(axis=0), ref_rows.std(axis=0)
    z_ref = (ref_rows - mean) / sd
    _, s, vt = np.linalg.svd(z_ref, full_matrices=False)
    eig = s**2 / ref_rows.shape[0]
    k = next(i + 1 for i, c in enumerate(np.cumsum(eig) / eig.sum()) if c >= share - 1e-12)
    z = (x - mean) / sd
    coords = z @ vt[:k].T
    maha = np.sqrt(np.sum(coords**2 / eig[:k], axis=1))
    err = np.linalg.norm(z - coords @ vt[:k], axis=1)
    return maha, err


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, OODReference]:
    rows = correlated(np.random.default_rng(1), 5000)
    return rows, fit_ood(fit_pca_reference(rows, list(REF_NAMES)), rows)


def as_model_matrix(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reference-order rows → the model's column order, with the extra feature filled with anything."""
    cols = {name: x[:, j] for j, name in enumerate(REF_NAMES)}
    cols["extra"] = rng.normal(size=x.shape[0]) * 1e6  # not in the reference: must not move any score
    return np.column_stack([cols[name] for name in MODEL_NAMES])


@pytest.mark.parametrize("n", [1, 7, 256, 3000])
def test_scores_and_flags_equal_the_naive_reference_and_the_kernel(
    reference: tuple[np.ndarray, OODReference], n: int
) -> None:
    rows, ref = reference
    rng = np.random.default_rng(n)
    x = correlated(rng, n) * 1.3
    x[: max(1, n // 10), 2] += 50 * float(rows[:, 2].std())  # 50σ out on one feature
    if n > 2:
        x[1, :2] = rows[:, :2].mean(axis=0)  # typical on those two
    scorer = scorer_for(ref, MODEL_NAMES)
    assert scorer is not None
    got = scorer.score(as_model_matrix(x, rng))

    maha, err = naive_scores(rows, x, ref.pca.variance_share)
    ratio = np.maximum(maha / ref.mahalanobis_threshold, err / ref.error_threshold)
    np.testing.assert_allclose(got.scores, ratio, rtol=1e-9)
    k_maha, k_err = ref.scores(x)
    np.testing.assert_allclose(
        got.scores, np.maximum(k_maha / ref.mahalanobis_threshold, k_err / ref.error_threshold), rtol=1e-7
    )
    margin = np.abs(ratio - 1) > 1e-7  # rows not sitting on a threshold (rounding may tip those either way)
    np.testing.assert_array_equal(got.flags[margin], ref.flags(x)[margin])
    np.testing.assert_array_equal(got.flags, got.scores > 1)
    assert got.flags[0], "a row 50σ out is out of distribution"


def test_clean_rows_are_flagged_at_about_the_reference_share(reference: tuple[np.ndarray, OODReference]) -> None:
    _, ref = reference
    rng = np.random.default_rng(7)
    scorer = scorer_for(ref, MODEL_NAMES)
    assert scorer is not None
    share = scorer.score(as_model_matrix(correlated(rng, 20_000), rng)).flags.mean()
    assert 0.3 * ref.reference_share <= share <= 3 * ref.reference_share


def test_a_model_without_a_reference_feature_gets_no_scorer(reference: tuple[np.ndarray, OODReference]) -> None:
    _, ref = reference
    assert scorer_for(ref, ("a", "b", "c", "d", "e")) is None


def test_inputs_whose_squares_overflow_are_flagged_with_a_finite_capped_score(
    reference: tuple[np.ndarray, OODReference],
) -> None:
    _, ref = reference
    scorer = scorer_for(ref, REF_NAMES)
    assert scorer is not None
    x = correlated(np.random.default_rng(3), 3)
    x[0, 0] = 1e300
    x[1, :] = [1e300, -1e300, 1e300, -1e300, 1e300, -1e300]
    got = scorer.score(x)
    assert got.flags[:2].all()
    assert np.isfinite(got.scores).all() and got.scores.max() <= SCORE_CAP
    assert got.logged_scores()[:2] == [SCORE_CAP, SCORE_CAP]


def _item(rows: int, ood: RowScores | None, at: datetime) -> LogItem:
    x = np.arange(rows * 2, dtype=np.float64).reshape(rows, 2)
    return LogItem(
        deployment="dep",
        model="m",
        version=3,
        variant="stable",
        feature_names=("age", "bmi"),
        matrix=x,
        prediction_ids=[f"r{at.microsecond}-{i}" for i in range(rows)],
        latency_ms=1.0,
        at=at,
        outputs=np.zeros(rows),
        scores=np.full(rows, 0.3),
        ood=ood,
    )


def test_logged_columns_travel_validated_and_split_with_their_rows() -> None:
    at = datetime.now(UTC)
    first = RowScores(np.array([0.25, 3.123456789]), np.array([False, True]))
    second = RowScores(np.array([0.5]), np.array([False]))
    payload = _payload([_item(2, first, at), _item(1, second, at)])
    assert payload.ood == [False, True, False]
    assert payload.ood_scores == [0.25, 3.1235, 0.5]  # rounded to 4 decimals
    for part, envelope, value in _encode(payload, "vigil://deployer", "service:deployer"):  # producer's check
        decoded, received = decode_event(value)  # the consumer's: schema and model
        assert isinstance(received, PredictionLogged)
        assert received.ood == part.ood and received.ood_scores == part.ood_scores
        assert envelope.id == decoded.id
    tail = _rows(payload, 1, 3)
    assert tail.ood == [True, False] and tail.ood_scores == [3.1235, 0.5]


def test_a_group_with_an_unscored_request_logs_no_ood_columns() -> None:
    at = datetime.now(UTC)
    scored = RowScores(np.array([0.25]), np.array([False]))
    payload = _payload([_item(1, scored, at), _item(1, None, at)])
    assert payload.ood is None and payload.ood_scores is None
    _encode(payload, "vigil://deployer", "service:deployer")
    unscored = _payload([_item(2, None, at)])
    assert unscored.ood is None and unscored.ood_scores is None


class _Conn:
    def __init__(self, owner: _Pool) -> None:
        self.owner = owner

    async def fetchrow(self, _sql: str, model: str, version: int) -> dict[str, Any] | None:
        self.owner.reads += 1
        await asyncio.sleep(0.01)  # let concurrent first requests pile up
        if self.owner.fail:
            raise OSError("connection refused")
        return self.owner.rows.get((model, version))


class _Pool:
    """What OODReferences asks of asyncpg's pool: ``acquire()`` → a connection with ``fetchrow``."""

    def __init__(self, rows: dict[tuple[str, int], dict[str, Any]]) -> None:
        self.rows, self.reads, self.fail = rows, 0, False

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Conn]:
        yield _Conn(self)


async def test_references_are_read_once_per_version_and_a_failed_read_is_retried_later(
    reference: tuple[np.ndarray, OODReference], tmp_path: Path
) -> None:
    _, ref = reference
    store = LocalArtifactStore(tmp_path)
    stored = store.put(orjson.dumps({"multivariate": ref.to_dict()}))
    inline = {"multivariate": ref.to_dict(), "uri": None, "digest": None}
    pool = _Pool(
        {
            ("m", 1): inline,
            ("m", 2): {"multivariate": None, "uri": None, "digest": None},  # a profile without an OOD reference
            ("m", 3): {"multivariate": None, "uri": f"vigil-artifact://{stored}", "digest": stored},
            ("m", 4): {"multivariate": None, "uri": f"vigil-artifact://{stored}", "digest": "sha256:" + "0" * 64},
        }
    )
    refs = OODReferences(pool, store, retry_s=3600)  # type: ignore[arg-type]
    first = await asyncio.gather(*(refs.scorer("m", 1, MODEL_NAMES) for _ in range(5)))
    assert all(s is first[0] for s in first) and first[0] is not None
    assert pool.reads == 1, "concurrent first requests share one read"
    assert await refs.scorer("m", 2, MODEL_NAMES) is None
    from_store = await refs.scorer("m", 3, MODEL_NAMES)
    assert from_store is not None and from_store.reference.to_dict() == ref.to_dict()
    assert await refs.scorer("m", 4, MODEL_NAMES) is None  # URI and digest disagree: not used
    assert await refs.scorer("m", 9, MODEL_NAMES) is None  # a version not registered here
    assert await refs.scorer("m", 1, ("a", "b")) is first[0]  # cached per version
    reads = pool.reads
    for version in (1, 2, 3, 4, 9):
        await refs.scorer("m", version, MODEL_NAMES)
    assert pool.reads == reads, "answers found are kept"

    pool.fail = True
    assert await refs.scorer("m", 5, MODEL_NAMES) is None  # unreachable: served without scores, no error
    assert await refs.scorer("m", 5, MODEL_NAMES) is None
    assert pool.reads == reads + 1, "a failed read is not retried on every request"
    refs.retry_s = 0.0
    pool.fail = False
    pool.rows[("m", 5)] = inline
    assert await refs.scorer("m", 5, MODEL_NAMES) is not None  # retried once the wait is over
