"""The HTTP surface: OpenAI chat completions, embeddings, model list, health, metrics and fault control.

Hot paths answer with pre-encoded bytes through plain ``Response`` objects and decode
requests with msgspec: with zero latencies configured the simulator is the baseline that
gateway overhead is measured against, so it must add as little of its own as possible.
Requests with tools, ``response_format``, ``n > 1``, ``stop`` or a tool result to answer take
a second, general path (``_choices``); the plain path does not pay for it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import tiktoken
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from services.simulator.embeddings import as_base64, text_key, token_key, vector
from services.simulator.faults import Fault, FaultConfig, FaultInjector, FaultUpdate
from services.simulator.generation import AnswerSource, echoed, in_pieces, stream_pieces, truncate
from services.simulator.metrics import SimulatorMetrics
from services.simulator.protocol import (
    ChatCompletionRequest,
    embedding_decoder,
    error_body,
    json_encoder,
    request_decoder,
)
from services.simulator.quota import TokenQuota
from services.simulator.scheduler import Scheduler
from services.simulator.settings import Mode, SimulatorSettings
from services.simulator.structured import (
    arguments_for,
    json_answer,
    last_user_text,
    tool_call_id,
    tools_to_call,
    trailing_tool_results,
)
from services.simulator.tokenizer import cl100k, count_prompt_tokens

JSON = "application/json"
SSE_DONE = b"data: [DONE]\n\n"


# OpenAI's limit on the inputs of one embeddings request.
MAX_EMBEDDING_INPUTS = 2048


def _json_error(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> Response:
    return Response(error_body(message, type_, code, param), status_code=status, media_type=JSON)


def _model_not_found(model: str) -> Response:
    return _json_error(
        404, f"The model `{model}` does not exist.", "invalid_request_error", "model_not_found", "model"
    )


@dataclass(slots=True)
class CallOut:
    """One tool call of an answer."""

    id: str
    name: str
    arguments: str
    tokens: list[int]


@dataclass(slots=True)
class ChoiceOut:
    """One choice of an answer on the general path: text (``content``) or tool calls."""

    content: str | None
    tokens: list[int]
    finish_reason: str
    calls: list[CallOut] = field(default_factory=list)

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens) + sum(len(call.tokens) for call in self.calls)

    def message(self) -> dict[str, Any]:
        if not self.calls:
            return {"role": "assistant", "content": self.content}
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.calls
            ],
        }


def _cut_at_stop(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
    """The text up to the earliest stop sequence (excluded), and whether one was found."""
    sequences = [stop] if isinstance(stop, str) else stop or []
    cut = min((i for i in (text.find(s) for s in sequences if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


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
        created = int(time.time())
        self.models_body = json_encoder.encode(
            {
                "object": "list",
                "data": [
                    {
                        "id": model,
                        "object": "model",
                        "created": created,
                        "owned_by": "stellwerk-simulator",
                        "root": model,
                        "parent": None,
                        "max_model_len": settings.max_model_len,
                    }
                    for model in (*settings.chat_models, *settings.embedding_models)
                ],
            }
        )
        self.health_body = json_encoder.encode(
            {"status": "ok", "name": settings.name, "model": settings.model}
        )
        # Answers name the model that was asked for; its JSON string is encoded once.
        self._chat_models = {model: json_encoder.encode(model) for model in settings.chat_models}
        self._embedding_models = frozenset(settings.embedding_models)
        self.quota = TokenQuota(settings.tokens_per_minute) if settings.tokens_per_minute else None

    async def chat_completions(self, request: Request) -> Response:
        arrival = time.perf_counter()
        try:
            body = request_decoder.decode(await request.body())
        except msgspec.DecodeError as exc:
            return _json_error(400, str(exc), "invalid_request_error")
        model = body.model
        model_json = self._chat_models.get(model)
        if model_json is None:
            if model in self._embedding_models:
                return _json_error(
                    404,
                    "This is not a chat model and thus not supported in the v1/chat/completions endpoint.",
                    "invalid_request_error",
                    None,
                    "model",
                )
            return _model_not_found(model)
        if not body.messages:
            return _json_error(400, "messages must not be empty", "invalid_request_error")
        limit = body.token_limit
        if limit is not None and limit < 1:
            return _json_error(400, "max_tokens must be at least 1", "invalid_request_error")
        problem = body.problem()
        if problem is not None:
            return _json_error(400, problem[0], "invalid_request_error", None, problem[1])

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
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        if not body.is_plain:
            choices = self._choices(body, cap)
            if body.stream:
                return StreamingResponse(
                    self._stream_choices(arrival, config, model_json, prompt_tokens, choices, include_usage),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache"},
                )
            return await self._complete_choices(arrival, config, model, prompt_tokens, choices)

        text, tokens = self.answers.answer(body.messages)
        text, tokens, finish_reason = truncate(self.encoding, text, tokens, cap)

        if body.stream:
            return StreamingResponse(
                self._stream(
                    arrival, config, model_json, prompt_tokens, tokens, finish_reason, include_usage
                ),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return await self._complete(arrival, config, model, prompt_tokens, text, tokens, finish_reason)

    def _choices(self, body: ChatCompletionRequest, cap: int) -> list[ChoiceOut]:
        """The ``n`` choices of an answer with tools, ``response_format``, ``stop`` or a tool result."""
        encoding = self.encoding
        messages = body.messages
        text, tokens = self.answers.answer(messages)
        results = trailing_tool_results(messages)
        if results and self.settings.mode is Mode.ECHO:
            text = "\n".join(f"Tool result: {result}" for result in results)
            tokens = encoding.encode_ordinary(text)
        prompt = last_user_text(messages)
        calls = tools_to_call(body, prompt + "\n" + echoed(prompt))
        if calls:
            named = [(f.name, arguments_for(f, text)) for f in calls]
            return [self._tool_choice(named, cap) for _ in range(body.n)]
        document = json_answer(body, text)
        if document is not None:
            text, tokens = document, encoding.encode_ordinary(document)
        text, stopped = _cut_at_stop(text, body.stop)
        if stopped:
            tokens = encoding.encode_ordinary(text)
        text, tokens, finish_reason = truncate(encoding, text, tokens, cap)
        return [ChoiceOut(text, tokens, finish_reason) for _ in range(body.n)]

    def _tool_choice(self, named: Sequence[tuple[str, str]], cap: int) -> ChoiceOut:
        """Tool calls (each with a fresh id); arguments beyond ``cap`` tokens are cut off."""
        calls: list[CallOut] = []
        budget = cap
        for name, arguments in named:
            if budget <= 0:
                return ChoiceOut(None, [], "length", calls)
            tokens = self.encoding.encode_ordinary(arguments)
            if len(tokens) > budget:
                kept = tokens[:budget]
                calls.append(CallOut(tool_call_id(), name, self.encoding.decode(kept), kept))
                return ChoiceOut(None, [], "length", calls)
            budget -= len(tokens)
            calls.append(CallOut(tool_call_id(), name, arguments, tokens))
        return ChoiceOut(None, [], "tool_calls", calls)

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
        model: str,
        prompt_tokens: int,
        text: str,
        tokens: list[int],
        finish_reason: str,
    ) -> Response:
        completion_tokens = len(tokens)
        kv_tokens = prompt_tokens + completion_tokens
        await self._generate(arrival, config, kv_tokens, completion_tokens)
        self._record(arrival, prompt_tokens, completion_tokens)
        body = json_encoder.encode(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
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
        model_json: bytes,
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
                model_json,
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

    async def _generate(self, arrival: float, config: FaultConfig, kv_tokens: int, longest: int) -> None:
        """Admission and the simulated generation time of a non-streamed answer."""
        scheduler = self.scheduler
        await scheduler.acquire(kv_tokens)
        try:
            if config.ttft_ms:
                await asyncio.sleep(config.ttft_ms / 1000)
            self.metrics.time_to_first_token.observe(time.perf_counter() - arrival)
            if config.itl_ms and longest > 1:
                # The n choices of one request are generated side by side, as in vLLM.
                await asyncio.sleep(config.itl_ms * (longest - 1) / 1000)
        finally:
            scheduler.release(kv_tokens)

    async def _complete_choices(
        self,
        arrival: float,
        config: FaultConfig,
        model: str,
        prompt_tokens: int,
        choices: list[ChoiceOut],
    ) -> Response:
        completion_tokens = sum(choice.completion_tokens for choice in choices)
        kv_tokens = prompt_tokens + completion_tokens
        longest = max(choice.completion_tokens for choice in choices)
        await self._generate(arrival, config, kv_tokens, longest)
        self._record(arrival, prompt_tokens, completion_tokens)
        body = json_encoder.encode(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": index,
                        "message": choice.message(),
                        "logprobs": None,
                        "finish_reason": choice.finish_reason,
                    }
                    for index, choice in enumerate(choices)
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": kv_tokens,
                },
            }
        )
        headers = self.quota.charge(kv_tokens) if self.quota else None
        return Response(body, media_type=JSON, headers=headers)

    def _steps(self, choice: ChoiceOut) -> list[list[dict[str, Any]]]:
        """The deltas of one streamed choice, grouped by the generation step that sends them:
        one step per piece; the role and each call's header travel with the next piece."""
        pending: list[dict[str, Any]] = []
        steps: list[list[dict[str, Any]]] = []
        chars = self.settings.piece_chars

        def pieces(tokens: list[int]) -> Iterator[str]:
            return in_pieces(stream_pieces(self.encoding, tokens), chars)

        if not choice.calls:
            pending.append({"role": "assistant", "content": ""})
            for piece in pieces(choice.tokens):
                if piece:
                    steps.append([*pending, {"content": piece}])
                    pending = []
        for index, call in enumerate(choice.calls):
            header: dict[str, Any] = {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
            pending.append({"role": "assistant", "content": None, **header} if index == 0 else header)
            for piece in pieces(call.tokens):
                if piece:
                    argument = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                    steps.append([*pending, argument])
                    pending = []
        if pending:
            steps.append(pending)
        return steps

    async def _stream_choices(
        self,
        arrival: float,
        config: FaultConfig,
        model_json: bytes,
        prompt_tokens: int,
        choices: list[ChoiceOut],
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        completion_tokens = sum(choice.completion_tokens for choice in choices)
        kv_tokens = prompt_tokens + completion_tokens
        head = b"".join(
            (
                b'data: {"id":"chatcmpl-',
                uuid.uuid4().hex.encode(),
                b'","object":"chat.completion.chunk","created":',
                str(int(time.time())).encode(),
                b',"model":',
                model_json,
                b',"choices":',
            )
        )
        encode = json_encoder.encode

        def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return head + encode([choice]) + b"}\n\n"

        # Step r of every choice is sent together: choices interleave, one chunk per choice.
        per_choice = [self._steps(choice) for choice in choices]
        rounds = [
            b"".join(
                chunk(index, delta)
                for index, steps in enumerate(per_choice)
                if step < len(steps)
                for delta in steps[step]
            )
            for step in range(max(len(steps) for steps in per_choice))
        ]
        scheduler = self.scheduler
        itl = config.itl_ms / 1000
        await scheduler.acquire(kv_tokens)
        try:
            if config.ttft_ms:
                await asyncio.sleep(config.ttft_ms / 1000)
            self.metrics.time_to_first_token.observe(time.perf_counter() - arrival)
            if not itl:
                yield b"".join(rounds)
            else:
                for step, data in enumerate(rounds):
                    if step:
                        await asyncio.sleep(itl)
                    yield data
        finally:
            scheduler.release(kv_tokens)
        self._record(arrival, prompt_tokens, completion_tokens)
        tail = b"".join(chunk(index, {}, choice.finish_reason) for index, choice in enumerate(choices))
        if include_usage:
            usage = encode(
                {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": kv_tokens,
                }
            )
            tail += head + b'[],"usage":' + usage + b"}\n\n"
        yield tail + SSE_DONE

    async def embeddings(self, request: Request) -> Response:
        arrival = time.perf_counter()
        try:
            body = embedding_decoder.decode(await request.body())
        except msgspec.DecodeError as exc:
            return _json_error(400, str(exc), "invalid_request_error")
        model = body.model
        if model not in self._embedding_models:
            if model in self._chat_models:
                return _json_error(
                    400,
                    f"The model `{model}` does not support embeddings.",
                    "invalid_request_error",
                    None,
                    "model",
                )
            return _model_not_found(model)
        settings = self.settings
        dims = body.dimensions if body.dimensions is not None else settings.embedding_dims
        if not 1 <= dims <= settings.embedding_dims:
            return _json_error(
                400,
                f"dimensions must be between 1 and {settings.embedding_dims}",
                "invalid_request_error",
                None,
                "dimensions",
            )
        if body.encoding_format not in ("float", "base64"):
            return _json_error(
                400,
                "encoding_format must be 'float' or 'base64'",
                "invalid_request_error",
                None,
                "encoding_format",
            )
        inputs = _embedding_inputs(body.input)
        if isinstance(inputs, str):
            return _json_error(400, inputs, "invalid_request_error", None, "input")

        config = self.faults.config
        fault = self.faults.draw(config)
        if fault is not None:
            return await self._inject(fault, config, request)

        counts = [len(self.encoding.encode_ordinary(i)) if isinstance(i, str) else len(i) for i in inputs]
        longest = max(counts)
        if longest > settings.max_model_len:
            return _json_error(
                400,
                f"This model's maximum context length is {settings.max_model_len} tokens. However, "
                f"an input has {longest} tokens. Please reduce the length of the input.",
                "invalid_request_error",
                "context_length_exceeded",
                "input",
            )
        prompt_tokens = sum(counts)
        scheduler = self.scheduler
        await scheduler.acquire(prompt_tokens)
        try:
            if config.ttft_ms:
                await asyncio.sleep(config.ttft_ms / 1000)
            self.metrics.time_to_first_token.observe(time.perf_counter() - arrival)
        finally:
            scheduler.release(prompt_tokens)
        self._record(arrival, prompt_tokens, 0)
        as_float = body.encoding_format == "float"
        data = []
        for index, item in enumerate(inputs):
            values = vector(text_key(item) if isinstance(item, str) else token_key(item), dims)
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": values.tolist() if as_float else as_base64(values),
                }
            )
        encoded = json_encoder.encode(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }
        )
        headers = self.quota.charge(prompt_tokens) if self.quota else None
        return Response(encoded, media_type=JSON, headers=headers)

    def _record(self, arrival: float, prompt_tokens: int, completion_tokens: int) -> None:
        metrics = self.metrics
        metrics.prompt_tokens.inc(prompt_tokens)
        metrics.generation_tokens.inc(completion_tokens)
        metrics.e2e_latency.observe(time.perf_counter() - arrival)


