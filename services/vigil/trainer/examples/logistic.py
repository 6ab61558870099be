"""Binary logistic regression in numpy, its JSON artifact, and a pickle-free loader for serving.

Why numpy and not scikit-learn's estimator: the artifact must load without pickle in the deployer's gateway, so the
model is nothing but numbers (scaler mean/scale, coefficients, intercept, feature names) in JSON; training it with
full-batch gradient descent also gives real per-step metrics to stream. :func:`predict` is all a server needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.trainer.examples.tabular import read_csv
from vigil.trainer.sdk import TrainingContext, TrainingResult

FORMAT = "vigil.logistic-regression"
FORMAT_VERSION = 1
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LogisticModel:
    feature_names: list[str]
    mean: F64
    scale: F64
    coef: F64
    intercept: float
    threshold: float = 0.5

    def predict_proba(self, x: npt.ArrayLike) -> F64:
        """Positive-class probability per row of ``x`` (rows × features, in ``feature_names`` order)."""
        xa = np.asarray(x, dtype=np.float64)
        if xa.ndim == 1:
            xa = xa.reshape(1, -1)
        if xa.shape[1] != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} features, got {xa.shape[1]}")
        z = ((xa - self.mean) / self.scale) @ self.coef + self.intercept
        return _sigmoid(z)

    def to_bytes(self) -> bytes:
        """Canonical JSON artifact."""
        body = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "feature_names": self.feature_names,
            "scaler": {"mean": self.mean.tolist(), "scale": self.scale.tolist()},
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "threshold": self.threshold,
            "classes": [0, 1],
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def load(artifact: bytes) -> LogisticModel:
    """Parse and validate an artifact (untrusted bytes: JSON only, shapes and finiteness checked)."""
    body = json.loads(artifact)
    if not isinstance(body, dict) or body.get("format") != FORMAT or body.get("version") != FORMAT_VERSION:
        raise ValueError("not a vigil logistic-regression artifact")
    names = body["feature_names"]
    mean = np.asarray(body["scaler"]["mean"], dtype=np.float64)
    scale = np.asarray(body["scaler"]["scale"], dtype=np.float64)
    coef = np.asarray(body["coef"], dtype=np.float64)
    n = len(names)
    if not all(isinstance(s, str) for s in names) or not (mean.shape == scale.shape == coef.shape == (n,)):
        raise ValueError("artifact arrays do not match its feature names")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(coef)) and np.all(scale > 0)):
        raise ValueError("artifact holds non-finite or non-positive scaler values")
    return LogisticModel(list(names), mean, scale, coef, float(body["intercept"]), float(body.get("threshold", 0.5)))


def predict(artifact: bytes, x: npt.ArrayLike) -> F64:
    """Positive-class probabilities of rows ``x`` under the model in ``artifact`` (no pickle anywhere)."""
    return load(artifact).predict_proba(x)


def _sigmoid(z: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * z))  # numerically stable for large |z|
    return out


def log_loss(y: F64, p: F64) -> float:
    eps = 1e-12
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def roc_auc(y: F64, score: F64) -> float:
    """ROC AUC by the rank-sum (Mann–Whitney) formula, ties averaged."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fit(
    x: F64,
    y: F64,
    names: list[str],
    *,
    epochs: int = 300,
    learning_rate: float = 0.5,
    l2: float = 1e-3,
    on_step: Callable[[int, float], None] | None = None,
    log_every: int = 10,
) -> LogisticModel:
    """Full-batch gradient descent on standardised features with L2; ``on_step(epoch, train_log_loss)``."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    xs = (x - mean) / scale
    w = np.zeros(x.shape[1])
    b = 0.0
    n = len(y)
    for epoch in range(1, epochs + 1):
        p = _sigmoid(xs @ w + b)
        grad = p - y
        w -= learning_rate * (xs.T @ grad / n + l2 * w)
        b -= learning_rate * float(grad.mean())
        if on_step is not None and (epoch % log_every == 0 or epoch == epochs):
            on_step(epoch, log_loss(y, p))
    return LogisticModel(list(names), mean, scale, w, b)


def split(n: int, validation_fraction: float, seed: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    idx = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * validation_fraction))
    return idx[n_val:], idx[:n_val]


def train_tabular(ctx: TrainingContext) -> TrainingResult:
    """The examples' entrypoint body: read the verified CSV, fit, evaluate on a held-out split, return the artifact.

    Params: ``epochs`` (300), ``learning_rate`` (0.5), ``l2`` (1e-3), ``validation_fraction`` (0.2), ``seed`` (0).
    """
    params: dict[str, Any] = ctx.params
    x, y, names = read_csv(ctx.dataset().path)
    train_idx, val_idx = split(len(y), float(params.get("validation_fraction", 0.2)), int(params.get("seed", 0)))
    model = fit(
        x[train_idx],
        y[train_idx],
        names,
        epochs=int(params.get("epochs", 300)),
        learning_rate=float(params.get("learning_rate", 0.5)),
        l2=float(params.get("l2", 1e-3)),
        on_step=lambda epoch, loss: ctx.log_metric("train_log_loss", loss, step=epoch),
    )
    p_val = model.predict_proba(x[val_idx])
    y_val = y[val_idx]
    metrics = {
        "val_auc": roc_auc(y_val, p_val),
        "val_accuracy": float(np.mean((p_val >= model.threshold) == (y_val == 1))),
        "val_log_loss": log_loss(y_val, p_val),
        "train_log_loss": log_loss(y[train_idx], model.predict_proba(x[train_idx])),
        "n_train": float(len(train_idx)),
        "n_validation": float(len(val_idx)),
        "positive_rate": float(y.mean()),
    }
    return TrainingResult(
        artifact=model.to_bytes(),
        artifact_format="json",
        metrics={k: v for k, v in metrics.items() if np.isfinite(v)},
        profile_features=x[train_idx],
        feature_names=names,
    )
