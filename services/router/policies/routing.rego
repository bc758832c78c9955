# Stellwerk reference routing policy (issue 4; routes as data since issue 13).
#
# Entrypoint: stellwerk/routing/decision. The policy never names a route: the router passes
# the route catalogue from the platform config in input.routes, one entry per route:
#   {"name", "class", "locality": "local"|"external", "capabilities": [...],
#    "context_tokens", "cost_rank", "capacity_ok"?, "quota_ok"?, "reserved"?}
# (capacity_ok / quota_ok: this route's own capacity or API quota; absent = ok; reserved:
# reserved capacity (PTU) at a fixed price, quota_ok then says whether its reserved
# throughput has room this window — preferred while it has, spilled over when not). The
# policy decides on those attributes, the request's attributes and the runtime signals;
# class preferences, fallback classes, thresholds and lists live in data.json
# (data.routing), so tuning the policy is a data edit that yields a new content-hash
# version like any rule change.
#
# `first` is an ordered else-chain: the first matching rule wins and later rules are not
# evaluated. Output: {"route", "rule_id", "fallbacks"} and, for route "fallback-policy",
# also {"reason", "retry_after_s"} (reason is a platform ErrorCode; retry_after_s is null
# when retrying the same request cannot help). No output at all when data.routing or the
# catalogue is malformed: the caller then fails closed instead of routing on half a
# configuration.
#
# rego-cpp costs roughly 10 µs per rule evaluated, so conditions are plain rules without
# `default`s (`not x` is true for an undefined x) and the chain stops at the first match.
package stellwerk.routing

# The smallest context window a prompt of each bucket surely fits (">32k": more than 32k;
# the gateway bounds the prompt by the largest window of any route).
bucket_need := {"<8k": 8192, "8-32k": 32768, ">32k": 32769}

cfg := data.routing

signals := input.runtime_signals

routes := input.routes

operation := object.get(input, "operation", "chat")

named := object.get(input, "requested_model", null)

# --- configuration sanity -------------------------------------------------------------

config_ok if {
	is_array(cfg.external_allowed_sensitivities)
	is_object(cfg.class_order)
	is_object(cfg.fallback_classes)
	is_object(cfg.retry_after_s)
	is_array(routes)
	is_number(bucket_need[input.context_length_bucket])
}

# --- what the request needs, which routes can give it ---------------------------------

wanted("chat") if operation == "chat"

wanted("tools") if {
	operation == "chat"
	input.need_tools == true
}

wanted("json_schema") if {
	operation == "chat"
	input.need_json_schema == true
}

wanted("embeddings") if operation == "embeddings"

need := [c | some c in ["chat", "tools", "json_schema", "embeddings"]; wanted(c)]

capable(r) if count([c | some c in need; not c in r.capabilities]) == 0

# A client may name a route or a route class in `model`; the choice is then restricted to it.
name_ok(r) if named == null

name_ok(r) if r.name == named

name_ok(r) if r.class == named

named_known if {
	some r in routes
	name_ok(r)
}

fits(r) if r.context_tokens >= bucket_need[input.context_length_bucket]

# A provider that is merely "degraded" still serves; only "down" takes it out. A missing
# health entry means no breaker has tripped.
down(r) if signals.provider_health[r.name] == "down"

available(r) if {
	r.locality == "local"
	signals.local_capacity_ok == true
	not r.capacity_ok == false
	not r.quota_ok == false
	not down(r)
}

available(r) if {
	r.locality == "external"
	signals.api_quota_remaining > 0
	not r.quota_ok == false
	not down(r)
}

# Data that may leave the house; everything else must stay local.
external_allowed if input.data_sensitivity in cfg.external_allowed_sensitivities

budget_exhausted if signals.budget_exhausted == true

# FinOps budget actions in force for this request's tenant, business unit or use case
# (from the KV "budgets" state). "force_local" arrives as budget_exhausted.
budget_action(action) if action in object.get(signals, "budget_actions", [])

blocked_as_noncritical if {
	budget_action("block_noncritical")
	not input.usecase_class in object.get(cfg, "critical_usecases", [])
}

downgraded if budget_action("downgrade")

# The routes this request may be sent to at all: capable, named (if it names one), and
# the data may go there. Only context length and availability remain to be checked.
pool := [r | some r in routes; capable(r); name_ok(r)]

