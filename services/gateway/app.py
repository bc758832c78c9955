"""Gateway contract.

HTTP      POST /v1/chat/completions (plain and SSE), POST /v1/embeddings, POST /v1/responses,
          GET /v1/models, /healthz, /readyz, /metrics
publishes stellwerk.v1.request.submitted, stellwerk.v1.audit.gateway
awaits    stellwerk.v1.result.<request_id>
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from nats.js import JetStreamContext
from opentelemetry import trace
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import ValidationError

from schemas.events import (
    AuditEvent,
    ChatMessage,
    GenerationParams,
    RequestAttributes,
    RequestResult,
    RequestSubmitted,
    deadline_in,
    envelope_fields,
    new_id,
)
from schemas.streams import CONSUMERS, DLP_INPUT
from schemas.vocabulary import UsecaseClass
from services.gateway import errors as gateway_errors
from services.gateway import limits
from services.gateway.attributes import InvalidAttribute, resolve_attributes, resolve_pseudonymize
from services.gateway.guard import VERIFIED_TOKEN, GatewayGuard, identity_lookup
from services.gateway.health import RETRY_AFTER_S, BusHealth
from services.gateway.openai_api import (
    ChatCompletionRequest,
    EmbeddingsRequest,
    completion_body,
    embeddings_body,
    error_body,
    mesh_messages,
    mesh_params,
    message_texts,
    stream_chunks,
)
from services.gateway.ratelimit import check as check_rate_limits
from services.gateway.ratelimit import return_leases
from services.gateway.responses_api import (
    ResponsesRequestError,
    ResponsesStream,
    chat_request_from_responses,
    response_from_chat,
    responses_param,
    sse,
)
from services.gateway.settings import GatewayConfig
from services.gateway.streaming import LiveStream, sse_events
from services.kernel.end_user import end_user_hash
from services.runtime.bus import connect, ensure_topology
from services.runtime.errors import HTTP_STATUS, fixed_message
from services.runtime.keys import KeyRing, KeyStore
from services.runtime.oidc import (
    IdentityNotMapped,
    IdpUnavailable,
    OidcVerifier,
    TokenRejected,
    looks_like_jwt,
)
from services.runtime.requests import BusUnavailable, DeadlineExceeded
from services.runtime.requests import RequestClient as StellwerkClient
from services.runtime.settings import ApiKey, MeshSettings, PlatformConfig, load_config

TIMEOUT_HEADER = "x-stellwerk-timeout"
END_USER_HEADER = "x-stellwerk-end-user"  # issue 14: keys with forward_end_user only
tracer = trace.get_tracer("stellwerk.gateway")


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stellwerk_gateway_requests",
            "Chat requests by outcome",
            ["status", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "stellwerk_gateway_request_seconds",
            "End-to-end request latency",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.ttft = Histogram(
            "stellwerk_gateway_time_to_first_token_seconds",
            "Streamed requests: time from submission to the first screened text sent to the caller",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.itl = Histogram(
            "stellwerk_gateway_inter_token_seconds",
            "Streamed requests: time between consecutive pieces of screened text sent to the caller",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.in_flight = Gauge("stellwerk_gateway_in_flight", "Requests in flight", registry=self.registry)
        consumer_labels = ["stream", "consumer"]
        self.consumer_pending = Gauge(
            "stellwerk_consumer_pending", "Messages not yet delivered", consumer_labels, registry=self.registry
        )
        self.consumer_ack_pending = Gauge(
            "stellwerk_consumer_ack_pending", "Messages delivered, not yet acknowledged", consumer_labels,
            registry=self.registry,
        )
        self.consumer_redelivered = Gauge(
            "stellwerk_consumer_redelivered", "Messages redelivered at least once", consumer_labels,
            registry=self.registry,
        )
        self.backlog = Gauge(
            "stellwerk_gateway_pipeline_backlog", "Requests waiting for DLP input screening", registry=self.registry
        )
        self.key_in_flight = Gauge(
            "stellwerk_gateway_key_in_flight", "Requests in flight per API key, until their last byte is sent",
            ["api_key"], registry=self.registry,
        )


def create_app(settings: MeshSettings | None = None) -> FastAPI:
    settings = settings or MeshSettings()
    config: PlatformConfig = load_config(settings.config_file)
    gateway_config = GatewayConfig.load(settings.config_file)  # this service's own sections
    metrics = GatewayMetrics()
    slots = asyncio.Semaphore(config.max_in_flight_per_gateway)
    state: dict[str, Any] = {}
    backlog = [0]  # requests waiting for the first pipeline stage, refreshed in the background
    bus = BusHealth(metrics.registry)  # issue 19: readiness, fail fast, the disconnected gauge
    # Issue 14: keys as data (KV ``keys``, watched); the config's keys seed it until it is read.
    keyring = KeyRing(config.api_keys)
    oidc = OidcVerifier(config.oidc) if config.oidc is not None else None  # issue 14: SSO tokens
    end_user_key = config.end_user_key()  # a reference that does not resolve stops the gateway here

    async def watch_backlog(js: JetStreamContext) -> None:
        # Also exports every consumer's queue, so dashboards need no separate NATS exporter.
        while True:
            for consumer in CONSUMERS:
                if not bus.connected:  # nothing to ask while the bus is away
                    break
                try:
                    info = await js.consumer_info(consumer.stream, consumer.durable)
                except Exception:  # noqa: BLE001 - no reading is no reason to shed load
                    continue
                bus.jetstream_answered()
                labels = (consumer.stream, consumer.durable)
                metrics.consumer_pending.labels(*labels).set(info.num_pending or 0)
                metrics.consumer_ack_pending.labels(*labels).set(info.num_ack_pending or 0)
                metrics.consumer_redelivered.labels(*labels).set(info.num_redelivered or 0)
                if consumer is DLP_INPUT:
                    backlog[0] = (info.num_pending or 0) + (info.num_ack_pending or 0)
            metrics.backlog.set(backlog[0])
            await asyncio.sleep(0.5)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nc = await connect(settings.nats_url, "stellwerk-gateway",
                           disconnected_cb=bus.on_disconnected, reconnected_cb=bus.on_reconnected)
        bus.attach(nc)
        await ensure_topology(nc.jetstream())
        state["client"] = StellwerkClient(nc)
        # Short JetStream timeouts where the gateway asks on a caller's behalf or in a loop:
        # a bus that went away mid-call costs a caller two seconds, not five. (A disconnected
        # bus is answered at once by the connection check; 0.75 s misfired under heavy load.)
        state["limiter_js"] = nc.jetstream(timeout=2.0)
        keystore = await KeyStore.open(nc.jetstream())
        await keystore.import_keys(config.api_keys)  # the bootstrap set; idempotent
        keys_watch = asyncio.create_task(keyring.watch(keystore.kv))
        await asyncio.wait_for(keyring.loaded.wait(), 10)
        watcher = asyncio.create_task(watch_backlog(nc.jetstream(timeout=1.0)))
        yield
        watcher.cancel()
        keys_watch.cancel()
        await return_leases(state["limiter_js"])  # what this replica reserved goes to the others
        await nc.drain()

    # No unauthenticated Swagger UI, ReDoc or schema (issue 14): ``gateway_openapi`` serves the
    # schema at /openapi.json to callers with a valid key or token, and nothing else.
    app = FastAPI(title="Stellwerk gateway", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)

    def error(
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        retry_after: float | None = None,
        param: str | None = None,
        **extra: Any,
    ) -> JSONResponse:
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else None
        if retry_after is not None:
            extra["retry_after_s"] = retry_after
        metrics.requests.labels(status=str(status), code=code).inc()
        return JSONResponse(
            error_body(code, message, request_id=request_id, extra=extra, param=param, status=status),
            status,
            headers=headers,
        )

    # --- input hardening (issue 18): OpenAI-shaped errors, limits before any handler -------
    def count_error(status: int, code: str) -> None:
        metrics.requests.labels(status=str(status), code=code).inc()

    gateway_errors.install(app, count_error)
    app.add_middleware(
        GatewayGuard,
        limits=gateway_config.gateway_limits,
        key_of=identity_lookup(keyring.limit_id_of, oidc),  # OIDC callers too (issue 14)
        on_error=count_error,
        on_in_flight=lambda key_id, count: metrics.key_in_flight.labels(api_key=key_id).set(count),
    )

    def refused(violation: limits.Violation) -> JSONResponse:
        return error(violation.status, violation.code, violation.message, param=violation.param)
    # --- end input hardening ---------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process serves HTTP (a lost bus is /readyz's business)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: NATS connected and JetStream answering; else 503 naming what is missing."""
        missing = bus.missing()
        if missing:
            return JSONResponse({"status": "unavailable", "missing": missing,
                                 "disconnected_s": round(bus.disconnected_s(), 3)}, 503)
        return JSONResponse({"status": "ok"})

    def bus_unavailable(request_id: str | None = None) -> JSONResponse:
        return error(503, "bus_unavailable", fixed_message("bus_unavailable"), request_id, retry_after=RETRY_AFTER_S)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if config.gateway_openapi:

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(request: Request) -> Any:
            if isinstance(refusal := await authenticate(request), JSONResponse):
                return refusal
            return app.openapi()

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        if isinstance(refusal := await authenticate(request), JSONResponse):
            return refusal
        # "stellwerk" lets the policy choose; every route may be named instead (the policy
        # still decides whether this request may have it: 403 route_not_allowed if not).
        return {
            "object": "list",
            "data": [
                {"id": "stellwerk", "object": "model", "owned_by": "stellwerk", "created": 0},
                *(
                    {
                        "id": r.name,
                        "object": "model",
                        "owned_by": "stellwerk",
                        "created": 0,
                        "stellwerk": {
                            "class": r.route_class,
                            "locality": r.locality,
                            "capabilities": list(r.capabilities),
                            "context_tokens": r.context_tokens,
                        },
                    }
                    for r in sorted(config.routes, key=lambda r: r.name)
                ),
                *(
                    {"id": alias, "object": "model", "owned_by": "stellwerk", "created": 0,
                     "stellwerk": {"alias_of": target}}
                    for alias, target in sorted(config.model_aliases.items())
                ),
            ],
        }

    @dataclass
    class Admission:
        """A request past authentication, limits and capacity checks, ready to be submitted."""

        key: ApiKey
        usecase: UsecaseClass
        attributes: RequestAttributes
        pseudonymize: bool
        timeout_s: float
        correlation_id: str | None
        prompt_tokens: int
        max_tokens: int | None
        max_tokens_param: str
        end_user: str | None = None  # the end user, hashed per tenant (issue 14)

        def submitted(self, messages: list[ChatMessage], params: GenerationParams) -> RequestSubmitted:
            request_id = new_id()
            params.user = self.end_user  # also sent to the provider as ``user``: the pseudonym only
            return RequestSubmitted(
                request_id=request_id,
                correlation_id=self.correlation_id or request_id,
                deadline=deadline_in(self.timeout_s),
                tenant=self.key.tenant,
                business_unit=self.key.business_unit,
                user_role=self.key.user_role,
                usecase_class=self.usecase,
                end_user=self.end_user,
                messages=messages,
                attributes=self.attributes,
                params=params,
                pseudonymize=self.pseudonymize,
            )

    def pseudonym(tenant: str, user: str) -> str:
        return end_user_hash(tenant, user, end_user_key)

    async def authenticate(request: Request) -> ApiKey | JSONResponse:
        """The caller: an API key of the ``keys`` bucket, or (with ``oidc`` configured) a bearer
        token of the issuer, its claims mapped to what a key grants (docs/identity.md)."""
        presented = _bearer(request)
        if oidc is not None and looks_like_jwt(presented):
            verified = VERIFIED_TOKEN.get()
            try:
                # The guard verified this request's token already; otherwise verify it now.
                key, claims = verified[1] if verified and verified[0] == presented else await oidc.authenticate(presented)
            except TokenRejected as exc:
                return error(401, "invalid_api_key", f"Invalid bearer token: {exc.reason}.", reason=exc.reason)
            except IdentityNotMapped as exc:
                return error(403, "identity_not_mapped", f"The token's claims give no {exc.field}; see the "
                             "gateway's oidc.claims and oidc.defaults.", field=exc.field)
            except IdpUnavailable:
                return error(503, "idp_unavailable", "The identity provider's keys could not be fetched; "
                             "retry shortly.", retry_after=2)
            # The token's subject is the person: the end user unless the caller names another.
            request.state.oidc_subject = str(claims[oidc.config.claims.subject])
            return key
        found = keyring.lookup(presented)
        if found is None:
            return error(401, "invalid_api_key", "Incorrect API key provided.")
        return found

    async def admit(
        request: Request,
        texts: list[str],
        metadata: dict[str, Any] | None,
        max_tokens: int | None = None,
        max_tokens_param: str = "max_tokens",
        user: str | None = None,
    ) -> Admission | JSONResponse:
        """What every model endpoint checks before it submits: key, limits, attributes,
        deadline, capacity and the bus — each refusal OpenAI-shaped."""
        key = await authenticate(request)
        if isinstance(key, JSONResponse):
            return key
        # --- input limits (issue 18) -----------------------------------------------------------
        prompt_tokens = limits.estimate_prompt_tokens(texts)
        violation = (
            limits.check_messages(texts, gateway_config.gateway_limits)
            or limits.check_metadata(metadata, gateway_config.gateway_limits)
            or limits.check_context(prompt_tokens, max_tokens, max_tokens_param, gateway_config.gateway_limits)
        )
        if violation is not None:
            return refused(violation)
        correlation_id = request.headers.get("x-correlation-id")
        if correlation_id is not None and not limits.valid_identifier(correlation_id):
            return error(400, "invalid_request", "Invalid X-Correlation-Id header: 1 to 128 characters of "
                         "A-Z a-z 0-9 _ . : @ / < > = + -.", param="x-correlation-id")
        # --- end input limits ------------------------------------------------------------------
        # Who asked (issue 14), most trusted first: the application's assertion (keys with
        # forward_end_user), the OIDC token's subject, the body's ``user``/``safety_identifier``.
        end_user: str | None = None
        subject: str | None = getattr(request.state, "oidc_subject", None)
        if subject is not None:
            end_user = pseudonym(key.tenant, subject)
        elif user:
            end_user = pseudonym(key.tenant, user)
        forwarded = request.headers.get(END_USER_HEADER)
        if forwarded is not None:
            if not key.forward_end_user:
                return error(403, "end_user_not_allowed", "This API key may not forward an end user: "
                             "X-Stellwerk-End-User needs a key with forward_end_user.", param=END_USER_HEADER)
            forwarded = forwarded.strip()
            if not 1 <= len(forwarded) <= 256:
                return error(400, "invalid_request", "Invalid X-Stellwerk-End-User header: 1 to 256 characters.",
                             param=END_USER_HEADER)
            end_user = pseudonym(key.tenant, forwarded)
        try:
            usecase, attributes = resolve_attributes(key, request.headers, metadata or {})
            pseudonymize = resolve_pseudonymize(request.headers, metadata or {}, key.pseudonymize)
        except InvalidAttribute as exc:
            return error(400, "invalid_request", f"Invalid value for request attribute '{exc.field}'.")
        timeout_s = config.request_timeout_s
        if TIMEOUT_HEADER in request.headers:
            try:
                timeout_s = min(limits.positive_seconds(request.headers[TIMEOUT_HEADER]), timeout_s)
            except ValueError:
                return error(400, "invalid_request", f"Invalid {TIMEOUT_HEADER} header.", param=TIMEOUT_HEADER)
        if slots.locked():
            return error(503, "overloaded", "The gateway is at capacity; retry shortly.", retry_after=1)
        if backlog[0] > config.max_pipeline_backlog:
            return error(503, "overloaded", "The pipeline is backed up; retry shortly.", retry_after=2)
        if not bus.connected:  # issue 19: fail fast, never queue a request behind a reconnect
            return bus_unavailable()
        return Admission(key, usecase, attributes, pseudonymize, timeout_s, correlation_id, prompt_tokens,
                         max_tokens, max_tokens_param, end_user)

    def unknown_model(model: str | None, attributes: RequestAttributes) -> JSONResponse | None:
        """Issue 13: ``model`` may name a route, a class or an alias; the policy still decides
        whether the request may have it. A name that means nothing here is a 404, as at OpenAI."""
        if model is None or model == "stellwerk":
            return None
        if not config.knows_model(model):
            return error(404, "model_not_found", f"The model `{model}` does not exist or you do not have "
                         "access to it; GET /v1/models lists the models of this gateway.", param="model")
        attributes.requested_model = config.resolve_model(model)
        return None

    endpoints = {name for r in config.routes for name in (r.name, r.route_class)}

    async def rate_limited(admission: Admission, submitted: RequestSubmitted) -> JSONResponse | None:
        """Rate limits (issue 5, FinOps): per key, team, end user and endpoint, shared via KV.
        The endpoint is what ``model`` resolved to (a route or class), never the raw string."""
        endpoint = limits.rate_limit_endpoint(submitted.attributes.requested_model, endpoints)
        refusal = await check_rate_limits(
            state["limiter_js"], gateway_config.rate_limits, admission.key, submitted, endpoint
        )
        if refusal is None:
            return None
        if refusal.code == "overloaded" and not bus.connected:
            return bus_unavailable()  # the limiter failed because the bus went away
        if refusal.too_large:  # waiting cannot help: not a 429 (issue 18)
            return refused(limits.oversized_for_rate_limit(admission.prompt_tokens, admission.max_tokens,
                                                           admission.max_tokens_param, refusal.limit))
        return error(refusal.status, refusal.code, refusal.message, submitted.request_id,
                     retry_after=refusal.retry_after_s, limit=refusal.name)

    def received(admission: Admission, submitted: RequestSubmitted, **details: str) -> None:
        """The gateway's record travels on the request's trail and is written with the stage
        that ends the request: one audit write per request."""
        attributes = submitted.attributes
        submitted.trail.append(
            AuditEvent(
                **envelope_fields(submitted),
                stage="gateway",
                outcome="received",
                data_sensitivity=attributes.data_sensitivity,
                attributes={
                    "api_key": admission.key.key_id,
                    "quality_tier": attributes.quality_tier,
                    "budget_class": attributes.budget_class,
                    **({"end_user": submitted.end_user} if submitted.end_user else {}),
                    **details,
                },
            )
        )

    async def answered(submitted: RequestSubmitted, span: str) -> RequestResult | JSONResponse:
        """Submit and wait for the result, holding one of the gateway's slots."""
        async with slots:
            metrics.in_flight.inc()
            try:
                with (
                    metrics.latency.time(),
                    tracer.start_as_current_span(span, attributes={"stellwerk.request_id": submitted.request_id}),
                ):
                    result: RequestResult = await state["client"].submit(submitted)
                    return result
            except BusUnavailable:
                return bus_unavailable(submitted.request_id)
            except DeadlineExceeded:
                return error(504, "deadline_exceeded", fixed_message("deadline_exceeded"), submitted.request_id)
            finally:
                metrics.in_flight.dec()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        return await chat(body, request)

    @app.post("/v1/responses")
    async def responses(body: dict[str, Any], request: Request) -> Any:
        """The Responses API, mapped onto the chat path (docs/responses.md): the same
        screening, routing and accounting; what cannot be governed equally is refused by name."""
        try:
            chat_body = ChatCompletionRequest.model_validate(chat_request_from_responses(body))
        except ResponsesRequestError as exc:
            count_error(400, exc.code)
            return JSONResponse(error_body(exc.code, exc.message, param=exc.param, status=400), 400)
        except ValidationError as exc:
            status, code, response = gateway_errors.validation_response(
                RequestValidationError([{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]))
            count_error(status, code)
            return as_responses_error(response)
        answer = await chat(chat_body, request)
        if isinstance(answer, StreamingResponse):
            return StreamingResponse(responses_events(answer.body_iterator, body), media_type="text/event-stream",
                                     headers={k: v for k, v in answer.headers.items() if k.startswith("x-stellwerk")})
        if answer.status_code != 200:
            return as_responses_error(answer)
        return JSONResponse(response_from_chat(json.loads(bytes(answer.body)), body),
                            headers={k: v for k, v in answer.headers.items() if k.startswith("x-stellwerk")})

    @app.api_route("/v1/responses/{response_id}", methods=["GET", "DELETE"])
    @app.api_route("/v1/responses/{response_id}/input_items", methods=["GET"])
    @app.post("/v1/responses/{response_id}/cancel")
    async def stored_response(response_id: str) -> JSONResponse:
        # Data minimisation: no answer is kept after it was delivered, so there is nothing to
        # retrieve, list, cancel or delete (docs/responses.md).
        return error(404, "response_not_stored", "Stellwerk stores no responses: retrieve, input_items, cancel "
                     "and delete have nothing to act on.", param="response_id")

    async def chat(body: ChatCompletionRequest, request: Request) -> Any:
        admission = await admit(request, message_texts(body), body.metadata, body.max_completion_tokens or body.max_tokens,
                                body.max_tokens_param, body.end_user)
        if isinstance(admission, JSONResponse):
            return admission
        # What the request needs from a route (issue 13): the policy only picks routes that
        # declare these capabilities.
        admission.attributes.need_tools = admission.attributes.need_tools or bool(body.tools)
        admission.attributes.need_json_schema = body.json_output
        refusal = unknown_model(body.model, admission.attributes)
        if refusal is not None:
            return refusal
        submitted = admission.submitted(mesh_messages(body), mesh_params(body))
        if (refusal := await rate_limited(admission, submitted)) is not None:
            return refusal
        # Answers with several choices or a schema are screened (and validated) whole, then
        # streamed to the caller as chunks: a JSON document is only valid once complete. Text
        # beside tool calls streams as screened; the calls follow whole at the end.
        submitted.stream = bool(body.stream) and not (body.n or 1) > 1 and not body.json_output
        received(
            admission, submitted,
            stream=str(body.stream).lower(),
            **({"choices": str(body.n)} if body.n and body.n > 1 else {}),
            **({"tools": str(len(body.tools))} if body.tools else {}),
            **({"response_format": body.response_format.type} if body.json_output and body.response_format else {}),
        )
        if submitted.stream:
            return await stream_live(state["client"], submitted, body, request)
        result = await answered(submitted, "stellwerk.gateway.chat")
        if isinstance(result, JSONResponse):
            return result
        return _respond(result, body, metrics, error)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingsRequest, request: Request) -> Any:
        inputs = body.texts()
        admission = await admit(request, inputs, None, user=body.user)
        if isinstance(admission, JSONResponse):
            return admission
        admission.attributes.operation = "embeddings"
        refusal = unknown_model(body.model, admission.attributes)
        if refusal is not None:
            return refusal
        params = GenerationParams(dimensions=body.dimensions)
        submitted = admission.submitted([ChatMessage(role="user", content=text) for text in inputs], params)
        if (refusal := await rate_limited(admission, submitted)) is not None:
            return refusal
        received(admission, submitted, operation="embeddings", inputs=str(len(inputs)))
        result = await answered(submitted, "stellwerk.gateway.embeddings")
        if isinstance(result, JSONResponse):
            return result
        if result.status != "ok" or result.error is not None:
            return _respond(result, None, metrics, error)
        metrics.requests.labels(status="200", code="ok").inc()
        return JSONResponse(embeddings_body(result, body.encoding_format),
                            headers={"x-stellwerk-request-id": result.request_id})

    async def stream_live(
        client: StellwerkClient, submitted: RequestSubmitted, body: ChatCompletionRequest, request: Request
    ) -> Any:
        """Issue 12: the caller reads the answer as output screening releases it."""
        request_id = submitted.request_id
        await slots.acquire()  # held until the stream ends, like a plain request's
        metrics.in_flight.inc()
        started = time.perf_counter()
        live = LiveStream(client.nc, submitted, config.stream_idle_timeout_s)

        def done() -> None:
            slots.release()
            metrics.in_flight.dec()
            metrics.latency.observe(time.perf_counter() - started)

        try:
            await live.subscribe()
            await client.publish_request(submitted)
            first = await live.next()
        except DeadlineExceeded:
            first = None
        except BusUnavailable:
            await live.close()
            done()
            return bus_unavailable(request_id)
        except BaseException:
            await live.close()
            done()
            raise
        if first is None or (first.kind == "result" and first.result is not None and first.result.status != "ok"):
            await live.close()
            done()
            if first is None or first.result is None:
                return error(504, "deadline_exceeded", fixed_message("deadline_exceeded"), request_id)
            return _respond(first.result, body, metrics, error)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for data in sse_events(
                    live, first, include_usage, metrics.ttft.observe, metrics.itl.observe, request.is_disconnected
                ):
                    yield data
            finally:
                done()

        metrics.requests.labels(status="200", code="ok").inc()
        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"x-stellwerk-request-id": request_id}
        )

    return app


