"""The console's pages (issue 15). Server-rendered HTML forms: every page works without
JavaScript; the approvals page refreshes itself (``<meta refresh>``) so a decision by
another approver shows up within seconds."""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, get_args

import msgspec
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from schemas.streams import KV_KEYS
from schemas.vocabulary import (
    BudgetClass,
    ContextLengthBucket,
    DataSensitivity,
    Operation,
    QualityTier,
    UsecaseClass,
)
from services.finops.settings import FinOpsConfig
from services.router.decision import (
    RouterSettings,
    RoutingEngine,
    RoutingInput,
    RoutingUnavailable,
    route_catalogue,
)
from services.runtime.bus import connect
from services.runtime.keys import KeyChangeRefused, KeyRing, KeyStore
from services.runtime.settings import MeshSettings, load_config
from stellwerk.console import data, guard_reviews
from stellwerk.console.session import CONSOLE_ROLES, COOKIE, SESSION_S, Operator, Sessions
from stellwerk.console.sso import STATE_COOKIE, STATE_PURPOSE, STATE_TTL_S, ConsoleSso, SsoRefused

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
# Reasons are codes, not prose: they are audited, and the audit holds no free text.
DENY_REASONS = ("customer_request", "wrong_target", "policy_violation", "not_needed", "suspicious")


