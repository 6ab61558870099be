"""Data events: upstream systems announce new data; the registry records dataset versions."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from vigil.events import topics
from vigil.events.payload import EventPayload, register

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"


class ColumnSpec(EventPayload):
    """One column of a dataset schema."""

    name: str = Field(min_length=1, max_length=256)
    type: str = Field(min_length=1, max_length=64)


@register
class DataUpdated(EventPayload):
    """Upstream contract: a new version of a dataset is available at ``uri``."""

    TYPE: ClassVar[str] = "data.updated"
    TOPIC: ClassVar[str] = topics.DATA
    KEY_FIELD: ClassVar[str] = "dataset"

    dataset: str = Field(pattern=NAME_PATTERN)
    content_digest: str = Field(pattern=DIGEST_PATTERN)
    uri: str = Field(min_length=1, max_length=2048)
    columns: list[ColumnSpec] = Field(default_factory=list, max_length=4096)
    row_count: int = Field(ge=0)
    producer: str = Field(min_length=1, max_length=256)

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
    uri: str = Field(min_length=1, max_length=2048)
    columns: list[ColumnSpec] = Field(default_factory=list, max_length=4096)
    row_count: int = Field(ge=0)
    producer: str = Field(min_length=1, max_length=256)
    parent_version: int | None = Field(default=None, ge=1)

    def subject(self) -> str:
        return f"dataset/{self.dataset}/v{self.version}"
