"""The gateway's input limits (issue 18): pure checks, each with the status it is refused with.

Every limit is a setting (``gateway_limits`` of the platform config, ``services/gateway/settings.py``)
and documented in docs/openai.md ("Limits and errors"). A refusal names the parameter and
the limit, never the offending value, and says whether waiting could help: only a 429 does.

| limit | status | code |
|---|---|---|
| body bytes (``max_body_bytes``) | 413 | ``request_too_large`` |
| header bytes (``max_header_bytes``) | 431 | ``headers_too_large`` |
| JSON nesting (``max_json_depth``) | 400 | ``json_too_deep`` |
| messages per request (``max_messages``) | 400 | ``too_many_messages`` |
| characters per message (``max_message_chars``) | 413 | ``message_too_long`` |
| metadata keys / key and value length | 400 | ``metadata_too_large`` |
| ``max_tokens`` beyond every route's context | 400 | ``invalid_value`` |
| estimated prompt + ``max_tokens`` beyond it | 400 | ``context_length_exceeded`` |
| tokens above a key's whole rate-limit window | 413 / 400 | ``request_too_large`` / ``invalid_value`` |
| requests in flight per key (``max_concurrent_per_key``) | 429 | ``too_many_concurrent_requests`` |
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.gateway.settings import GatewayLimits
from services.kernel.tokens import estimate_prompt_tokens as _estimate


@dataclass(frozen=True, slots=True)
class Violation:
    """A refused request: HTTP status, OpenAI error code, the parameter, a fixed sentence."""

    status: int
    code: str
    message: str
    param: str | None = None


# --- JSON nesting, on the raw bytes before any parser recurses -----------------------------

_OPENERS_CLOSERS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _outside_strings(raw: bytes) -> bytes:
    """The JSON text without its string literals: escaped backslashes and quotes go first,
    then every other quote-delimited piece."""
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(unescaped.split(b'"')[::2])


def json_depth_exceeds(raw: bytes, limit: int) -> bool:
    """True if the JSON text nests arrays/objects deeper than ``limit``.

    Strings are removed first (brackets inside them do not count), then everything but
    brackets; ``{}`` become ``[]``. Each pass deletes every innermost ``[]`` pair, which
    lowers the depth of every container by one, so after ``limit`` passes a document of
    depth ≤ ``limit`` is empty. All bytes-level C code, at most ``limit`` passes over
    shrinking text: a 5,000-deep body is judged before any recursive parser sees it, and
    the most hostile 4 MB shape costs ~0.3 s of CPU. Malformed text (unbalanced brackets)
    is not judged here: the parser rejects it.
    """
    text = _outside_strings(raw).translate(_OPENERS_CLOSERS, _NOT_BRACKETS)
    if b"[" * (limit + 1) in text:
        return True
    for _ in range(limit):
        if not text:
            return False
        reduced = text.replace(b"[]", b"")
        if reduced == text:  # unbalanced: no pass can empty it
            return False
        text = reduced
    return bool(text)


def json_depth(value: object) -> int:
    """Nesting depth of a parsed JSON value (reference for tests; scalars are 0)."""
    if isinstance(value, dict):
        return 1 + max((json_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(v) for v in value), default=0)
    return 0


# --- Unicode that cannot travel: lone surrogates ---------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    """JSON's ``"\\ud800"`` decodes to a code point no UTF-8 encoder accepts; a valid escaped
    pair (``"\\ud83d\\ude00"``) is joined by the parser into one astral code point."""
    return _SURROGATE.search(text) is not None


def lone_surrogate_path(value: object, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where in a parsed JSON value the first string (or key) with a lone surrogate sits."""
    stack: list[tuple[object, tuple[str | int, ...]]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if has_lone_surrogate(item):
                return where
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and has_lone_surrogate(key):
                    return (*where, "<key>")
                stack.append((child, (*where, key)))
        elif isinstance(item, list):
            stack.extend((child, (*where, i)) for i, child in enumerate(item))
    return None


def param_path(loc: Sequence[str | int]) -> str:
    """``("messages", 0, "content")`` → ``messages[0].content`` (OpenAI's ``param`` style)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


_IDENT = re.compile(r"^[A-Za-z0-9_.:@/<>=+\-]{1,128}$")  # schemas.vocabulary.Ident


def valid_identifier(text: str) -> bool:
    """Whether a caller-chosen id (``X-Correlation-Id``) may travel in events as an ``Ident``."""
    return _IDENT.match(text) is not None


def positive_seconds(text: str) -> float:
    """A duration header: a finite number of seconds above zero, else ``ValueError``."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("not a positive finite number")
    return value


def rate_limit_endpoint(resolved: str | None, endpoints: Iterable[str]) -> str:
    """The endpoint a request counts against (issue 14): the route or route class its ``model``
    *resolved* to (``PlatformConfig.resolve_model``: an alias, a deployment's model id, a
    route's name or class), else ``stellwerk`` — never the client's own string. ``endpoints``
    are the configured route names and classes, so the limit documents stay bounded whatever
    a client sends."""
    return resolved if resolved is not None and resolved in set(endpoints) else "stellwerk"


# --- the request's shape ---------------------------------------------------------------------


def estimate_prompt_tokens(texts: Sequence[str]) -> int:
    """The kernel's cheap estimate (services/kernel/tokens.py), the one the rate limiter charges."""
    return _estimate(texts)


def check_messages(texts: Sequence[str], limits: GatewayLimits) -> Violation | None:
    if len(texts) > limits.max_messages:
        return Violation(400, "too_many_messages",
                         f"At most {limits.max_messages} messages per request.", "messages")
    for index, text in enumerate(texts):
        if len(text) > limits.max_message_chars:
            return Violation(413, "message_too_long",
                             f"A message may have at most {limits.max_message_chars} characters.",
                             param_path(("messages", index, "content")))
    return None


def check_metadata(metadata: Mapping[str, object] | None, limits: GatewayLimits) -> Violation | None:
    if not metadata:
        return None
    if len(metadata) > limits.max_metadata_keys:
        return Violation(400, "metadata_too_large",
                         f"metadata may have at most {limits.max_metadata_keys} keys.", "metadata")
    for key, value in metadata.items():
        if len(key) > limits.max_metadata_key_chars:
            return Violation(400, "metadata_too_large",
                             f"metadata keys may have at most {limits.max_metadata_key_chars} characters.",
                             "metadata")
        if isinstance(value, str) and len(value) > limits.max_metadata_value_chars:
            return Violation(400, "metadata_too_large",
                             f"metadata values may have at most {limits.max_metadata_value_chars} characters.",
                             "metadata")
    return None


def check_context(
    prompt_tokens: int, max_tokens: int | None, max_tokens_param: str, limits: GatewayLimits
) -> Violation | None:
    """A request no route's context window can hold is a 400 — it can never succeed."""
    window = limits.context_window_tokens
    if max_tokens is not None and max_tokens > window:
        return Violation(400, "invalid_value",
                         f"{max_tokens_param} exceeds the largest context window of any route ({window} tokens).",
                         max_tokens_param)
    if prompt_tokens + (max_tokens or 0) > window:
        param = max_tokens_param if max_tokens and prompt_tokens <= window else "messages"
        return Violation(400, "context_length_exceeded",
                         f"The estimated prompt plus {max_tokens_param} exceeds the largest context window "
                         f"of any route ({window} tokens).",
                         param)
    return None


def oversized_for_rate_limit(
    prompt_tokens: int, max_tokens: int | None, max_tokens_param: str, window_tokens: float
) -> Violation:
    """The request alone costs more tokens than the key's whole rate-limit window allows:
    waiting cannot help, so it is not a 429. If the prompt alone is too large the body is
    (413); otherwise the caller asked for too long an answer (400 naming ``max_tokens``)."""
    if prompt_tokens > window_tokens:
        return Violation(413, "request_too_large",
                         "The prompt alone exceeds the token rate limit of this API key per window.", "messages")
    if max_tokens is None:
        return Violation(400, "invalid_value",
                         "The prompt plus the default answer allowance exceeds the token rate limit of this "
                         f"API key per window; set a smaller {max_tokens_param}.", max_tokens_param)
    return Violation(400, "invalid_value",
                     f"The prompt plus {max_tokens_param} exceeds the token rate limit of this API key per window.",
                     max_tokens_param)


def header_bytes(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Bytes of a header block as sent (``name: value\\r\\n`` per field)."""
    return sum(len(name) + len(value) + 4 for name, value in headers)


def header_violation(size: int, limits: GatewayLimits) -> Violation | None:
    if size > limits.max_header_bytes:
        return Violation(431, "headers_too_large",
                         f"Request headers may have at most {limits.max_header_bytes} bytes.")
    return None


def body_violation(size: int, limits: GatewayLimits) -> Violation | None:
    if size > limits.max_body_bytes:
        return Violation(413, "request_too_large",
                         f"The request body may have at most {limits.max_body_bytes} bytes.")
    return None


def depth_violation(raw: bytes, limits: GatewayLimits) -> Violation | None:
    if json_depth_exceeds(raw, limits.max_json_depth):
        return Violation(400, "json_too_deep",
                         f"The JSON body may nest arrays and objects at most {limits.max_json_depth} levels deep.")
    return None


def concurrency_violation(limits: GatewayLimits) -> Violation:
    return Violation(429, "too_many_concurrent_requests",
                     f"At most {limits.max_concurrent_per_key} requests per API key may be in flight at once; "
                     "retry when one has finished.")
