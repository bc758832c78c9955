"""Local capacity from a vLLM deployment's own Prometheus metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from schemas.kv import CapacityState
from services.runtime.settings import Deployment

# vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc in 0.10; accept both.
_GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv",
    "vllm:gpu_cache_usage_perc": "kv",
}


def metrics_url(deployment: Deployment) -> str:
    return deployment.api_base.removesuffix("/").removesuffix("/v1") + "/metrics"


def capacity_from_metrics(deployment: Deployment, exposition: str) -> CapacityState:
    """Sum the gauges over the deployment's model(s) and compare with its configured limits."""
    values = {"running": 0.0, "waiting": 0.0, "kv": 0.0}
    for family in text_string_to_metric_families(exposition):
        field = _GAUGES.get(family.name)
        if field is None:
            continue
        for sample in family.samples:
            if field == "kv":
                values["kv"] = max(values["kv"], sample.value)
            else:
                values[field] += sample.value
    return CapacityState(
        deployment=deployment.name,
        route=deployment.route,
        requests_running=values["running"],
        requests_waiting=values["waiting"],
        kv_cache_usage=values["kv"],
        ok=values["waiting"] <= deployment.max_requests_waiting
        and values["kv"] <= deployment.max_kv_cache_usage,
    )
