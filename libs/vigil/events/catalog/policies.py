"""Policy changes: who changed a gate policy, a retraining policy or a monitor policy, from what to what.

Policies decide what the platform does on its own — which versions pass the gates, when a model is retrained and
with which entrypoint, when a canary is rolled back — so a change to one is itself a decision and is audited like
one: the owning service emits the event in the transaction that stores the change, with the policy as it was
(``before``, null when created) and as it is (``after``, null when deleted).

One type per owning service rather than one ``policy.changed`` for all: an event type has one topic and one key
(the aggregate the policy belongs to: the model for gates and retraining, the deployment for the monitor), and the
authorisation table (:mod:`vigil.events.authority`) then names exactly one service that may produce each.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from vigil.events import topics
from vigil.events.catalog.common import Name, NoNul, Opaque
from vigil.events.payload import EventPayload, register

Change = Literal["created", "updated", "deleted"]
Person = Annotated[str, Field(min_length=1, max_length=256), NoNul]


class _PolicyChanged(EventPayload):
    change: Change
    #: The stored version the change created (policies kept as versions), null where the store keeps one row.
    policy_version: Annotated[int, Field(ge=1)] | None = None
    before: Opaque | None
    after: Opaque | None
    changed_by: Person


@register
class GatePolicyChanged(_PolicyChanged):
    """A model's validation gates replaced (registry, ``PUT /v1/models/{m}/gates``)."""

    TYPE: ClassVar[str] = "policy.gates.changed"
    TOPIC: ClassVar[str] = topics.MODELS
    KEY_FIELD: ClassVar[str] = "model"

    model: Name

    def subject(self) -> str:
        return f"model/{self.model}/gates"


@register
class RetrainingPolicyChanged(_PolicyChanged):
    """A model's retraining policy (trigger datasets, debounce, cron, training entrypoint, caps) created, replaced
    or deleted (scheduler, ``PUT|DELETE /v1/policies/{m}``)."""

    TYPE: ClassVar[str] = "policy.retraining.changed"
    TOPIC: ClassVar[str] = topics.TRAINING
    KEY_FIELD: ClassVar[str] = "model"

    model: Name

    def subject(self) -> str:
        return f"model/{self.model}/retraining-policy"


@register
class MonitorPolicyChanged(_PolicyChanged):
    """A deployment's monitor policy (thresholds, minimum samples, what to do on a breach) replaced (monitor,
    ``PUT /v1/policies/{d}``)."""

    TYPE: ClassVar[str] = "policy.monitor.changed"
    TOPIC: ClassVar[str] = topics.MONITORING
    KEY_FIELD: ClassVar[str] = "deployment"

    deployment: Name

    def subject(self) -> str:
        return f"deployment/{self.deployment}/monitor-policy"
