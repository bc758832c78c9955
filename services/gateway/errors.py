"""Every error the gateway answers is OpenAI-shaped and content-free (issue 18).

``{"error": {"message", "type", "param", "code"}}`` — from the chat handler, from request
validation, from routing (unknown path 404, wrong method 405), from an unexpected exception
(500) and from the HTTP server itself (a malformed request, oversized or slow headers).
Messages are fixed sentences; ``param`` names a parameter. Exception messages that embed
input (``UnicodeEncodeError``, JSON decode excerpts, pydantic's ``input``) never reach a
response or a log line: logs carry the exception's type name only.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.gateway.limits import Violation, header_violation, param_path
from services.gateway.openai_api import ChatCompletionRequest, error_body
from services.gateway.settings import GatewayLimits

log = structlog.get_logger("stellwerk.gateway")

OnError = Callable[[int, str], None]  # (status, code): counts refusals in the gateway's metrics

# Paths of OpenAI's API that this gateway does not serve (yet): a 404 may name these, because
# they are our constants; any other path is not echoed (it is the caller's text).
KNOWN_OPENAI_PATHS: Final = frozenset({
    "/v1/embeddings", "/v1/responses", "/v1/completions", "/v1/moderations", "/v1/images/generations",
    "/v1/images/edits", "/v1/audio/speech", "/v1/audio/transcriptions", "/v1/audio/translations",
    "/v1/files", "/v1/batches", "/v1/fine_tuning/jobs", "/v1/assistants", "/v1/threads",
    "/v1/vector_stores", "/v1/uploads", "/v1/realtime/sessions",
})
SERVED: Final = "POST /v1/chat/completions and GET /v1/models"

# Names of request fields the gateway knows; a validation error may name these.
_MODELS: Final = ChatCompletionRequest.model_fields
_KNOWN_NAMES: Final = frozenset(
    {"body", "messages", "content", "role", "text", "type", "include_usage", *_MODELS}
)
_SPECIFIC: Final = ("json_invalid", "invalid_unicode", "unsupported_parameter", "extra_forbidden", "invalid_value")
_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Pydantic adds the member of a union it tried to a location (``str``, ``list[ContentPart]``).
_UNION_TAG: Final = re.compile(r"^(str|int|float|bool|none|list|dict|[a-z-]+\[.*\]|[A-Z]\w*)$")


def openai_error(
    status: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(code, message, param=param, status=status, request_id=request_id, extra=extra),
        status,
        headers=headers,
    )


def violation_response(violation: Violation, headers: dict[str, str] | None = None) -> JSONResponse:
    return openai_error(violation.status, violation.code, violation.message, param=violation.param, headers=headers)


def _segment(part: str | int, under_metadata: bool) -> str | int | None:
    """A location segment that may be shown: indices, known names, identifier-like keys.
    Keys of ``metadata`` and unknown fields are the caller's text: shown only if they look
    like an identifier, else as ``<key>``; union member tags are dropped."""
    if isinstance(part, int):
        return part
    if part in _KNOWN_NAMES and not under_metadata:
        return part
    if not under_metadata and _UNION_TAG.match(part):
        return None
    return part if _IDENTIFIER.match(part) else "<key>"


def safe_location(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    shown: list[str | int] = []
    for index, part in enumerate(parts):
        segment = _segment(part, under_metadata=index > 0 and parts[index - 1] == "metadata")
        if segment is not None:
            shown.append(segment)
    return tuple(shown)


def validation_response(exc: RequestValidationError) -> tuple[int, str, JSONResponse]:
    """Pydantic's errors as one OpenAI error: the first one's parameter, every field named,
    no value (pydantic's ``input`` and ``ctx`` would echo the caller's content)."""
    errors: list[dict[str, Any]] = [e for e in exc.errors() if isinstance(e, dict)]
    # An unsupported parameter or bad Unicode explains the request best, also when pydantic
    # lists the failed members of a union first.
    specific = [e for e in errors if e.get("type") in _SPECIFIC]
    first: dict[str, Any] = (specific or errors or [{"type": "missing", "loc": ("body",)}])[0]
    kind = str(first.get("type", ""))
    loc = safe_location(first.get("loc", ()))
    ctx: dict[str, Any] = dict(first.get("ctx") or {})
    if kind == "json_invalid":
        return 400, "invalid_json", openai_error(
            400, "invalid_json", "We could not parse the JSON body of your request.")
    if kind == "unsupported_parameter":
        param = param_path((*loc, str(ctx.get("param", ""))))
        detail = ""
        if ctx.get("kind"):
            detail = f" (content parts of type {ctx['kind']})"
        elif ctx.get("role"):
            detail = f" (messages with role {ctx['role']})"
        return 400, "unsupported_parameter", openai_error(
            400, "unsupported_parameter",
            f"{param}{detail} is not supported by this gateway yet; see docs/openai.md.", param=param)
    if kind == "invalid_value" and ctx.get("param"):
        # Our own consistency checks (openai_api.py): a fixed sentence naming the parameter.
        param = param_path((*loc, str(ctx["param"])))
        return 400, "invalid_value", openai_error(400, "invalid_value", f"{param}: {first.get('msg', '')}.",
                                                  param=param)
    if kind == "extra_forbidden":
        param = param_path(loc)
        return 400, "unsupported_parameter", openai_error(
            400, "unsupported_parameter", f"Unrecognized request argument supplied: {param}.", param=param)
    if kind == "invalid_unicode":
        where: str | None = str(ctx.get("param", "")) or None
        return 400, "invalid_value", openai_error(
            400, "invalid_value",
            f"{where or 'The body'} contains an unpaired UTF-16 surrogate, which is not valid Unicode.",
            param=where)
    fields: list[str] = []
    for error in errors:
        field = param_path(safe_location(error.get("loc", ()))) or "body"
        if field not in fields:
            fields.append(field)
    shown = ", ".join(fields[:5]) + (", …" if len(fields) > 5 else "")
    return 400, "invalid_request", openai_error(
        400, "invalid_request", f"Invalid request body: {shown}", param=fields[0] if fields else None)


def http_exception_response(request: Request, exc: HTTPException) -> tuple[int, str, JSONResponse]:
    path = request.url.path
    if exc.status_code == 404:
        if path in KNOWN_OPENAI_PATHS:
            message = f"{path} is not supported by this gateway yet; it serves {SERVED}."
        else:
            message = f"Unknown URL; this gateway serves {SERVED}."
        return 404, "unknown_url", openai_error(404, "unknown_url", message)
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        # The path matched one of our routes, so it is our constant, not the caller's text.
        return 405, "method_not_allowed", openai_error(
            405, "method_not_allowed", f"{path} does not accept this method; use {allow or 'another'}.",
            headers={"Allow": allow} if allow else None)
    if exc.status_code == 400:  # FastAPI: a body that is not JSON at all (e.g. invalid UTF-8)
        return 400, "invalid_json", openai_error(400, "invalid_json", "We could not parse the JSON body of your request.")
    code = "http_error"
    return exc.status_code, code, openai_error(exc.status_code, code, "The request could not be served.")


def install(app: FastAPI, on_error: OnError) -> None:
    """OpenAI-shaped handlers for validation errors, HTTP errors and anything unexpected."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, response = validation_response(exc)
        on_error(status, code)
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        status, code, response = http_exception_response(request, exc)
        on_error(status, code)
        return response

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this; the gateway's guard logs the type name and stops it.
        on_error(500, "internal_error")
        return internal_error()


