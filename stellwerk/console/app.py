"""The console's pages (issue 15). Server-rendered HTML forms: every page works without
JavaScript; the approvals page refreshes itself (``<meta refresh>``) so a decision by
another approver shows up within seconds."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, get_args

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from schemas.vocabulary import UsecaseClass
from services.runtime.bus import connect
from services.runtime.settings import MeshSettings, load_config
from stellwerk.console import data
from stellwerk.console.session import CONSOLE_ROLES, COOKIE, SESSION_S, Operator, Sessions

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
# Reasons are codes, not prose: they are audited, and the audit holds no free text.
DENY_REASONS = ("customer_request", "wrong_target", "policy_violation", "not_needed", "suspicious")


def create_console(settings: MeshSettings | None = None) -> FastAPI:
    settings = settings or MeshSettings()
    config = load_config(settings.config_file)
    secret = os.environ.get("STELLWERK_CONSOLE_SECRET")
    sessions = Sessions(secret.encode() if secret else None)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["nc"] = await connect(settings.nats_url, "stellwerk-console")
        yield
        await state["nc"].drain()

    app = FastAPI(title="Stellwerk console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def page(request: Request, template: str, operator: Operator | None, **context: Any) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(request, template, {"operator": operator, **context},
                                          headers={"Cache-Control": "no-store"})

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
        key = config.key_for(api_key.strip())
        if key is None or key.user_role not in CONSOLE_ROLES:
            return page(request, "login.html", None, next=next,
                        error="This key does not open the console (it needs an operator, approver, dpo or "
                              "budget_owner role).")
        operator = Operator(key_id=key.key_id, role=key.user_role, tenant=key.tenant)
        target = next if next.startswith("/console/") else "/console/"
        response = RedirectResponse(target, 303)
        response.set_cookie(COOKIE, sessions.issue(operator), max_age=SESSION_S, httponly=True, samesite="strict")
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
        pending = await data.pending_approvals(state["nc"].jetstream())
        return page(request, "approvals.html", operator, pending=pending, reasons=DENY_REASONS, notice=notice)

    @app.post("/console/approvals/{approval_id}")
    async def decide(request: Request, approval_id: str, decision: Annotated[str, Form()],
                     reason: Annotated[str, Form()] = "") -> Response:
        operator = who(request, "decide")
        if isinstance(operator, Response):
            return operator
        approve = decision == "approve"
        if not approve and reason not in DENY_REASONS:
            return RedirectResponse("/console/approvals?notice=reason_required", 303)
        reply = await data.decide(state["nc"], approval_id, approve, operator.key_id,
                                  reason if reason in DENY_REASONS else None)
        notice = ("approved" if approve else "denied") if reply.accepted else (reply.reason or "not_accepted")
        return RedirectResponse(f"/console/approvals?notice={notice}", 303)

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
        report = await _report(settings.nats_url, config, "route", month)
        days = spend.days
        return page(request, "budgets.html", operator, report=report, spend=spend, currency=config.currency,
                    cost_chart=data.svg_bars([spend.cost_by_day.get(d, 0.0) for d in days]),
                    token_chart=data.svg_bars([float(spend.tokens_by_day.get(d, 0)) for d in days]))

    @app.get("/console/dlp", response_class=HTMLResponse)
    async def playground(request: Request) -> Response:
        operator = who(request, "dlp")
        if isinstance(operator, Response):
            return operator
        return page(request, "dlp.html", operator, text="", reply=None, direction="input", usecase="chat",
                    usecases=get_args(UsecaseClass))

    @app.post("/console/dlp", response_class=HTMLResponse)
    async def playground_check(request: Request, text: Annotated[str, Form()],
                               direction: Annotated[str, Form()] = "input",
                               usecase: Annotated[str, Form()] = "chat") -> Response:
        operator = who(request, "dlp")
        if isinstance(operator, Response):
            return operator
        if direction not in ("input", "output") or usecase not in get_args(UsecaseClass):
            return page(request, "dlp.html", operator, text="", reply=None, direction="input", usecase="chat",
                        usecases=get_args(UsecaseClass))
        reply = await data.screen(state["nc"], text, direction, usecase, operator.tenant)
        return page(request, "dlp.html", operator, text=text, reply=reply, direction=direction, usecase=usecase,
                    usecases=get_args(UsecaseClass))

    @app.get("/console/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
