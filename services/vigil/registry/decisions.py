"""The registry's decisions, shared by the event handlers and the HTTP routes so both paths have the same effects.

Each function runs inside the caller's transaction: it changes the registry's tables and emits the event that
announces the change through the outbox, so a decision exists if and only if its event does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from vigil.bus.context import Emitter
from vigil.events import Envelope, new_id
from vigil.events.catalog.common import ArtifactFormat, ColumnSpec, DatasetRef
from vigil.events.catalog.models import GateResult, ModelAliasChanged, ModelVersionRegistered, ModelVersionRejected
from vigil.registry import gates, store
from vigil.registry.artifact_check import ArtifactCheck

CHAMPION = "champion"
AliasCause = Literal["api", "promotion", "rollback"]


class UnknownModelVersion(LookupError):
    """An alias (or a deployment event) names a version the registry does not have."""


@dataclass(frozen=True)
class NewVersion:
    """A would-be model version: a finished training run or a manual registration request."""

    model: str
    run_id: str
    source: Literal["training", "manual"]
    artifact_digest: str
    artifact_uri: str
    artifact_format: ArtifactFormat
    artifact_size_bytes: int | None = None
    job_id: str | None = None
    attempt: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    reference_profile: dict[str, Any] | None = None
    reference_profile_uri: str | None = None
    reference_profile_digest: str | None = None
    signature: list[ColumnSpec] = field(default_factory=list)
    datasets: list[DatasetRef] = field(default_factory=list)
    code_version: str | None = None
    environment: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    #: The registry's own check of the artifact (``artifact_check.check_artifact``), made before the lock.
    artifact: ArtifactCheck = field(default_factory=ArtifactCheck)


@dataclass(frozen=True)
class Decision:
    """What the gates decided about a candidate; ``created`` is False when it had been decided before."""

    candidate: dict[str, Any]
    version: dict[str, Any] | None
    gates: list[GateResult]
    created: bool

    @property
    def registered(self) -> bool:
        return self.candidate["outcome"] == "registered"


async def ensure_model(emitter: Emitter, model: str, actor: str) -> bool:
    """Create the model with the default gate policy (version 1) if it is new."""
    return await store.ensure_model(
        emitter.conn, model, actor=actor, default_gates=gates.DEFAULT_POLICY.model_dump(mode="json")["gates"]
    )


async def current_champion(emitter: Emitter, model: str) -> gates.Champion | None:
    """The champion as the gates see it (its metrics and signature)."""
    alias = await store.get_alias(emitter.conn, model, CHAMPION)
    if alias is None:
        return None
    row = await store.get_model_version(emitter.conn, model, alias["version"])
    assert row is not None  # aliases reference model_versions
    return gates.Champion(
        version=row["version"],
        metrics=row["metrics"],
        signature=[ColumnSpec(**c) for c in row["signature"]],
    )


async def decide_candidate(emitter: Emitter, cause: Envelope | None, actor: str, new: NewVersion) -> Decision:
    """Evaluate the model's gates on ``new`` and register it as the next version, or reject it with the evidence.

    Idempotent per (model, run id): a candidate decided before returns that decision and changes nothing.
    """
    conn = emitter.conn
    await ensure_model(emitter, new.model, actor)
    latest = await store.lock_model(conn, new.model)
    assert latest is not None
    previous = await store.get_candidate(conn, new.model, new.run_id)
    if previous is not None:
        version = await store.get_model_version(conn, new.model, previous["version"]) if previous["version"] else None
        return Decision(previous, version, [GateResult(**g) for g in previous["gates"]], created=False)

    policy_row = await store.current_policy(conn, new.model)
    assert policy_row is not None  # every model is created with policy version 1
    policy = gates.GatePolicy(gates=policy_row["gates"])
    signature = new.signature or (new.artifact.columns or [])  # an ONNX graph declares its inputs itself
    results = gates.evaluate(
        policy,
        gates.Candidate(metrics=new.metrics, signature=signature),
        await current_champion(emitter, new.model),
    )
    artifact_gate = new.artifact.gate()
    if artifact_gate is not None:  # the artifact's own check comes first and is part of the evidence
        results = [artifact_gate, *results]
    ok = gates.passed(results)
    decision_event_id = new_id()
    gate_policy_version = policy_row["version"]
    gate_dicts = [r.model_dump(mode="json") for r in results]
    datasets = [d.model_dump(mode="json") for d in new.datasets]
    source_event_id = cause.id if cause else None
    version_row: dict[str, Any] | None = None
    registered = _registered_fields(new, latest + 1, gate_policy_version) if ok else None
    if registered is not None:
        version_row = await store.insert_model_version(
            conn,
            {
                **registered,
                "artifact_size_bytes": new.artifact_size_bytes,
                "signature": [c.model_dump(mode="json") for c in signature],
                "datasets": datasets,
                "environment": new.environment,
                "gates": gate_dicts,
                "source_event_id": source_event_id,
                "registered_event_id": decision_event_id,
                "created_by": actor,
            },
        )
    decided = _decided_fields(new, gate_policy_version, gates.summary(results))
    candidate = await store.insert_candidate(
        conn,
        {
            **decided,
            "source": new.source,
            "attempt": new.attempt,
            "outcome": "registered" if ok else "rejected",
            "version": version_row["version"] if version_row else None,
            "datasets": datasets,
            "code_version": new.code_version,
            "gates": gate_dicts,
            "source_event_id": source_event_id,
            "decision_event_id": decision_event_id,
            "decided_by": actor,
        },
    )
    if registered is not None:
        payload: ModelVersionRegistered | ModelVersionRejected = ModelVersionRegistered(
            **registered, signature=signature, datasets=new.datasets, gates=results
        )
    else:
        payload = ModelVersionRejected(**decided, gates=results)
    await emitter.emit(payload, cause=cause, actor=actor, event_id=decision_event_id)
    return Decision(candidate, version_row, results, created=True)


def _registered_fields(new: NewVersion, version: int, gate_policy_version: int) -> dict[str, Any]:
    """What the version row and ``model.version.registered`` both copy from the candidate (as JSON-ready values;
    signature, datasets and gates differ in form between the two and are added by each)."""
    return {
        "model": new.model,
        "version": version,
        "source": new.source,
        "job_id": new.job_id,
        "run_id": new.run_id if new.source == "training" else None,
        "params": new.params,
        "metrics": new.metrics,
        "artifact_digest": new.artifact_digest,
        "artifact_uri": new.artifact_uri,
        "artifact_format": new.artifact_format,
        "reference_profile": new.reference_profile,
        "reference_profile_uri": new.reference_profile_uri,
        "reference_profile_digest": new.reference_profile_digest,
        "code_version": new.code_version,
        "tags": new.tags,
        "description": new.description,
        "gate_policy_version": gate_policy_version,
        "artifact_signature": new.artifact.signature,
    }


def _decided_fields(new: NewVersion, gate_policy_version: int, reason: str) -> dict[str, Any]:
    """What the candidate row and ``model.version.rejected`` both copy from the candidate and its decision."""
    return {
        "model": new.model,
        "run_id": new.run_id,
        "job_id": new.job_id,
        "metrics": new.metrics,
        "artifact_digest": new.artifact_digest,
        "gate_policy_version": gate_policy_version,
        "reason": reason,
    }


async def move_alias(
    emitter: Emitter,
    *,
    model: str,
    alias: str,
    to_version: int | None,
    cause: AliasCause,
    actor: str,
    cause_event: Envelope | None = None,
    deployment: str | None = None,
    reason: str = "",
) -> dict[str, Any] | None:
    """Point ``alias`` at ``to_version`` (None deletes it) and emit ``model.alias.changed``.

    Returns the history row, or None when the alias already pointed there (no change, no event). Raises
    :class:`UnknownModelVersion` when the model or the version does not exist.
    """
    conn = emitter.conn
    if await store.lock_model(conn, model) is None:
        raise UnknownModelVersion(f"model {model!r} does not exist")
    if to_version is not None and await store.get_model_version(conn, model, to_version) is None:
        raise UnknownModelVersion(f"model {model!r} has no version {to_version}")
    current = await store.get_alias(conn, model, alias)
    from_version = current["version"] if current else None
    if from_version == to_version:
        return None
    event_id = new_id()
    row = await store.record_alias_change(
        conn,
        model=model,
        alias=alias,
        from_version=from_version,
        to_version=to_version,
        cause=cause,
        actor=actor,
        deployment=deployment,
        reason=reason[:1024],
        event_id=event_id,
        cause_event_id=cause_event.id if cause_event else None,
    )
    await emitter.emit(
        ModelAliasChanged(
            model=model,
            alias=alias,
            from_version=from_version,
            to_version=to_version,
            cause=cause,
            deployment=deployment,
            reason=reason[:1024],
        ),
        cause=cause_event,
        actor=actor,
        event_id=event_id,
    )
    return row
