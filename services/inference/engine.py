"""LiteLLM execution of a routing decision: the chosen route, then only the allowed fallbacks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import litellm
import msgspec
from litellm.exceptions import BadRequestError, NotFoundError
from litellm.exceptions import Timeout as ProviderTimeout
from opentelemetry import trace

from schemas.events import ChatMessage, GeneratedChoice, GenerationParams, RoutingDecision, ToolCall
from schemas.vocabulary import ErrorCode, Operation, Route
from services.inference.breaker import CircuitBreaker
from services.inference.openai_wire import (
    Collected,
    HttpStatusError,
    OpenAIWire,
    answer_choices,
    as_base64,
    collect_stream,
)
from services.inference.openai_wire import ProviderTimeout as WireTimeout
from services.inference.structured import REASK, violation
from services.kernel.pricing import GpuClock, gpu_seconds, price_call
from services.runtime.rollouts import canary_deployments
from services.runtime.settings import Deployment, PlatformConfig
from services.runtime.telemetry import tracing_enabled

litellm.telemetry = False
litellm.suppress_debug_info = True


# The error type of an attempt skipped because its route's circuit breaker is open: nothing
# was called (a canary's window must not count it).
CIRCUIT_OPEN = "CircuitOpen"


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    route: Route
    code: ErrorCode
    error_type: str
    deployment: str | None = None  # set where a route variant named it (issue 17)


@dataclass(frozen=True, slots=True)
class ProviderQuota:
    limit: float
    remaining: float


def provider_quota(hidden_params: dict[str, Any] | None) -> ProviderQuota | None:
    """Read OpenAI-style rate-limit headers as LiteLLM passes them through, if the provider sent them."""
    headers = (hidden_params or {}).get("additional_headers") or {}
    limit = headers.get("x-ratelimit-limit-tokens") or headers.get("llm_provider-x-ratelimit-limit-tokens")
    remaining = headers.get("x-ratelimit-remaining-tokens") or headers.get(
        "llm_provider-x-ratelimit-remaining-tokens"
    )
    try:
        return ProviderQuota(float(limit), float(remaining)) if limit and remaining else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class CallOutcome:
    route: Route
    deployment: Deployment
    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    latency_ms: float
    gpu_seconds: float
    cost: float
    fallback_from: Route | None
    failed_attempts: tuple[AttemptFailure, ...] = ()
    # The provider's own view of its token quota (OpenAI x-ratelimit-*-tokens headers).
    provider_quota: ProviderQuota | None = None
    tool_calls: list[ToolCall] | None = None
    more_choices: tuple[GeneratedChoice, ...] = ()
    # Structured output asked again once because the first answer did not match (issue 13).
    reasked: bool = False
    # Embeddings calls: one vector per input, little-endian float32, base64.
    embeddings: tuple[str, ...] = ()

    def invalid_output(self, response_format: dict[str, Any] | None) -> str | None:
        """Why some choice's text is not the requested JSON (tool-call turns are exempt)."""
        for content, calls in ((self.content, self.tool_calls), *((c.content, c.tool_calls) for c in self.more_choices)):
            reason = None if calls else violation(content, response_format)
            if reason is not None:
                return reason
        return None

    def plus(self, later: CallOutcome) -> CallOutcome:
        """``later`` (a re-ask on the same route) with this call's tokens, time and cost added."""
        return replace(
            later,
            prompt_tokens=self.prompt_tokens + later.prompt_tokens,
            completion_tokens=self.completion_tokens + later.completion_tokens,
            latency_ms=self.latency_ms + later.latency_ms,
            ttft_ms=self.ttft_ms,
            gpu_seconds=self.gpu_seconds + later.gpu_seconds,
            cost=self.cost + later.cost,
            reasked=True,
        )


def _refused_as_invalid(exc: BaseException) -> bool:
    """A 400/404/422 from the model server (ours or LiteLLM's typed exception)."""
    if isinstance(exc, HttpStatusError):
        return exc.status in (400, 404, 422)
    return isinstance(exc, BadRequestError | NotFoundError)


class InferenceFailed(Exception):
    def __init__(self, code: ErrorCode, attempts: list[AttemptFailure]) -> None:
        # Carried so the worker can audit every failed attempt, not only the last.
        super().__init__(code)
        self.code = code
        self.attempts = attempts


