"""Access events: reads of sensitive data through the APIs, recorded so that "who looked at what, when" is audited.

The auditor records reads of audit data as chain entries directly (it cannot send itself events without a loop);
other services (the registry next) emit the same type for their sensitive reads. Keyed by the serving service.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from vigil.events import topics
from vigil.events.catalog.common import NAME_PATTERN
from vigil.events.payload import EventPayload, register

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


@register
class AccessRecorded(EventPayload):
    """One API request against sensitive data: the principal, the service, the route template and the concrete
    resource (path and query), the response status (403 = denied, 404 = asked for something absent) and when."""

    TYPE: ClassVar[str] = "access.recorded"
    # The auditor publishes its own access records on vigil.audit. A service other than the auditor needs a topic
    # the auditor consumes (e.g. a future vigil.access): change TOPIC then; the schema does not name the topic.
    TOPIC: ClassVar[str] = topics.AUDIT
    KEY_FIELD: ClassVar[str] = "service"

    service: str = Field(pattern=NAME_PATTERN)
    actor: str = Field(min_length=1, max_length=256)
    method: HttpMethod
    route: str = Field(min_length=1, max_length=512)
    resource: str = Field(min_length=1, max_length=1024)
    status: int = Field(ge=100, le=599)
    time: AwareDatetime
    request_id: str | None = Field(default=None, min_length=1, max_length=64)

    def subject(self) -> str:
        """``access/<service>/<path>``: "who read event X" is a subject-prefix query."""
        path = self.resource.split("?", 1)[0].lstrip("/")
        return f"access/{self.service}/{path}"[:512]
