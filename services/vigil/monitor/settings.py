"""Monitor settings (env ``VIGIL_…``): window lengths, grace and watermark, label horizon and hold."""

from __future__ import annotations

from pydantic import Field

from vigil.service.settings import ServiceSettings


class MonitorSettings(ServiceSettings):
    """Monitor knobs. Times are seconds unless the name carries a unit (Kafka-style ``_ms``)."""

    service_name: str = "monitor"
    http_port: int = 8105
    #: Tumbling window length; windows are aligned on multiples of it (event time: a batch's ``first_at``).
    window_s: float = Field(default=60.0, gt=0)
    #: A window closes once the watermark of every stream partition passes its end plus this grace (closer.py):
    #: batches produced up to ``grace`` after the window's end still count.
    window_grace_s: float = Field(default=5.0, ge=0)
    #: The rolling long window is the merge of this many consecutive tumbling windows (0 = off).
    rolling_windows: int = Field(default=12, ge=0, le=1000)
    #: How often the closer looks for windows to close or to revise (late labels).
    tick_s: float = Field(default=1.0, gt=0)
    #: Window state and the prediction-id join index are kept this long after a window ends, so labels
    #: arriving later still update that window's quality figures (revision + 1). Older labels are dropped.
    label_horizon_s: float = Field(default=6 * 3600.0, gt=0)
    #: A label whose prediction has not arrived yet is held this long (and joined when the prediction comes).
    label_hold_s: float = Field(default=900.0, gt=0)
    #: At most this many labels are held per deployment; beyond it the oldest held labels are dropped (counted).
    label_hold_max_rows: int = Field(default=100_000, ge=1_000)
    #: A prediction of a version whose registration the monitor has not consumed yet is held this long waiting
    #: for it (held_predictions.py; its windows do not close meanwhile), then folded without the reference profile.
    prediction_hold_s: float = Field(default=300.0, gt=0)
    #: At most this many prediction rows are held per version; a batch beyond it is folded at once (counted, logged).
    prediction_hold_max_rows_per_version: int = Field(default=50_000, ge=1)
    #: At most this many prediction rows are held in all (every version); a batch beyond it is folded at once.
    prediction_hold_max_rows: int = Field(default=200_000, ge=1)
    #: Score histogram resolution of the quality state (AUC granularity 1/bins; must be a multiple of 10).
    score_bins: int = Field(default=200, ge=10)
    #: Buckets of the prediction-drift histogram (scores in [0, 1], else outputs' categories).
    prediction_bins: int = Field(default=10, ge=2, le=100)
    #: Sensitive attribute for fairness gaps when the deployment's policy names none (a categorical feature).
    fairness_attribute: str | None = None
    #: Decoded window states kept in memory (least recently used dropped first; the rows in Postgres are the truth).
    state_cache_windows: int = Field(default=256, ge=8)
    #: Numeric rows of each window kept as a uniform sample for the domain classifier's AUROC at close (domain.py);
    #: 0 = no sample and no classifier. 1 000 rows of 20 features add 80 kB to the window state written per batch.
    domain_sample_rows: int = Field(default=1000, ge=0, le=10_000)
    #: Policies are re-read from Postgres at most this often per deployment (the API invalidates at once).
    policy_cache_s: float = Field(default=5.0, ge=0)
