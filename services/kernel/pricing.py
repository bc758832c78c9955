"""A model call's cost at call time: GPU-seconds and the deployment's token and GPU-hour price.

Inference reports this estimate with every call (``UsageRecorded.cost``); FinOps books the
call again from its dated price table (``services.finops.pricing.PriceBook``), with the same
GPU-seconds. Pure; a deployment is anything with the four price fields (the platform
config's ``Deployment`` is one).
"""

from __future__ import annotations

from typing import Protocol


class PricedDeployment(Protocol):
    @property
    def gpu_share(self) -> float: ...
    @property
    def gpu_hour_rate(self) -> float: ...
    @property
    def input_price_per_1k(self) -> float: ...
    @property
    def output_price_per_1k(self) -> float: ...


def gpu_seconds(deployment: PricedDeployment, latency_s: float) -> float:
    """GPU time a call occupied: wall time × the GPUs the deployment holds.

    Deliberately conservative: a batched vLLM deployment serves several requests at once,
    so this over-attributes under load; docs/finops.md explains the trade-off.
    """
    return latency_s * deployment.gpu_share


def price_call(deployment: PricedDeployment, prompt_tokens: int, completion_tokens: int, gpu_s: float) -> float:
    """Inference's estimate at call time, from the deployment's fields."""
    token_cost = (
        prompt_tokens / 1000 * deployment.input_price_per_1k
        + completion_tokens / 1000 * deployment.output_price_per_1k
    )
    return round(token_cost + gpu_s / 3600 * deployment.gpu_hour_rate, 8)
