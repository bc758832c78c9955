"""DLP guard: German/English PII and medical-context detection, Rego sensitivity policy,
redaction and reversible pseudonymisation. The functional core is ``guard.DlpGuard``."""
