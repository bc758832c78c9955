"""The DLP service's bus contract (plain data; see schemas/contracts.py)."""

from __future__ import annotations

from typing import Final

from schemas import contracts as c
from schemas.streams import CHUNKS, DLP_INPUT, DLP_OUTPUT, DLP_STREAM, KV_GUARD_REVIEWS, KV_POLICIES

STAGES: Final = ("dlp_input", "dlp_output")

CONTRACT: Final = c.ServiceContract(
    name="dlp",
    description="DLP guard: screens prompts, answers and tool calls",
    consumes=(DLP_INPUT, DLP_OUTPUT, DLP_STREAM),
    serves=(c.Serves(c.DLP_SCREEN, c.SCREEN_REPLY, queue="dlp"),),
    publishes=(
        c.Publishes(c.REQUEST_SCREENED),
        c.Publishes(c.RESULT),
        c.Publishes(c.DELTA),
        c.Publishes(c.AUDIT_TRAIL, {"stage": STAGES}),
        c.Publishes(c.AUDIT_EVENT, {"stage": STAGES}),
    ),
    reads_streams=(CHUNKS,),  # a streamed answer's chunks, in order (ordered consumer)
    kv_reads=(KV_POLICIES,),  # the sensitivity and guardrail policies in force (issue 17)
    kv_writes=(KV_GUARD_REVIEWS,),  # guard decisions ``review`` for a human (issue 16)
)