permitted(r) if {
	r.locality == "local"
	fits(r)
}

permitted(r) if {
	r.locality == "external"
	external_allowed
	fits(r)
}

named_permitted if {
	some r in pool
	permitted(r)
}

local_in_pool if {
	some r in pool
	r.locality == "local"
}

local_fit := [r | some r in pool; r.locality == "local"; fits(r)]

local_ok := [r | some r in local_fit; available(r)]

ext_fit := [r | some r in pool; r.locality == "external"; fits(r)]

ext_ok := [r | some r in ext_fit; available(r)]

# External routes only for data that may leave and while the budget allows paid calls.
candidates := array.concat(local_ok, ext_ok) if {
	external_allowed
	not budget_exhausted
} else := local_ok

# --- preference: data's class order for the operation, local first, then cheaper -------

class_order := object.get(cfg.class_order, operation, [])

class_rank(r) := i if {
	some i, c in class_order
	c == r.class
} else := 99

locality_rank(r) := 0 if r.locality == "local"

locality_rank(r) := 1 if r.locality == "external"

# Reserved capacity (PTU) is paid for whether used or not: within a class and locality it
# goes first while it has room (data.routing.prefer_reserved); full, it is not available and
# the request spills over to the next route (pay-as-you-go).
reserved_rank(r) := 0 if {
	object.get(cfg, "prefer_reserved", false) == true
	r.reserved == true
} else := 1

key(r) := ((((class_rank(r) * 100) + locality_rank(r)) * 10) + reserved_rank(r)) * 1000 + r.cost_rank

# Three orders of the catalogue, one unique number per route (ties go to the earlier route
# of the catalogue, in the last two digits; catalogues stay below 100 routes): "pref" (class
# order, local first, cheaper), "cheap" (cheapest first, then pref), "down" (dearest first,
# then pref). Compared with `<` only: rego-cpp's min() and sort() compare numbers as text.
keys := {r.name: key(r) | some r in routes}

rank_pref := {r.name: k | some i; r := routes[i]; k := (keys[r.name] * 100) + i}

rank_cheap := {r.name: k | some i; r := routes[i]; k := (((r.cost_rank * 100000000) + keys[r.name]) * 100) + i}

rank_down := {r.name: k | some i; r := routes[i]; k := ((((1000 - r.cost_rank) * 100000000) + keys[r.name]) * 100) + i}

best(rs) := r if {
	some r in rs
	count([x | some x in rs; rank_pref[x.name] < rank_pref[r.name]]) == 0
}

cheapest(rs) := r if {
	some r in rs
	count([x | some x in rs; rank_cheap[x.name] < rank_cheap[r.name]]) == 0
}

dearest(rs) := r if {
	some r in rs
	count([x | some x in rs; rank_down[x.name] < rank_down[r.name]]) == 0
}

high_quality := [r | some r in candidates; r.class in object.get(object.get(cfg, "quality_classes", {}), input.quality_tier, [])]

preferred := best(candidates)

# Downgrade: the next cheaper route (the dearest below the preferred one's cost rank) of
# the same capabilities; none cheaper = no downgrade.
cheaper := [r | some r in candidates; r.cost_rank < preferred.cost_rank]

downgrade_to := dearest(cheaper)

# --- the rules table, first match wins ------------------------------------------------

refuse := "fallback-policy"