def create_console(settings: MeshSettings | None = None) -> FastAPI:
    """The console app; one NATS connection, the key ring, the routing policy read locally."""
    settings = settings or MeshSettings()
    config = load_config(settings.config_file)
    finops = FinOpsConfig.load(settings.config_file)  # price table and budgets, for the budgets page
    secret = os.environ.get("STELLWERK_CONSOLE_SECRET")
    sessions = Sessions(secret.encode() if secret else None)
    state: dict[str, Any] = {}
    # Single sign-on with the gateway's issuer, when the config names the console as a client.
    sso = ConsoleSso(config.oidc, config.console_oidc) if config.oidc and config.console_oidc else None

    def router_engine() -> RoutingEngine:
        # The routing policy as the routers run it (explain evaluates it here, as
        # `stellwerk route explain` does); built on first use.
        if "engine" not in state:
            state["engine"] = RoutingEngine(RouterSettings())
        engine: RoutingEngine = state["engine"]
        return engine

    # The same keys as the gateway: the config's bootstrap set, then the KV bucket (issue 14),
    # followed live — a revoked operator key stops opening the console within seconds.
    ring = KeyRing(config.api_keys)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nc = await connect(settings.nats_url, "stellwerk-console")
        state["nc"] = nc
        watcher = asyncio.create_task(ring.watch(await nc.jetstream().key_value(KV_KEYS)))
        yield
        watcher.cancel()
        await nc.drain()

    app = FastAPI(title="Stellwerk console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def page(request: Request, template: str, operator: Operator | None, **context: Any) -> HTMLResponse:
        csrf = sessions.csrf(request.cookies.get(COOKIE))
        return TEMPLATES.TemplateResponse(request, template, {"operator": operator, "csrf": csrf,
                                                              "sso": sso is not None, **context},
                                          headers={"Cache-Control": "no-store"})

    def acting(request: Request, page_name: str, csrf: str) -> Operator | Response:
        """``who`` for a form post: also the session's own form token (CSRF)."""
        operator = who(request, page_name)
        if isinstance(operator, Operator) and not sessions.csrf_ok(request.cookies.get(COOKIE), csrf):
            return HTMLResponse("The form is stale or from another site; reload the page.", 403)
        return operator

    def who(request: Request, page_name: str) -> Operator | Response:
        operator = sessions.read(request.cookies.get(COOKIE))
        if operator is None:
            return RedirectResponse(f"/console/login?next={request.url.path}", 303)
        if not operator.may(page_name):
            return page(request, "forbidden.html", operator, page_name=page_name)
        return operator

    @app.get("/console/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/console/") -> HTMLResponse:
        return page(request, "login.html", None, next=next, error=None)

    @app.post("/console/login")
    async def login(request: Request, api_key: Annotated[str, Form()],
                    next: Annotated[str, Form()] = "/console/") -> Response:
        key = ring.lookup(api_key.strip())
        if key is None or key.user_role not in CONSOLE_ROLES:
            return page(request, "login.html", None, next=next,
                        error="This key does not open the console (it needs an operator, approver, dpo or "
                              "budget_owner role).")
        operator = Operator(key_id=key.key_id, role=key.user_role, tenant=key.tenant, credential=api_key.strip())
        target = next if next.startswith("/console/") else "/console/"
        response = RedirectResponse(target, 303)
        response.set_cookie(COOKIE, sessions.issue(operator), max_age=SESSION_S, httponly=True, samesite="strict",
                            secure=secure(request))
        return response

    def secure(request: Request) -> bool:
        return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"

    @app.get("/console/login/oidc")
    async def login_oidc(request: Request, next: str = "/console/") -> Response:
        if sso is None:
            return RedirectResponse("/console/login", 303)
        try:
            url, kept = await sso.start(sso.redirect_uri(str(request.base_url)),
                                        next if next.startswith("/console/") else "/console/")
        except SsoRefused as exc:
            return page(request, "login.html", None, next=next, error=str(exc))
        response = RedirectResponse(url, 303)
        # Lax, not Strict: the provider's redirect back is a navigation from another site.
        response.set_cookie(STATE_COOKIE, sessions.seal(STATE_PURPOSE, kept, STATE_TTL_S), max_age=STATE_TTL_S,
                            path="/console/login/oidc", httponly=True, samesite="lax", secure=secure(request))
        return response

    @app.get("/console/login/oidc/callback", response_class=HTMLResponse)
    async def login_oidc_callback(request: Request, code: str = "", state: str = "", error: str = "") -> Response:
        if sso is None:
            return RedirectResponse("/console/login", 303)
        kept = sessions.unseal(STATE_PURPOSE, request.cookies.get(STATE_COOKIE))
        message: str | None = None
        operator: Operator | None = None
        if error:
            message = "The identity provider did not sign you in."
        elif kept is None or not state or not hmac.compare_digest(kept["state"], state) or not code:
            message = "The sign-in could not be matched to this browser (state); start it again."
        else:
            try:
                operator = await sso.finish(code, kept, sso.redirect_uri(str(request.base_url)))
            except SsoRefused as exc:
                message = str(exc)
        if operator is None:
            response: Response = page(request, "login.html", None, next="/console/", error=message)
            response.status_code = 403
        else:
            # A page, not a redirect: the session cookie is SameSite=Strict, and a redirect chain
            # that began at the provider would not carry it; this page's own navigation does.
            target = (kept or {}).get("next", "/console/")
            response = page(request, "signed_in.html", None, target=target)
            response.set_cookie(COOKIE, sessions.issue(operator), max_age=SESSION_S, httponly=True,
                                samesite="strict", secure=secure(request))
        response.delete_cookie(STATE_COOKIE, path="/console/login/oidc")
        return response

    @app.post("/console/logout")
    async def logout() -> Response:
        response = RedirectResponse("/console/login", 303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/console/", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        operator = sessions.read(request.cookies.get(COOKIE))
        if operator is None:
            return RedirectResponse("/console/login", 303)
        return page(request, "home.html", operator)

    @app.get("/console/approvals", response_class=HTMLResponse)
    async def approvals(request: Request, notice: str | None = None) -> Response:
        operator = who(request, "approvals")
        if isinstance(operator, Response):
            return operator
        # Approvers see their own tenant's calls; operators every tenant's.
        tenant = None if operator.role == "operator" else operator.tenant
        pending = await data.pending_approvals(state["nc"].jetstream(), tenant)
        return page(request, "approvals.html", operator, pending=pending, reasons=DENY_REASONS, notice=notice)

    @app.post("/console/approvals/{approval_id}")
    async def decide(request: Request, approval_id: str, decision: Annotated[str, Form()],
                     csrf: Annotated[str, Form()] = "", reason: Annotated[str, Form()] = "") -> Response:
        operator = acting(request, "decide", csrf)
        if isinstance(operator, Response):
            return operator
        approve = decision == "approve"
        if not approve and reason not in DENY_REASONS:
            return RedirectResponse("/console/approvals?notice=reason_required", 303)
        # Issue 14: the sign-in's credential goes with the decision; the tool gateway verifies it.
        reply = await data.decide(state["nc"], approval_id, approve, operator.key_id,
                                  reason if reason in DENY_REASONS else None, operator.tenant, operator.credential)
        if reply.accepted and reply.approvals_missing:
            notice = "first_approval"  # four eyes: another approver decides next
        else:
            notice = ("approved" if approve else "denied") if reply.accepted else (reply.reason or "not_accepted")
        return RedirectResponse(f"/console/approvals?notice={notice}", 303)

    guard_reviews.register(app, state, who, acting, page)  # issue 16: its own module and template

    @app.get("/console/requests", response_class=HTMLResponse)
    async def requests(request: Request, request_id: str = "", since_hours: float = 24,
                       tenant: str = "") -> Response:
        operator = who(request, "requests")
        if isinstance(operator, Response):
            return operator
        found = None
        if request_id:
            found = await data.request_story(state["nc"].jetstream(), request_id.strip(), since_hours,
                                             tenant or None)
        return page(request, "requests.html", operator, request_id=request_id, since_hours=since_hours,
                    tenant=tenant, story=found)

    @app.get("/console/budgets", response_class=HTMLResponse)
    async def budgets(request: Request) -> Response:
        operator = who(request, "budgets")
        if isinstance(operator, Response):
            return operator
        from services.finops.cli import _report  # the report `stellwerk finops report` prints
        from services.finops.report import parse_period

        js = state["nc"].jetstream()
        spend = await data.spend(js, config)
        from zoneinfo import ZoneInfo

        from schemas.events import utcnow
        month = parse_period("month", utcnow(), ZoneInfo(config.finops_timezone))
        report = await _report(settings.nats_url, config, finops, "route", month)
        days = spend.days
        return page(request, "budgets.html", operator, report=report, spend=spend, currency=config.currency,
                    cost_chart=data.svg_bars([spend.cost_by_day.get(d, 0.0) for d in days], "Spend per day"),
                    token_chart=data.svg_bars([float(spend.tokens_by_day.get(d, 0)) for d in days], "Tokens per day"))

    @app.get("/console/dlp", response_class=HTMLResponse)
    async def playground(request: Request) -> Response:
        operator = who(request, "dlp")
        if isinstance(operator, Response):
            return operator
        return page(request, "dlp.html", operator, text="", reply=None, direction="input", usecase="chat",
                    usecases=get_args(UsecaseClass))

    @app.post("/console/dlp", response_class=HTMLResponse)
    async def playground_check(request: Request, text: Annotated[str, Form()],
                               csrf: Annotated[str, Form()] = "",
                               direction: Annotated[str, Form()] = "input",
                               usecase: Annotated[str, Form()] = "chat") -> Response:
        operator = acting(request, "dlp", csrf)
        if isinstance(operator, Response):
            return operator
        if direction not in ("input", "output") or usecase not in get_args(UsecaseClass):
            return page(request, "dlp.html", operator, text="", reply=None, direction="input", usecase="chat",
                        usecases=get_args(UsecaseClass))
        reply = await data.screen(state["nc"], text, direction, usecase, operator.tenant)
        return page(request, "dlp.html", operator, text=text, reply=reply, direction=direction, usecase=usecase,
                    usecases=get_args(UsecaseClass))

    @app.get("/console/status", response_class=HTMLResponse)
    async def status(request: Request) -> Response:
        operator = who(request, "status")
        if isinstance(operator, Response):
            return operator
        return page(request, "status.html", operator, status=await data.status(state["nc"]))

    @app.get("/console/routing", response_class=HTMLResponse)
    async def routing(request: Request, sensitivity: str = "", usecase: str = "chat", quality: str = "standard",
                      budget: str = "standard", context: str = "<8k", operation: str = "chat", model: str = "stellwerk",
                      tools: bool = False) -> Response:
        operator = who(request, "routing")
        if isinstance(operator, Response):
            return operator
        signals = await data.route_signals(state["nc"].jetstream())
        engine = router_engine()
        explained: dict[str, Any] | None = None
        if sensitivity:
            try:
                policy_input = msgspec.convert({
                    "data_sensitivity": sensitivity, "usecase_class": usecase, "tenant": operator.tenant,
                    "business_unit": "console", "user_role": operator.role, "quality_tier": quality,
                    "budget_class": budget, "context_length_bucket": context, "operation": operation,
                    "need_tools": tools, "requested_model": None if model in ("", "stellwerk") else model,
                    "routes": msgspec.to_builtins(route_catalogue(config)),
                }, RoutingInput)
                verdict = engine.evaluate(policy_input)
                explained = {"route": verdict.decision.route, "rule_id": verdict.decision.rule_id,
                             "fallbacks": verdict.decision.fallbacks, "reason": verdict.reason}
            except (msgspec.MsgspecError, RoutingUnavailable) as exc:
                explained = {"error": type(exc).__name__}
        return page(request, "routing.html", operator, routes=config.routes, signals=signals,
                    policy_version=engine.policy_version, rules=data.policy_rules(engine.settings.policy_dir),
                    explained=explained, form={"sensitivity": sensitivity or "internal", "usecase": usecase,
                                               "quality": quality, "budget": budget, "context": context,
                                               "operation": operation, "model": model, "tools": tools},
                    choices={"sensitivity": get_args(DataSensitivity), "usecase": get_args(UsecaseClass),
                             "quality": get_args(QualityTier), "budget": get_args(BudgetClass),
                             "context": get_args(ContextLengthBucket), "operation": get_args(Operation)})

    @app.get("/console/keys", response_class=HTMLResponse)
    async def keys(request: Request, created: str = "", shown: str = "") -> Response:
        operator = who(request, "keys")
        if isinstance(operator, Response):
            return operator
        store = await KeyStore.open(state["nc"].jetstream())
        records = sorted(await store.all(), key=lambda r: (r.tenant, r.key_id))
        return page(request, "keys.html", operator, records=records, usecases=get_args(UsecaseClass),
                    created=created, shown=shown)

    @app.post("/console/keys", response_class=HTMLResponse)
    async def key_action(request: Request, action: Annotated[str, Form()], csrf: Annotated[str, Form()] = "",
                         key_id: Annotated[str, Form()] = "", tenant: Annotated[str, Form()] = "",
                         business_unit: Annotated[str, Form()] = "", role: Annotated[str, Form()] = "",
                         usecase: Annotated[str, Form()] = "chat", expires_days: Annotated[str, Form()] = "") -> Response:
        operator = acting(request, "keys", csrf)
        if isinstance(operator, Response):
            return operator
        store = await KeyStore.open(state["nc"].jetstream())
        actor = operator.key_id
        try:
            if action == "create":
                expires = timedelta(days=float(expires_days)) if expires_days.strip() else None
                key, record = await store.create(tenant=tenant, business_unit=business_unit, role=role, actor=actor,
                                                 usecase=usecase, expires_in=expires)  # type: ignore[arg-type]
            elif action == "rotate":
                key, record, _ = await store.rotate(key_id, actor, timedelta(hours=1))
            elif action == "revoke":
                await store.revoke(key_id, actor)
                return RedirectResponse("/console/keys", 303)
            else:
                return RedirectResponse("/console/keys", 303)
        except (KeyChangeRefused, ValueError, msgspec.MsgspecError) as exc:
            return HTMLResponse(f"Refused: {type(exc).__name__}. Identifiers are 1-128 characters of A-Z a-z 0-9 "
                                "_ . : @ / - .", 400)
        # The key is shown once, on this page only (not in a redirect URL that logs could keep).
        store_records = sorted(await store.all(), key=lambda r: (r.tenant, r.key_id))
        return page(request, "keys.html", operator, records=store_records, usecases=get_args(UsecaseClass),
                    created=record.key_id, shown=key)

    @app.get("/console/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
