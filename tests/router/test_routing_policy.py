"""The Rego policy itself: its case table passes and covers every rule of issue 4."""

from __future__ import annotations

import json
import re

from services.router.policy_store import ENTRYPOINT, SHIPPED_POLICY_DIR, check_policy_dir
from services.runtime.rego import CompiledPolicy, run_case_table

CASES = SHIPPED_POLICY_DIR / "routing_test.json"

# Issue 4's table, in order, with issue 13's rules for named models, capabilities and
# downgrade: (rule_id, route) — the routes of the case tables' catalogues.
RULES = [
    ("request.named_route.unknown", "fallback-policy"),
    ("capability.unsupported", "fallback-policy"),
    ("request.named_route.not_allowed", "fallback-policy"),
    ("sensitivity.local_only.unavailable", "fallback-policy"),
    ("sensitivity.local_only", "local-vllm"),
    ("sensitivity.local_only", "local-long"),
    # Beyond the issue's table: FinOps' "block non-critical use cases" budget action.
    ("budget.block_noncritical", "fallback-policy"),
    ("budget.exhausted.unavailable", "fallback-policy"),
    ("budget.exhausted", "local-vllm"),
    ("context.too_long.api_unavailable", "fallback-policy"),
    ("context.too_long", "api-gpt52"),
    ("availability.none", "fallback-policy"),
    ("availability.api_unavailable", "local-vllm"),
    ("availability.local_unavailable", "api-gpt52"),
    ("request.named_route", "api-gpt52"),
    ("request.named_route", "local-small"),
    ("budget.low", "local-vllm"),
    ("budget.low", "local-small"),
    ("quality.high", "api-gpt52"),
    ("quality.high", "api-ptu"),  # issue 17: reserved capacity with room
    ("quality.high", "api-payg"),  # ... and the spill-over when it is full
    ("budget.downgrade", "local-small"),
    ("default.local_first", "local-vllm"),
    ("default.local_first", "api-gpt52"),
    ("default.local_first", "local-embeddings"),
    ("default.local_first", "local-long"),
]
RULE_ORDER = list(dict.fromkeys(rule for rule, _ in RULES))


def test_case_table_passes() -> None:
    policy = CompiledPolicy.from_dir(SHIPPED_POLICY_DIR, ENTRYPOINT)
    assert run_case_table(policy, CASES) == []


def test_case_table_covers_every_rule_with_its_route() -> None:
    cases = json.loads(CASES.read_text())
    covered = {(c["expect"]["rule_id"], c["expect"]["route"]) for c in cases}
    assert covered == set(RULES)


def test_policy_table_lists_the_rules_in_order_and_never_names_a_route() -> None:
    rego = (SHIPPED_POLICY_DIR / "routing.rego").read_text()
    assert re.findall(r'\{"id": "([a-z_.]+)", "route": ', rego) == RULE_ORDER
    # Routes are data: the policy decides on attributes, never on a route's name.
    for route in ("local-vllm", "api-gpt52", "local-small", "local-embeddings", "local-long"):
        assert f'"{route}"' not in rego


def test_every_refusal_case_states_reason_and_retry() -> None:
    for case in json.loads(CASES.read_text()):
        if case["expect"]["route"] == "fallback-policy":
            assert {"reason", "retry_after_s", "fallbacks"} <= case["expect"].keys(), case["name"]


def test_local_only_data_never_gets_an_external_fallback() -> None:
    policy = CompiledPolicy.from_dir(SHIPPED_POLICY_DIR, ENTRYPOINT)
    for case in json.loads(CASES.read_text()):
        if case["input"]["data_sensitivity"] == "highly_confidential":
            decision = policy.evaluate(case["input"])
            external = {r["name"] for r in case["input"]["routes"] if r["locality"] == "external"}
            assert decision["route"] not in external, case["name"]
            assert not external & set(decision["fallbacks"]), case["name"]


def test_shipped_policy_passes_the_push_check() -> None:
    assert check_policy_dir(SHIPPED_POLICY_DIR).version.startswith("sha256:")
