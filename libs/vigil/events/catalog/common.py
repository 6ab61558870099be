"""Building blocks shared by the event families: name and digest formats, bounded scalar types, nested records.

Nothing here is an event type. Every string is length- or pattern-bounded and every list and map has a maximum size,
because upstream systems (and hostile ones) write to our topics and a contract must refuse what it cannot bound.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from vigil.events.catalog.data import (
    DIGEST_PATTERN,
    INT64_MAX,
    INT64_MIN,
    NAME_PATTERN,
    ColumnSpec,
    NoNul,
    refuse_nul,
)

__all__ = [
    "DIGEST_PATTERN",
    "HEX64_PATTERN",
    "INT64_MAX",
    "INT64_MIN",
    "KEY_PATTERN",
    "NAME_PATTERN",
    "ArtifactFormat",
    "ColumnSpec",
    "DatasetRef",
    "Digest",
    "EventId",
    "Evidence",
    "Hex64",
    "Id",
    "Key",
    "Labels",
    "Metrics",
    "Name",
    "NoNul",
    "Opaque",
    "Params",
    "Record",
    "Text",
    "Uri",
    "Version",
    "Window",
    "refuse_nul",
    "refuse_unstorable",
]

HEX64_PATTERN = r"^[0-9a-f]{64}$"
#: Names of metrics, statistics, gates, SLOs and labels: identifiers with dots/colons/slashes, e.g. ``auc``,
#: ``latency.p99_ms``, ``fairness:dp_gap``.
KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,127}$"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Version = Annotated[int, Field(ge=1)]
Digest = Annotated[str, Field(pattern=DIGEST_PATTERN)]
Hex64 = Annotated[str, Field(pattern=HEX64_PATTERN)]
Id = Annotated[str, Field(min_length=1, max_length=64)]
EventId = Annotated[str, Field(min_length=1, max_length=64)]
Key = Annotated[str, Field(pattern=KEY_PATTERN)]
#: Free text (reasons, details, descriptions): bounded, and without NUL characters (no Postgres column holds them).
Text = Annotated[str, Field(max_length=1024), NoNul]
Uri = Annotated[str, Field(min_length=1, max_length=2048), NoNul]

#: A parameter value. Integers are 64-bit (what the JSON encoders and ``jsonb`` consumers hold); a wider JSON integer
#: is read as the float it also is, as JSON Schema's ``number`` allows. Strings are bounded and NUL-free.
Scalar = (
    bool
    | Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
    | float
    | Annotated[str, Field(max_length=1024), NoNul]
    | None
)
#: Hyper-parameters: scalars or flat lists of scalars (e.g. ``hidden_layer_sizes: [64, 32]``).
Params = Annotated[dict[Key, Scalar | Annotated[list[Scalar], Field(max_length=256)]], Field(max_length=256)]
Metrics = Annotated[dict[Key, float], Field(max_length=256)]
Labels = Annotated[dict[Key, Annotated[str, Field(max_length=256), NoNul]], Field(max_length=32)]


def refuse_unstorable(value: Any) -> Any:
    """Refuse, anywhere inside a JSON value, what no consumer can store: a NUL in a string or key, an integer wider
    than 64 bits (Postgres ``jsonb`` and the JSON encoders refuse both)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            refuse_nul(item)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise ValueError("integers must fit 64 bits")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


#: An opaque JSON object whose inner format another library owns (e.g. the kernel library's reference profile).
Opaque = Annotated[dict[str, Any], Field(max_length=4096), AfterValidator(refuse_unstorable)]

ArtifactFormat = Literal["json", "npz", "onnx", "skops"]


class Record(BaseModel):
    """Base of nested records: frozen, closed, no NaN/inf — the same rules as the payloads that hold them."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DatasetRef(Record):
    """A dataset version a job trained on (URI + digest, so the trainer can verify the bytes)."""

    dataset: Name
    version: Version
    content_digest: Digest
    uri: Uri


class Window(Record):
    """A half-open time window ``[start, end)`` of the monitor."""

    start: AwareDatetime
    end: AwareDatetime
    kind: Literal["tumbling", "rolling"] = "tumbling"

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("window end must be after its start")
        return self


class Evidence(Record):
    """One measured fact behind a decision. ``value <operator> threshold`` means a breach; ``breached`` records
    whether it held, so a verdict can carry the checks that passed as well as the ones that failed.

    ``baseline`` is the comparison figure of a difference test (the stable version's value during a canary, the
    champion's in a gate); ``sample_size`` is the count the statistic was computed from (rows, labels, requests).
    """

    statistic: Key
    feature: Annotated[str, Field(max_length=256)] | None = None
    value: float
    threshold: float
    operator: Literal["gt", "ge", "lt", "le"]
    breached: bool
    baseline: float | None = None
    p_value: float | None = Field(default=None, ge=0, le=1)
    sample_size: int = Field(ge=0)
    version: Version | None = None
    window: Window | None = None
