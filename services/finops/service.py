"""One FinOps worker: price each batch, book it per scope, publish crossings, project states."""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from zoneinfo import ZoneInfo

from schemas.streams import KV_BUDGETS
from services.finops.consumer import UsageConsumer
from services.finops.ledger import Priced, budget_state, period_key, scope_keys
from services.finops.metrics import FinopsMetrics
from services.finops.pricing import PriceBook
from services.finops.settings import FinOpsConfig
from services.finops.store import (
    BudgetBook,
    LedgerStore,
    Outcome,
    config_budgets,
    list_keys,
    load_budget_book,
    read_totals,
    seed_budgets,
)
from services.runtime.worker import Delivery, Worker

TICK_S = 1.0


class FinopsService:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.config = worker.config
        self.finops = FinOpsConfig.load(worker.settings.config_file)  # this service's own sections
        self.tz = ZoneInfo(self.config.finops_timezone)
        self.prices = PriceBook(self.finops, self.config.deployments, self.config.currency)
        self.metrics = FinopsMetrics(self.config.currency)
        self.book = BudgetBook()
        # Linger: at low rates each event would be its own batch, with one compare-and-set per
        # scope; waiting a few tens of milliseconds for company costs budget freshness little
        # (target: the router sees a booking within 250 ms) and saves most of that work.
        self.consumer = UsageConsumer(
            worker, self.on_batch, batch_size=int(os.environ.get("STELLWERK_FINOPS_BATCH", "500")),
            linger_s=float(os.environ.get("STELLWERK_FINOPS_LINGER_MS", "50")) / 1000,
        )
        self._store: LedgerStore | None = None
        self._periods: dict[str, tuple[str, ...]] = {}  # scope key → budget periods last evaluated

    @property
    def store(self) -> LedgerStore:
        assert self._store is not None, "finops not started"
        return self._store

    async def start(self) -> None:
        kv = await self.worker.kv(KV_BUDGETS)
        await seed_budgets(kv, config_budgets(self.finops.budgets, self.config.currency))
        loaded = await load_budget_book(kv)
        self.book.definitions, self.book.resets = loaded.definitions, loaded.resets
        self.book.dirty.update(d.scope_key for d in self.book.definitions.values())
        self._store = LedgerStore(
            kv, currency=self.config.currency, tz=self.tz, incarnation=self.consumer.incarnation,
            budgets_of=self.book.budgets_of, publish=self.worker.publish,
        )
        port = int(os.environ.get("STELLWERK_FINOPS_METRICS_PORT", "0") or 0)
        if port:
            try:
                self.metrics.serve(port)
            except OSError as exc:  # a second worker on one host: serve without metrics
                self.worker.log.warning("finops_metrics_port_unavailable", error=type(exc).__name__)
        await self.flush_pending_outboxes()

    async def on_batch(self, deliveries: list[Delivery], batch: int, incarnation: str) -> None:
        started = time.perf_counter()
        store = self.store
        store.incarnation = incarnation
        by_key: dict[str, list[Priced]] = defaultdict(list)
        for d in deliveries:
            item = Priced(d.seq, d.event, self.prices.charge(d.event))
            for key in scope_keys(d.event):
                by_key[key].append(item)
        floor = self.consumer.ack_floor
        outcomes = await asyncio.gather(
            *(store.apply(key, items, batch=batch, ack_floor=floor) for key, items in by_key.items())
        )
        await asyncio.gather(*(self.settle(o) for o in outcomes))
        # Every call counts against exactly one tenant scope: its outcome decides the metrics.
        counted = [item for o in outcomes if o.key.startswith("tenant.") for item in o.counted]
        self.metrics.observe(counted, len(deliveries))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def settle(self, outcome: Outcome) -> None:
        await self.store.settle(outcome)
        budgets = self.book.budgets_of(outcome.key)
        if budgets:
            self._periods[outcome.key] = self._current_periods(outcome.key)
            self.metrics.budgets(budget_state(outcome.totals, b, self.store.clock(), self.tz) for b in budgets)

    def _current_periods(self, key: str) -> tuple[str, ...]:
        now = self.store.clock()
        return tuple(period_key(now, d.period, self.tz) for d, _ in self.book.budgets_of(key))

    async def tick(self) -> None:
        """Once a second: learn the ack floor; re-evaluate scopes whose budgets changed or
        whose period rolled over (a blocked scope has no usage to trigger that)."""
        if self._store is None:
            return
        await self.consumer.refresh_ack_floor()
        due = set(self.book.dirty)
        self.book.dirty.clear()
        for key in self.book.index():
            if self._periods.get(key) != self._current_periods(key):
                due.add(key)
        for key in sorted(due):
            try:
                if not self.book.budgets_of(key):  # its last budget was deleted
                    await self.store.drop_state(key)
                    self._periods.pop(key, None)
                    continue
                await self.settle(await self.store.touch(key))
            except Exception:
                self.book.dirty.add(key)  # try again on the next tick
                raise

    async def flush_pending_outboxes(self) -> None:
        """Crossings a crashed worker recorded but did not get to publish."""
        kv = self.store.kv
        for kv_key in await list_keys(kv):
            if not kv_key.startswith("totals."):
                continue
            key = kv_key.removeprefix("totals.")
            totals, _ = await read_totals(kv, key, self.config.currency)
            if totals.outbox:
                await self.store.flush_outbox(key, totals.outbox)