def _wire(messages: list[ChatMessage]) -> list[Any]:
    wire: list[Any] = []
    for m in messages:
        message: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                for c in m.tool_calls
            ]
            message["content"] = m.content or None
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            message["name"] = m.name
        wire.append(message)
    return wire


# Generation parameters that are not part of a chat call's body.
_NOT_FOR_CHAT = frozenset({"dimensions"})


def _call_params(params: GenerationParams) -> dict[str, Any]:
    """The set generation parameters under their OpenAI names (unset ones are left out)."""
    body: dict[str, Any] = msgspec.to_builtins(params)
    return {k: v for k, v in body.items() if k not in _NOT_FOR_CHAT}


def _litellm_model(deployment: Deployment) -> str:
    return f"{deployment.provider}/{deployment.model}"


# Providers whose deployments speak the OpenAI protocol themselves: called directly
# (``openai_wire``), the rest through LiteLLM.
WIRE_PROVIDERS = frozenset({"openai", "hosted_vllm"})
_NOT_IN_BODY = frozenset({"model", "api_base", "api_key", "timeout", "num_retries"})
DEFAULT_PARALLEL = 256
TextSink = Callable[[str], Awaitable[None]]  # per deployment, where the config states no max_parallel_requests


_tracer = trace.get_tracer("stellwerk.inference")


