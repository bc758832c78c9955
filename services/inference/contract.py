"""The inference service's bus contract (plain data; see schemas/contracts.py)."""

from __future__ import annotations

from typing import Final

from schemas import contracts as c
from schemas.streams import INFERENCE, KV_CAPACITY, KV_PROVIDER_HEALTH, KV_ROLLOUTS

CONTRACT: Final = c.ServiceContract(
    name="inference",
    description="Inference: calls the chosen model, records usage",
    consumes=(INFERENCE,),
    publishes=(
        c.Publishes(c.RESPONSE_GENERATED),
        c.Publishes(c.RESPONSE_STREAMING),
        c.Publishes(c.CHUNK),
        c.Publishes(c.USAGE_RECORDED),
        c.Publishes(c.RESULT),
        c.Publishes(c.AUDIT_TRAIL, {"stage": ("inference",)}),
        c.Publishes(c.AUDIT_EVENT, {"stage": ("inference",)}),
    ),
    listens=(c.Listens(c.CANCEL),),
    requests=(c.Requests(c.DLP_SCREEN, c.SCREEN_REPLY),),  # shadow answers (issue 17)
    kv_writes=(KV_PROVIDER_HEALTH, KV_CAPACITY, KV_ROLLOUTS),  # rollouts: canary rollbacks (issue 17)
)
