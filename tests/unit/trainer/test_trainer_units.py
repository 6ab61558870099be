"""Trainer pieces without infrastructure: artifact safety, dataset verification, the examples and their loader."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest

from vigil.datasets.tabular import read_csv
from vigil.trainer.examples import logistic, patient_risk
from vigil.trainer.executor import _lines, child_env
from vigil.trainer.runner import RunFailure, fetch_dataset
from vigil.trainer.worker import UnsafeArtifact, check_artifact

pytestmark = pytest.mark.unit


def test_pickled_or_malformed_artifacts_are_refused() -> None:
    check_artifact(b'{"coef": [1, 2]}', "json")
    buf = io.BytesIO()
    np.savez(buf, coef=np.arange(3.0))
    check_artifact(buf.getvalue(), "npz")
    pickled = io.BytesIO()
    np.savez(pickled, payload=np.array([{"evil": 1}], dtype=object))  # object arrays are pickled inside npz
    with pytest.raises(UnsafeArtifact, match="pickle"):
        check_artifact(pickled.getvalue(), "npz")
    with pytest.raises(UnsafeArtifact):
        check_artifact(b"\x80\x04K\x01.", "json")  # a pickle stream is not JSON
    with pytest.raises(UnsafeArtifact, match="not allowed"):
        check_artifact(b"x", "pickle")


def _ref(body: dict[str, object], **overrides: object) -> dict[str, object]:
    return {"dataset": "patient-risk", "version": 1, "content_digest": body["content_digest"], "uri": body["uri"],
            **overrides}  # fmt: skip


def test_datasets_are_copied_and_verified_before_training(tmp_path: Path) -> None:
    body = patient_risk.write_dataset(tmp_path / "src" / "p.csv", rows=50, seed=3)
    roots = [str(tmp_path / "src")]
    got = fetch_dataset(_ref(body), 0, tmp_path / "work", roots)
    assert (
        got.path.parent == tmp_path / "work" / "data"
        and got.path.read_bytes() == (tmp_path / "src" / "p.csv").read_bytes()
    )
    with pytest.raises(RunFailure, match="does not match") as bad:
        fetch_dataset(_ref(body, content_digest="sha256:" + "0" * 64), 1, tmp_path / "work", roots)
    assert bad.value.reason == "invalid_input"
    assert body["content_digest"] not in str(bad.value)  # never echo the hash of the file the URI named
    with pytest.raises(RunFailure, match="outside the allowed"):
        fetch_dataset(_ref(body), 2, tmp_path / "work", [str(tmp_path / "elsewhere")])
    with pytest.raises(RunFailure, match="outside the allowed"):  # no roots at all: nothing is readable
        fetch_dataset(_ref(body), 2, tmp_path / "work", [])
    with pytest.raises(RunFailure, match="only file://"):
        fetch_dataset(_ref(body, uri="https://example.com/p.csv"), 3, tmp_path / "work", roots)
    with pytest.raises(RunFailure, match="outside the allowed") as outside:  # the refusal names the allowed roots
        fetch_dataset(_ref(body), 4, tmp_path / "work", [str(tmp_path / "elsewhere"), str(tmp_path / "x")])
    assert f"({tmp_path.resolve() / 'elsewhere'}, {tmp_path.resolve() / 'x'})" in str(outside.value)
    # A store object: read from the copy the worker staged (no root needed), verified like any other.
    in_store = _ref(body, uri=f"vigil-artifact://{body['content_digest']}")
    got = fetch_dataset(in_store, 5, tmp_path / "work", [], str(tmp_path / "src" / "p.csv"))
    assert got.path.read_bytes() == (tmp_path / "src" / "p.csv").read_bytes()
    with pytest.raises(RunFailure, match="not fetched from the artifact store"):
        fetch_dataset(in_store, 6, tmp_path / "work", [])


def test_patient_risk_is_seeded_and_drift_moves_the_population(tmp_path: Path) -> None:
    a = patient_risk.write_dataset(tmp_path / "a.csv", rows=2000, seed=7)
    b = patient_risk.write_dataset(tmp_path / "b.csv", rows=2000, seed=7)
    assert a["content_digest"] == b["content_digest"] and a["row_count"] == 2000
    x0, y0 = patient_risk.generate(5000, seed=1)
    x1, _ = patient_risk.generate(5000, seed=1, drift=1.0)
    age, glucose = patient_risk.FEATURES.index("age"), patient_risk.FEATURES.index("glucose")
    assert x1[:, age].mean() - x0[:, age].mean() > 8
    assert x1[:, glucose].mean() - x0[:, glucose].mean() > 15
    assert 0.05 < y0.mean() < 0.6


def test_logistic_artifact_round_trips_without_pickle(tmp_path: Path) -> None:
    patient_risk.write_dataset(tmp_path / "p.csv", rows=3000, seed=2)
    x, y, names = read_csv(tmp_path / "p.csv")
    steps: list[tuple[int, float]] = []
    model = logistic.fit(x, y, names, epochs=200, on_step=lambda e, loss: steps.append((e, loss)))
    artifact = model.to_bytes()
    assert json.loads(artifact)["feature_names"] == patient_risk.FEATURES
    p = logistic.predict(artifact, x)
    assert np.allclose(p, model.predict_score(x))
    assert logistic.roc_auc(y, p) > 0.7
    assert steps[-1][1] < steps[0][1]
    assert json.loads(artifact)["format"] == "vigil.linear/v1"  # the format the deployer's gateway serves
    with pytest.raises(ValueError, match=r"not a vigil\.linear/v1"):
        logistic.load(b'{"format": "other"}')
    tampered = json.loads(artifact)
    tampered["coef"] = tampered["coef"][:-1]
    with pytest.raises(ValueError, match="one number per feature"):
        logistic.load(json.dumps(tampered).encode())


def test_roc_auc_matches_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500).astype(np.float64)
    s = np.round(rng.random(500) + 0.3 * y, 2)  # rounded: ties
    assert logistic.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_child_env_drops_secrets_and_pins_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_DATABASE_URL", "postgresql://u:pw@h/db")
    monkeypatch.setenv("VIGIL_ARTIFACT_ENCRYPTION_KEY", "00" * 32)
    monkeypatch.setenv("SOME_API_TOKEN", "x")
    env = child_env(2)
    assert not {"VIGIL_DATABASE_URL", "VIGIL_ARTIFACT_ENCRYPTION_KEY", "SOME_API_TOKEN"} & set(env)
    assert env["OMP_NUM_THREADS"] == "2" and env["OPENBLAS_NUM_THREADS"] == "2"


def test_log_lines_are_bounded() -> None:
    async def collect(data: bytes) -> list[str]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return [line async for line in _lines(reader, 10)]

    got = asyncio.run(collect(b"short\n" + b"x" * 100 + b"\ntail"))
    assert got[0] == "short" and all(len(line) <= 10 for line in got) and got[-1] == "tail"
