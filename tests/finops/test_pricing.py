"""The cost model: GPU-hour formula, dated price table, LiteLLM cross-check (pure)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pytest

from services.finops.crosscheck import cross_check
from services.finops.pricing import NANO, PriceBook, PriceError, gpu_cost
from services.finops.settings import FinOpsConfig, GpuClass, PriceEntry
from services.kernel.pricing import gpu_seconds, price_call
from services.runtime.settings import DEFAULT_CONFIG, load_config
from tests.finops.helpers import usage

CONFIG = load_config(DEFAULT_CONFIG)
FINOPS = FinOpsConfig.load(DEFAULT_CONFIG)


def book_of(finops: FinOpsConfig) -> PriceBook:
    return PriceBook(finops, CONFIG.deployments, CONFIG.currency)


def with_prices(*entries: PriceEntry, **table: object) -> FinOpsConfig:
    finops = FINOPS.model_copy(deep=True)
    finops.price_table = finops.price_table.model_copy(update={"entries": list(entries), **table})
    return finops


def test_gpu_hour_rate_is_the_on_prem_formula() -> None:
    h100 = gpu_cost(FINOPS.gpu_classes[0])
    assert h100.amortisation == 28_800 / 4
    assert math.isclose(h100.energy, 0.7 * 8760 * 0.20)
    assert math.isclose(h100.cooling, h100.energy * 0.5)
    assert math.isclose(h100.per_year, 7200 + 2160 + 1226.4 + 613.2 + 1440 + 2602.8)
    assert math.isclose(h100.hourly_rate, 2.90)
    assert math.isclose(h100.utilisation, 0.6)


def test_the_default_local_deployment_is_priced_at_its_gpu_class_rate() -> None:
    """Inference's estimate (the deployment's field) and the ledger's price agree by default."""
    local = CONFIG.deployments_for("local-vllm")[0]
    book = book_of(FINOPS)
    gpu_s = gpu_seconds(local, 1.5)
    event = usage(1, route="local-vllm", deployment=local.name, gpu_seconds=gpu_s, cost=0.0)
    charge = book.charge(event)
    assert charge.source == "price_table"
    assert charge.gpu_us == 3_000_000
    # price_call rounds to 1e-8 for the caller; the ledger keeps nano-units.
    assert math.isclose(charge.cost_nanos / NANO, price_call(local, 1000, 1000, gpu_s), abs_tol=1e-8)


def test_the_entry_valid_on_the_calls_day_prices_it() -> None:
    finops = with_prices(
        PriceEntry(deployment="api-gpt52-1", valid_from=date(2026, 1, 1), input_per_1k=0.001, output_per_1k=0.01),
        PriceEntry(deployment="api-gpt52-1", valid_from=date(2026, 7, 1), input_per_1k=0.002, output_per_1k=0.02),
    )
    book = book_of(finops)
    before = book.charge(usage(1, at=datetime(2025, 12, 31, 23, tzinfo=UTC)))
    first = book.charge(usage(2, at=datetime(2026, 6, 30, 12, tzinfo=UTC)))
    second = book.charge(usage(3, at=datetime(2026, 7, 1, 0, tzinfo=UTC)))
    api = CONFIG.deployments_for("api-gpt52")[0]
    assert before.source == "deployment"
    assert before.cost_nanos == round((api.input_price_per_1k + api.output_price_per_1k) * NANO)
    assert (first.cost_nanos, second.cost_nanos) == (11_000_000, 22_000_000)


def test_an_unknown_deployment_keeps_the_reported_cost() -> None:
    charge = book_of(FINOPS).charge(usage(1, deployment="elsewhere-1", cost=0.5))
    assert (charge.source, charge.cost_nanos) == ("event", 500_000_000)


def test_price_configuration_errors_are_refused() -> None:
    with pytest.raises(PriceError, match="unknown GPU class"):
        book_of(with_prices(PriceEntry(deployment="local-vllm-1", valid_from=date(2026, 1, 1), gpu_class="b200")))
    with pytest.raises(PriceError, match="currency"):
        book_of(with_prices(PriceEntry(deployment="api-gpt52-1", valid_from=date(2026, 1, 1)), currency="USD"))
    finops = FINOPS.model_copy(deep=True)
    finops.gpu_classes = [GpuClass(name="h100-80gb", currency="USD", capex=1, amortisation_years=1,
                                   productive_hours_per_year=1)]
    with pytest.raises(PriceError, match="another currency"):
        book_of(finops)


def test_api_prices_cross_check_against_litellm() -> None:
    [check] = cross_check(FINOPS.price_table)
    assert check.arithmetic_ok, "LiteLLM's completion_cost prices our registered entry exactly as we do"
    assert check.litellm_model == "gpt-5.2"
    assert check.list_input_per_1k is not None and math.isclose(check.list_input_per_1k, 1.75e-6 * 1000 * 0.86)
    assert check.deviation_pct is not None and -25 < check.deviation_pct < 0
    assert check.ok


def test_a_price_far_from_the_list_price_is_flagged() -> None:
    finops = with_prices(PriceEntry(deployment="api-gpt52-1", valid_from=date(2026, 1, 1), input_per_1k=0.0001,
                                    output_per_1k=0.012, litellm_model="gpt-5.2"), usd_rate=0.86)
    [check] = cross_check(finops.price_table)
    assert check.arithmetic_ok and check.within_tolerance is False and not check.ok
    unknown = with_prices(PriceEntry(deployment="api-gpt52-1", valid_from=date(2026, 1, 1), input_per_1k=0.001,
                                     litellm_model="no-such-model"))
    [check] = cross_check(unknown.price_table)
    assert check.note and check.ok
