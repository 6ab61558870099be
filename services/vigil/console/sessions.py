"""Server-side sessions: the browser holds only a random session id; the Vigil token never leaves the server.

The cookie is ``HttpOnly`` (no script reads it) and ``SameSite=Strict`` (no other site's page sends it), and every
action also needs the session's CSRF token in the form it posts, compared in constant time. Sessions live in this
process's memory: a console restart signs everyone out, which is the safe failure for a stateless UI.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

COOKIE = "vigil_console_session"


@dataclass
class Session:
    """One signed-in browser: the user's token, what it may do, and the CSRF token its forms carry."""

    token: str
    can_act: bool
    can_audit: bool
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    last_seen: float = field(default_factory=time.monotonic)

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf.encode(), presented.encode())

    @property
    def roles_label(self) -> str:
        """What the token may do, in words (the services' APIs tell roles only by accepting or refusing)."""
        parts = ["view"]
        if self.can_act:
            parts.append("act on deployments")
        if self.can_audit:
            parts.append("read the audit log")
        return ", ".join(parts)


class SessionStore:
    """Sessions by id, least recently used first; idle ones expire."""

    def __init__(self, idle_s: float, max_sessions: int) -> None:
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def create(self, session: Session) -> str:
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = session
        while len(self._by_id) > self.max_sessions:
            self._by_id.popitem(last=False)
        return sid

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_seen > self.idle_s:
            del self._by_id[sid]
            return None
        session.last_seen = now
        self._by_id.move_to_end(sid)
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)
