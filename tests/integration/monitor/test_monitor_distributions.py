"""The window-state view through the real broker and Postgres: a feature shifted in the window shows as a histogram
moved against the reference's on the same bins, every row is counted once, and the per-group rates are the ones
behind the window's fairness gap."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from monitor_support import batch, labels, monitor_settings, reference, registered, run_monitor, tokens_in, window_start

from support.services import eventually
from vigil.events import topics
from vigil.monitor.distributions import MAX_BINS

pytestmark = pytest.mark.integration

ROWS = 1200


async def test_distributions_show_the_shift_and_the_groups(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        put = await mon.client.put(
            "/v1/policies/shop", json={"fairness": {"attribute": "region", "min_samples": 10}}, headers=mon.h("risk")
        )
        assert put.status_code == 200, put.text
        await mon.publish(topics.MODELS, registered("churn", 1, reference()), key="churn")
        await eventually(lambda: mon.fetch("SELECT 1 FROM reference_profiles"), what="reference stored")
        at = window_start(time.time(), settings.window_s, ahead=4)  # ahead: the consumer may still be joining
        made = [batch("shop", "churn", 1, "stable", at, ROWS // 2, seed=20 + s, shift={"f1": 1.5}) for s in range(2)]
        await mon.publish(topics.PREDICTIONS, *(m[0] for m in made), key="shop")
        for _, ids, (truth, _) in made:
            await mon.publish(topics.LABELS, *labels("shop", ids, truth), key="shop")

        async def labelled_window() -> dict | None:
            rows = await mon.fetch("SELECT figures FROM windows WHERE kind = 'tumbling' AND labels >= $1", ROWS)
            return rows[0]["figures"] if rows else None

        fig = await eventually(labelled_window, timeout=90, what="the window closed with every label")
        answer = await mon.client.get("/v1/deployments/shop/versions/1/distributions", headers=mon.h("viewer"))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["window"] == {"start": fig["start"], "end": fig["end"]} and body["variant"] == "stable"
        by_name = {f["name"]: f for f in body["features"]}
        assert list(by_name) == ["f0", "f1", "f2", "region"]
        for f in body["features"]:
            assert len(f["bins"]) == len(f["reference"]["counts"]) == len(f["window"]["counts"])
            assert sum(f["window"]["counts"]) + f["window"]["missing"] == ROWS  # every row once
            assert sum(f["reference"]["counts"]) == 20_000
            assert sum(f["reference"]["shares"]) == pytest.approx(1.0)
        for name in ("f0", "f1", "f2"):
            assert len(by_name[name]["bins"]) == MAX_BINS + 2  # 64 reference bins: equal-width display bins
        assert by_name["region"]["bins"][-1] == "other"

        def centre(side: dict) -> float:
            return float(np.dot(side["shares"], np.arange(len(side["shares"]))))

        f0, f1 = by_name["f0"], by_name["f1"]
        assert centre(f1["window"]) - centre(f1["reference"]) > 3  # +1.5 σ ≈ 5 display bins of ~0.26 σ
        assert abs(centre(f0["window"]) - centre(f0["reference"])) < 1.5
        upper = slice(len(f1["bins"]) // 2, None)  # above the middle of the display range (≈ the mean)
        assert sum(f1["window"]["shares"][upper]) - sum(f1["reference"]["shares"][upper]) > 0.3  # ≈ 0.93 vs 0.5

        assert body["sensitive_attribute"] == "region"
        groups = {g["group"]: g for g in body["groups"]}
        assert set(groups) == {"north", "south", "other"} and groups["other"]["n"] == 0
        assert groups["north"]["n"] + groups["south"]["n"] == fig["labels"] == ROWS
        gap = abs(groups["north"]["selection_rate"] - groups["south"]["selection_rate"])
        assert gap == pytest.approx(fig["fairness"]["demographic_parity_difference"])

        assert (
            await mon.client.get("/v1/deployments/shop/versions/2/distributions", headers=mon.h("viewer"))
        ).status_code == 404
        assert (
            await mon.client.get("/v1/deployments/shop/versions/1/distributions", headers=mon.h("nobody"))
        ).status_code == 403


async def test_declared_groups_give_fairness_for_an_attribute_the_model_was_not_trained_on(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The trainer's reference profiles are numeric: a protected attribute kept out of the features is in no
    reference. Logged beside the predictions (the gateway's ``logged_attributes``), it gets fairness figures when
    the policy declares its groups — here "north" only, so "south" rows count as "other" — and none without."""
    from vigil.kernels.profile import DatasetProfile

    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    numeric_only = DatasetProfile.build(
        np.asfortranarray(np.random.default_rng(0).normal(size=(5000, 3))), numeric_names=["f0", "f1", "f2"]
    )
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        for deployment, fairness in (
            ("declared", {"attribute": "region", "groups": ["north"], "min_samples": 10}),
            ("undeclared", {"attribute": "region", "min_samples": 10}),
        ):
            put = await mon.client.put(f"/v1/policies/{deployment}", json={"fairness": fairness}, headers=mon.h("risk"))
            assert put.status_code == 200, put.text
        refused = await mon.client.put(
            "/v1/policies/x", json={"fairness": {"attribute": "region", "groups": ["a", "a"]}}, headers=mon.h("risk")
        )
        assert refused.status_code == 422 and "distinct" in refused.text
        await mon.publish(topics.MODELS, registered("churn", 1, numeric_only), key="churn")
        await eventually(lambda: mon.fetch("SELECT 1 FROM reference_profiles"), what="reference stored")
        at = window_start(time.time(), settings.window_s, ahead=4)
        sent: dict[str, int] = {}
        for i, deployment in enumerate(("declared", "undeclared")):
            event, ids, (truth, _) = batch(deployment, "churn", 1, "stable", at, 400, seed=40 + i)
            sent[deployment] = sum(r == "south" for r in event.data["categorical"]["region"])
            await mon.publish(topics.PREDICTIONS, event, key=deployment)
            await mon.publish(topics.LABELS, *labels(deployment, ids, truth), key=deployment)

        async def closed(deployment: str) -> dict | None:
            rows = await mon.fetch(
                "SELECT figures FROM windows WHERE kind = 'tumbling' AND deployment = $1 AND labels >= 400", deployment
            )
            return rows[0]["figures"] if rows else None

        declared = await eventually(lambda: closed("declared"), timeout=90, what="the declared window closed")
        assert declared["sensitive_attribute"] == "region"
        assert declared["fairness_groups"] == ["north", "other"]
        assert set(declared["fairness"]) >= {"demographic_parity_difference", "equalized_odds_difference"}
        body = (
            await mon.client.get("/v1/deployments/declared/versions/1/distributions", headers=mon.h("viewer"))
        ).json()
        groups = {g["group"]: g["n"] for g in body["groups"]}
        assert groups == {"north": 400 - sent["declared"], "other": sent["declared"]}

        undeclared = await eventually(lambda: closed("undeclared"), timeout=90, what="the undeclared window closed")
        assert undeclared["fairness"] == {} and undeclared["sensitive_attribute"] is None
