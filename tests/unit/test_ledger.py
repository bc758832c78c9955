from __future__ import annotations

from schemas.events import TokenUsage, UsageRecorded, deadline_in
from services.finops.ledger import RECENT_IDS, Totals, apply_usage, scope_keys
from services.kernel.pricing import gpu_seconds, price_call
from services.runtime.settings import DEFAULT_CONFIG, load_config


def usage(call_id: str, prompt: int = 100, completion: int = 50, cost: float = 0.5) -> UsageRecorded:
    return UsageRecorded(
        request_id=call_id.split(".")[0], correlation_id="c", deadline=deadline_in(1), tenant="acme.eu",
        business_unit="claims", user_role="analyst", usecase_class="chat", call_id=call_id,
        route="api-gpt52", deployment="api-gpt52-1", model="m", usage=TokenUsage(prompt_tokens=prompt,
        completion_tokens=completion), ttft_ms=1, latency_ms=2, cost=cost,
    )


def test_a_call_is_counted_once() -> None:
    totals = Totals()
    assert apply_usage(totals, usage("r1.api-gpt52"))
    assert not apply_usage(totals, usage("r1.api-gpt52"))
    assert apply_usage(totals, usage("r2.api-gpt52", prompt=10, completion=5, cost=0.25))
    assert (totals.requests, totals.prompt_tokens, totals.completion_tokens) == (2, 110, 55)
    assert totals.cost == 0.75


def test_remembered_ids_are_bounded() -> None:
    totals = Totals()
    for i in range(RECENT_IDS + 10):
        apply_usage(totals, usage(f"r{i}.local-vllm", cost=0))
    assert len(totals.recent_call_ids) == RECENT_IDS
    assert totals.requests == RECENT_IDS + 10


def test_scope_keys_are_safe_kv_tokens() -> None:
    assert scope_keys(usage("r.api-gpt52")) == [
        "tenant.acme_eu", "business_unit.claims", "usecase.chat", "endpoint.api-gpt52", "endpoint.api-gpt52-1",
    ]


def test_prices_from_the_config() -> None:
    config = load_config(DEFAULT_CONFIG)
    api = config.deployments_for("api-gpt52")[0]
    local = config.deployments_for("local-vllm")[0]
    assert price_call(api, 1000, 1000, 0.0) == api.input_price_per_1k + api.output_price_per_1k
    gpu_s = gpu_seconds(local, 1.8)
    assert gpu_s == 1.8 * local.gpu_share
    assert price_call(local, 1000, 1000, gpu_s) == round(gpu_s / 3600 * local.gpu_hour_rate, 8)
