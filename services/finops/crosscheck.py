"""Cross-check of the price table against LiteLLM's cost functions (offline cost map).

Two checks per API price entry:

* *arithmetic*: the entry is registered with ``litellm.register_model`` under a private
  name and ``litellm.completion_cost`` must price a reference call exactly as FinOps does;
* *list price*: where the entry names a model LiteLLM knows (``litellm_model``), its
  USD list price × ``usd_rate`` is compared with ours; a deviation beyond
  ``tolerance_pct`` is flagged (a negotiated or regional price may legitimately differ).

Importing LiteLLM takes ~2 s, so only the ``stellwerk finops prices`` command and the tests
load this module. ``LITELLM_LOCAL_MODEL_COST_MAP=True`` keeps LiteLLM offline.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from typing import Any

from services.finops.settings import PriceTable

REFERENCE_PROMPT = 1000
REFERENCE_COMPLETION = 1000


@dataclass(frozen=True, slots=True)
class PriceCheck:
    deployment: str
    valid_from: str
    ours_input_per_1k: float
    ours_output_per_1k: float
    arithmetic_ok: bool
    litellm_model: str | None = None
    list_input_per_1k: float | None = None  # LiteLLM list price converted to our currency
    list_output_per_1k: float | None = None
    deviation_pct: float | None = None  # worst of input/output, ours vs list
    within_tolerance: bool | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.arithmetic_ok and self.within_tolerance is not False


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)  # custom models lack cache prices: expected
    return litellm


def cross_check(table: PriceTable) -> list[PriceCheck]:
    litellm = _litellm()
    checks: list[PriceCheck] = []
    for entry in table.entries:
        if entry.gpu_class is not None:
            continue  # GPU-priced: LiteLLM has no notion of our on-prem rate
        private = f"stellwerk-pricecheck/{entry.deployment}@{entry.valid_from}"
        litellm.register_model({
            private: {
                "input_cost_per_token": entry.input_per_1k / 1000,
                "output_cost_per_token": entry.output_per_1k / 1000,
                "litellm_provider": "openai",
                "mode": "chat",
            }
        })
        theirs = litellm.completion_cost(
            model=private, prompt="", completion="", call_type="completion",
            custom_llm_provider="openai",
            completion_response=_response(private),
        )
        ours = (REFERENCE_PROMPT * entry.input_per_1k + REFERENCE_COMPLETION * entry.output_per_1k) / 1000
        arithmetic_ok = math.isclose(theirs, ours, rel_tol=1e-9, abs_tol=1e-12)
        check = PriceCheck(
            deployment=entry.deployment,
            valid_from=entry.valid_from.isoformat(),
            ours_input_per_1k=entry.input_per_1k,
            ours_output_per_1k=entry.output_per_1k,
            arithmetic_ok=arithmetic_ok,
            litellm_model=entry.litellm_model,
        )
        if entry.litellm_model:
            info = litellm.model_cost.get(entry.litellm_model)
            if not info or "input_cost_per_token" not in info:
                checks.append(_replace(check, note="model unknown to LiteLLM's cost map"))
                continue
            list_in = info["input_cost_per_token"] * 1000 * table.usd_rate
            list_out = info.get("output_cost_per_token", 0.0) * 1000 * table.usd_rate
            deviations = [
                (ours_price - list_price) / list_price * 100
                for ours_price, list_price in ((entry.input_per_1k, list_in), (entry.output_per_1k, list_out))
                if list_price
            ]
            worst = max(deviations, key=abs) if deviations else 0.0
            check = _replace(
                check, list_input_per_1k=list_in, list_output_per_1k=list_out, deviation_pct=worst,
                within_tolerance=abs(worst) <= table.tolerance_pct,
            )
        checks.append(check)
    return checks


def _response(model: str) -> Any:
    from litellm.types.utils import ModelResponse, Usage

    return ModelResponse(
        model=model,
        usage=Usage(
            prompt_tokens=REFERENCE_PROMPT,
            completion_tokens=REFERENCE_COMPLETION,
            total_tokens=REFERENCE_PROMPT + REFERENCE_COMPLETION,
        ),
    )


def _replace(check: PriceCheck, **changes: Any) -> PriceCheck:
    return replace(check, **changes)