def internal_error() -> JSONResponse:
    return openai_error(500, "internal_error", "The gateway failed to process the request.")


# --- the HTTP server's own answers --------------------------------------------------------------


def _raw_response(status: int, reason: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
    ).encode() + payload


class _HeadersTooLarge(Exception):
    pass


def gateway_protocol(limits: GatewayLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with OpenAI-shaped answers of its own: a request the parser
    rejects (400), headers over ``max_header_bytes`` (431, counted while they arrive, so they
    are never buffered beyond the limit) and headers that do not arrive within
    ``header_timeout_s`` (408, slow-loris)."""

    class GatewayHttpProtocol(HttpToolsProtocol):
        _header_bytes = 0
        _oversized = False
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(limits.header_timeout_s, self._headers_too_slow)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being served; its own timeouts apply
            if self._header_bytes == 0 and self.cycle is None:
                self.transport.close()  # an idle connection that never sent anything
                return
            self.transport.write(_raw_response(408, "Request Timeout", error_body(
                "request_timeout", "The request headers did not arrive in time.", status=408)))
            self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0
            self._oversized = False
            if self._header_timer is None:
                self._arm_header_timer()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if header_violation(self._header_bytes, limits) is not None:
                self._oversized = True
                raise _HeadersTooLarge  # the parser turns it into HttpParserError: our 431

        def on_headers_complete(self) -> None:
            self._disarm_header_timer()
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            # ``msg`` is uvicorn's fixed sentence; the parser's error (which may quote bytes
            # of the request) is never used.
            self._disarm_header_timer()
            if self._oversized:
                violation = header_violation(self._header_bytes, limits)
                assert violation is not None
                body = error_body(violation.code, violation.message, status=431)
                self.transport.write(_raw_response(431, "Request Header Fields Too Large", body))
            else:
                body = error_body("invalid_http_request", "The HTTP request could not be parsed.", status=400)
                self.transport.write(_raw_response(400, "Bad Request", body))
            self.transport.close()

    return GatewayHttpProtocol
