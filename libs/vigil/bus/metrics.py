"""Prometheus metrics of the bus. Names are part of the dashboards' contract (infra/grafana)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "vigil_events_consumed_total", "Records consumed, by outcome", ["service", "topic", "type", "outcome"]
)
EVENTS_PRODUCED = Counter("vigil_events_produced_total", "Records published to the broker", ["service", "topic"])
CONSUMER_LAG = Gauge("vigil_consumer_lag", "High watermark minus position", ["service", "topic", "partition"])
HANDLER_SECONDS = Histogram(
    "vigil_handler_seconds",
    "Handler latency including its transaction",
    ["service", "type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DLQ_TOTAL = Counter("vigil_dlq_total", "Records dead-lettered", ["service", "topic", "reason"])
OUTBOX_PENDING = Gauge("vigil_outbox_pending", "Outbox rows not yet published", ["service"])
BROKER_LOSSES = Counter("vigil_broker_losses_total", "Times the broker was found to have lost its log", ["service"])
REPUBLISHED = Counter("vigil_outbox_republished_total", "Outbox rows republished after a broker loss", ["service"])
DEAD_LETTERS_EXPIRED = Counter(
    "vigil_dead_letters_expired_total", "Dead letters deleted at the end of their retention period", ["service"]
)
