"""A lean client for deployments that speak the OpenAI chat protocol themselves (vLLM, OpenAI).

Why not LiteLLM for these: measured on the 2-core reference machine, ``litellm.acompletion``
costs ~6.5 ms of CPU per call more than the HTTP call itself (response metadata, its cost
calculator, its logging payload — all of which Stellwerk does itself: pricing in FinOps,
records in the audit trail). That is more than the whole governance budget of a request.
The protocol is the one vLLM serves natively, so nothing is translated; LiteLLM stays the
client for every provider that needs translation (``provider: azure`` and others).

Why aiohttp and not httpx: measured against the simulator at 64 concurrent calls on the
2-core machine, httpx costs ~10 ms of CPU per call (its connection pool walks every
connection and polls each socket on every request), aiohttp ~0.4 ms.

Errors are typed for the engine: ``ProviderTimeout`` (the call ran out of time) and
``ProviderError`` (anything else: refused, 4xx/5xx, malformed answer).
"""

from __future__ import annotations

import base64
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import msgspec
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from schemas.events import FunctionCall, GeneratedChoice, ToolCall


class ProviderError(Exception):
    """The provider answered with an error or not in the protocol."""


class ProviderTimeout(ProviderError):
    """The provider did not answer in time."""


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    id: str | None = None
    function: _Function | None = None
    index: int = 0  # streamed deltas only


class _Message(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    finish_reason: str | None = None
    index: int = 0


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _StreamChoice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None
    index: int = 0


class WireUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Embedding(msgspec.Struct):
    embedding: str | list[float]
    index: int = 0


class _EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int = 0


class _Embeddings(msgspec.Struct):
    data: list[_Embedding]
    usage: _EmbeddingUsage | None = None


_embeddings = msgspec.json.Decoder(_Embeddings)


def as_base64(vector: str | list[float]) -> str:
    """A vector as OpenAI's ``encoding_format: base64`` has it: little-endian float32."""
    if isinstance(vector, str):
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@dataclass(frozen=True, slots=True)
class WireEmbeddings:
    vectors: tuple[str, ...]
    prompt_tokens: int


class _Completion(msgspec.Struct):
    choices: list[_Choice] = []
    usage: WireUsage | None = None


class _Chunk(msgspec.Struct):
    choices: list[_StreamChoice] = []
    usage: WireUsage | None = None


T = TypeVar("T")
_completion = msgspec.json.Decoder(_Completion)
_chunk = msgspec.json.Decoder(_Chunk)
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class WireAnswer:
    content: str
    finish_reason: str
    usage: WireUsage | None
    ttft_s: float | None
    headers: dict[str, str]
    tool_calls: list[ToolCall] | None = None
    more_choices: tuple[GeneratedChoice, ...] = ()


def _tool_calls(calls: list[Any] | None) -> list[ToolCall] | None:
    """Tool calls of a message (ours or LiteLLM's objects: the same attribute names)."""
    if not calls:
        return None
    return [
        ToolCall(id=c.id or f"call_{i}", function=FunctionCall(name=c.function.name or "",
                                                              arguments=c.function.arguments or ""))
        for i, c in enumerate(calls)
        if c.function is not None
    ]


def answer_choices(choices: list[Any]) -> tuple[str, str, list[ToolCall] | None, tuple[GeneratedChoice, ...]]:
    """Choice 0 (content, finish reason, tool calls) and the others of a completed answer."""
    ordered = sorted(choices, key=lambda c: getattr(c, "index", 0) or 0)
    parsed = [
        GeneratedChoice(
            index=i,
            content=(c.message.content if c.message else None) or "",
            finish_reason=c.finish_reason or "stop",
            tool_calls=_tool_calls(c.message.tool_calls if c.message else None),
        )
        for i, c in enumerate(ordered)
    ]
    first = parsed[0]
    return first.content, first.finish_reason, first.tool_calls, tuple(parsed[1:])


def _ratelimit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}


