"""Sign-in with an operator key, kept as an HMAC-signed cookie (no server-side sessions).

The cookie holds the key's id and an expiry, never the key. Until keys live in the mesh
(issue 14) the console checks keys against the platform config; its roles decide what a
person may do: ``operator`` sees everything, ``approver`` decides approvals, ``dpo`` (data
protection) reads stories and uses the playground, ``budget_owner`` reads budgets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Final

COOKIE: Final = "stellwerk_console"
SESSION_S: Final = 8 * 3600
PAGES: Final[dict[str, frozenset[str]]] = {
    "approvals": frozenset({"operator", "approver"}),
    "decide": frozenset({"approver", "operator"}),
    "requests": frozenset({"operator", "dpo", "approver"}),
    "budgets": frozenset({"operator", "budget_owner"}),
    "dlp": frozenset({"operator", "dpo"}),
    "status": frozenset({"operator"}),
    "routing": frozenset({"operator", "dpo"}),
    "keys": frozenset({"operator"}),
}
CONSOLE_ROLES: Final = frozenset().union(*PAGES.values())


@dataclass(frozen=True, slots=True)
class Operator:
    key_id: str
    role: str
    tenant: str

    def may(self, page: str) -> bool:
        return self.role in PAGES.get(page, frozenset())


class Sessions:
    def __init__(self, secret: bytes | None = None) -> None:
        # A random secret per process: a restart signs everyone out, which is acceptable for
        # an operator console; several replicas share STELLWERK_CONSOLE_SECRET.
        self._secret = secret or secrets.token_bytes(32)

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def issue(self, operator: Operator) -> str:
        payload = json.dumps({"k": operator.key_id, "r": operator.role, "t": operator.tenant,
                              "e": int(time.time()) + SESSION_S}).encode()
        return base64.urlsafe_b64encode(payload).decode() + "." + self._sign(payload)

    def csrf(self, cookie: str | None) -> str:
        """The form token of a session: forms carry it, and a POST without the session's own
        token is refused (a page of another site cannot know it)."""
        return self._sign(b"csrf:" + (cookie or "").encode())

    def csrf_ok(self, cookie: str | None, token: str) -> bool:
        return bool(cookie) and hmac.compare_digest(self.csrf(cookie), token)

    def seal(self, purpose: str, data: dict[str, str], ttl_s: int) -> str:
        """A short-lived signed value for one ``purpose`` (the single sign-on state cookie);
        never valid as a session cookie, nor for another purpose."""
        payload = json.dumps({**data, "_e": int(time.time()) + ttl_s}).encode()
        return base64.urlsafe_b64encode(payload).decode() + "." + self._sign(purpose.encode() + b":" + payload)

    def unseal(self, purpose: str, value: str | None) -> dict[str, str] | None:
        if not value or "." not in value:
            return None
        encoded, signature = value.rsplit(".", 1)
        try:
            payload = base64.urlsafe_b64decode(encoded.encode())
        except ValueError:
            return None
        if not hmac.compare_digest(self._sign(purpose.encode() + b":" + payload), signature):
            return None
        data = json.loads(payload)
        if not isinstance(data, dict) or data.pop("_e", 0) < time.time():
            return None
        return {str(k): str(v) for k, v in data.items()}

    def read(self, cookie: str | None) -> Operator | None:
        if not cookie or "." not in cookie:
            return None
        encoded, signature = cookie.rsplit(".", 1)
        try:
            payload = base64.urlsafe_b64decode(encoded.encode())
        except ValueError:
            return None
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        data = json.loads(payload)
        if data.get("e", 0) < time.time():
            return None
        return Operator(key_id=data["k"], role=data["r"], tenant=data["t"])
