"""Breast-cancer classifier: logistic regression on scikit-learn's bundled Wisconsin diagnostic data.

The data ships inside scikit-learn (``load_breast_cancer``, 569 rows × 30 features, no download). The label is
``1 = malignant`` (scikit-learn's ``0`` flipped), so the positive class is the one a screening model must catch.
Use :func:`write_dataset` to materialise it as a dataset version (CSV + sha256) and announce it with
``data.updated``; the policy's entrypoint is ``vigil.trainer.examples.breast_cancer:train`` (logistic regression, a
JSON artifact that :func:`predict` loads without pickle) or ``…:train_gbm`` (gradient-boosted trees, LightGBM by
default or XGBoost with ``params.library``, served as ONNX — see :mod:`.trees`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vigil.datasets.tabular import describe, write_csv
from vigil.trainer.examples.logistic import predict, train_tabular
from vigil.trainer.examples.trees import train_tree_ensemble
from vigil.trainer.sdk import TrainingContext, TrainingResult

__all__ = ["DATASET", "predict", "train", "train_gbm", "write_dataset"]

DATASET = "breast-cancer"


def feature_names() -> list[str]:
    from sklearn.datasets import load_breast_cancer

    return [str(n).replace(" ", "_") for n in load_breast_cancer().feature_names]


def write_dataset(directory: Path) -> dict[str, Any]:
    """Write the bundled data to ``directory/breast-cancer.csv``; returns the ``data.updated`` body."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = feature_names()
    path = directory / f"{DATASET}.csv"
    write_csv(path, data.data, 1 - data.target, names)
    return {"dataset": DATASET, "producer": "sklearn-bundled", **describe(path, names, len(data.target))}


def train(ctx: TrainingContext) -> TrainingResult:
    """Entrypoint: logistic regression on the verified breast-cancer CSV (params as in ``train_tabular``)."""
    return train_tabular(ctx)


def train_gbm(ctx: TrainingContext) -> TrainingResult:
    """Entrypoint: gradient-boosted trees on the verified breast-cancer CSV, as ONNX (params as in ``.trees``)."""
    return train_tree_ensemble(ctx)
