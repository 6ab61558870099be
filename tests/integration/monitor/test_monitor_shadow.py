"""Shadow rollouts: the gateway logs a mirrored request's shadow answer under the primary's prediction ids, so one
label judges both answers — the shadow's quality figures fill in as well as stable's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monitor_support import batch, labels, monitor_settings, reference, registered, run_monitor, tokens_in, window_start

from support.services import eventually
from vigil.events import topics

pytestmark = pytest.mark.integration


async def test_a_mirrored_request_label_is_credited_to_stable_and_shadow(
    fresh_db: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = tokens_in(tmp_path)
    settings = monitor_settings(fresh_db, kafka_bootstrap, topic_prefix, tokens)
    async with run_monitor(settings, tokens, kafka_bootstrap, topic_prefix) as mon:
        ref = reference()
        await mon.publish(topics.MODELS, registered("m", 1, ref), registered("m", 2, ref), key="m")
        at = window_start(time.time(), settings.window_s, ahead=2)
        stable, ids, (truth, s_out) = batch("mirror", "m", 1, "stable", at, 600, seed=11)
        shadow, _, (_, h_out) = batch("mirror", "m", 2, "shadow", at, 600, seed=11, ids=ids, flip=0.4)
        await mon.publish(topics.PREDICTIONS, stable, shadow, key="mirror")

        async def both_counted() -> bool:  # the labels come after the predictions (the join index path)
            return sum(st.predictions for st in await mon.windows() if st.deployment == "mirror") == 1200

        await eventually(both_counted, timeout=60, what="both batches counted")
        await mon.publish(topics.LABELS, *labels("mirror", ids, truth), key="mirror")

        async def both_labelled() -> list[Any]:
            rs = await mon.fetch("SELECT variant, labels, figures FROM windows WHERE kind = 'tumbling'")
            return rs if len(rs) == 2 and all(r["labels"] == 600 for r in rs) else []

        rows = {r["variant"]: r for r in await eventually(both_labelled, timeout=60, what="both variants labelled")}
        assert rows["stable"]["figures"]["quality"]["accuracy"] == pytest.approx(float(np.mean(truth == s_out)))
        assert rows["shadow"]["figures"]["quality"]["accuracy"] == pytest.approx(float(np.mean(truth == h_out)))
        # the shadow answers worse on the same requests: judged like a canary, it fails on accuracy
        verdicts = await eventually(
            lambda: _verdicts(mon, "Failed"), timeout=60, what="shadow judged worse than stable on its labels"
        )
        ev = {e["statistic"]: e for e in verdicts[0]["data"]["evidence"]}
        assert ev["accuracy.drop"]["breached"] and ev["accuracy.drop"]["sample_size"] == 600


async def _verdicts(mon: Any, verdict: str) -> list[dict[str, Any]]:
    return [
        e for e in await mon.monitoring_events() if e["type"] == "analysis.verdict" and e["data"]["verdict"] == verdict
    ]