def as_responses_error(response: JSONResponse) -> JSONResponse:
    """A chat error as the Responses API names it: the same shape, the parameter renamed."""
    payload = json.loads(bytes(response.body))
    error = payload.get("error") or {}
    error["param"] = responses_param(error.get("param"))
    headers = {k: v for k, v in response.headers.items() if k.lower() in ("retry-after",)}
    return JSONResponse(payload, response.status_code, headers=headers)


async def responses_events(chunks: AsyncIterable[Any], request: dict[str, Any]) -> AsyncIterator[bytes]:
    """Chat SSE (``data: {chunk}``) in, Responses SSE (``event: …``) out."""
    stream = ResponsesStream(request)
    buffer = b""
    async for piece in chunks:
        buffer += piece if isinstance(piece, bytes) else str(piece).encode()
        while b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            data = frame.removeprefix(b"data: ").strip()
            if not data or data == b"[DONE]":
                continue
            for event in stream.feed(json.loads(data)):
                yield sse(event)
    for event in stream.finish():
        yield sse(event)


def _respond(result: RequestResult, body: ChatCompletionRequest | None, metrics: GatewayMetrics, error: Any) -> Any:
    if result.status != "ok" or result.error is not None:
        assert result.error is not None
        extra: dict[str, Any] = {"stage": result.error.stage}
        if result.error.rule_id:
            extra["rule_id"] = result.error.rule_id
        return error(
            HTTP_STATUS[result.error.code],
            result.error.code,
            result.error.message,
            result.request_id,
            retry_after=result.error.retry_after_s,
            **extra,
        )
    metrics.requests.labels(status="200", code="ok").inc()
    headers = {"x-stellwerk-request-id": result.request_id}
    if result.routing:
        headers["x-stellwerk-route"] = result.routing.route
    if body is None or not body.stream:
        return JSONResponse(completion_body(result), headers=headers)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def sse() -> AsyncIterator[bytes]:
        for chunk in stream_chunks(result, include_usage):
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)


def _bearer(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.headers.get("api-key", "")  # Azure OpenAI clients send this header