class OpenAIWire:
    """One connection pool per worker for all deployments; retries once where retrying helps."""

    RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(self, max_connections: int = 1024) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, dict[str, Any]] = {}

    def _http(self) -> aiohttp.ClientSession:
        # Created on first use: an aiohttp session belongs to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0),
                # Never a client-wide timeout: each call brings its own deadline.
                timeout=aiohttp.ClientTimeout(total=None),
                # Not trust_env: it re-reads ~/.netrc and the proxy variables in a thread
                # for every request (a quarter of this worker's CPU); ``_via`` reads the
                # proxy once per origin instead.
                trust_env=False,
            )
        return self._session

    def _via(self, url: str) -> dict[str, Any]:
        """``proxy``/``proxy_auth`` for ``url`` as HTTPS_PROXY / HTTP_PROXY / NO_PROXY say
        (what deployments behind an egress proxy rely on), looked up once per origin."""
        target = URL(url)
        origin = str(target.origin())
        via = self._proxies.get(origin)
        if via is None:
            try:
                proxy, auth = get_env_proxy_for_url(target)
                via = {"proxy": proxy, "proxy_auth": auth}
            except LookupError:
                via = {}
            self._proxies[origin] = via
        return via

    async def complete(
        self, api_base: str, api_key: str, body: dict[str, Any], timeout_s: float, retries: int = 1
    ) -> WireAnswer:
        return await self._retrying(lambda remaining: self._once(api_base, api_key, body, remaining),
                                    timeout_s, retries)

    async def _retrying(
        self, once: Callable[[float], Awaitable[T]], timeout_s: float, retries: int
    ) -> T:
        """``once(remaining_s)`` again where retrying helps (a transport error, 408/429/5xx),
        within one deadline; a timeout or any other error is final."""
        deadline = time.monotonic() + timeout_s
        for attempt in range(retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderTimeout("deadline")
            try:
                return await once(remaining)
            except ProviderError as exc:
                retryable = isinstance(exc.__cause__, aiohttp.ClientError) or (
                    isinstance(exc, HttpStatusError) and exc.status in self.RETRYABLE
                )
                if attempt == retries or isinstance(exc, ProviderTimeout) or not retryable:
                    raise
        raise ProviderError("unreachable")  # pragma: no cover

    async def _once(self, api_base: str, api_key: str, body: dict[str, Any], timeout_s: float) -> WireAnswer:
        started = time.perf_counter()
        url = f"{api_base.rstrip('/')}/chat/completions"
        timeout = _between_reads(timeout_s) if body.get("stream") else aiohttp.ClientTimeout(total=timeout_s)
        async with _calling(), self._http().post(url, data=_encode(body), headers=_headers(api_key),
                                                 timeout=timeout, **self._via(url)) as response:
            _raise_for_status(response)
            if body.get("stream"):
                return await _read_stream(response, started)
            content = await response.read()
            headers = _ratelimit_headers(response.headers)
        try:
            parsed = _completion.decode(content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProviderError("malformed_response") from exc
        if not parsed.choices:
            raise ProviderError("no_choices")
        content_text, finish_reason, tool_calls, more = answer_choices(parsed.choices)
        return WireAnswer(
            content=content_text,
            finish_reason=finish_reason,
            usage=parsed.usage,
            ttft_s=None,
            headers=headers,
            tool_calls=tool_calls,
            more_choices=more,
        )

    async def stream(
        self,
        api_base: str,
        api_key: str,
        body: dict[str, Any],
        timeout_s: float,
        on_text: Callable[[str], Awaitable[None]],
    ) -> WireAnswer:
        """Stream the answer, handing each piece of text to ``on_text`` as it arrives.

        No retries: once text has reached ``on_text`` a second attempt would repeat it. A
        failure before the first piece raises like ``complete``; the engine may fall back."""
        started = time.perf_counter()
        url = f"{api_base.rstrip('/')}/chat/completions"
        headers = _headers(api_key)
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        async with _calling(), self._http().post(url, data=_encode(body), headers=headers,
                                                 timeout=_between_reads(timeout_s), **self._via(url)) as response:
            _raise_for_status(response)
            return await _read_stream(response, started, _sink(on_text))
        raise ProviderError("unreachable")  # pragma: no cover - _calling re-raises

    async def embed(
        self, api_base: str, api_key: str, body: dict[str, Any], timeout_s: float, retries: int = 1
    ) -> WireEmbeddings:
        """``POST /embeddings``; vectors asked for (and kept) as base64 float32."""
        url = f"{api_base.rstrip('/')}/embeddings"
        content = _encode({**body, "encoding_format": "base64"})

        async def once(remaining: float) -> WireEmbeddings:
            async with _calling(), self._http().post(url, data=content, headers=_headers(api_key),
                                                     timeout=aiohttp.ClientTimeout(total=remaining),
                                                     **self._via(url)) as response:
                _raise_for_status(response)
                raw = await response.read()
            try:
                parsed = _embeddings.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ProviderError("malformed_response") from exc
            ordered = sorted(parsed.data, key=lambda e: e.index)
            return WireEmbeddings(tuple(as_base64(e.embedding) for e in ordered),
                                  parsed.usage.prompt_tokens if parsed.usage else 0)

        return await self._retrying(once, timeout_s, retries)

    async def fetch_text(self, url: str, timeout_s: float) -> str:
        """``GET url`` as text (a model server's ``/metrics``); any failure raises ProviderError."""
        async with _calling(), self._http().get(url, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                                **self._via(url)) as response:
            _raise_for_status(response)
            return await response.text()
        raise ProviderError("unreachable")  # pragma: no cover - _calling re-raises

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _SinkFailed(Exception):
    """What the caller's ``on_text`` raised, carried past ``_calling`` unchanged (a NATS
    timeout there is a TimeoutError too, and it is not the provider's)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(type(error).__name__)
        self.error = error


def _sink(on_text: Callable[[str], Awaitable[None]]) -> Callable[[str], Awaitable[None]]:
    async def sink(text: str) -> None:
        try:
            await on_text(text)
        except Exception as exc:
            raise _SinkFailed(exc) from exc

    return sink


@contextlib.asynccontextmanager
async def _calling() -> AsyncIterator[None]:
    """aiohttp's timeouts and transport errors as the engine's typed errors (the cause kept:
    ``_retrying`` retries transport errors)."""
    try:
        yield
    except _SinkFailed as failed:
        raise failed.error from None
    except TimeoutError as exc:  # aiohttp's own timeouts subclass it too
        raise ProviderTimeout(type(exc).__name__) from exc
    except aiohttp.ClientError as exc:
        raise ProviderError(type(exc).__name__) from exc


def _between_reads(timeout_s: float) -> aiohttp.ClientTimeout:
    """A stream's timeout: to connect and between two reads, not for the whole answer — a
    long answer that keeps coming is not late (httpx's semantics, which the wire had)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}


class HttpStatusError(ProviderError):
    def __init__(self, status: int) -> None:
        super().__init__(f"http_{status}")
        self.status = status


def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    if response.status >= 400:
        raise HttpStatusError(response.status)


async def _read_stream(
    response: aiohttp.ClientResponse, started: float, on_text: Callable[[str], Awaitable[None]] | None = None
) -> WireAnswer:
    collected = await collect_stream(_decoded(response), started, on_text)
    return WireAnswer(collected.content, collected.finish_reason, collected.usage, collected.ttft_s,
                      _ratelimit_headers(response.headers), collected.tool_calls)


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The body's lines as they arrive. Not aiohttp's own line iterator: it refuses lines
    longer than its buffer, and one SSE event of a large tool call can be longer."""
    pending = b""
    async for piece in response.content.iter_any():
        pending += piece
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r").decode()
    if pending:
        yield pending.rstrip(b"\r").decode()


async def _decoded(response: aiohttp.ClientResponse) -> AsyncIterator[_Chunk]:
    async for data in sse_data(_lines(response)):
        try:
            yield _chunk.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProviderError("malformed_chunk") from exc


@dataclass(frozen=True, slots=True)
class Collected:
    content: str
    finish_reason: str
    usage: Any
    ttft_s: float | None
    tool_calls: list[ToolCall] | None


class _CallParts:
    """One streamed tool call, assembled from its deltas (id and name first, then arguments)."""

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


async def collect_stream(
    chunks: AsyncIterator[Any], started: float, on_text: Callable[[str], Awaitable[None]] | None = None
) -> Collected:
    """Read chat-completion chunks (ours or LiteLLM's: the same shape) into the answer, its
    finish reason, the usage of the last chunk that has one, the time to first text and the
    tool calls assembled from their deltas; each piece of text goes to ``on_text`` as it
    arrives. Streamed requests have one choice (the gateway streams ``n`` > 1 whole)."""
    parts: list[str] = []
    ttft: float | None = None
    finish_reason = "stop"
    usage: Any = None
    calls: dict[int, _CallParts] = {}
    async for chunk in chunks:
        usage = getattr(chunk, "usage", None) or usage
        for choice in chunk.choices[:1]:
            delta = choice.delta
            if delta and delta.content:
                if ttft is None:
                    ttft = time.perf_counter() - started
                parts.append(delta.content)
                if on_text is not None:
                    await on_text(delta.content)
            for call in (delta.tool_calls if delta else None) or ():
                if ttft is None:
                    ttft = time.perf_counter() - started
                assembling = calls.setdefault(call.index or 0, _CallParts())
                assembling.id = call.id or assembling.id
                if call.function is not None:
                    assembling.name = call.function.name or assembling.name
                    assembling.arguments.append(call.function.arguments or "")
            if choice.finish_reason:
                finish_reason = choice.finish_reason
    tool_calls = [
        ToolCall(id=c.id or f"call_{i}", function=FunctionCall(name=c.name, arguments="".join(c.arguments)))
        for i, c in sorted(calls.items())
    ] or None
    return Collected("".join(parts), finish_reason, usage, ttft, tool_calls)


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data:`` payloads of a server-sent event stream, up to ``[DONE]``."""
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield data
