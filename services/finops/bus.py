"""FinOps worker contract.

consumes  stellwerk.v1.usage.recorded   (durable ``finops`` on USAGE, in batches; several
                                         workers share it, each event is booked exactly once)
watches   KV ``budgets`` ``budget.*``, ``reset.*``   (budget definitions; seeded from config)
writes    KV ``budgets`` ``totals.<scope>.<id>``     (``ledger.Totals``: totals, day and month,
                                                      exactly-once bookkeeping; compare-and-set)
          KV ``budgets`` ``state.<scope>.<id>``      (``schemas.kv.BudgetState``: what the
                                                      router enforces — level and action)
publishes stellwerk.v1.finops.alert     (``FinopsAlert``, once per threshold crossing)
          stellwerk.v1.audit.finops     (``AuditEvent`` per crossing: budget_warn / budget_exhausted)
          stellwerk.v1.dlq.finops       (malformed usage events)
serves    Prometheus metrics on ``STELLWERK_FINOPS_METRICS_PORT`` (unset or 0: off)

Scopes: tenant, business_unit, usecase, endpoint (route and deployment). Prices: the price
table valid on the call's date (``pricing.PriceBook``). Rebuild after a KV loss:
``stellwerk finops rebuild`` (``services/finops/rebuild.py``) replays USAGE.
"""

from __future__ import annotations

from schemas.streams import KV_BUDGETS
from services.finops.service import TICK_S, FinopsService
from services.runtime.worker import Worker


def build(worker: Worker) -> None:
    service = FinopsService(worker)
    worker.on_start(service.start)
    service.consumer.bind()
    worker.watch(KV_BUDGETS, service.book.apply, keys="budget.>")
    worker.watch(KV_BUDGETS, service.book.apply, keys="reset.>")
    worker.every(TICK_S, service.tick)
