# Stellwerk tool policy (issue 7): which agent role of which tenant may call which tool, and
# which calls wait for a human.
#
# Entrypoint: stellwerk/tools/decision. `first` is an ordered else-chain: the first matching
# rule wins. Every list lives in data.json (data.toolgateway), so changing who may call what
# is a data edit that yields a new content-hash version like any rule change.
#
# Tools are named `<server>.<tool>`; a pattern is a full name, `<server>.*` or `*`.
#
# Output: {"allow", "rule_id", "approval_required", "approvals_required", "approval_timeout_s",
# "screen_arguments", "injection_action"}. No output at all when data.toolgateway is
# malformed: the gateway then refuses the call (fail closed).
package stellwerk.tools

cfg := data.toolgateway

tool_id := concat(".", [input.server, input.tool])

config_ok if {
	is_object(cfg.roles)
	is_object(cfg.tenants)
	is_array(cfg.critical_tools)
	is_number(cfg.approval_timeout_s["default"])
	is_object(cfg.screen_arguments)
}

# --- matching -------------------------------------------------------------------------

matches(pattern) if pattern == tool_id

matches(pattern) if pattern == concat(".", [input.server, "*"])

matches("*")

any_match(patterns) if {
	some pattern in patterns
	matches(pattern)
}

tenant := object.get(cfg.tenants, input.tenant, {})

role_patterns := cfg.roles[input.user_role]

# --- conditions -----------------------------------------------------------------------

tenant_denied if any_match(object.get(tenant, "denied_tools", []))

# A tenant with an `allowed_tools` list may use nothing else, whatever its roles allow.
tenant_restricted if {
	allowed := tenant.allowed_tools
	not any_match(allowed)
}

role_unknown if not role_patterns

role_allowed if any_match(role_patterns)

# Critical: listed as such, or not declared read-only by its server (an unknown tool is
# treated as one that writes) unless data explicitly vouches for it.
critical if any_match(cfg.critical_tools)

critical if {
	not input.annotations.read_only == true
	not any_match(object.get(cfg, "uncritical_tools", []))
}

# --- the rules table, first match wins ------------------------------------------------

first := {"id": "tenant.tool_denied", "allow": false} if {
	tenant_denied
} else := {"id": "tenant.tool_not_allowed", "allow": false} if {
	tenant_restricted
} else := {"id": "role.unknown", "allow": false} if {
	role_unknown
} else := {"id": "role.tool_not_allowed", "allow": false} if {
	not role_allowed
} else := {"id": "role.allowed.critical_approval", "allow": true} if {
	critical
} else := {"id": "role.allowed", "allow": true}

# --- obligations ----------------------------------------------------------------------

approval_timeout_s := cfg.approval_timeout_s[tool_id] if {
	is_number(cfg.approval_timeout_s[tool_id])
} else := cfg.approval_timeout_s["default"]

# "enforce": DLP's redaction applies to the arguments (data leaving the house, e.g. a search
# query); "record": screened and counted for the audit only (internal systems of record).
screen_arguments := cfg.screen_arguments[input.server] if {
	cfg.screen_arguments[input.server] in {"enforce", "record"}
} else := "enforce"

injection_action := object.get(cfg, "injection_action", "block")

# Four eyes (issue 14): a critical call of a tool listed here needs two distinct approvers.
approvals_required := 2 if {
	first.id == "role.allowed.critical_approval"
	any_match(object.get(cfg, "four_eyes_tools", []))
} else := 1

# --- decision -------------------------------------------------------------------------

decision := {
	"allow": first.allow,
	"rule_id": first.id,
	"approval_required": first.id == "role.allowed.critical_approval",
	"approval_timeout_s": approval_timeout_s,
	"approvals_required": approvals_required,
	"screen_arguments": screen_arguments,
	"injection_action": injection_action,
} if config_ok
