"""Binary logistic regression in numpy, saved as a ``vigil.linear/v1`` artifact that loads without pickle.

Why numpy and not scikit-learn's estimator: the artifact must load without pickle in the deployer's gateway, so the
model is nothing but numbers (scaler mean/scale, coefficients, intercept, feature names) in the shared format of
:mod:`vigil.modelformat`; training it with full-batch gradient descent also gives real per-step metrics to stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.datasets.tabular import read_csv
from vigil.modelformat import LinearModel
from vigil.trainer.sdk import TrainingContext, TrainingResult

F64 = npt.NDArray[np.float64]


def load(artifact: bytes) -> LinearModel:
    """Parse and validate an artifact (untrusted bytes: JSON only, shapes and finiteness checked)."""
    return LinearModel.from_bytes(artifact)


def predict(artifact: bytes, x: npt.ArrayLike) -> F64:
    """Positive-class probabilities of rows ``x`` under the model in ``artifact`` (no pickle anywhere)."""
    xa = np.asarray(x, dtype=np.float64)
    return load(artifact).predict_score(xa.reshape(1, -1) if xa.ndim == 1 else xa)


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
) -> LinearModel:
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
    return LinearModel(
        task="binary_classification",
        feature_names=tuple(names),
        mean=mean,
        scale=scale,
        coef=w,
        intercept=b,
        metadata={"trainer": "vigil.trainer.examples.logistic", "epochs": epochs, "l2": l2},
    )


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
    p_val = model.predict_score(x[val_idx])
    y_val = y[val_idx]
    metrics = {
        "val_auc": roc_auc(y_val, p_val),
        "val_accuracy": float(np.mean((p_val >= model.threshold) == (y_val == 1))),
        "val_log_loss": log_loss(y_val, p_val),
        "train_log_loss": log_loss(y[train_idx], model.predict_score(x[train_idx])),
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
        calibration_scores=p_val,  # held-out: the monitor's label-free estimates are calibrated on them
        calibration_labels=y_val,
        decision_threshold=float(model.threshold),
    )
