"""The FinOps service's bus contract (plain data; see schemas/contracts.py)."""

from __future__ import annotations

from typing import Final

from schemas import contracts as c
from schemas.streams import FINOPS_USAGE, KV_BUDGETS

CONTRACT: Final = c.ServiceContract(
    name="finops",
    description="FinOps: prices usage, keeps budgets, raises alerts",
    consumes=(FINOPS_USAGE,),
    publishes=(c.Publishes(c.FINOPS_ALERT), c.Publishes(c.AUDIT_EVENT, {"stage": ("finops",)})),
    kv_writes=(KV_BUDGETS,),
)
