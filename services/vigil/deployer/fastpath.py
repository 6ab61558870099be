"""What the gateway's fast paths share: admitting a request without FastAPI's dependency solving.

The predict and OIP infer routes answer their well-formed, authorised requests through
:func:`vigil.service.http_middleware.fast_path` (no routing walk, no dependency graph, no response model); anything
this module does not admit — a name the route's path pattern refuses, a missing, unknown, expired or
under-privileged token, a service not started — goes to the route's full FastAPI handling, which answers exactly as
it always did (401, 403, 422 with its messages).
"""

from __future__ import annotations

import re

from starlette.types import Scope

from vigil.events.catalog.data import NAME_PATTERN
from vigil.service.auth import RoleRequirement, require
from vigil.service.runtime import ServiceRuntime
from vigil.service.tokens import Role

#: Who may generate production traffic (see ``predict_api``'s docstring): the requirement both routes declare.
PREDICTORS: RoleRequirement = require(Role.PREDICTOR)

_NAME = re.compile(NAME_PATTERN)


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case, as ASGI servers give names)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def admitted(scope: Scope, name: str) -> ServiceRuntime | None:
    """The running service if this request may take the fast path: a deployment name the route's pattern accepts
    and a token with a predicting role. Sets ``request.state.principal`` as the role dependency does."""
    if _NAME.match(name) is None:
        return None
    state = scope["app"].state
    runtime: ServiceRuntime | None = getattr(state, "runtime", None)
    if runtime is None:
        return None
    principal = PREDICTORS.admits(state.token_store, header(scope, b"authorization"))
    if principal is None:
        return None
    scope.setdefault("state", {})["principal"] = principal
    return runtime


def json_body(scope: Scope) -> bool:
    """Whether the request says its body is JSON (anything else is for the full route to judge)."""
    content_type = header(scope, b"content-type")
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"
