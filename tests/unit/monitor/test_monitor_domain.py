"""The domain classifier's second opinion in the monitor, without the bus: the window's row sample folded through
``fold_predictions`` (same rows for any batching, kept through the state's round trip and merge), the figures for a
butterfly and a clean window, nulls with a reason for too-small samples, the event and its schema, the off-by-default
rule, the CLI cell and the gauges."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest

from vigil.cli.monitor import COLUMNS, domain_cell, window_rows
from vigil.events import decode_event, make_event
from vigil.events.catalog.streams import PredictionLogged
from vigil.events.contracts import encode_outgoing
from vigil.kernels.profile import DatasetProfile
from vigil.monitor.domain import MIN_ROWS, DomainOpinions, domain_figures
from vigil.monitor.figures import compute_figures, window_event
from vigil.monitor.ingest import fold_predictions
from vigil.monitor.multivariate import parse_multivariate
from vigil.monitor.policy import Policy
from vigil.monitor.rules import drifted_features
from vigil.monitor.state import WindowState
from vigil.trainer.profiling import reference_profile_dict

pytestmark = pytest.mark.unit

NAMES = ["a", "b", "c", "d"]


def _rows(n: int, seed: int, flip: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    x[:, 1] = (-0.9 if flip else 0.9) * x[:, 0] + np.sqrt(0.19) * x[:, 1]
    return x


BODY = orjson.loads(orjson.dumps(reference_profile_dict(_rows(10_000, 0), NAMES)))
REF = DatasetProfile.from_dict(BODY)
MV = parse_multivariate(BODY, REF)


def _payload(x: np.ndarray, ids: list[str]) -> PredictionLogged:
    now = datetime.now(UTC)
    return PredictionLogged(
        deployment="d", model="m", version=1, variant="stable", first_at=now, last_at=now, prediction_ids=ids,
        numeric={n: x[:, j].tolist() for j, n in enumerate(NAMES)}, outputs=[1.0] * len(ids),
        latency_ms=[1.0] * len(ids),
    )  # fmt: skip


def _window(x: np.ndarray, cuts: list[int], ids: list[str] | None = None, sample_rows: int = 1000) -> WindowState:
    ids = ids or [f"p{i}" for i in range(x.shape[0])]
    st = WindowState("d", "m", 1, "stable", 0, 60_000)
    for lo, hi in zip([0, *cuts], [*cuts, x.shape[0]], strict=True):
        fold_predictions(
            st, _payload(x[lo:hi], ids[lo:hi]), REF, prediction_bins=10, fairness_attribute=None, multivariate=MV,
            sample_rows=sample_rows,
        )  # fmt: skip
    return st


def test_the_window_sample_is_the_same_for_any_batching_and_survives_round_trip_and_merge() -> None:
    x = _rows(3000, 1)
    ids = [uuid.uuid4().hex for _ in range(3000)]
    one = _window(x, [], ids)
    many = _window(x, [100, 900, 1000, 2200], ids)
    assert one.sample is not None and many.sample is not None
    assert one.sample.size == 1000 and one.sample.seen == 3000
    np.testing.assert_array_equal(one.sample.rows, many.sample.rows)
    back = WindowState.from_bytes(many.to_bytes(), REF)
    assert back.sample is not None and back.sample.priority.tolist() == one.sample.priority.tolist()
    merged = _window(x[:1200], [], ids[:1200]).merge(_window(x[1200:], [500], ids[1200:]))
    assert merged.sample is not None and merged.sample.seen == 3000
    np.testing.assert_array_equal(merged.sample.rows, one.sample.rows)
    kept = {tuple(r) for r in one.sample.rows.tolist()}
    assert kept <= {tuple(r) for r in x.astype(np.float32).tolist()}  # window rows, nothing made up
    assert _window(x, [], ids, sample_rows=0).sample is None  # switched off
    st = WindowState("d", "m", 1, "stable", 0, 60_000)
    fold_predictions(st, _payload(x[:10], ids[:10]), REF, prediction_bins=10, fairness_attribute=None)
    assert st.sample is None  # no PCA reference (an older profile): nothing kept
    old = orjson.loads(one.to_bytes())
    del old["sample"]
    assert WindowState.from_bytes(orjson.dumps(old), REF).sample is None  # states from before the sample


def _figures(x: np.ndarray) -> dict[str, Any]:
    assert MV is not None
    st = _window(x, [len(x) // 2])
    return compute_figures(st, REF, multivariate=MV, domain=domain_figures(MV.pca.sample, st.sample))


def test_butterfly_is_told_apart_and_a_clean_window_is_not() -> None:
    flipped = _figures(_rows(2000, 2, flip=True))["multivariate"]["domain_classifier"]
    clean = _figures(_rows(2000, 3))["multivariate"]["domain_classifier"]
    assert flipped["auroc"] > 0.75 and flipped["drifted"] is True and flipped["z"] > 10
    assert flipped["n_window"] == 1000 and flipped["window_rows"] == 2000 and flipped["reason"] is None
    assert flipped["n_reference"] == MV.pca.sample.shape[0]  # type: ignore[union-attr]
    assert abs(clean["auroc"] - 0.5) < 0.05 and clean["drifted"] is False
    assert clean["lower"] < 0.5 < clean["upper"] and clean["upper"] == pytest.approx(0.5 + 3 * clean["null_sd"])


def test_too_small_samples_give_null_with_a_reason_not_half() -> None:
    assert MV is not None
    few = _window(_rows(MIN_ROWS - 1, 4), [])
    dc = domain_figures(MV.pca.sample, few.sample)
    assert dc["auroc"] is None and dc["drifted"] is None and "fewer than" in dc["reason"]
    assert dc["n_window"] == MIN_ROWS - 1
    assert domain_figures(MV.pca.sample, None)["reason"].startswith("the window's sample has 0 rows")
    enough = _window(_rows(500, 5), [])
    no_ref = domain_figures(MV.pca.sample[:10], enough.sample)
    assert no_ref["auroc"] is None and "reference carries 10 sample rows" in no_ref["reason"]
    fig = compute_figures(few, REF, multivariate=MV, domain=dc)
    event = window_event(fig, 0)
    assert event.multivariate is not None and event.multivariate.domain_classifier is not None
    assert event.multivariate.domain_classifier.auroc is None
    assert domain_cell(fig["multivariate"]).startswith("n/a: the window's sample has")


def test_the_event_carries_the_opinion_and_passes_the_schema_both_ways() -> None:
    fig = _figures(_rows(1500, 6, flip=True))
    event = window_event(fig, 0)
    raw = encode_outgoing(make_event(event, source="vigil://monitor", actor="service:monitor"))  # produce side
    _, decoded = decode_event(raw)  # consume side: schema file, then the class
    dc = decoded.multivariate.domain_classifier  # type: ignore[attr-defined]
    assert dc.auroc == pytest.approx(fig["multivariate"]["domain_classifier"]["auroc"]) and dc.drifted is True
    older = orjson.loads(raw)
    del older["data"]["multivariate"]["domain_classifier"]  # an event from before the field still decodes
    _, old = decode_event(orjson.dumps(older))
    assert old.multivariate.domain_classifier is None  # type: ignore[attr-defined]


def test_rule_is_off_by_default_and_names_the_classifier_when_on() -> None:
    fig = _figures(_rows(1500, 7, flip=True))
    dc = fig["multivariate"]["domain_classifier"]
    assert "domain_classifier" not in drifted_features(Policy(), fig)
    on = Policy.model_validate({"drift": {"domain_classifier": True}})
    ev = drifted_features(on, fig)["domain_classifier"]
    assert ev.statistic == "multivariate.domain_classifier_auroc" and ev.value == dc["auroc"]
    assert ev.threshold == max(0.55, dc["upper"]) and ev.sample_size == 1000 and ev.baseline == 0.5
    assert "domain_classifier" not in drifted_features(on, _figures(_rows(1500, 8)))
    few = Policy.model_validate({"drift": {"domain_classifier": True, "min_samples": 5000}})
    assert "domain_classifier" not in drifted_features(few, fig)


def test_cli_cell_and_gauges() -> None:
    from prometheus_client import REGISTRY

    from vigil.monitor.gauges import export_window

    fig = {**_figures(_rows(1500, 9, flip=True)), "deployment": "dc-gauge", "version": 2, "variant": "stable"}
    dc = fig["multivariate"]["domain_classifier"]
    row = window_rows([{"figures": fig}])[0]
    assert len(row) == len(COLUMNS)
    assert row[COLUMNS.index("domain AUROC")] == f"{dc['auroc']:.3f} (band ≤ {dc['upper']:.3f}) *"
    assert domain_cell(None) == "-" and domain_cell({"error": 1.0}) == "-"
    export_window(fig)
    who = {"deployment": "dc-gauge", "version": "2", "variant": "stable"}
    assert REGISTRY.get_sample_value("vigil_monitor_domain_classifier_auroc", who) == pytest.approx(dc["auroc"])
    assert REGISTRY.get_sample_value("vigil_monitor_domain_classifier_auroc_upper", who) == pytest.approx(dc["upper"])


def test_opinions_are_cached_per_sample_and_a_failure_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MV is not None
    st = _window(_rows(400, 10), [])
    opinions = DomainOpinions()

    async def go() -> tuple[Any, Any, Any]:
        first = await opinions.figures(st, MV)
        again = await opinions.figures(st, MV)
        st.sample.update(_rows(10, 11), np.arange(10, dtype=np.uint64))  # type: ignore[union-attr]
        changed = await opinions.figures(st, MV)
        return first, again, changed

    try:
        first, again, changed = asyncio.run(go())
        assert again is first and changed is not first and changed["window_rows"] == 410
        assert asyncio.run(opinions.figures(st, None)) is None

        def broken(*_: Any) -> dict[str, Any]:
            raise RuntimeError("boom")

        monkeypatch.setattr("vigil.monitor.domain.domain_figures", broken)
        st.sample.update(_rows(10, 12), np.arange(10, 20, dtype=np.uint64))  # type: ignore[union-attr]
        failed = asyncio.run(opinions.figures(st, MV))
        assert failed is not None and failed["auroc"] is None and failed["reason"] == "classifier failed: RuntimeError"
    finally:
        opinions.close()
