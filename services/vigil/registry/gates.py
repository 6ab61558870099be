"""Validation gates: pure functions that decide whether a candidate becomes a model version.

A gate policy is a list of :class:`GateSpec`; :func:`evaluate` checks a candidate (its metrics and input signature)
against it and the model's current champion, and returns one :class:`GateResult` per gate with the figures it
compared. No I/O here, so every rule is unit-tested on its own; the store and the handlers supply the inputs.

Missing evidence fails a gate (a model that reports no AUC does not pass ``auc >= 0.85``; one that reports no
fairness gap does not pass a fairness gate). Comparisons against a champion pass when there is no champion yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vigil.events.catalog.common import ColumnSpec, Key
from vigil.events.catalog.models import GateResult

MAX_GATES = 64
#: The kinds a policy may configure (``artifact`` results come from the registry's own artifact check).
GateKind = Literal["metric_floor", "metric_ceiling", "max_regression", "fairness_gap", "schema_compat"]
_NEEDS_METRIC = frozenset({"metric_floor", "metric_ceiling", "max_regression", "fairness_gap"})


class GateSpec(BaseModel):
    """One configured gate. ``threshold`` is the floor, ceiling, largest allowed regression or largest gap."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: Key
    kind: GateKind
    metric: Key | None = Field(default=None, description="metric the gate reads (all kinds but schema_compat)")
    threshold: float | None = Field(default=None, description="floor / ceiling / max regression / max gap")
    higher_is_better: bool = Field(default=True, description="max_regression: direction of improvement")
    relative: bool = Field(default=False, description="max_regression: threshold is a fraction of the baseline")
    attribute: str | None = Field(
        default=None, max_length=128, description="fairness_gap: the sensitive attribute the gap metric is about"
    )

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.kind in _NEEDS_METRIC:
            if self.metric is None or self.threshold is None:
                raise ValueError(f"a {self.kind} gate needs `metric` and `threshold`")
            if self.kind in ("max_regression", "fairness_gap") and self.threshold < 0:
                raise ValueError(f"a {self.kind} threshold must be >= 0")
        elif self.metric is not None or self.threshold is not None:
            raise ValueError("a schema_compat gate takes no `metric` or `threshold`")
        return self


class GatePolicy(BaseModel):
    """A model's gate policy (each change is stored as a new policy version)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gates: list[GateSpec] = Field(default_factory=list, max_length=MAX_GATES)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [g.name for g in self.gates]
        if len(names) != len(set(names)):
            raise ValueError("gate names must be unique within a policy")
        return self


#: The policy every model starts with (policy version 1): a new version must accept the champion's inputs.
DEFAULT_POLICY = GatePolicy(gates=[GateSpec(name="input_schema", kind="schema_compat")])


@dataclass(frozen=True)
class Candidate:
    """What the gates look at in a would-be version."""

    metrics: Mapping[str, float]
    signature: Sequence[ColumnSpec] = ()


@dataclass(frozen=True)
class Champion:
    """The model's current champion, the baseline of regression and schema gates."""

    version: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    signature: Sequence[ColumnSpec] = ()


def evaluate(policy: GatePolicy, candidate: Candidate, champion: Champion | None) -> list[GateResult]:
    """One result per gate of ``policy``, in policy order."""
    return [_evaluate_one(gate, candidate, champion) for gate in policy.gates]


def passed(results: Sequence[GateResult]) -> bool:
    """True when every gate passed (an empty policy passes)."""
    return all(r.passed for r in results)


def summary(results: Sequence[GateResult]) -> str:
    """A one-line reason naming the failed gates (bounded to fit an event's ``Text``)."""
    failed = [f"{r.gate}: {r.detail}" for r in results if not r.passed]
    text = "failed gates: " + "; ".join(failed) if failed else "all gates passed"
    return _clip(text)


