"""Data events: upstream systems announce new data; the registry records dataset versions."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field

from vigil.events import topics
from vigil.events.payload import EventPayload, register

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
#: The range of a JSON integer every consumer can hold: a Postgres ``BIGINT``, a signed 64-bit integer (the JSON
#: encoders refuse wider ones).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def refuse_nul(value: str) -> str:
    """A string with U+0000 cannot be stored (Postgres ``text`` and ``jsonb`` refuse it): refuse it in the contract."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    return value


#: Apply :func:`refuse_nul` to a string field. The schema files do not say it yet (a ``pattern`` could, on every
#: string of the catalogue); the models refuse it, so no consumer stores what Postgres cannot hold.
NoNul = AfterValidator(refuse_nul)


class ColumnSpec(EventPayload):
    """One column of a dataset schema."""

    name: Annotated[str, Field(min_length=1, max_length=256), NoNul]
    type: Annotated[str, Field(min_length=1, max_length=64), NoNul]


@register
class DataUpdated(EventPayload):
    """Upstream contract: a new version of a dataset is available at ``uri``."""

    TYPE: ClassVar[str] = "data.updated"
    TOPIC: ClassVar[str] = topics.DATA
    KEY_FIELD: ClassVar[str] = "dataset"

    dataset: str = Field(pattern=NAME_PATTERN)
    content_digest: str = Field(pattern=DIGEST_PATTERN)
    uri: Annotated[str, Field(min_length=1, max_length=2048), NoNul]
    columns: list[ColumnSpec] = Field(default_factory=list, max_length=4096)
    row_count: int = Field(ge=0, le=INT64_MAX)
    producer: Annotated[str, Field(min_length=1, max_length=256), NoNul]

    def subject(self) -> str:
        return f"dataset/{self.dataset}"


@register
class DatasetVersionRegistered(EventPayload):
    """The registry stored a dataset version (idempotent per content digest)."""

    TYPE: ClassVar[str] = "dataset.version.registered"
    TOPIC: ClassVar[str] = topics.DATA
    KEY_FIELD: ClassVar[str] = "dataset"

    dataset: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    content_digest: str = Field(pattern=DIGEST_PATTERN)
    uri: Annotated[str, Field(min_length=1, max_length=2048), NoNul]
    columns: list[ColumnSpec] = Field(default_factory=list, max_length=4096)
    row_count: int = Field(ge=0, le=INT64_MAX)
    producer: Annotated[str, Field(min_length=1, max_length=256), NoNul]
    parent_version: int | None = Field(default=None, ge=1)

    def subject(self) -> str:
        return f"dataset/{self.dataset}/v{self.version}"
