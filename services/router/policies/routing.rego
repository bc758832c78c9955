# Stellwerk reference routing policy (issue 4).
#
# Entrypoint: stellwerk/routing/decision. `first` is an ordered else-chain: the first
# matching rule wins and later rules are not evaluated. Every threshold and list lives in
# data.json (data.routing), so tuning the policy is a data edit that yields a new
# content-hash version like any rule change.
#
# Output: {"route", "rule_id", "fallbacks"} and, for route "fallback-policy", also
# {"reason", "retry_after_s"} (reason is a platform ErrorCode; retry_after_s is null when
# retrying the same request cannot help). No output at all when data.routing is malformed:
# the caller then fails closed instead of routing on half a configuration.
#
# rego-cpp costs roughly 10 µs per rule evaluated, so conditions are plain rules without
# `default`s (`not x` is true for an undefined x) and the chain stops at the first match.
package stellwerk.routing

# Order of the context-length vocabulary; data's local limit names one of these.
bucket_rank := {"<8k": 0, "8-32k": 1, ">32k": 2}

cfg := data.routing

signals := input.runtime_signals

# --- configuration sanity -------------------------------------------------------------

config_ok if {
	is_array(cfg.external_allowed_sensitivities)
	is_number(bucket_rank[cfg.local_max_context_bucket])
	is_object(cfg.fallbacks)
	is_object(cfg.retry_after_s)
}

# --- request attributes and runtime signals -------------------------------------------

# A provider that is merely "degraded" still serves; only "down" takes it out. A missing
# health entry means no breaker has tripped.
local_available if {
	signals.local_capacity_ok == true
	not signals.provider_health["local-vllm"] == "down"
}

api_down if signals.provider_health["api-gpt52"] == "down"

api_available if {
	signals.api_quota_remaining > 0
	not api_down
}

# Data that may leave the house; everything else must stay local.
external_allowed if input.data_sensitivity in cfg.external_allowed_sensitivities

too_long_for_local if bucket_rank[input.context_length_bucket] > bucket_rank[cfg.local_max_context_bucket]

budget_exhausted if signals.budget_exhausted == true

# FinOps budget actions in force for this request's tenant, business unit or use case
# (from the KV "budgets" state). "force_local" arrives as budget_exhausted.
budget_action(action) if action in object.get(signals, "budget_actions", [])

blocked_as_noncritical if {
	budget_action("block_noncritical")
	not input.usecase_class in object.get(cfg, "critical_usecases", [])
}

downgraded if budget_action("downgrade")

# Local can take this very request: available, and the prompt fits.
local_usable if {
	local_available
	not too_long_for_local
}

# The API may take this very request: the data may leave, the API is available, and the
# budget still allows paid calls.
api_usable if {
	external_allowed
	api_available
	not budget_exhausted
}

# --- the rules table, first match wins ------------------------------------------------

first := {"id": "sensitivity.local_only.unavailable", "route": "fallback-policy"} if {
	not external_allowed
	not local_usable
} else := {"id": "sensitivity.local_only", "route": "local-vllm"} if {
	not external_allowed
} else := {"id": "budget.block_noncritical", "route": "fallback-policy"} if {
	blocked_as_noncritical
} else := {"id": "budget.exhausted.unavailable", "route": "fallback-policy"} if {
	budget_exhausted
	not local_usable
} else := {"id": "budget.exhausted", "route": "local-vllm"} if {
	budget_exhausted
} else := {"id": "context.too_long.api_unavailable", "route": "fallback-policy"} if {
	too_long_for_local
	not api_available
} else := {"id": "context.too_long", "route": "api-gpt52"} if {
	too_long_for_local
} else := {"id": "availability.none", "route": "fallback-policy"} if {
	not api_available
	not local_available
} else := {"id": "availability.api_unavailable", "route": "local-vllm"} if {
	not api_available
} else := {"id": "availability.local_unavailable", "route": "api-gpt52"} if {
	not local_available
} else := {"id": "budget.low", "route": "local-vllm"} if {
	input.budget_class == "low"
} else := {"id": "quality.high", "route": "api-gpt52"} if {
	input.quality_tier == "high"
	not downgraded
} else := {"id": "default.local_first", "route": "local-vllm"}

# --- fallbacks ------------------------------------------------------------------------

usable("local-vllm") if local_usable

usable("api-gpt52") if api_usable

# The routes inference may fall back to, in the order data.json lists them, kept only if
# they could take this request now. For local-only data the API is never usable, so it can
# never appear here, whatever data.json lists.
fallbacks := [route |
	some route in object.get(cfg.fallbacks, first.route, [])
	route != first.route
	usable(route)
]

# --- refusal reason (fallback-policy only) --------------------------------------------

reason := "budget_exhausted" if {
	first.id == "budget.block_noncritical"
} else := "invalid_request" if {
	# Local-only data that does not fit the local context: retrying cannot help.
	first.id == "sensitivity.local_only.unavailable"
	too_long_for_local
} else := "budget_exhausted" if {
	# Only the paid API could take it, and the budget is spent.
	first.id == "budget.exhausted.unavailable"
	too_long_for_local
} else := "rate_limited" if {
	# The API is up but its token quota for this minute is used up.
	first.id == "context.too_long.api_unavailable"
	not api_down
} else := "no_route_available"

# --- decision -------------------------------------------------------------------------

decision := {"route": first.route, "rule_id": first.id, "fallbacks": fallbacks} if {
	config_ok
	first.route != "fallback-policy"
}

decision := {
	"route": first.route,
	"rule_id": first.id,
	"fallbacks": [],
	"reason": reason,
	"retry_after_s": object.get(cfg.retry_after_s, reason, null),
} if {
	config_ok
	first.route == "fallback-policy"
}
