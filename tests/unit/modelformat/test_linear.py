"""vigil.linear/v1 round-trips exactly, predicts like the formula, and refuses malformed artifacts."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from vigil.modelformat import LinearModel, ModelFormatError, load_model

pytestmark = pytest.mark.unit


def model(task: str = "binary_classification") -> LinearModel:
    return LinearModel(
        task=task,  # type: ignore[arg-type]
        feature_names=("age", "bmi"),
        mean=np.array([50.0, 25.0]),
        scale=np.array([10.0, 5.0]),
        coef=np.array([0.8, -0.4]),
        intercept=0.1,
    )


def test_round_trip_and_prediction_matches_formula() -> None:
    m = model()
    loaded = load_model(m.to_bytes())
    x = np.array([[60.0, 30.0], [40.0, 20.0]])
    z = ((x - m.mean) / m.scale) @ m.coef + m.intercept
    np.testing.assert_allclose(loaded.predict_score(x), 1 / (1 + np.exp(-z)))
    np.testing.assert_array_equal(loaded.predict(x), (1 / (1 + np.exp(-z)) >= 0.5).astype(float))
    assert loaded.to_bytes() == m.to_bytes()
    reg = load_model(model("regression").to_bytes())
    np.testing.assert_allclose(reg.predict(x), z)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.update(format="pickle"),
        lambda r: r.update(task="clustering"),
        lambda r: r.update(coef=[1.0]),
        lambda r: r.update(scale=[0.0, 1.0]),
        lambda r: r.update(mean=["a", "b"]),
        lambda r: r.update(feature_names=["a", "a"]),
        lambda r: r.update(intercept=None),
    ],
)
def test_malformed_artifacts_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    raw = orjson.loads(model().to_bytes())
    mutate(raw)
    with pytest.raises(ModelFormatError):
        load_model(orjson.dumps(raw))


def test_not_json_and_wrong_shape() -> None:
    with pytest.raises(ModelFormatError):
        load_model(b"\x80\x04pickle")
    with pytest.raises(ModelFormatError, match="expected rows of 2"):
        model().predict(np.zeros((3, 5)))
