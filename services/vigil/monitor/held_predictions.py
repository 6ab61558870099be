"""Predictions that arrived before their version's registration: held (bounded), folded when it comes.

Why: a prediction is folded against its version's reference profile — the numeric features are binned on its
edges, the categorical ones counted on its vocabulary, and the fairness groups may be its categories
(groups.py). The profile comes with ``model.version.registered`` on ``vigil.models``, which the consumer reads
independently of ``vigil.predictions``: at start-up (or behind a backlog on the models partition) a batch can be
read first. Folded then, it kept its counts, scores, latency and label join but no features and no group — its
labelled rows counted as "missing" in the fairness figures — for good (issue: the start-up ordering race).

What: a ``prediction.logged`` of a version with no ``reference_profiles`` row is not folded but held — one
``held_predictions`` row per event (migrations/003), its data as consumed — and folded by the normal path
(handlers.fold_prediction) into the window of its own ``first_at`` as soon as the registration is consumed:
in the registration's batch, and by the closer's sweep every tick (which also catches a batch another instance
held while this one registered the version). The closer does not close a deployment's windows at a start that still
has held predictions, so they are counted in the figures rather than as late rows.

Why in Postgres and not in memory behind the consumer's offsets: the monitor's consumer claims each event in the
inbox in the batch's transaction, and a redelivered event is dropped there — an event held only in memory would be
lost on a restart once its batch committed, and keeping offsets uncommitted behind it would stall its partition and
need the bus's commit path bent for one service. A row written in the same transaction as the inbox row is held
exactly once (a redelivery is refused by the inbox), survives any restart, and is deleted in the transaction that
folds it, so it is counted exactly once too.

Bounds: at most ``prediction_hold_max_rows_per_version`` rows per version and ``prediction_hold_max_rows`` in all;
a batch that does not fit is folded at once as before the fix (counts, scores, latency, label join — no features,
no groups), counted in ``vigil_monitor_held_predictions_dropped_total{reason="cap"}`` and logged. A held batch whose
version is still unknown ``prediction_hold_s`` after it arrived — and after every partition of ``vigil.models`` was
last read to its end (its caught-up time, kept beside the stream watermarks), so a monitor restarted after a long stop
reads the registrations before it gives up on anything — is folded the same way (``reason="expired"``): a version
that is never registered delays its windows by about that long.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

HELD_PREDICTIONS_DROPPED = Counter(
    "vigil_monitor_held_predictions_dropped_total",
    "Prediction rows of a not-yet-registered version folded without its reference profile (no features, no "
    "groups): refused by the hold's cap, or still unregistered when the hold ran out",
    ["reason"],
)
HELD_PREDICTION_ROWS = Gauge(
    "vigil_monitor_held_predictions", "Prediction rows held while waiting for their version's registration"
)


def over_cap(rows: int, version_held: int, total_held: int, *, per_version: int, total: int) -> str | None:
    """Why a batch of ``rows`` cannot be held beside ``version_held`` rows of its version and ``total_held`` in all
    ("version_cap" / "total_cap"), or None when it fits. A batch is held whole or not at all."""
    if version_held + rows > per_version:
        return "version_cap"
    if total_held + rows > total:
        return "total_cap"
    return None
