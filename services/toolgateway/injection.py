"""Prompt-injection check on tool results before they reach the agent. Pure.

Tool results are data, but an agent feeds them to a model — so text in a web page or a ticket
that *addresses the model* ("ignore previous instructions", chat-template tokens, invisible
Unicode carrying instructions) is an attack on the agent. Since issue 16 this is the guard's
one detector (``services.kernel.guard``), shared with the DLP service's guardrails on user and
tool messages: normalisation against obfuscation, the English and German rules, hidden
payloads (tag characters, base64, ROT13) and the n-gram classifier. ``high`` (the tool policy
blocks): a rule with no innocent reading, two signals, or a classifier score ≥ 0.85;
``suspicious``: one signal, or a score ≥ 0.5. Instructions quoted inside ordinary text are
reported as ``quoted.<signal>`` and are at most suspicious. Signal names are metadata only.
"""

from __future__ import annotations

from services.kernel.guard.detector import InjectionVerdict, Level, scan

Severity = Level

__all__ = ["InjectionVerdict", "Severity", "scan"]
