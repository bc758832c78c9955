"""Cost of one model call: token prices for external APIs, GPU-hours for local deployments."""

from __future__ import annotations

from services.runtime.settings import Deployment


def gpu_seconds(deployment: Deployment, latency_s: float) -> float:
    """GPU time a call occupied: wall time × the GPUs the deployment holds.

    Deliberately conservative: a batched vLLM deployment serves several requests at once,
    so this over-attributes under load; docs/finops.md explains the trade-off.
    """
    return latency_s * deployment.gpu_share


def price_call(
    deployment: Deployment, prompt_tokens: int, completion_tokens: int, gpu_s: float
) -> float:
    token_cost = (
        prompt_tokens / 1000 * deployment.input_price_per_1k
        + completion_tokens / 1000 * deployment.output_price_per_1k
    )
    return round(token_cost + gpu_s / 3600 * deployment.gpu_hour_rate, 8)
