"""The "patient risk" example: logistic regression on the synthetic data of :mod:`vigil.datasets.patient_risk`.

The generator lives in libs/ (the demo draws its traffic from it, and libs never import a service); its names are
re-exported here so that the example reads as one module: ``patient_risk.write_dataset(...)`` writes a version,
``vigil.trainer.examples.patient_risk:train`` is the entrypoint that trains on it, ``predict`` scores rows;
``…:train_gbm`` trains gradient-boosted trees on it instead, served as ONNX (:mod:`.trees`).
"""

from __future__ import annotations

from vigil.datasets.patient_risk import DATASET, FEATURES, generate, main, write_dataset
from vigil.trainer.examples.logistic import predict, train_tabular
from vigil.trainer.examples.trees import train_tree_ensemble
from vigil.trainer.sdk import TrainingContext, TrainingResult

__all__ = ["DATASET", "FEATURES", "generate", "predict", "train", "train_gbm", "write_dataset"]


def train(ctx: TrainingContext) -> TrainingResult:
    """Entrypoint: logistic regression on a verified patient-risk CSV (params as in ``train_tabular``)."""
    return train_tabular(ctx)


def train_gbm(ctx: TrainingContext) -> TrainingResult:
    """Entrypoint: gradient-boosted trees (LightGBM, or XGBoost with ``params.library``) as ONNX; see ``.trees``."""
    return train_tree_ensemble(ctx)


if __name__ == "__main__":
    main()
