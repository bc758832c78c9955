"""The gateway's outermost ASGI layer (issue 18): what a request may cost before any handler runs.

* Body size: a ``Content-Length`` over ``max_body_bytes`` is refused (413) before a byte of
  the body is read; a chunked body is counted while it arrives and refused at the limit.
* Body read timeout: each chunk must arrive within ``body_read_timeout_s`` (408).
* JSON nesting: checked on the raw bytes (``limits.json_depth_exceeds``) before the parser
  recurses (400).
* Concurrency per API key: at most ``max_concurrent_per_key`` requests of one key in flight
  in this replica, streaming responses included until their last byte (429, Retry-After).
  An OIDC caller counts per identity (``oidc:<sub>``, whichever of its tokens it presents), a
  rotated key with its predecessor (issue 14).
* Send timeout: a client that reads nothing for ``send_timeout_s`` (an SSE client that stopped
  reading) has its connection closed; the request's slot, task and buffers are released.
* Crash guard: an exception no handler caught is answered with an OpenAI-shaped 500 (if no
  response started) and logged by type name only — never re-raised to the server, whose
  traceback would quote the exception's message and with it the caller's input.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.errors import OnError, internal_error, violation_response
from services.gateway.limits import (
    Violation,
    body_violation,
    concurrency_violation,
    depth_violation,
    header_bytes,
    header_violation,
)
from services.gateway.settings import GatewayLimits
from services.runtime.oidc import (
    IdentityNotMapped,
    IdpUnavailable,
    OidcVerifier,
    TokenRejected,
    looks_like_jwt,
)
from services.runtime.settings import ApiKey

log = structlog.get_logger("stellwerk.gateway")

# presented API key or token → the identity limits count (None: unknown, the handler refuses)
KeyOf = Callable[[str], str | Awaitable[str | None] | None]
# A token the guard verified, for the handler of the same request (no second verification).
VERIFIED_TOKEN: ContextVar[tuple[str, tuple[ApiKey, dict[str, Any]]] | None] = ContextVar(
    "stellwerk_verified_token", default=None)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _ClientTooSlow(Exception):
    """The client read nothing for ``send_timeout_s``."""


def presented_key(headers: list[tuple[bytes, bytes]]) -> str:
    """The API key as the chat handler reads it: ``Authorization: Bearer …`` or ``api-key``."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in (b"authorization", b"api-key") and name not in found:
            found[name] = value
    scheme, _, token = found.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return found.get(b"api-key", b"").decode("latin-1")


def key_lookup(digests: dict[str, str]) -> KeyOf:
    """``digests``: SHA-256 of each key → its id (the config stores hashes only)."""

    def key_of(presented: str) -> str | None:
        if not presented:
            return None
        return digests.get(hashlib.sha256(presented.encode("utf-8", "replace")).hexdigest())

    return key_of


def identity_lookup(key_of: Callable[[str], str | None], oidc: OidcVerifier | None) -> KeyOf:
    """API keys by ``key_of``; with OIDC, a bearer token is verified here (the identity's key id,
    ``oidc:<sub>``) and the result kept for the request's handler. A token that does not verify
    counts against nothing: the handler answers it with its reason."""
    if oidc is None:
        return key_of

    async def of(presented: str) -> str | None:
        if not looks_like_jwt(presented):
            return key_of(presented)
        try:
            found = await oidc.authenticate(presented)
        except (TokenRejected, IdentityNotMapped, IdpUnavailable):
            return None
        VERIFIED_TOKEN.set((presented, found))
        return found[0].limit_id

    return of


class GatewayGuard:
    def __init__(
        self,
        app: ASGIApp,
        limits: GatewayLimits,
        key_of: KeyOf,
        on_error: OnError,
        on_in_flight: Callable[[str, int], None] = lambda key_id, count: None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.key_of = key_of
        self.on_error = on_error
        self.on_in_flight = on_in_flight  # (key id, requests of it in flight now): a gauge
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"started": False, "too_slow": False}

        async def send_bounded(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            try:
                await asyncio.wait_for(send(message), self.limits.send_timeout_s)
            except TimeoutError:
                state["too_slow"] = True
                raise _ClientTooSlow from None

        key_id: str | None = None
        try:
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            violation = header_violation(header_bytes(headers) + len(scope.get("raw_path") or b""), self.limits)
            if violation is not None:
                await self._refuse(scope, violation, send_bounded)
                return
            found = self.key_of(presented_key(headers))
            key_id = await found if inspect.isawaitable(found) else found
            if key_id is not None:
                if self.in_flight[key_id] >= self.limits.max_concurrent_per_key:
                    key_id = None  # not admitted: nothing to release
                    await self._refuse(scope, concurrency_violation(self.limits), send_bounded, {"Retry-After": "1"})
                    return
                self.in_flight[key_id] += 1
                self.on_in_flight(key_id, self.in_flight[key_id])
            if scope["method"] in _BODY_METHODS:
                body = await self._read_body(scope, receive, send_bounded)
                if body is None:
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_bounded)
        except Exception as exc:  # noqa: BLE001 - the server must never see (and log) it
            if state["too_slow"]:
                log.warning("client_too_slow", error="send_timeout")
                return
            log.error("unhandled_exception", error=type(exc).__name__)
            if not state["started"]:
                self.on_error(500, "internal_error")
                response = internal_error()
                try:
                    await response(scope, receive, send_bounded)
                except Exception:  # noqa: BLE001 - the client is gone
                    return
        finally:
            if key_id is not None:
                self.in_flight[key_id] -= 1
                self.on_in_flight(key_id, self.in_flight[key_id])
                if not self.in_flight[key_id]:
                    del self.in_flight[key_id]

    async def _refuse(
        self, scope: Scope, violation: Violation, send: Send, headers: dict[str, str] | None = None
    ) -> None:
        self.on_error(violation.status, violation.code)
        if violation.status in (408, 413, 431):  # the rest of the request is not read: close
            headers = {**(headers or {}), "Connection": "close"}
        await violation_response(violation, headers=headers)(scope, _no_receive, send)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body within the size limit and the read timeout; None if refused."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the server's parser rejects a malformed length
                violation = body_violation(declared, self.limits)
                if violation is not None:
                    await self._refuse(scope, violation, send)
                    return None
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.limits.body_read_timeout_s)
            except TimeoutError:
                await self._refuse(
                    scope, Violation(408, "request_timeout", "The request body did not arrive in time."), send
                )
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            violation = body_violation(size, self.limits)
            if violation is not None:
                await self._refuse(scope, violation, send)
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        violation = depth_violation(body, self.limits)
        if violation is not None:
            await self._refuse(scope, violation, send)
            return None
        return body


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the client's disconnect

    return replay


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
