"""The predict route's fast path takes a parsed body as ``PredictRequest`` without pydantic's copy only when it
plainly fits; it must never accept what the model refuses, nor read a body differently."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from vigil.deployer.predict_api import PredictRequest, _checked

pytestmark = pytest.mark.unit

BODIES: list[Any] = [
    {"features": {"a": 1, "b": 2.5}},
    {"instances": [{"a": 1}, {"a": 2}], "key": "patient-17"},
    {"columns": {"a": [1, 2], "b": [3.0, None]}},
    {"features": {"a": 1}, "instances": [{"a": 1}]},  # two forms: the route answers 422, not the parser
    {},
    {"features": None, "key": None},
    {"key": ""},
    {"key": "k" * 256},
    {"key": "k" * 257},
    {"key": 17},
    {"features": [1, 2]},
    {"instances": {"a": 1}},
    {"instances": [{"a": 1}, [1]]},
    {"columns": {"a": 1}},
    {"columns": [[1]]},
    {"unknown": 1},
    {"features": {"a": "1"}, "extra": True},
    [{"a": 1}],
    "text",
    None,
]


@pytest.mark.parametrize("body", BODIES)
def test_the_fast_check_agrees_with_the_model(body: Any) -> None:
    try:
        expected: PredictRequest | None = PredictRequest.model_validate(body)
    except ValidationError:
        expected = None
    checked = _checked(body)
    if checked is not None:  # accepted by the fast check: the model accepts it and reads it the same
        assert expected is not None
        assert checked.model_dump() == expected.model_dump()
    elif expected is not None:  # declined though valid: fine (the model parses it), but only for unusual shapes
        pytest.fail(f"a plain valid body was left to pydantic: {body!r}")
