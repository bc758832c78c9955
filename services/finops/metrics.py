"""Prometheus metrics of the FinOps worker ("Cost per Use Case" dashboard).

Each usage event is counted by the one worker whose write counted it, so summing a metric
over every FinOps instance gives exact platform totals, e.g.
``sum by (usecase) (rate(stellwerk_finops_cost_total[1h]))``.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from schemas.kv import BudgetState
from services.finops.ledger import LEVELS, Priced
from services.finops.pricing import MICRO, NANO

LABELS = ("tenant", "business_unit", "usecase", "model", "route")


class FinopsMetrics:
    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.registry = CollectorRegistry()
        self.cost = Counter(
            "stellwerk_finops_cost", "Booked cost of model calls (currency label)",
            [*LABELS, "currency"], registry=self.registry,
        )
        self.tokens = Counter(
            "stellwerk_finops_tokens", "Tokens of model calls", [*LABELS, "kind"], registry=self.registry
        )
        self.gpu_seconds = Counter(
            "stellwerk_finops_gpu_seconds", "GPU-seconds of local model calls", LABELS, registry=self.registry
        )
        self.requests = Counter(
            "stellwerk_finops_requests", "Model calls booked", LABELS, registry=self.registry
        )
        self.events = Counter(
            "stellwerk_finops_events", "Usage events by outcome (counted, duplicate, malformed)",
            ["outcome"], registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "stellwerk_finops_batch_seconds", "Time to book one batch of usage events", registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.budget_consumed = Gauge(
            "stellwerk_finops_budget_consumed", "Spent in the budget's current period",
            ["budget_id", "scope", "scope_id", "period", "currency"], registry=self.registry,
        )
        self.budget_limit = Gauge(
            "stellwerk_finops_budget_limit", "Budget limit per period",
            ["budget_id", "scope", "scope_id", "period", "currency"], registry=self.registry,
        )
        self.budget_level = Gauge(
            "stellwerk_finops_budget_level", "0 ok, 1 warn, 2 exhausted", ["budget_id"], registry=self.registry
        )

    def observe(self, counted: Sequence[Priced], delivered: int) -> None:
        """Aggregate per label set first: one increment per series per batch."""
        cost: Tally[tuple[str, ...]] = Tally()
        prompt: Tally[tuple[str, ...]] = Tally()
        completion: Tally[tuple[str, ...]] = Tally()
        gpu: Tally[tuple[str, ...]] = Tally()
        calls: Tally[tuple[str, ...]] = Tally()
        for item in counted:
            u = item.usage
            labels: tuple[str, ...] = (u.tenant, u.business_unit, u.usecase_class, u.model, u.route)
            cost[labels] += item.charge.cost_nanos
            prompt[labels] += u.usage.prompt_tokens
            completion[labels] += u.usage.completion_tokens
            gpu[labels] += item.charge.gpu_us
            calls[labels] += 1
        for labels, n in calls.items():
            self.requests.labels(*labels).inc(n)
            self.cost.labels(*labels, self.currency).inc(cost[labels] / NANO)
            self.tokens.labels(*labels, "prompt").inc(prompt[labels])
            self.tokens.labels(*labels, "completion").inc(completion[labels])
            if gpu[labels]:
                self.gpu_seconds.labels(*labels).inc(gpu[labels] / MICRO)
        self.events.labels("counted").inc(len(counted))
        if delivered > len(counted):
            self.events.labels("duplicate").inc(delivered - len(counted))

    def budgets(self, states: Iterable[BudgetState]) -> None:
        for s in states:
            labels = (s.budget_id, s.scope, s.scope_id, s.period, s.currency)
            self.budget_consumed.labels(*labels).set(s.consumed)
            self.budget_limit.labels(*labels).set(s.limit)
            self.budget_level.labels(s.budget_id).set(LEVELS.index(s.level))

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