first := {"id": "request.named_route.unknown", "route": refuse} if {
	named != null
	not named_known
} else := {"id": "capability.unsupported", "route": refuse} if {
	count([r | some r in routes; capable(r)]) == 0
} else := {"id": "request.named_route.not_allowed", "route": refuse} if {
	named != null
	not named_permitted
} else := {"id": "sensitivity.local_only.unavailable", "route": refuse} if {
	not external_allowed
	count(local_ok) == 0
} else := {"id": "sensitivity.local_only", "route": best(local_ok).name} if {
	not external_allowed
} else := {"id": "budget.block_noncritical", "route": refuse} if {
	blocked_as_noncritical
} else := {"id": "budget.exhausted.unavailable", "route": refuse} if {
	budget_exhausted
	count(local_ok) == 0
} else := {"id": "budget.exhausted", "route": best(local_ok).name} if {
	budget_exhausted
} else := {"id": "context.too_long.api_unavailable", "route": refuse} if {
	local_in_pool
	count(local_fit) == 0
	count(ext_ok) == 0
} else := {"id": "context.too_long", "route": best(ext_ok).name} if {
	local_in_pool
	count(local_fit) == 0
} else := {"id": "availability.none", "route": refuse} if {
	count(candidates) == 0
} else := {"id": "availability.api_unavailable", "route": best(local_ok).name} if {
	count(ext_fit) > 0
	count(ext_ok) == 0
} else := {"id": "availability.local_unavailable", "route": best(ext_ok).name} if {
	count(local_fit) > 0
	count(local_ok) == 0
} else := {"id": "request.named_route", "route": preferred.name} if {
	named != null
} else := {"id": "budget.low", "route": cheapest(candidates).name} if {
	input.budget_class == "low"
} else := {"id": "quality.high", "route": best(high_quality).name} if {
	count(high_quality) > 0
	not downgraded
} else := {"id": "budget.downgrade", "route": downgrade_to.name} if {
	downgraded
	count(cheaper) > 0
} else := {"id": "default.local_first", "route": preferred.name}

# --- fallbacks ------------------------------------------------------------------------

chosen := [r | some r in routes; r.name == first.route][0]

fallback_classes := object.get(cfg.fallback_classes, chosen.class, [chosen.class])

fallback_class_rank(r) := i if {
	some i, c in fallback_classes
	c == r.class
}

fallback_key(r) := ((fallback_class_rank(r) * 100) + locality_rank(r)) * 1000 + r.cost_rank

fallback_pool := [r | some r in candidates; r.name != chosen.name; r.class in fallback_classes]

# The routes inference may fall back to: other candidates (same capabilities, allowed for
# this data and budget, available now) of the classes data.json lists for the chosen
# route's class, in that order. For local-only data no external route is a candidate, so
# none can ever appear here, whatever data.json lists.
fallback_rank := {r.name: k | some i; r := fallback_pool[i]; k := (fallback_key(r) * 100) + i}

fallback_at := {n: name | some name; k := fallback_rank[name]; n := count([x | some x; fallback_rank[x] < k])}

fallbacks := [fallback_at[pos] | some pos; fallback_pool[pos]]

# --- refusal reason (fallback-policy only) --------------------------------------------

reason := "route_not_allowed" if {
	startswith(first.id, "request.named_route")
} else := "unsupported_by_route" if {
	first.id == "capability.unsupported"
} else := "budget_exhausted" if {
	first.id == "budget.block_noncritical"
} else := "invalid_request" if {
	# Local-only data that fits no local route: retrying cannot help.
	first.id == "sensitivity.local_only.unavailable"
	count(local_fit) == 0
} else := "budget_exhausted" if {
	# Only a paid API could take it, and the budget is spent.
	first.id == "budget.exhausted.unavailable"
	count(local_fit) == 0
} else := "invalid_request" if {
	# Too long for every route.
	first.id == "context.too_long.api_unavailable"
	count(ext_fit) == 0
} else := "rate_limited" if {
	# An API that could take it is up, but its token quota for this minute is used up.
	first.id == "context.too_long.api_unavailable"
	some r in ext_fit
	not down(r)
} else := "no_route_available"

# --- spill-over from reserved capacity ------------------------------------------------

# Reserved routes this request could have taken but for their used-up throughput: the
# chosen pay-as-you-go route of the same class is a spill-over from the first of them.
spill_from := [r.name |
	some r in pool
	r.reserved == true
	r.quota_ok == false
	r.class == chosen.class
	permitted(r)
]

spillover := {"spillover_from": spill_from[0]} if {
	not chosen.reserved == true
	count(spill_from) > 0
} else := {}

# --- decision -------------------------------------------------------------------------

decision := object.union({"route": first.route, "rule_id": first.id, "fallbacks": fallbacks}, spillover) if {
	config_ok
	first.route != refuse
}

decision := {
	"route": first.route,
	"rule_id": first.id,
	"fallbacks": [],
	"reason": reason,
	"retry_after_s": object.get(cfg.retry_after_s, reason, null),
} if {
	config_ok
	first.route == refuse
}
