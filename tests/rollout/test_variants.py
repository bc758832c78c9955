"""The variant picker, the shadow share and the canary's window (pure, no server)."""

from __future__ import annotations

import math

import pytest

from services.kernel.variants import Measured, VariantWindow, breach, hash_point, mirrored, p95, pick
from services.runtime.rollouts import choose_variant, shadow_for
from services.runtime.settings import RouteSpec

REQUESTS = [f"01J{i:07d}" for i in range(1000)]


def spec(**extra: object) -> RouteSpec:
    return RouteSpec.model_validate({
        "name": "local-vllm", "class": "standard", "locality": "local", "capabilities": ["chat"],
        "context_tokens": 32768, "cost_rank": 1, **extra,
    })


SPLIT = spec(variants=[
    {"name": "stable", "deployment": "a", "weight": 90},
    {"name": "canary", "deployment": "b", "weight": 10, "canary": True},
])


def binomial_bounds(n: int, p: float, sigmas: float = 4.0) -> tuple[float, float]:
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sigmas * sd, n * p + sigmas * sd


def test_canary_at_ten_percent_gets_about_ten_percent_of_1000_requests() -> None:
    chosen = [choose_variant(SPLIT, r) for r in REQUESTS]
    canary = sum(1 for c in chosen if c is not None and c.canary)
    low, high = binomial_bounds(1000, 0.10)  # 62 … 138 at four standard deviations
    assert low <= canary <= high, canary
    assert all(c is not None and c.deployment == ("b" if c.canary else "a") for c in chosen)


def test_the_pick_is_a_function_of_the_request_id_and_the_route() -> None:
    first = [choose_variant(SPLIT, r) for r in REQUESTS[:200]]
    again = [choose_variant(SPLIT, r) for r in REQUESTS[:200]]
    assert first == again
    # Another route splits independently: the same request ids do not land on the same side.
    other = spec(name="other", variants=SPLIT.model_dump()["variants"])
    assert [choose_variant(other, r) for r in REQUESTS[:200]] != first


def test_relative_weights_and_zero_weights() -> None:
    assert pick([("a", 0), ("b", 0)], "r", "s") is None
    assert {pick([("a", 0), ("b", 3)], r, "s") for r in REQUESTS[:50]} == {"b"}
    ninety = [pick([("a", 90), ("b", 10)], r, "s") for r in REQUESTS]
    nine = [pick([("a", 9), ("b", 1)], r, "s") for r in REQUESTS]
    assert ninety == nine


def test_a_rolled_back_canary_gets_nothing_and_the_stable_variant_everything() -> None:
    chosen = {choose_variant(SPLIT, r, rolled_back={"canary"}).name for r in REQUESTS}  # type: ignore[union-attr]
    assert chosen == {"stable"}


def test_hash_points_are_uniform_enough() -> None:
    points = [hash_point(r, "x") for r in REQUESTS]
    assert all(0 <= p < 1 for p in points)
    low, high = binomial_bounds(1000, 0.5)
    assert low <= sum(1 for p in points if p < 0.5) <= high


def test_shadow_share() -> None:
    mirrored_all = spec(shadow={"deployment": "api-1", "share": 100})
    assert all(shadow_for(mirrored_all, r) == "api-1" for r in REQUESTS[:100])
    assert all(shadow_for(SPLIT, r) is None for r in REQUESTS[:100])
    share = sum(mirrored(20, r, "local-vllm") for r in REQUESTS)
    low, high = binomial_bounds(1000, 0.20)
    assert low <= share <= high
    # The shadow draw is independent of the variant draw: mirrored requests are not all canaries.
    both = [r for r in REQUESTS if mirrored(20, r, "local-vllm") and choose_variant(SPLIT, r).canary]  # type: ignore[union-attr]
    assert 0 < len(both) < share


def test_window_judges_only_with_enough_calls() -> None:
    window = VariantWindow(window_s=60)
    for i in range(5):
        window.add(float(i), ok=i % 2 == 0, latency_ms=10)
    measured = window.measure(5.0)
    assert measured.requests == 5 and measured.errors == 2
    assert breach(measured, min_requests=10, max_error_rate=0.2, max_p95_latency_ms=None) is None
    for i in range(5, 10):
        window.add(float(i), ok=i % 2 == 0, latency_ms=10)
    assert breach(window.measure(10.0), 10, 0.2, None) == "error_rate"
    # Calls older than the window no longer count.
    assert window.measure(200.0).requests == 0


def test_p95_latency_threshold() -> None:
    window = VariantWindow(window_s=60)
    for i in range(20):
        window.add(0.0, ok=True, latency_ms=5000 if i >= 18 else 100)  # two slow calls of twenty
    measured = window.measure(1.0)
    assert measured.p95_latency_ms == 5000
    assert breach(measured, 20, 0.5, 4000) == "p95_latency"
    assert breach(measured, 20, 0.5, 6000) is None
    assert breach(Measured(20, 0, 0.0, 0.0), 20, None, None) is None


@pytest.mark.parametrize(("values", "expected"), [([], 0.0), ([1.0], 1.0), (list(map(float, range(1, 101))), 95.0)])
def test_p95_nearest_rank(values: list[float], expected: float) -> None:
    assert p95(values) == expected
