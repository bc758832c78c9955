# Guardrail policy (issue 16): detector scores in, allow / flag / review / block / replace out.
#
# Input (built by services/dlp/guardrails.py, never contains text):
#   direction, usecase_class, tenant, business_unit, user_role,
#   injection: {score, quoted_score, rule_severity, signals, quoted_signals, encoded}
#   topics: {medical_advice, investment_advice, legal_advice: score 0..1}
#   moderation: {violence, self_harm, sexual, hate, illegal_instructions: score 0..1}
# Output: {action, rule_id, safe_answer} — safe_answer names an entry of data.safe_answers
# (only with action "replace"). Thresholds and per-use-case settings: data.json
# (data.stellwerk_guard). Several rules may fire; the one with the highest rank wins.
#
# Scores arrive floored to the nearest threshold named anywhere under data.stellwerk_guard
# (services/dlp/guardrails.py: few distinct inputs, so decisions come from the memo): compare
# scores with ">=" against thresholds kept in data.json, never against a literal here.
package stellwerk.guard

cfg := data.stellwerk_guard

rank := {"allow": 0, "flag": 20, "review": 30, "replace": 45, "block": 50}

default valid_input := false

valid_input if {
	input.direction in {"input", "output"}
	is_string(input.usecase_class)
	is_string(input.tenant)
	is_string(input.business_unit)
	is_number(input.injection.score)
	is_number(input.injection.quoted_score)
	is_array(input.injection.signals)
	is_array(input.injection.quoted_signals)
	is_object(input.topics)
	is_object(input.moderation)
}

# Settings of the request's use case, then of its business unit on top (e.g. a hospital).
usecase := object.union(cfg.usecases["default"], object.get(cfg.usecases, input.usecase_class, {}))

settings := object.union(usecase, object.get(cfg.business_units, input.business_unit, {}))

# --- prompt injection and jailbreaks (input: user and tool messages) --------------------

injection if input.injection.score >= cfg.injection.block_score

injection if {
	input.injection.rule_severity == "high"
	input.injection.score >= cfg.injection.rule_floor
}

injection if {
	count(input.injection.signals) > 0
	input.injection.score >= cfg.injection.signal_score
}

candidates contains {"action": action, "rule_id": sprintf("guard.%s.injection", [action])} if {
	input.direction == "input"
	injection
	action := settings.injection_action
}

# The instructions are quoted inside ordinary text (a ticket about an attack).
quoted_injection if input.injection.quoted_score >= cfg.injection.block_score

quoted_injection if count(input.injection.quoted_signals) > 0

candidates contains {"action": action, "rule_id": sprintf("guard.%s.quoted_injection", [action])} if {
	input.direction == "input"
	not injection
	quoted_injection
	action := settings.quoted_injection_action
}

# Signals without a score that convinces: worth a look, not a refusal.
candidates contains {"action": "flag", "rule_id": "guard.flag.injection_signal"} if {
	input.direction == "input"
	not injection
	count(input.injection.signals) > 0
	input.injection.score >= cfg.injection.flag_score
}

# --- topics per use case (input) ----------------------------------------------------------

candidates contains {"action": "block", "rule_id": sprintf("guard.block.topic.%s", [topic])} if {
	input.direction == "input"
	some topic in settings.denied_topics
	input.topics[topic] >= cfg.topic_threshold
}

candidates contains {"action": "review", "rule_id": sprintf("guard.review.topic.%s", [topic])} if {
	input.direction == "input"
	some topic in settings.review_topics
	input.topics[topic] >= cfg.topic_threshold
}

# --- output moderation ------------------------------------------------------------------------

moderation_action(category) := object.get(settings.moderation, category, cfg.moderation.default_action)

candidates contains {"action": action, "rule_id": sprintf("guard.%s.moderation.%s", [action, category])} if {
	input.direction == "output"
	some category, score in input.moderation
	score >= cfg.moderation.thresholds[category]
	action := moderation_action(category)
	action != "allow"
}

# --- decision -----------------------------------------------------------------------------------

best_rank := max({rank[c.action] | some c in candidates})

chosen := sort([c.rule_id | some c in candidates; rank[c.action] == best_rank])[0]

default decision := {"action": "allow", "rule_id": "guard.allow", "safe_answer": ""}

decision := {"action": "block", "rule_id": "guard.block.invalid_input", "safe_answer": ""} if not valid_input

# An action the policy does not know (a typo in data.json) would drop out of ``best_rank``
# and leave the default allow: answer an action no caller accepts instead, so the request
# is refused (fail closed, ``guard_unavailable``).
unknown_actions := {c.action | some c in candidates; not object.get(rank, c.action, -1) >= 0}

decision := {"action": "unknown", "rule_id": "guard.unknown_action", "safe_answer": ""} if {
	valid_input
	count(unknown_actions) > 0
}

decision := {"action": action, "rule_id": chosen, "safe_answer": answer} if {
	valid_input
	count(unknown_actions) == 0
	count(candidates) > 0
	some c in candidates
	c.rule_id == chosen
	action := c.action
	answer := safe_answer_for(c)
}

safe_answer_for(c) := key if {
	c.action == "replace"
	some category, key in settings.safe_answers
	endswith(c.rule_id, sprintf(".%s", [category]))
} else := ""
