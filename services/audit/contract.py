"""The audit service's bus contract (plain data; see schemas/contracts.py)."""

from __future__ import annotations

from typing import Final

from schemas import contracts as c
from schemas.streams import AUDIT, AUDIT_INTAKE

CONTRACT: Final = c.ServiceContract(
    name="audit",
    description="Audit: chains audit events into hash-chained records and checkpoints",
    consumes=(AUDIT_INTAKE,),
    publishes=(c.Publishes(c.AUDIT_CHAIN), c.Publishes(c.AUDIT_CHECKPOINT)),
    reads_streams=(AUDIT,),  # chain heads and checkpoints on start and for verification
)