def _genai_request(deployment: Deployment, call: dict[str, Any]) -> dict[str, Any]:
    """OpenTelemetry GenAI semantic conventions for the model call (metadata, never text)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai" if deployment.provider in WIRE_PROVIDERS else deployment.provider,
        "gen_ai.request.model": deployment.model,
        "server.address": deployment.api_base,
    }
    for key in ("max_tokens", "temperature", "top_p"):
        if call.get(key) is not None:
            attributes[f"gen_ai.request.{key}"] = call[key]
    return attributes


class InferenceEngine:
    """Calls the deployments of the decided route through LiteLLM.

    The routing policy has already chosen the route, so LiteLLM's ``Router`` (deployment
    selection, its own retries, cooldowns and usage tracking — ~3 ms of CPU per call here)
    is not on the path: the engine picks the route's deployment with the most free slots and
    calls it — directly where it speaks the OpenAI protocol (``openai_wire``), otherwise
    through ``litellm.acompletion`` with that deployment's parameters. Each deployment's
    ``max_parallel_requests`` bounds the calls in flight to it.
    """

    def __init__(self, config: PlatformConfig, num_retries: int = 1) -> None:
        self.config = config
        self.num_retries = num_retries
        self.breakers: dict[Route, CircuitBreaker] = {
            d.route: CircuitBreaker(failure_threshold=d.breaker_failures, cooldown_s=d.breaker_cooldown_s)
            for d in config.deployments
        }
        self._by_name = {d.name: d for d in config.deployments}
        self._slots = {
            d.name: asyncio.Semaphore(d.max_parallel_requests or DEFAULT_PARALLEL) for d in config.deployments
        }
        self._busy = {d.name: 0 for d in config.deployments}
        # Deployments only a canary variant names (issue 17): a plain pick leaves them out, so
        # they get exactly the traffic the router's variant split gives them.
        self._canary_only = canary_deployments(config)
        # Each call is charged its share of its deployment's busy time, not its wall time.
        self._clocks = {d.name: GpuClock() for d in config.deployments}
        self._traced = tracing_enabled()
        self.wire = OpenAIWire()
        self._params = {
            d.name: {
                "model": _litellm_model(d),
                "api_base": d.api_base,
                "api_key": d.api_key,
            }
            for d in config.deployments
        }

    @property
    def capacity(self) -> int:
        """Calls this engine can have in flight at once: the sum over all deployments."""
        return sum(d.max_parallel_requests or DEFAULT_PARALLEL for d in self.config.deployments)

    def observe_running(self, deployment: str, running: float) -> None:
        """The deployment's own count of calls in flight (all inference workers), from its
        metrics: several workers sharing one deployment then book its busy time once."""
        clock = self._clocks.get(deployment)
        if clock is not None:
            clock.observe(time.perf_counter(), running)

    def _charged(self, outcome: CallOutcome, shared_s: float) -> CallOutcome:
        gpu_s = gpu_seconds(outcome.deployment, shared_s)
        return replace(outcome, gpu_seconds=gpu_s, cost=price_call(
            outcome.deployment, outcome.prompt_tokens, outcome.completion_tokens, gpu_s))

    def _pick(self, route: Route, deployment: str | None = None) -> Deployment:
        if deployment is not None and deployment in self._by_name:
            return self._by_name[deployment]
        reserved = self._canary_only.get(route, set())
        candidates = [d for d in self.config.deployments_for(route) if d.name not in reserved]
        return min(candidates, key=lambda d: self._busy[d.name] / (d.max_parallel_requests or DEFAULT_PARALLEL))

    async def run(
        self,
        decision: RoutingDecision,
        messages: list[ChatMessage],
        params: GenerationParams,
        timeout_s: float,
        on_text: TextSink | None = None,
        operation: Operation = "chat",
        deployment: str | None = None,
        canary: bool = False,
    ) -> CallOutcome:
        """Try the decided route, then each allowed fallback; raise InferenceFailed if none answers.

        ``deployment``: the route variant's deployment for the first attempt (issue 17). A
        canary's failure neither opens the route's breaker (the canary is judged by its
        rollback thresholds) nor reaches the caller while the route's other deployments can
        answer: the next attempt is the same route without the canary.

        With ``on_text`` the answer is streamed: each piece of text goes to ``on_text`` as the
        model produces it. Fallbacks stay possible until the first piece was handed on; a
        call that breaks off after that fails with ``stream_interrupted`` (a second model
        would repeat what the caller already has)."""
        plan: list[tuple[Route, str | None]] = [(decision.route, deployment)]
        if deployment is not None and canary:
            plan.append((decision.route, None))
        plan += [(r, None) for r in decision.fallbacks]
        attempts: list[AttemptFailure] = []
        deadline = time.monotonic() + timeout_s
        emitted = [False]
        sink: TextSink | None = None
        if on_text is not None:
            forward = on_text

            async def sink(text: str) -> None:
                emitted[0] = True
                await forward(text)

        for route, chosen in plan:
            judged_alone = chosen is not None and canary  # failures count for the canary only
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                attempts.append(AttemptFailure(route, "provider_timeout", "DeadlineExceeded", chosen))
                break
            breaker = self.breakers[route]
            if not breaker.allows(time.monotonic()):
                attempts.append(AttemptFailure(route, "provider_error", CIRCUIT_OPEN, chosen))
                continue
            try:
                outcome = await self._call(route, messages, params, remaining, sink, operation, chosen)
            except (ProviderTimeout, WireTimeout) as exc:
                if not judged_alone:
                    breaker.record_failure(time.monotonic())
                attempts.append(AttemptFailure(route, "provider_timeout", type(exc).__name__, chosen))
                if emitted[0]:
                    raise InferenceFailed("stream_interrupted", attempts) from exc
            except Exception as exc:
                if _refused_as_invalid(exc) and not emitted[0]:
                    # The model refused the request itself (a parameter it cannot honour, e.g.
                    # more embedding dimensions than it has): the client's to fix, not an outage —
                    # no breaker failure, no fallback that would only be refused again.
                    attempts.append(AttemptFailure(route, "unsupported_by_route", type(exc).__name__, chosen))
                    raise InferenceFailed("unsupported_by_route", attempts) from exc
                if not judged_alone:
                    breaker.record_failure(time.monotonic())
                attempts.append(AttemptFailure(route, "provider_error", type(exc).__name__, chosen))
                if emitted[0]:
                    raise InferenceFailed("stream_interrupted", attempts) from exc
            else:
                breaker.record_success(outcome.latency_ms)
                if sink is None and params.response_format:
                    outcome = await self._checked(outcome, messages, params, deadline, attempts)
                if route != decision.route:
                    return replace(outcome, fallback_from=decision.route, failed_attempts=tuple(attempts))
                return replace(outcome, failed_attempts=tuple(attempts)) if attempts else outcome
        code: ErrorCode = attempts[-1].code if attempts else "provider_error"
        raise InferenceFailed(code, attempts)

    async def shadow(
        self, deployment: str, messages: list[ChatMessage], params: GenerationParams, timeout_s: float
    ) -> CallOutcome:
        """A mirrored call (issue 17): that deployment only — no fallback, no breaker (its
        failures are the shadow's, not its route's), not streamed."""
        target = self._by_name[deployment]
        try:
            return await self._call(target.route, messages, params, timeout_s, None, "chat", deployment)
        except (ProviderTimeout, WireTimeout) as exc:
            raise InferenceFailed("provider_timeout", [
                AttemptFailure(target.route, "provider_timeout", type(exc).__name__, deployment)]) from exc
        except Exception as exc:
            raise InferenceFailed("provider_error", [
                AttemptFailure(target.route, "provider_error", type(exc).__name__, deployment)]) from exc

    async def _checked(
        self,
        outcome: CallOutcome,
        messages: list[ChatMessage],
        params: GenerationParams,
        deadline: float,
        attempts: list[AttemptFailure],
    ) -> CallOutcome:
        """Structured output: an answer that is not the requested JSON is asked again once on
        the same route, with the reason; still invalid → ``output_schema_violation``."""
        reason = outcome.invalid_output(params.response_format)
        if reason is None:
            return outcome
        reask = [
            *messages,
            ChatMessage(role="assistant", content=outcome.content),
            ChatMessage(role="user", content=REASK.format(reason=reason)),
        ]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InferenceFailed("deadline_exceeded", attempts)
        try:
            again = outcome.plus(await self._call(outcome.route, reask, params, remaining))
        except (ProviderTimeout, WireTimeout) as exc:
            attempts.append(AttemptFailure(outcome.route, "provider_timeout", type(exc).__name__))
            raise InferenceFailed("provider_timeout", attempts) from exc
        except Exception as exc:
            attempts.append(AttemptFailure(outcome.route, "provider_error", type(exc).__name__))
            raise InferenceFailed("provider_error", attempts) from exc
        if again.invalid_output(params.response_format) is not None:
            attempts.append(AttemptFailure(outcome.route, "output_schema_violation", "InvalidStructuredOutput"))
            raise InferenceFailed("output_schema_violation", attempts)
        return again

    async def _call(
        self,
        route: Route,
        messages: list[ChatMessage],
        params: GenerationParams,
        timeout_s: float,
        on_text: TextSink | None = None,
        operation: Operation = "chat",
        chosen: str | None = None,
    ) -> CallOutcome:
        deployment = self._pick(route, chosen)
        call: dict[str, Any] = {
            **self._params[deployment.name],
            "timeout": min(timeout_s, deployment.timeout_s),
            "num_retries": self.num_retries,
        }
        if operation == "embeddings":
            call["input"] = [m.content for m in messages]
            call |= {k: v for k, v in (("dimensions", params.dimensions), ("user", params.user)) if v is not None}
        else:
            call |= {"messages": _wire(messages), **_call_params(params)}
        self._busy[deployment.name] += 1
        try:
            async with self._slots[deployment.name]:
                if not self._traced:
                    return await self._metered(route, deployment, call, messages, on_text)
                with _tracer.start_as_current_span(
                    f"chat {deployment.model}", kind=trace.SpanKind.CLIENT, attributes=_genai_request(deployment, call)
                ) as span:
                    outcome = await self._metered(route, deployment, call, messages, on_text)
                    span.set_attributes({
                        "gen_ai.usage.input_tokens": outcome.prompt_tokens,
                        "gen_ai.usage.output_tokens": outcome.completion_tokens,
                        "gen_ai.response.finish_reasons": [outcome.finish_reason],
                        "stellwerk.route": route,
                    })
                    return outcome
        finally:
            self._busy[deployment.name] -= 1

    async def _metered(
        self,
        route: Route,
        deployment: Deployment,
        call: dict[str, Any],
        messages: list[ChatMessage],
        on_text: TextSink | None,
    ) -> CallOutcome:
        """The call, charged its share of the deployment's busy time (``GpuClock``)."""
        clock = self._clocks[deployment.name]
        mark = clock.start(time.perf_counter())
        try:
            outcome = await self._complete(route, deployment, call, messages, on_text)
        finally:
            shared_s = clock.finish(mark, time.perf_counter())
        return self._charged(outcome, shared_s)

    async def _complete(
        self,
        route: Route,
        deployment: Deployment,
        call: dict[str, Any],
        messages: list[ChatMessage],
        on_text: TextSink | None,
    ) -> CallOutcome:
        started = time.perf_counter()
        if "input" in call:
            return await self._embed(route, deployment, call, started)
        more: tuple[GeneratedChoice, ...] = ()
        # A streamed call yields one choice: several are read whole (the gateway never
        # streams n > 1 through the mesh).
        streamed = deployment.stream and not call.get("n")
        if deployment.provider in WIRE_PROVIDERS and on_text is not None:
            body = {k: v for k, v in call.items() if k not in _NOT_IN_BODY}
            body["model"] = deployment.model
            answer = await self.wire.stream(deployment.api_base, deployment.api_key, body, call["timeout"], on_text)
            content, finish_reason, usage, ttft = answer.content, answer.finish_reason, answer.usage, answer.ttft_s
            tool_calls = answer.tool_calls
            quota = provider_quota({"additional_headers": answer.headers})
        elif on_text is not None:
            collected = await self._streamed(call, started, on_text)
            content, finish_reason, usage, ttft = (collected.content, collected.finish_reason, collected.usage,
                                                   collected.ttft_s)
            tool_calls, quota = collected.tool_calls, None
        elif deployment.provider in WIRE_PROVIDERS:
            body = {k: v for k, v in call.items() if k not in _NOT_IN_BODY}
            body["model"] = deployment.model
            if streamed:
                body |= {"stream": True, "stream_options": {"include_usage": True}}
            answer = await self.wire.complete(
                deployment.api_base, deployment.api_key, body, call["timeout"], retries=self.num_retries
            )
            content, finish_reason, usage, ttft = answer.content, answer.finish_reason, answer.usage, answer.ttft_s
            tool_calls, more = answer.tool_calls, answer.more_choices
            quota = provider_quota({"additional_headers": answer.headers})
        elif streamed:
            collected = await self._streamed(call, started)
            content, finish_reason, usage, ttft = (collected.content, collected.finish_reason, collected.usage,
                                                   collected.ttft_s)
            tool_calls, quota = collected.tool_calls, None
        else:
            response: Any = await litellm.acompletion(stream=False, **call)
            content, finish_reason, tool_calls, more = answer_choices(response.choices)
            usage, ttft = getattr(response, "usage", None), None
            quota = provider_quota(getattr(response, "_hidden_params", None))
        latency = time.perf_counter() - started
        if usage is not None:
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
        else:
            prompt_tokens = litellm.token_counter(model="gpt-4o", messages=_wire(messages))
            completion_tokens = litellm.token_counter(model="gpt-4o", text=content)
        return CallOutcome(  # GPU time and cost: ``_charged``, from the call's share of the deployment
            route=route,
            deployment=deployment,
            content=content,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            ttft_ms=ttft * 1000 if ttft is not None else None,
            latency_ms=latency * 1000,
            gpu_seconds=0.0,
            cost=price_call(deployment, prompt_tokens, completion_tokens, 0.0),
            fallback_from=None,
            provider_quota=quota,
            tool_calls=tool_calls,
            more_choices=more,
        )

    async def _embed(self, route: Route, deployment: Deployment, call: dict[str, Any], started: float) -> CallOutcome:
        """An embeddings call: one vector per input, as base64 float32 (compact on the bus)."""
        if deployment.provider in WIRE_PROVIDERS:
            body = {k: v for k, v in call.items() if k not in _NOT_IN_BODY}
            body["model"] = deployment.model
            answer = await self.wire.embed(deployment.api_base, deployment.api_key, body, call["timeout"],
                                           retries=self.num_retries)
            vectors, prompt_tokens = answer.vectors, answer.prompt_tokens
        else:
            response: Any = await litellm.aembedding(**call)
            vectors = tuple(as_base64(item["embedding"]) for item in response.data)
            usage = getattr(response, "usage", None)
            prompt_tokens = usage.prompt_tokens if usage else sum(
                litellm.token_counter(model="gpt-4o", text=t) for t in call["input"])
        latency = time.perf_counter() - started
        return CallOutcome(  # GPU time and cost: ``_charged``, from the call's share of the deployment
            route=route, deployment=deployment, content="", finish_reason="stop", prompt_tokens=prompt_tokens,
            completion_tokens=0, ttft_ms=None, latency_ms=latency * 1000, gpu_seconds=0.0,
            cost=price_call(deployment, prompt_tokens, 0, 0.0), fallback_from=None, embeddings=vectors,
        )

    async def _streamed(
        self, call: dict[str, Any], started: float, on_text: TextSink | None = None
    ) -> Collected:
        stream = await litellm.acompletion(stream=True, stream_options={"include_usage": True}, **call)
        return await collect_stream(stream, started, on_text)
