"""Shared builders for the FinOps tests."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.events import TokenUsage, UsageRecorded
from schemas.vocabulary import Route, UsecaseClass
from services.finops.ledger import BudgetDef

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def usage(
    n: int | str,
    *,
    tenant: str = "acme",
    business_unit: str = "claims",
    usecase: UsecaseClass = "chat",
    route: Route = "api-gpt52",
    deployment: str = "api-gpt52-1",
    prompt: int = 1000,
    completion: int = 1000,
    gpu_seconds: float = 0.0,
    cost: float = 0.01125,
    at: datetime = NOON,
    call_id: str | None = None,
) -> UsageRecorded:
    return UsageRecorded(
        request_id=f"req{n}", correlation_id=f"req{n}", occurred_at=at, deadline=at, tenant=tenant,
        business_unit=business_unit, user_role="analyst", usecase_class=usecase,
        call_id=call_id or f"req{n}.{route}", route=route, deployment=deployment, model="m",
        usage=TokenUsage(prompt_tokens=prompt, completion_tokens=completion), ttft_ms=1.0, latency_ms=2.0,
        gpu_seconds=gpu_seconds, cost=cost,
    )


def budget(
    budget_id: str = "b1",
    *,
    scope: str = "tenant",
    scope_id: str = "acme",
    limit: float = 0.1,
    period: str = "month",
    action: str = "downgrade",
    warn_pct: float = 80.0,
    act_pct: float = 100.0,
) -> BudgetDef:
    return BudgetDef(
        budget_id=budget_id, scope=scope, scope_id=scope_id, period=period, limit=limit,  # type: ignore[arg-type]
        warn_pct=warn_pct, act_pct=act_pct, action=action,  # type: ignore[arg-type]
    )