def _embedding_inputs(raw: str | list[str | int | list[int]]) -> list[str | list[int]] | str:
    """The inputs of an embeddings request (texts or token-id lists), or why they are invalid."""
    if isinstance(raw, str):
        items: list[str | list[int]] = [raw]
    elif not raw:
        return "input must not be empty"
    elif all(isinstance(item, int) for item in raw):
        items = [[item for item in raw if isinstance(item, int)]]
    elif all(isinstance(item, str) for item in raw):
        items = [item for item in raw if isinstance(item, str)]
    elif all(isinstance(item, list) for item in raw):
        items = [item for item in raw if isinstance(item, list)]
    else:
        return "input must be a string, a list of strings, or a list of token-id lists, not a mixture"
    if len(items) > MAX_EMBEDDING_INPUTS:
        return f"input may hold at most {MAX_EMBEDDING_INPUTS} items"
    for item in items:
        if not item:
            return "input must not contain empty strings or empty token lists"
        if isinstance(item, list) and any(token < 0 for token in item):
            return "token ids must not be negative"
    return items


def create_app(settings: SimulatorSettings, encoding: tiktoken.Encoding | None = None) -> FastAPI:
    """Build one simulator; ``encoding`` defaults to the offline ``cl100k_base`` (built once)."""
    simulator = Simulator(settings, encoding if encoding is not None else cl100k())
    app = FastAPI(title=f"Stellwerk model simulator ({settings.name})", docs_url=None, redoc_url=None)
    app.state.simulator = simulator

    app.add_api_route(
        "/v1/chat/completions", simulator.chat_completions, methods=["POST"], response_model=None
    )

    app.add_api_route("/v1/embeddings", simulator.embeddings, methods=["POST"], response_model=None)

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
