"""Logged attributes without services: reading them from rows and columns, keeping them out of the model's matrix,
and laying them out in ``prediction.logged`` (aligned with the prediction ids across grouped requests and split
batches)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from vigil.deployer.attributes import BadAttribute, from_columns, from_rows, logged_names
from vigil.deployer.batcher import LogItem, _payload, _rows
from vigil.deployer.gateway import InputError, columns_to_matrix, rows_to_matrix
from vigil.events.catalog.deployments import DeploymentCreated
from vigil.events.catalog.streams import PredictionLogged

FEATURES = ("age", "bmi")
SEX = frozenset({"sex", "site"})


def test_declared_attributes_are_left_out_of_the_matrix_and_undeclared_extras_still_refused() -> None:
    rows = [{"age": 40, "bmi": 22.5, "sex": "F"}, {"age": 50.0, "bmi": 30, "site": "north"}]
    matrix = rows_to_matrix(FEATURES, rows, max_rows=10, extra=SEX)
    assert matrix.tolist() == [[40.0, 22.5], [50.0, 30.0]]
    with pytest.raises(InputError, match=r"row 0: unknown features \['sex'\]"):
        rows_to_matrix(FEATURES, rows, max_rows=10)  # not declared: refused as before
    with pytest.raises(InputError, match=r"row 1: unknown features \['zip'\]"):
        rows_to_matrix(FEATURES, [rows[0], {**rows[1], "zip": "123"}], max_rows=10, extra=SEX)
    with pytest.raises(InputError, match=r"row 0: missing features \['bmi'\]"):
        rows_to_matrix(FEATURES, [{"age": 1, "sex": "F"}], max_rows=10, extra=SEX)
    with pytest.raises(InputError, match="feature 'age' must be a number"):
        rows_to_matrix(FEATURES, [{"age": "40", "bmi": 1, "sex": "F"}], max_rows=10, extra=SEX)


def test_columns_carry_attributes_of_the_same_length() -> None:
    columns: dict[str, list[object]] = {"age": [40, 50], "bmi": [22.5, 30], "sex": ["F", None]}
    assert columns_to_matrix(FEATURES, columns, max_rows=10, extra=SEX).tolist() == [[40.0, 22.5], [50.0, 30.0]]
    with pytest.raises(InputError, match=r"unknown features \['sex'\]"):
        columns_to_matrix(FEATURES, columns, max_rows=10)
    with pytest.raises(InputError, match="columns have different lengths"):
        columns_to_matrix(FEATURES, {**columns, "sex": ["F"]}, max_rows=10, extra=SEX)
    assert from_columns(columns, ("sex", "site"), 2) == {"sex": ["F", None], "site": [None, None]}


def test_values_are_strings_or_null_and_integers_read_as_their_decimal_string() -> None:
    rows: list[dict[str, object]] = [{"sex": "F", "site": 12}, {"sex": None}, {}]
    assert from_rows(rows, ("sex", "site")) == {"sex": ["F", None, None], "site": ["12", None, None]}
    for bad, kind in ((1.0, "float"), (True, "bool"), ({"a": 1}, "dict"), (["F"], "list")):
        with pytest.raises(BadAttribute, match=f"row 1: attribute 'sex' must be a string or null, got {kind}"):
            from_rows([{"sex": "F"}, {"sex": bad}], ("sex",))
    with pytest.raises(BadAttribute, match="row 0: attribute 'sex' is longer than 256 characters"):
        from_rows([{"sex": "x" * 257}], ("sex",))
    assert from_rows([{"sex": "x" * 256}], ("sex",)) == {"sex": ["x" * 256]}
    with pytest.raises(BadAttribute, match="longer than 256"):
        from_rows([{"site": 10**300}], ("site",))
    with pytest.raises(BadAttribute, match="longer than 256"):
        from_rows([{"site": 10**5000}], ("site",))  # beyond str()'s digit limit


def test_a_declared_name_the_model_takes_as_a_feature_is_its_feature() -> None:
    assert logged_names(("sex", "age", "site"), FEATURES) == ("sex", "site")
    assert logged_names(("age",), FEATURES) == ()


def _item(ids: list[str], attributes: dict[str, list[str | None]] | None) -> LogItem:
    n = len(ids)
    return LogItem(
        deployment="shop",
        model="churn",
        version=1,
        variant="stable",
        feature_names=FEATURES,
        matrix=np.arange(2 * n, dtype=np.float64).reshape(n, 2),
        prediction_ids=ids,
        latency_ms=1.0,
        at=datetime.now(UTC),
        outputs=np.zeros(n),
        scores=np.full(n, 0.5),
        attributes=attributes,
    )


def test_grouped_requests_log_one_column_per_attribute_aligned_with_the_ids() -> None:
    items = [
        _item(["a-0", "a-1"], {"sex": ["F", "M"]}),
        _item(["b-0"], None),  # a request without attributes (e.g. logged before the deployment declared them)
        _item(["c-0", "c-1"], {"sex": [None, "F"], "site": ["n", "s"]}),
    ]
    payload = _payload(items)
    PredictionLogged.model_validate(payload.model_dump())  # the event's own checks (aligned columns, bounds)
    assert payload.prediction_ids == ["a-0", "a-1", "b-0", "c-0", "c-1"]
    assert payload.categorical == {"sex": ["F", "M", None, None, "F"], "site": [None, None, None, "n", "s"]}
    assert _payload([items[1]]).categorical == {}
    half = _rows(payload, 1, 4)
    assert half.prediction_ids == ["a-1", "b-0", "c-0"]
    assert half.categorical == {"sex": ["M", None, None], "site": [None, None, "n"]}


def test_deployment_created_carries_the_declared_names() -> None:
    event = DeploymentCreated(deployment="shop", model="churn", strategy="canary", logged_attributes=["site", "sex"])
    assert event.logged_attributes == ["site", "sex"]
    assert DeploymentCreated(deployment="shop", model="churn", strategy="canary").logged_attributes == []
    for bad in (["1x"], ["a b"], ["x" * 65], [f"a{i}" for i in range(17)]):
        with pytest.raises(ValidationError, match="logged_attributes"):
            DeploymentCreated(deployment="shop", model="churn", strategy="canary", logged_attributes=bad)
