"""What a token may do, asked of the services themselves (the platform has no "who am I" route).

* valid at all: ``GET /v1/deployments`` on the deployer (any role reads);
* may act on deployments: a ``POST /v1/deployments/<probe>/pause`` with a body that cannot be valid. The deployer
  checks the role before it reads the body, so a token with the role gets 422 (and nothing happens), a token
  without it gets 403;
* may read the audit log: ``GET /v1/keys`` on the auditor (auditor role; the read is itself audited).

The console uses the answers only to hide what the user may not do; every action is still decided by the service.
"""

from __future__ import annotations

from dataclasses import dataclass

from vigil.console.upstream import Upstream, UpstreamError

PROBE_DEPLOYMENT = "console-role-probe"


@dataclass(frozen=True)
class Access:
    valid: bool
    can_act: bool = False
    can_audit: bool = False
    reason: str = ""


async def probe(upstream: Upstream, token: str) -> Access:
    """Ask the deployer and the auditor what ``token`` may do."""
    listing = await upstream.send("GET", "deployer", "/v1/deployments", token, params={"limit": 1})
    if listing.status_code in (401, 403):
        return Access(valid=False, reason="the platform does not accept this token")
    if listing.status_code >= 400:
        raise UpstreamError("deployer", listing.status_code, "could not check the token")
    act = await upstream.send("POST", "deployer", f"/v1/deployments/{PROBE_DEPLOYMENT}/pause", token, json=[])
    audit = await upstream.send("GET", "auditor", "/v1/keys", token)
    return Access(valid=True, can_act=act.status_code == 422, can_audit=audit.status_code == 200)
