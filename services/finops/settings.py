"""FinOps' sections of the platform config file (issue 5): the GPU classes and the dated price
table of the cost model, and the budgets seeded from the config — ``FinOpsConfig``.

They live here, not in the shared kernel, because only FinOps reads them: inference estimates
a call's cost at call time from the deployment's own price fields (``Deployment`` of the
shared config, priced by ``services.kernel.pricing``), and the router learns of budgets only
through the states FinOps writes to KV ``budgets``. The shared config model
(``services.runtime.settings.PlatformConfig``) ignores these sections; this module validates
them where they are used — the FinOps worker and CLI, the console's budget page, and
``stellwerk up``. The platform's ``currency``, ``finops_timezone`` and ``deployments`` stay
shared (the console and inference read them too).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from services.runtime.settings import config_sections


class GpuClass(BaseModel):
    """On-prem cost of one GPU of a class per year, and the hours it does productive work.

    GPU-hour rate = (CAPEX / amortisation years + maintenance + energy + cooling + data centre
    + operations) / productive GPU-hours per year; energy = power × 8,760 h × price per kWh,
    cooling = energy × (PUE − 1). All amounts per GPU, in ``currency``.
    """

    name: str
    currency: str = "EUR"
    capex: float = Field(ge=0)  # purchase price per GPU incl. its share of host and network
    amortisation_years: float = Field(gt=0)
    maintenance_per_year: float = Field(default=0.0, ge=0)
    power_kw: float = Field(default=0.0, ge=0)  # average draw per GPU incl. its host share
    energy_price_per_kwh: float = Field(default=0.0, ge=0)
    pue: float = Field(default=1.0, ge=1.0)
    datacenter_per_year: float = Field(default=0.0, ge=0)  # space, racks, network share
    operations_per_year: float = Field(default=0.0, ge=0)  # staff and software share
    productive_hours_per_year: float = Field(gt=0, le=8784)


class PriceEntry(BaseModel):
    """The price of one deployment from ``valid_from`` (until the next entry's date)."""

    deployment: str
    valid_from: date
    input_per_1k: float = Field(default=0.0, ge=0)
    output_per_1k: float = Field(default=0.0, ge=0)
    gpu_class: str | None = None  # local deployments: priced per GPU-second at the class rate
    litellm_model: str | None = None  # cross-check against LiteLLM's cost map (USD)


class PriceTable(BaseModel):
    currency: str = "EUR"
    usd_rate: float = Field(default=1.0, gt=0)  # ``currency`` per USD, for the LiteLLM cross-check
    tolerance_pct: float = Field(default=25.0, ge=0)  # allowed deviation from LiteLLM's list price
    entries: list[PriceEntry] = Field(default_factory=list)


class BudgetConfig(BaseModel):
    """A budget seeded from the config; ``stellwerk finops budget set`` overrides it at run time."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    scope: Literal["tenant", "business_unit", "usecase", "endpoint", "end_user"]  # end_user: scope_id is the hash
    scope_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    period: Literal["day", "month"] = "month"
    limit: float = Field(gt=0)
    warn_pct: float = Field(default=80.0, gt=0)
    act_pct: float = Field(default=100.0, gt=0)
    action: Literal["downgrade", "force_local", "block_noncritical"] = "downgrade"


class FinOpsConfig(BaseModel):
    """FinOps' sections of the platform config file."""

    gpu_classes: list[GpuClass] = Field(default_factory=list)
    price_table: PriceTable = Field(default_factory=PriceTable)
    budgets: list[BudgetConfig] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> FinOpsConfig:
        return cls.model_validate(config_sections(path, cls.model_fields))
