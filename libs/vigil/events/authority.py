"""Who may produce which event type: the one table consumers check a verified signer against.

Derived from the event catalogue and DESIGN §2 (what each service emits, including the events its HTTP API emits on
a user's behalf: the registry's ``POST /v1/data-updates`` produces ``data.updated``). Upstream systems hold producer
keys limited to :data:`UPSTREAM_EVENTS`; ``tests/unit/events/test_authority.py`` checks that every catalogued type
has a producer here.
"""

from __future__ import annotations

from typing import Final

SERVICE_PRINCIPAL = "service:"
PRODUCER_PRINCIPAL = "producer:"

#: Service name → the event types only it (of the services) produces, plus :data:`EVERY_SERVICE_EVENTS`.
SERVICE_EVENTS: Final[dict[str, frozenset[str]]] = {
    "registry": frozenset(
        {
            "data.updated",  # the HTTP ingress of the upstream contract (POST /v1/data-updates)
            "dataset.version.registered",
            "model.version.registered",
            "model.version.rejected",
            "model.alias.changed",
            "model.card.edited",  # the card's human sections (PUT /v1/models/{m}/versions/{n}/card/{field})
            "model.card.signed_off",  # and their sign-off by a deployer or admin (evidence packs, issue #23)
            "policy.gates.changed",  # PUT /v1/models/{m}/gates (issue #20 item 5: policy changes are audited)
        }
    ),
    "scheduler": frozenset({"training.requested", "job.state_changed", "policy.retraining.changed"}),
    "trainer": frozenset({"training.started", "training.completed", "training.failed"}),
    "deployer": frozenset(
        {
            "deployment.created",
            "deployment.rollout.started",
            "deployment.rollout.step",
            "deployment.promoted",
            "deployment.rolled_back",
            "deployment.aborted",
            "deployment.paused",
            "deployment.resumed",
            "prediction.logged",
            "metric.observed",  # the gateway's own error counts
        }
    ),
    "monitor": frozenset(
        {
            "monitor.window",
            "drift.detected",
            "slo.breached",
            "rollback.requested",
            "retrain.requested",
            "analysis.verdict",
            "policy.monitor.changed",
        }
    ),
    "auditor": frozenset(
        {"audit.entry", "audit.checkpoint", "audit.stream_digest", "access.recorded", "event.rejected"}
    ),
}

#: Events every service's own API emits (each service replays its own dead letters: ``POST /v1/dlq/{id}/replay``).
EVERY_SERVICE_EVENTS: Final = frozenset({"dlq.replayed"})
SERVICE_EVENTS.update({name: events | EVERY_SERVICE_EVENTS for name, events in SERVICE_EVENTS.items()})

#: What an upstream system may be allowed to publish (DESIGN §3, upstream contract). A producer key lists a subset.
UPSTREAM_EVENTS: Final = frozenset({"data.updated", "label.observed", "metric.observed"})


def service_principal(name: str) -> str:
    return SERVICE_PRINCIPAL + name


def producer_principal(name: str) -> str:
    return PRODUCER_PRINCIPAL + name


def allowed_events(principal: str, listed: frozenset[str] | None = None) -> frozenset[str]:
    """The event types ``principal`` may produce; ``listed`` is what a producer key's trust entry names.

    A service's types come from :data:`SERVICE_EVENTS` only (its trust entry cannot widen them); a producer's are
    what its entry lists, which must lie within :data:`UPSTREAM_EVENTS`. Anything else raises ValueError.
    """
    if principal.startswith(SERVICE_PRINCIPAL):
        name = principal[len(SERVICE_PRINCIPAL) :]
        if name not in SERVICE_EVENTS:
            raise ValueError(f"unknown service principal {principal!r}")
        return SERVICE_EVENTS[name]
    if principal.startswith(PRODUCER_PRINCIPAL) and len(principal) > len(PRODUCER_PRINCIPAL):
        events = listed or frozenset()
        beyond = events - UPSTREAM_EVENTS
        if beyond:
            raise ValueError(
                f"producer {principal!r} may only publish upstream events {sorted(UPSTREAM_EVENTS)}, "
                f"not {sorted(beyond)}"
            )
        return events
    raise ValueError(f"a signer is 'service:<name>' or 'producer:<name>', not {principal!r}")