def _evaluate_one(gate: GateSpec, candidate: Candidate, champion: Champion | None) -> GateResult:
    if gate.kind == "schema_compat":
        return _schema_compat(gate, candidate, champion)
    assert gate.metric is not None  # enforced by GateSpec
    assert gate.threshold is not None
    value = candidate.metrics.get(gate.metric)
    base = {"gate": gate.name, "kind": gate.kind, "metric": gate.metric, "threshold": gate.threshold}
    if value is None:
        return GateResult(**base, passed=False, detail=f"candidate reports no metric {gate.metric!r}")
    if gate.kind == "metric_floor":
        ok = value >= gate.threshold
        return GateResult(**base, value=value, passed=ok, detail=f"{value:g} {'>=' if ok else '<'} {gate.threshold:g}")
    if gate.kind == "metric_ceiling":
        ok = value <= gate.threshold
        return GateResult(**base, value=value, passed=ok, detail=f"{value:g} {'<=' if ok else '>'} {gate.threshold:g}")
    if gate.kind == "fairness_gap":
        gap = abs(value)
        ok = gap <= gate.threshold
        on = f" on {gate.attribute!r}" if gate.attribute else ""
        return GateResult(
            **base, value=gap, passed=ok, detail=f"gap{on} {gap:g} {'<=' if ok else '>'} {gate.threshold:g}"
        )
    return _max_regression(gate, value, champion)


def _max_regression(gate: GateSpec, value: float, champion: Champion | None) -> GateResult:
    assert gate.metric is not None
    assert gate.threshold is not None
    base = {"gate": gate.name, "kind": gate.kind, "metric": gate.metric, "threshold": gate.threshold}
    if champion is None:
        return GateResult(**base, passed=True, detail="no champion yet; nothing to regress from")
    baseline = champion.metrics.get(gate.metric)
    if baseline is None:
        return GateResult(
            **base,
            baseline_version=champion.version,
            passed=True,
            detail=f"champion v{champion.version} reports no {gate.metric!r}; nothing to compare",
        )
    regression = (baseline - value) if gate.higher_is_better else (value - baseline)
    unit = ""
    if gate.relative:
        if baseline == 0:
            unit = " (baseline is 0: absolute regression used)"
        else:
            regression = regression / abs(baseline)
            unit = " (relative)"
    ok = regression <= gate.threshold
    return GateResult(
        **base,
        value=regression,
        baseline=baseline,
        baseline_version=champion.version,
        passed=ok,
        detail=_clip(
            f"{gate.metric} {value:g} vs champion v{champion.version} {baseline:g}: regression{unit} "
            f"{regression:g} {'<=' if ok else '>'} {gate.threshold:g}"
        ),
    )


def _schema_compat(gate: GateSpec, candidate: Candidate, champion: Champion | None) -> GateResult:
    """The candidate must accept what the champion is served: each of its input columns exists in the champion's
    signature with the same type. Extra champion columns are fine (the candidate ignores them)."""
    base = {"gate": gate.name, "kind": gate.kind}
    if champion is None:
        return GateResult(**base, passed=True, detail="no champion yet; any signature is compatible")
    if not champion.signature:
        return GateResult(
            **base,
            baseline_version=champion.version,
            passed=True,
            detail=f"champion v{champion.version} declares no signature",
        )
    if not candidate.signature:
        return GateResult(
            **base,
            baseline_version=champion.version,
            passed=False,
            detail=f"candidate declares no input signature; cannot check it against champion v{champion.version}",
        )
    served = {c.name: c.type for c in champion.signature}
    missing = [c.name for c in candidate.signature if c.name not in served]
    retyped = [
        f"{c.name} ({served[c.name]} -> {c.type})" for c in candidate.signature if served.get(c.name, c.type) != c.type
    ]
    if not missing and not retyped:
        return GateResult(
            **base,
            baseline_version=champion.version,
            passed=True,
            detail=f"all {len(candidate.signature)} inputs are served to champion v{champion.version}",
        )
    parts = []
    if missing:
        parts.append("inputs the champion is not served: " + ", ".join(missing))
    if retyped:
        parts.append("changed types: " + ", ".join(retyped))
    return GateResult(
        **base,
        baseline_version=champion.version,
        passed=False,
        detail=_clip(f"incompatible with champion v{champion.version}: " + "; ".join(parts)),
    )


def _clip(text: str, limit: int = 1024) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
