"""Topic names (DESIGN §3). Each topic is keyed by its aggregate so order holds per entity."""

from __future__ import annotations

from typing import Final

DATA: Final = "vigil.data"  # key: dataset
TRAINING: Final = "vigil.training"  # key: model
MODELS: Final = "vigil.models"  # key: model
DEPLOYMENTS: Final = "vigil.deployments"  # key: deployment
MONITORING: Final = "vigil.monitoring"  # key: deployment
PREDICTIONS: Final = "vigil.predictions"  # key: deployment (high volume, batched)
LABELS: Final = "vigil.labels"  # key: deployment
METRICS: Final = "vigil.metrics"  # key: deployment
AUDIT: Final = "vigil.audit"  # written by the auditor only, infinite retention
DLQ: Final = "vigil.dlq"  # dead letters, key: original topic/partition

ALL: Final[tuple[str, ...]] = (
    DATA,
    TRAINING,
    MODELS,
    DEPLOYMENTS,
    MONITORING,
    PREDICTIONS,
    LABELS,
    METRICS,
    AUDIT,
    DLQ,
)

#: Topics that carry control-plane decisions (audited one event per entry).
CONTROL_PLANE: Final[tuple[str, ...]] = (DATA, TRAINING, MODELS, DEPLOYMENTS, MONITORING)
#: High-volume streams (audited as per-window digests).
STREAMS: Final[tuple[str, ...]] = (PREDICTIONS, LABELS, METRICS)
