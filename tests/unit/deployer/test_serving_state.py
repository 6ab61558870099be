"""The gateway's in-memory serving state: a route is only replaced by one at least as new (``serving_seq``)."""

from __future__ import annotations

from typing import Any

import orjson

from vigil.deployer.serving_state import ServingState
from vigil.deployer.store import Route


def route(seq: int, **changes: Any) -> Route:
    fields: dict[str, Any] = {
        "name": "churn",
        "model": "churn-model",
        "stable_version": 1,
        "stable_digest": "sha256:" + "a" * 64,
        "candidate_version": 2,
        "candidate_digest": "sha256:" + "b" * 64,
        "candidate_weight": 50,
        "mirror": False,
        "seq": seq,
    }
    return Route(**{**fields, **changes})


def state() -> ServingState:
    return ServingState(None, "deployer", refresh_interval_s=1.0)  # type: ignore[arg-type]  # no database here


def test_a_notification_carries_the_route_and_is_applied_without_a_query() -> None:
    serving = state()
    payload = orjson.dumps(route(3).__dict__).decode()
    assert serving._on_payload(payload) is True
    assert serving._routes["churn"] == route(3)


def test_an_older_snapshot_never_undoes_a_newer_route() -> None:
    serving = state()
    serving._apply(route(5, candidate_version=None, candidate_digest=None, candidate_weight=0))  # rolled back
    serving._apply(route(4))  # a reload that read the table before the rollback committed
    assert serving._routes["churn"].candidate_version is None
    serving._apply(route(6, candidate_weight=10))
    assert serving._routes["churn"].candidate_weight == 10
