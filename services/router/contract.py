"""The router's bus contract (plain data; see schemas/contracts.py)."""

from __future__ import annotations

from typing import Final

from schemas import contracts as c
from schemas.streams import KV_BUDGETS, KV_CAPACITY, KV_POLICIES, KV_PROVIDER_HEALTH, KV_ROLLOUTS, ROUTER

CONTRACT: Final = c.ServiceContract(
    name="router",
    description="Policy router: routes screened requests over live signals",
    consumes=(ROUTER,),
    serves=(c.Serves(c.POLICY_PUSH, c.POLICY_PUSH_REPLY, queue=None),),  # every router takes every push
    publishes=(
        c.Publishes(c.REQUEST_ROUTED),
        c.Publishes(c.RESULT),
        c.Publishes(c.AUDIT_TRAIL, {"stage": ("router",)}),
        c.Publishes(c.AUDIT_EVENT, {"stage": ("router",)}),
    ),
    kv_reads=(KV_PROVIDER_HEALTH, KV_CAPACITY, KV_BUDGETS, KV_POLICIES),
    kv_writes=(KV_ROLLOUTS,),  # the routing-policy canary's rollback (issue 17); writers read too
)
