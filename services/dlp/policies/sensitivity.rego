# Sensitivity policy of the DLP guard: features in, allow / redact / block out.
#
# Input (built by services/dlp/policy.py, never contains detected values):
#   direction, usecase_class, tenant, business_unit, user_role,
#   has_pii, pii_types, pii_confidence, quasi_identifier_types, confidential_types,
#   entity_types, has_medical_terms, medical_term_density, medical_categories,
#   pseudonym_types (placeholders such as <PERSON_1> found in a model answer)
# Output: {action, rule_id, derived_sensitivity}
# Thresholds and approved exceptions live in data.json (data.stellwerk_dlp).
# Several rules may fire; the one with the highest rank wins.
package stellwerk.dlp

cfg := data.stellwerk_dlp

default valid_input := false

valid_input if {
	input.direction in {"input", "output"}
	is_boolean(input.has_pii)
	is_boolean(input.has_medical_terms)
	is_number(input.medical_term_density)
	is_number(input.medical_term_count)
	is_number(input.pii_confidence)
	is_array(input.pii_types)
	is_array(input.quasi_identifier_types)
	is_array(input.confidential_types)
	is_array(input.entity_types)
	is_array(input.pseudonym_types)
	is_string(input.usecase_class)
	is_string(input.tenant)
	is_string(input.business_unit)
	is_string(input.user_role)
}

identifying_features if input.has_pii

identifying_features if count(input.quasi_identifier_types) > 0

# Density alone over-reacts to short texts ("Termin am 3.5. wegen Grippe" is 1 term in 6
# words), so a dense text must also hold a minimum number of medical terms.
dense_medical if {
	input.medical_term_density > cfg.medical_density_threshold
	input.medical_term_count >= cfg.medical_min_terms_for_density
}

# --- block --------------------------------------------------------------------------

# Health data about an identifiable person (Art. 9 GDPR special category).
candidates contains {"action": "block", "rule_id": "dlp.block.pii_with_medical", "rank": 50} if {
	input.has_pii
	input.has_medical_terms
}

# A model answer that puts medical content next to a pseudonym would re-link a person to
# health data once the pseudonym is restored for the caller.
candidates contains {"action": "block", "rule_id": "dlp.block.pseudonym_with_medical", "rank": 45} if {
	input.direction == "output"
	count(input.pseudonym_types) > 0
	input.has_medical_terms
}

# Dense clinical text plus any identifying feature (also indirect ones: birth date, postcode).
candidates contains {"action": "block", "rule_id": "dlp.block.dense_medical_identifying", "rank": 40} if {
	dense_medical
	identifying_features
}

# --- redact -------------------------------------------------------------------------

candidates contains {"action": "redact", "rule_id": "dlp.redact.pii", "rank": 30} if {
	input.has_pii
	not excepted
}

candidates contains {"action": "redact", "rule_id": "dlp.redact.confidential_identifier", "rank": 25} if {
	count(input.confidential_types) > 0
}

# --- allow --------------------------------------------------------------------------

# Approved exception (data.json): a role may process these identifier types unredacted.
candidates contains {"action": "allow", "rule_id": concat(".", ["dlp.allow.exception", exception_id]), "rank": 20} if {
	input.has_pii
	excepted
}

candidates contains {"action": "allow", "rule_id": "dlp.allow.medical_anonymous", "rank": 3} if {
	input.has_medical_terms
	not identifying_features
}

candidates contains {"action": "allow", "rule_id": "dlp.allow.medical_low_density", "rank": 2} if {
	input.has_medical_terms
	identifying_features
	not input.has_pii
	not dense_medical
}

candidates contains {"action": "allow", "rule_id": "dlp.allow.no_pii", "rank": 1} if {
	not input.has_pii
	not input.has_medical_terms
}

# --- exceptions ---------------------------------------------------------------------

matching_exceptions contains exc.id if {
	some exc in cfg.exceptions
	exc.tenant == input.tenant
	exc.business_unit in {"*", input.business_unit}
	exc.user_role in {"*", input.user_role}
	input.direction in exc.directions
	count({t | some t in input.pii_types; not t in exc.allow_types}) == 0
}

excepted if count(matching_exceptions) > 0

exception_id := min(matching_exceptions)

# --- sensitivity floor for the router -----------------------------------------------

derived_sensitivity := "highly_confidential" if {
	input.has_pii
	input.has_medical_terms
} else := "highly_confidential" if {
	dense_medical
	identifying_features
} else := "confidential" if {
	input.has_pii
} else := "confidential" if {
	count(input.confidential_types) > 0
} else := "confidential" if {
	dense_medical
} else := "internal" if {
	input.has_medical_terms
} else := "internal" if {
	count(input.entity_types) > 0
} else := "public"

# --- decision -----------------------------------------------------------------------

top_rank := max({c.rank | some c in candidates})

chosen := [c | some c in candidates; c.rank == top_rank][0]

decision := {
	"action": chosen.action,
	"rule_id": chosen.rule_id,
	"derived_sensitivity": derived_sensitivity,
} if valid_input

# Malformed features never mean "nothing found": block.
decision := {
	"action": "block",
	"rule_id": "dlp.block.invalid_features",
	"derived_sensitivity": "highly_confidential",
} if not valid_input
