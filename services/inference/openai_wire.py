"""A lean client for deployments that speak the OpenAI chat protocol themselves (vLLM, OpenAI).

Why not LiteLLM for these: measured on the 2-core reference machine, ``litellm.acompletion``
costs ~6.5 ms of CPU per call more than the HTTP call itself (response metadata, its cost
calculator, its logging payload — all of which Stellwerk does itself: pricing in FinOps,
records in the audit trail). That is more than the whole governance budget of a request.
The protocol is the one vLLM serves natively, so nothing is translated; LiteLLM stays the
client for every provider that needs translation (``provider: azure`` and others).

Errors are typed for the engine: ``ProviderTimeout`` (the call ran out of time) and
``ProviderError`` (anything else: refused, 4xx/5xx, malformed answer).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec


class ProviderError(Exception):
    """The provider answered with an error or not in the protocol."""


class ProviderTimeout(ProviderError):
    """The provider did not answer in time."""


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    finish_reason: str | None = None


class _Delta(msgspec.Struct):
    content: str | None = None


class _StreamChoice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class WireUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(msgspec.Struct):
    choices: list[_Choice] = []
    usage: WireUsage | None = None


class _Chunk(msgspec.Struct):
    choices: list[_StreamChoice] = []
    usage: WireUsage | None = None


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


def _ratelimit_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("x-ratelimit-")}


class OpenAIWire:
    """One connection pool per worker for all deployments; retries once where retrying helps."""

    RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(self, max_connections: int = 1024) -> None:
        self._http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def complete(
        self, api_base: str, api_key: str, body: dict[str, Any], timeout_s: float, retries: int = 1
    ) -> WireAnswer:
        deadline = time.monotonic() + timeout_s
        for attempt in range(retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderTimeout("deadline")
            try:
                return await self._once(api_base, api_key, body, remaining)
            except ProviderError as exc:
                retryable = isinstance(exc.__cause__, httpx.TransportError) or (
                    isinstance(exc, HttpStatusError) and exc.status in self.RETRYABLE
                )
                if attempt == retries or isinstance(exc, ProviderTimeout) or not retryable:
                    raise
        raise ProviderError("unreachable")  # pragma: no cover

    async def _once(self, api_base: str, api_key: str, body: dict[str, Any], timeout_s: float) -> WireAnswer:
        started = time.perf_counter()
        url = f"{api_base.rstrip('/')}/chat/completions"
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        try:
            if body.get("stream"):
                async with self._http.stream("POST", url, content=_encode(body), headers=headers,
                                             timeout=timeout_s) as response:
                    _raise_for_status(response)
                    return await _read_stream(response, started)
            response = await self._http.post(url, content=_encode(body), headers=headers, timeout=timeout_s)
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(type(exc).__name__) from exc
        except httpx.TransportError as exc:
            raise ProviderError(type(exc).__name__) from exc
        _raise_for_status(response)
        try:
            parsed = _completion.decode(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProviderError("malformed_response") from exc
        if not parsed.choices:
            raise ProviderError("no_choices")
        choice = parsed.choices[0]
        return WireAnswer(
            content=(choice.message.content if choice.message else None) or "",
            finish_reason=choice.finish_reason or "stop",
            usage=parsed.usage,
            ttft_s=None,
            headers=_ratelimit_headers(response),
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
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        try:
            async with self._http.stream(
                "POST", url, content=_encode(body), headers=headers, timeout=timeout_s
            ) as response:
                _raise_for_status(response)
                return await _read_stream(response, started, on_text)
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(type(exc).__name__) from exc
        except httpx.TransportError as exc:
            raise ProviderError(type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self._http.aclose()


class HttpStatusError(ProviderError):
    def __init__(self, status: int) -> None:
        super().__init__(f"http_{status}")
        self.status = status


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise HttpStatusError(response.status_code)


async def _read_stream(
    response: httpx.Response, started: float, on_text: Callable[[str], Awaitable[None]] | None = None
) -> WireAnswer:
    content, finish_reason, usage, ttft = await collect_stream(_decoded(response), started, on_text)
    return WireAnswer(content, finish_reason, usage, ttft, _ratelimit_headers(response))


async def _decoded(response: httpx.Response) -> AsyncIterator[_Chunk]:
    async for data in sse_data(response.aiter_lines()):
        try:
            yield _chunk.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProviderError("malformed_chunk") from exc


async def collect_stream(
    chunks: AsyncIterator[Any], started: float, on_text: Callable[[str], Awaitable[None]] | None = None
) -> tuple[str, str, Any, float | None]:
    """Read chat-completion chunks (ours or LiteLLM's: the same shape) into the answer, its
    finish reason, the usage of the last chunk that has one and the time to first text;
    each piece of text goes to ``on_text`` as it arrives."""
    parts: list[str] = []
    ttft: float | None = None
    finish_reason = "stop"
    usage: Any = None
    async for chunk in chunks:
        usage = getattr(chunk, "usage", None) or usage
        for choice in chunk.choices[:1]:
            if choice.delta and choice.delta.content:
                if ttft is None:
                    ttft = time.perf_counter() - started
                parts.append(choice.delta.content)
                if on_text is not None:
                    await on_text(choice.delta.content)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
    return "".join(parts), finish_reason, usage, ttft


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
