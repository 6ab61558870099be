"""Gradient-boosted trees (LightGBM or XGBoost) on a numeric CSV dataset, served as an ONNX graph.

The non-linear counterpart of :mod:`.logistic`, trained through the same loop: read the verified CSV, fit on a
seeded split, convert with :func:`vigil.trainer.convert.to_onnx` (which refuses what does not convert and checks
onnxruntime's scores against ``predict_proba`` on the validation rows), and report the validation metrics computed
from the **ONNX graph's** scores — what the gateway will serve, not what the Python object says. Features are cast
to float32 before fitting: the graph's tree thresholds and inputs are float32, so the model is trained on the
values it will be asked about.

Params: ``library`` (``lightgbm`` | ``xgboost``), ``n_estimators`` (200), ``max_depth`` (6), ``learning_rate``
(0.05), ``num_leaves`` (31, LightGBM), ``validation_fraction`` (0.2), ``seed`` (0), ``log_every`` (10; the
validation log loss per boosting round is streamed after the fit).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vigil.modelformat import OnnxModel
from vigil.trainer.convert import to_onnx
from vigil.trainer.examples.logistic import log_loss, read_csv, roc_auc, split
from vigil.trainer.sdk import TrainingContext, TrainingResult

LIBRARIES = ("lightgbm", "xgboost")


def make_model(params: dict[str, Any]) -> tuple[Any, str]:
    """An unfitted LightGBM or XGBoost binary classifier and its library (one thread: limits are per run)."""
    library = str(params.get("library", "lightgbm"))
    common: dict[str, Any] = {
        "n_estimators": int(params.get("n_estimators", 200)),
        "max_depth": int(params.get("max_depth", 6)),
        "learning_rate": float(params.get("learning_rate", 0.05)),
        "random_state": int(params.get("seed", 0)),
        "n_jobs": 1,
    }
    if library == "lightgbm":
        import lightgbm

        model = lightgbm.LGBMClassifier(num_leaves=int(params.get("num_leaves", 31)), verbose=-1, **common)
    elif library == "xgboost":
        import xgboost

        model = xgboost.XGBClassifier(eval_metric="logloss", tree_method="hist", **common)
    else:
        raise ValueError(f"library must be one of {LIBRARIES}, got {library!r}")
    return model, library


def train_tree_ensemble(ctx: TrainingContext) -> TrainingResult:
    """The examples' tree entrypoint body (params in the module docstring)."""
    params: dict[str, Any] = ctx.params
    x, y, names = read_csv(ctx.dataset().path)
    x = x.astype(np.float32).astype(np.float64)  # the values the float32 graph will see
    train_idx, val_idx = split(len(y), float(params.get("validation_fraction", 0.2)), int(params.get("seed", 0)))
    model, library = make_model(params)
    eval_set = [(x[val_idx], y[val_idx])]
    if library == "lightgbm":
        model.fit(x[train_idx], y[train_idx], eval_set=eval_set, eval_metric="binary_logloss")
        curve = model.evals_result_["valid_0"]["binary_logloss"]
    else:
        model.fit(x[train_idx], y[train_idx], eval_set=eval_set, verbose=False)
        curve = model.evals_result()["validation_0"]["logloss"]
    every = max(1, int(params.get("log_every", 10)))
    for step, loss in enumerate(curve, start=1):
        if step % every == 0 or step == len(curve):
            ctx.log_metric("val_log_loss_round", float(loss), step=step)

    artifact = to_onnx(model, names, verify_on=x[val_idx])
    served = OnnxModel(artifact)
    _, p_val = served.run(x[val_idx])
    _, p_train = served.run(x[train_idx])
    y_val = y[val_idx]
    metrics = {
        "val_auc": roc_auc(y_val, p_val),
        "val_accuracy": float(np.mean((p_val >= 0.5) == (y_val == 1))),
        "val_log_loss": log_loss(y_val, p_val),
        "train_log_loss": log_loss(y[train_idx], p_train),
        "n_train": float(len(train_idx)),
        "n_validation": float(len(val_idx)),
        "positive_rate": float(y.mean()),
        "n_estimators": float(model.n_estimators),
    }
    return TrainingResult(
        artifact=artifact,
        artifact_format="onnx",
        metrics={k: v for k, v in metrics.items() if np.isfinite(v)},
        profile_features=x[train_idx],
        feature_names=names,
        calibration_scores=p_val,  # held-out: the monitor's label-free estimates are calibrated on them
        calibration_labels=y_val,
        decision_threshold=0.5,
    )
