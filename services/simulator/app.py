"""The HTTP surface: OpenAI chat completions, model list, health, metrics and fault control.

Hot paths answer with pre-encoded bytes through plain ``Response`` objects and decode
requests with msgspec: with zero latencies configured the simulator is the baseline that
gateway overhead is measured against, so it must add as little of its own as possible.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
import tiktoken
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from services.simulator.faults import Fault, FaultConfig, FaultInjector, FaultUpdate
from services.simulator.generation import AnswerSource, in_pieces, stream_pieces, truncate
from services.simulator.metrics import SimulatorMetrics
from services.simulator.protocol import error_body, json_encoder, request_decoder
from services.simulator.quota import TokenQuota
from services.simulator.scheduler import Scheduler
from services.simulator.settings import SimulatorSettings
from services.simulator.tokenizer import cl100k, count_prompt_tokens

JSON = "application/json"
SSE_DONE = b"data: [DONE]\n\n"


def _json_error(status: int, message: str, type_: str, code: str | None = None) -> Response:
    return Response(error_body(message, type_, code), status_code=status, media_type=JSON)


async def _sleep_unless_disconnected(request: Request, seconds: float) -> None:
    # The body has been read, so the next ASGI message can only be the disconnect.
    disconnect = asyncio.ensure_future(request.receive())
    sleep = asyncio.ensure_future(asyncio.sleep(seconds))
    try:
        await asyncio.wait((disconnect, sleep), return_when=asyncio.FIRST_COMPLETED)
    finally:
        disconnect.cancel()
        sleep.cancel()


class Simulator:
    """One simulated model server; every piece of state belongs to the instance, none is global."""

    def __init__(self, settings: SimulatorSettings, encoding: tiktoken.Encoding) -> None:
        self.settings = settings
        self.encoding = encoding
        self.scheduler = Scheduler(settings.max_num_seqs, settings.kv_capacity_tokens)
        self.metrics = SimulatorMetrics(settings.model, self.scheduler)
        self.faults = FaultInjector(FaultConfig.from_settings(settings), settings.seed)
        self.answers = AnswerSource(encoding, settings.mode, settings.canned_text)
        self.models_body = json_encoder.encode(
            {
                "object": "list",
                "data": [
                    {
                        "id": settings.model,
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "stellwerk-simulator",
                        "root": settings.model,
                        "parent": None,
                        "max_model_len": settings.max_model_len,
                    }
                ],
            }
        )
        self.health_body = json_encoder.encode(
            {"status": "ok", "name": settings.name, "model": settings.model}
        )
        self._model_json = json_encoder.encode(settings.model)
        self.quota = TokenQuota(settings.tokens_per_minute) if settings.tokens_per_minute else None

    async def chat_completions(self, request: Request) -> Response:
        arrival = time.perf_counter()
        try:
            body = request_decoder.decode(await request.body())
        except msgspec.DecodeError as exc:
            return _json_error(400, str(exc), "invalid_request_error")
        if body.model != self.settings.model:
            return _json_error(
                404,
                f"The model `{body.model}` does not exist.",
                "invalid_request_error",
                "model_not_found",
            )
        if not body.messages:
            return _json_error(400, "messages must not be empty", "invalid_request_error")
        limit = body.token_limit
        if limit is not None and limit < 1:
            return _json_error(400, "max_tokens must be at least 1", "invalid_request_error")

        config = self.faults.config
        fault = self.faults.draw(config)
        if fault is not None:
            return await self._inject(fault, config, request)

        prompt_tokens = count_prompt_tokens(self.encoding, body.messages)
        max_model_len = self.settings.max_model_len
        if prompt_tokens + (limit or 1) > max_model_len:
            requested = limit if limit is not None else 0
            return _json_error(
                400,
                f"This model's maximum context length is {max_model_len} tokens. However, you "
                f"requested {prompt_tokens + requested} tokens ({prompt_tokens} in the messages, "
                f"{requested} in the completion). Please reduce the length of the messages or "
                "completion.",
                "invalid_request_error",
                "context_length_exceeded",
            )
        # Without max_tokens the answer may fill the rest of the context window, as in vLLM.
        cap = limit if limit is not None else max_model_len - prompt_tokens
        text, tokens = self.answers.answer(body.messages)
        text, tokens, finish_reason = truncate(self.encoding, text, tokens, cap)

        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(
                self._stream(arrival, config, prompt_tokens, tokens, finish_reason, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return await self._complete(arrival, config, prompt_tokens, text, tokens, finish_reason)

    async def _inject(self, fault: Fault, config: FaultConfig, request: Request) -> Response:
        self.metrics.injected_faults[fault].inc()
        if fault is Fault.RATE_LIMITED:
            response = _json_error(
                429,
                "Rate limit reached for requests (injected by the simulator).",
                "requests",
                "rate_limit_exceeded",
            )
            response.headers["Retry-After"] = str(config.retry_after_s)
            return response
        if fault is Fault.SERVER_ERROR:
            return _json_error(
                500,
                "The server had an error while processing your request (injected by the simulator).",
                "server_error",
            )
        # A hung upstream: nothing for timeout_s, then a gateway-timeout answer for clients
        # patient enough to still be listening. A client that gives up ends the hang, so
        # abandoned hangs do not pile up or hold the server's shutdown.
        await _sleep_unless_disconnected(request, config.timeout_s)
        return _json_error(504, "The request timed out (injected by the simulator).", "timeout", "timeout")

    async def _complete(
        self,
        arrival: float,
        config: FaultConfig,
        prompt_tokens: int,
        text: str,
        tokens: list[int],
        finish_reason: str,
    ) -> Response:
        completion_tokens = len(tokens)
        kv_tokens = prompt_tokens + completion_tokens
        scheduler = self.scheduler
        await scheduler.acquire(kv_tokens)
        try:
            if config.ttft_ms:
                await asyncio.sleep(config.ttft_ms / 1000)
            self.metrics.time_to_first_token.observe(time.perf_counter() - arrival)
            if config.itl_ms and completion_tokens > 1:
                await asyncio.sleep(config.itl_ms * (completion_tokens - 1) / 1000)
        finally:
            scheduler.release(kv_tokens)
        self._record(arrival, prompt_tokens, completion_tokens)
        body = json_encoder.encode(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.settings.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )
        headers = self.quota.charge(kv_tokens) if self.quota else None
        return Response(body, media_type=JSON, headers=headers)

    async def _stream(
        self,
        arrival: float,
        config: FaultConfig,
        prompt_tokens: int,
        tokens: list[int],
        finish_reason: str,
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        completion_tokens = len(tokens)
        kv_tokens = prompt_tokens + completion_tokens
        # Every chunk shares its envelope: encode it once and splice in only the delta.
        head = b"".join(
            (
                b'data: {"id":"chatcmpl-',
                uuid.uuid4().hex.encode(),
                b'","object":"chat.completion.chunk","created":',
                str(int(time.time())).encode(),
                b',"model":',
                self._model_json,
                b',"choices":',
            )
        )
        content_head = head + b'[{"index":0,"delta":{"content":'
        content_tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        encode = json_encoder.encode
        first = (
            head
            + b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
        )
        last = b"".join(
            (
                head,
                b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"',
                finish_reason.encode(),
                b'"}]}\n\n',
            )
        )

        scheduler = self.scheduler
        itl = config.itl_ms / 1000
        await scheduler.acquire(kv_tokens)
        try:
            if config.ttft_ms:
                await asyncio.sleep(config.ttft_ms / 1000)
            pieces = in_pieces(stream_pieces(self.encoding, tokens), self.settings.piece_chars)
            if not itl:
                # No pacing to simulate: one write instead of one per token.
                self.metrics.time_to_first_token.observe(time.perf_counter() - arrival)
                yield first + b"".join(
                    content_head + encode(piece) + content_tail for piece in pieces if piece
                )
            else:
                # The role chunk travels with the first text, so the client's first byte is
                # the first token, as TTFT is defined.
                prefix = first
                for index, piece in enumerate(pieces):
                    if index:
                        await asyncio.sleep(itl)
                    if not piece:
                        continue
                    if prefix:
                        self.metrics.time_to_first_token.observe(time.perf_counter() - arrival)
                    yield prefix + content_head + encode(piece) + content_tail
                    prefix = b""
                if prefix:
                    self.metrics.time_to_first_token.observe(time.perf_counter() - arrival)
                    yield prefix
        finally:
            scheduler.release(kv_tokens)
        self._record(arrival, prompt_tokens, completion_tokens)
        tail = last
        if include_usage:
            usage = encode(
                {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                }
            )
            tail += head + b'[],"usage":' + usage + b"}\n\n"
        yield tail + SSE_DONE

    def _record(self, arrival: float, prompt_tokens: int, completion_tokens: int) -> None:
        metrics = self.metrics
        metrics.prompt_tokens.inc(prompt_tokens)
        metrics.generation_tokens.inc(completion_tokens)
        metrics.e2e_latency.observe(time.perf_counter() - arrival)


def create_app(settings: SimulatorSettings, encoding: tiktoken.Encoding | None = None) -> FastAPI:
    """Build one simulator; ``encoding`` defaults to the offline ``cl100k_base`` (built once)."""
    simulator = Simulator(settings, encoding if encoding is not None else cl100k())
    app = FastAPI(title=f"Stellwerk model simulator ({settings.name})", docs_url=None, redoc_url=None)
    app.state.simulator = simulator

    app.add_api_route(
        "/v1/chat/completions", simulator.chat_completions, methods=["POST"], response_model=None
    )

    @app.get("/v1/models")
    async def list_models() -> Response:
        return Response(simulator.models_body, media_type=JSON)

    @app.get("/health")
    async def health() -> Response:
        return Response(simulator.health_body, media_type=JSON)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(simulator.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/admin/faults")
    async def read_faults() -> FaultConfig:
        return simulator.faults.config

    @app.post("/admin/faults", response_model=None)
    async def update_faults(update: FaultUpdate) -> FaultConfig | Response:
        try:
            return simulator.faults.apply(update)
        except ValidationError as exc:
            # The merged config is invalid (e.g. rates summing above 1): keep the old one.
            return Response(
                json_encoder.encode({"detail": exc.errors(include_url=False, include_context=False)}),
                status_code=422,
                media_type=JSON,
            )

    return app
