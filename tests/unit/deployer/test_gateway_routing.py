"""Gateway pieces without HTTP: sticky routing, input checks, the verified model cache, batch splitting."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from vigil.artifacts import ArtifactTampered, LocalArtifactStore
from vigil.deployer.batcher import LogItem, _encode, _payload
from vigil.deployer.gateway import (
    InputError,
    ModelCache,
    bucket_of,
    choose_variant,
    columns_to_matrix,
    rows_to_matrix,
)
from vigil.events import check_outgoing
from vigil.modelformat import LinearModel

pytestmark = pytest.mark.unit

NAMES = ("age", "bmi")


def model(coef: float = 1.0) -> LinearModel:
    return LinearModel(
        task="binary_classification",
        feature_names=NAMES,
        mean=np.zeros(2),
        scale=np.ones(2),
        coef=np.array([coef, -coef]),
        intercept=0.0,
    )


def test_sticky_keys_only_move_towards_the_candidate_as_weight_grows() -> None:
    keys = [f"user-{i}" for i in range(2000)]
    at10 = {k for k in keys if choose_variant("d", 10, k) == "candidate"}
    at50 = {k for k in keys if choose_variant("d", 50, k) == "candidate"}
    assert at10 <= at50  # nobody goes back to stable when the weight grows
    assert abs(len(at10) / len(keys) - 0.10) < 0.04
    assert abs(len(at50) / len(keys) - 0.50) < 0.06
    assert all(choose_variant("d", 50, k) == choose_variant("d", 50, k) for k in keys[:50])
    assert bucket_of("d", "user-1") != bucket_of("other", "user-1") or bucket_of("d", "user-2") != bucket_of(
        "other", "user-2"
    )


def test_weights_0_and_100_are_absolute() -> None:
    rng = random.Random(7)
    assert {choose_variant("d", 0, None, rng) for _ in range(200)} == {"stable"}
    assert {choose_variant("d", 100, None, rng) for _ in range(200)} == {"candidate"}


def test_rows_are_checked_and_ordered_by_the_models_features() -> None:
    m = rows_to_matrix(NAMES, [{"bmi": 2.0, "age": 1}], max_rows=10)
    assert m.tolist() == [[1.0, 2.0]]
    cases = [
        ([{"age": 1.0}], "missing features \\['bmi'\\]"),
        ([{"age": 1.0, "bmi": 2.0, "zip": 3}], "unknown features \\['zip'\\]"),
        ([{"age": None, "bmi": 2.0}], "'age' must be a number, got NoneType"),
        ([{"age": "3", "bmi": 2.0}], "must be a number, got str"),
        ([{"age": True, "bmi": 2.0}], "must be a number, got bool"),
        ([{"age": 1.0, "bmi": 2.0}, {"age": math.nan, "bmi": 2.0}], "row 1: feature 'age' must be finite"),
        ([{"age": math.inf, "bmi": 2.0}], "must be finite"),
        ([], "no rows"),
        ([{"age": 1.0, "bmi": 2.0}] * 11, "exceeds the limit of 10"),
    ]
    for rows, message in cases:
        with pytest.raises(InputError, match=message):
            rows_to_matrix(NAMES, rows, max_rows=10)


def test_columns_are_checked_like_rows() -> None:
    assert columns_to_matrix(NAMES, {"bmi": [2.0, 4.0], "age": [1.0, 3.0]}, max_rows=5).tolist() == [
        [1.0, 2.0],
        [3.0, 4.0],
    ]
    with pytest.raises(InputError, match="different lengths"):
        columns_to_matrix(NAMES, {"age": [1.0], "bmi": [1.0, 2.0]}, max_rows=5)
    with pytest.raises(InputError, match="null is not allowed"):
        columns_to_matrix(NAMES, {"age": [None], "bmi": [1.0]}, max_rows=5)
    with pytest.raises(InputError, match="row 1: feature 'bmi' must be finite"):
        columns_to_matrix(NAMES, {"age": [1.0, 1.0], "bmi": [1.0, math.nan]}, max_rows=5)
    with pytest.raises(InputError, match="exceeds the limit"):
        columns_to_matrix(NAMES, {"age": [1.0] * 6, "bmi": [1.0] * 6}, max_rows=5)


async def test_model_cache_verifies_loads_once_and_warms(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = store.put(model().to_bytes())
    cache = ModelCache(store, max_models=2)
    await cache.warm(digest)
    first = cache.cached(digest)
    assert first is not None and await cache.get(digest) is first
    # Tampered bytes on disk are refused by digest (a fresh cache has nothing in memory).
    path = tmp_path / "sha256" / digest[7:9] / digest[9:]
    path.chmod(0o644)
    path.write_bytes(model(coef=9.0).to_bytes())
    with pytest.raises(ArtifactTampered):
        await ModelCache(store).get(digest)


def test_large_batches_are_split_below_the_record_limit() -> None:
    rows = 6000
    wide = tuple(f"f{i}" for i in range(20))
    matrix = np.random.default_rng(1).normal(size=(rows, 20))
    item = LogItem(
        deployment="d",
        model="m",
        version=1,
        variant="stable",
        feature_names=wide,
        matrix=matrix,
        prediction_ids=[f"p{i}" for i in range(rows)],
        latency_ms=1.5,
        at=datetime.now(UTC),
        outputs=np.ones(rows),
        scores=np.full(rows, 0.7),
    )
    parts = _encode(_payload([item]), "vigil://deployer", "service:deployer")
    assert len(parts) > 1
    assert sum(p.rows for p, _, _ in parts) == rows
    assert [pid for p, _, _ in parts for pid in p.prediction_ids] == item.prediction_ids
    for part, envelope, value in parts:
        assert len(value) <= 1024 * 1024 and value == envelope.canonical_bytes()
        assert envelope.data["numeric"]["f3"] == part.numeric["f3"]
        check_outgoing(envelope)  # the contract holds (aligned columns, bounds)


def test_a_batch_expected_to_pass_the_limit_is_split_before_it_is_encoded() -> None:
    """With the bytes per row of an earlier event, the batch is cut into as many parts as its estimated size needs
    (8 here, where halving a batch encoded whole would give 4), each under the limit, rows in order."""
    rows = 6000
    wide = tuple(f"f{i}" for i in range(20))
    item = LogItem(
        deployment="d",
        model="m",
        version=1,
        variant="stable",
        feature_names=wide,
        matrix=np.random.default_rng(2).normal(size=(rows, 20)),
        prediction_ids=[f"p{i}" for i in range(rows)],
        latency_ms=1.5,
        at=datetime.now(UTC),
        outputs=np.ones(rows),
        scores=np.full(rows, 0.7),
    )
    parts = _encode(_payload([item]), "vigil://deployer", "service:deployer", row_bytes=1024 * 1024 / 1000)
    assert len(parts) == 8
    assert [pid for p, _, _ in parts for pid in p.prediction_ids] == item.prediction_ids
    for _part, envelope, value in parts:
        assert len(value) <= 1024 * 1024 and value == envelope.canonical_bytes()
