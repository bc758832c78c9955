"""Sign-in with an operator key or single sign-on, kept as an HMAC-signed cookie (no
server-side sessions).

The cookie holds the identity (key id or ``oidc:<sub>``), its role, tenant and an expiry; and,
encrypted (AES-GCM under a key derived from the console secret, so the browser holds only an
opaque value), the credential of the sign-in — the API key or the provider's token. The console
sends it with every approval decision, so the tool gateway establishes the approver itself
(issue 14); it is never logged or stored anywhere else. Roles decide what a person may do:
``operator`` sees everything, ``approver`` decides approvals (only approvers: the tool gateway
accepts no other role), ``dpo`` (data protection) reads stories and uses the playground,
``budget_owner`` reads budgets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

COOKIE: Final = "stellwerk_console"
SESSION_S: Final = 8 * 3600
PAGES: Final[dict[str, frozenset[str]]] = {
    "approvals": frozenset({"operator", "approver"}),
    "decide": frozenset({"approver"}),
    "requests": frozenset({"operator", "dpo", "approver"}),
    "budgets": frozenset({"operator", "budget_owner"}),
    "dlp": frozenset({"operator", "dpo"}),
    "status": frozenset({"operator"}),
    "routing": frozenset({"operator", "dpo"}),
    "keys": frozenset({"operator"}),
    "guard_reviews": frozenset({"operator", "dpo"}),  # issue 16: guard decisions ``review``
}
CONSOLE_ROLES: Final = frozenset().union(*PAGES.values())


@dataclass(frozen=True, slots=True)
class Operator:
    key_id: str
    role: str
    tenant: str
    # The sign-in's API key or token, for the tool gateway to verify (never shown, never logged).
    credential: str | None = field(default=None, repr=False, compare=False)

    def may(self, page: str) -> bool:
        return self.role in PAGES.get(page, frozenset())


class Sessions:
    def __init__(self, secret: bytes | None = None) -> None:
        # A random secret per process: a restart signs everyone out, which is acceptable for
        # an operator console; several replicas share STELLWERK_CONSOLE_SECRET.
        self._secret = secret or secrets.token_bytes(32)
        self._sealer = AESGCM(hashlib.sha256(b"stellwerk-console-credential\n" + self._secret).digest())

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def issue(self, operator: Operator) -> str:
        data: dict[str, object] = {"k": operator.key_id, "r": operator.role, "t": operator.tenant,
                                   "e": int(time.time()) + SESSION_S}
        if operator.credential:
            nonce = secrets.token_bytes(12)
            sealed = self._sealer.encrypt(nonce, operator.credential.encode(), b"credential")
            data["c"] = base64.urlsafe_b64encode(nonce + sealed).decode()
        payload = json.dumps(data).encode()
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
        return Operator(key_id=data["k"], role=data["r"], tenant=data["t"], credential=self._unseal(data.get("c")))

    def _unseal(self, value: object) -> str | None:
        if not isinstance(value, str):
            return None
        try:
            raw = base64.urlsafe_b64decode(value.encode())
            return self._sealer.decrypt(raw[:12], raw[12:], b"credential").decode()
        except (ValueError, InvalidTag):
            return None
