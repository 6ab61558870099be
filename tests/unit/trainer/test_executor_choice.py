"""Which executor a run gets (issue #24 item 4): the request's executor (the policy's field), else the deprecated
params key ``vigil.executor``, else the trainer's default; ``ray`` without a Ray address is refused, naming why."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.events.catalog.training import Executor
from vigil.trainer.worker import EXECUTOR_PARAM, choose_executor

pytestmark = pytest.mark.unit

RAY = "127.0.0.1:6379"


@pytest.mark.parametrize(
    ("requested", "params", "default", "address", "expected"),
    [
        (None, {}, "local", None, "local"),
        (None, {}, "ray", RAY, "ray"),
        ("local", {}, "ray", None, "local"),  # the policy overrides a ray default, with or without an address
        ("local", {}, "ray", RAY, "local"),
        ("ray", {}, "local", RAY, "ray"),
        ("local", {EXECUTOR_PARAM: "ray"}, "ray", RAY, "local"),  # the field wins over the deprecated key
        ("ray", {EXECUTOR_PARAM: "spark"}, "local", RAY, "ray"),  # ... and a bad key is then not looked at
        (None, {EXECUTOR_PARAM: "ray"}, "local", RAY, "ray"),  # the deprecated key still works
        (None, {EXECUTOR_PARAM: "local"}, "ray", None, "local"),
        (None, {EXECUTOR_PARAM: ""}, "local", None, "local"),  # empty or null: as if absent (as before)
        (None, {EXECUTOR_PARAM: None}, "ray", RAY, "ray"),
    ],
)
def test_the_executor_comes_from_the_request_then_the_params_key_then_the_trainer(
    requested: Executor | None, params: dict[str, Any], default: Executor, address: str | None, expected: str
) -> None:
    assert choose_executor(requested, params, default, address) == (expected, None)


@pytest.mark.parametrize(
    ("requested", "params", "default", "source"),
    [
        ("ray", {}, "local", "the job's executor"),
        (None, {EXECUTOR_PARAM: "ray"}, "local", f"params key {EXECUTOR_PARAM} (deprecated)"),
        (None, {}, "ray", "this trainer's trainer_executor"),
    ],
)
def test_ray_without_an_address_is_refused_naming_where_ray_came_from(
    requested: Executor | None, params: dict[str, Any], default: Executor, source: str
) -> None:
    executor, refusal = choose_executor(requested, params, default, None)
    assert executor == "ray"
    assert refusal == (
        f"executor ray ({source}) but this trainer has no trainer_ray_address (VIGIL_TRAINER_RAY_ADDRESS)"
    )


@pytest.mark.parametrize("value", ["spark", "Ray", 1, ["ray"]])
def test_a_params_key_that_is_no_executor_is_refused(value: Any) -> None:
    assert choose_executor(None, {EXECUTOR_PARAM: value}, "local", RAY) == (
        None,
        f"{EXECUTOR_PARAM} {str(value)!r} is not an executor (local, ray)",
    )
