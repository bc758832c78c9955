"""The gateway's bus contract (plain data; see schemas/contracts.py)."""

from __future__ import annotations

from typing import Final

from schemas import contracts as c
from schemas.streams import KV_KEYS, KV_RATELIMITS

CONTRACT: Final = c.ServiceContract(
    name="gateway",
    description="OpenAI-compatible HTTP gateway: submits requests, awaits their results",
    publishes=(
        c.Publishes(c.REQUEST_SUBMITTED),
        c.Publishes(c.CANCEL),
        c.Publishes(c.AUDIT_EVENT, {"stage": ("gateway", "identity")}),
    ),
    listens=(c.Listens(c.RESULT), c.Listens(c.DELTA)),
    kv_writes=(KV_RATELIMITS, KV_KEYS),  # keys: the bootstrap import (issue 14)
    worker=False,
    reads_backlog=True,
)
