"""Cost of one model call: token prices for external APIs, GPU-hours for local deployments.

Pure and synchronous. Two users:

* inference estimates a call's cost at call time from the deployment's own fields
  (``gpu_seconds``, ``price_call``, in the shared kernel ``services.kernel.pricing``) and
  reports it to the caller;
* FinOps books every usage event with a ``PriceBook`` built from the configured price table:
  the entry valid on the day the call happened (so a replay months later prices it the same),
  GPU time at the rate of the deployment's GPU class. Amounts are integers — nano-units of the
  currency and GPU-microseconds — so sums do not depend on the order events are added in.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal

from schemas.events import UsageRecorded
from services.finops.settings import FinOpsConfig, GpuClass
from services.runtime.settings import Deployment

NANO: Final = 1_000_000_000  # cost unit: 1e-9 of the currency
MICRO: Final = 1_000_000  # GPU time unit: microseconds
HOURS_PER_YEAR: Final = 8760.0

PriceSource = Literal["price_table", "deployment", "event"]


# --- the on-prem GPU-hour formula ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuCost:
    """One GPU class's yearly cost items and the resulting rate per productive GPU-hour."""

    name: str
    currency: str
    amortisation: float
    maintenance: float
    energy: float
    cooling: float
    datacenter: float
    operations: float
    productive_hours: float

    @property
    def per_year(self) -> float:
        return (
            self.amortisation + self.maintenance + self.energy + self.cooling + self.datacenter + self.operations
        )

    @property
    def hourly_rate(self) -> float:
        return self.per_year / self.productive_hours

    @property
    def utilisation(self) -> float:
        return self.productive_hours / HOURS_PER_YEAR


def gpu_cost(gpu: GpuClass) -> GpuCost:
    energy = gpu.power_kw * HOURS_PER_YEAR * gpu.energy_price_per_kwh
    return GpuCost(
        name=gpu.name,
        currency=gpu.currency,
        amortisation=gpu.capex / gpu.amortisation_years,
        maintenance=gpu.maintenance_per_year,
        energy=energy,
        cooling=energy * (gpu.pue - 1.0),
        datacenter=gpu.datacenter_per_year,
        operations=gpu.operations_per_year,
        productive_hours=gpu.productive_hours_per_year,
    )


# --- the price book FinOps books with ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Price:
    """What one deployment costs from ``valid_from`` on."""

    deployment: str
    valid_from: date
    currency: str
    input_per_1k: float
    output_per_1k: float
    gpu_hour_rate: float
    source: PriceSource
    gpu_class: str | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    """One priced call in integer units."""

    cost_nanos: int
    gpu_us: int
    source: PriceSource


class PriceError(ValueError):
    """The price configuration is inconsistent (unknown GPU class, mixed currencies)."""


class PriceBook:
    """Dated prices per deployment; the deployment's own fields where the table has no entry."""

    def __init__(self, finops: FinOpsConfig, deployments: Sequence[Deployment], currency: str) -> None:
        """``finops``: the price table and GPU classes; ``deployments``: their own prices,
        used where the table has no entry; ``currency``: the platform's."""
        self.currency = currency
        gpus = {g.name: gpu_cost(g) for g in finops.gpu_classes}
        self.gpu_costs = gpus
        table = finops.price_table
        if table.entries and table.currency != currency:
            raise PriceError(f"price table currency {table.currency} is not the platform's {currency}")
        self._dated: dict[str, list[Price]] = {}
        for entry in sorted(table.entries, key=lambda e: (e.deployment, e.valid_from)):
            rate = 0.0
            if entry.gpu_class is not None:
                if entry.gpu_class not in gpus:
                    raise PriceError(f"price entry for {entry.deployment}: unknown GPU class {entry.gpu_class}")
                if gpus[entry.gpu_class].currency != currency:
                    raise PriceError(f"GPU class {entry.gpu_class} is priced in another currency")
                rate = gpus[entry.gpu_class].hourly_rate
            self._dated.setdefault(entry.deployment, []).append(
                Price(entry.deployment, entry.valid_from, table.currency, entry.input_per_1k,
                      entry.output_per_1k, rate, "price_table", entry.gpu_class)
            )
        self._fallback = {
            d.name: Price(d.name, date.min, currency, d.input_price_per_1k, d.output_price_per_1k,
                          d.gpu_hour_rate, "deployment")
            for d in deployments
        }
        self._dates = {name: [p.valid_from for p in prices] for name, prices in self._dated.items()}

    def price_for(self, deployment: str, on: date) -> Price | None:
        """The entry in force on ``on``; the deployment's fields before the first entry."""
        prices = self._dated.get(deployment)
        if prices:
            index = bisect.bisect_right(self._dates[deployment], on) - 1
            if index >= 0:
                return prices[index]
        return self._fallback.get(deployment)

    def charge(self, usage: UsageRecorded) -> Charge:
        gpu_us = round(usage.gpu_seconds * MICRO)
        price = self.price_for(usage.deployment, usage.occurred_at.date())
        if price is None:  # a deployment the config does not know: trust the reported cost
            return Charge(round(usage.cost * NANO), gpu_us, "event")
        cost = (
            usage.usage.prompt_tokens / 1000 * price.input_per_1k
            + usage.usage.completion_tokens / 1000 * price.output_per_1k
            + usage.gpu_seconds / 3600 * price.gpu_hour_rate
        )
        return Charge(round(cost * NANO), gpu_us, price.source)

    def prices(self) -> list[Price]:
        """Every dated entry, then the fallbacks of deployments without one."""
        dated = [p for prices in self._dated.values() for p in prices]
        return dated + [p for name, p in self._fallback.items() if name not in self._dated]
