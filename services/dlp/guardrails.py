"""Guardrails (issue 16): a layer of the DLP service — prompt injection and jailbreaks, topics
per use case, output moderation — decided by a Rego policy of its own.

The detectors are the shared kernel's (``services.kernel.guard``: the tool gateway runs the
same injection detector on tool results); this module feeds their scores to the policy in
``guard_policies/`` (``stellwerk/guard/decision``; thresholds, per-use-case and per-business-
unit settings and fixed safe answers in its ``data.json``), and turns the decision into an
audit record. Scores, signal names and rule ids leave this module — never text.

Fail closed: a detector crash, a policy that does not compile, yields nothing or an unknown
action raises ``GuardUnavailable``; callers refuse with ``guard_unavailable``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

import structlog

from schemas.events import AuditEvent, ChatMessage, Envelope, envelope_fields
from schemas.vocabulary import Direction
from services.dlp.guard import PolicyContext
from services.kernel.guard.detector import InjectionScan, moderation, scan_injection, topics
from services.runtime.rego import BundledPolicy, PolicyError, PolicySource

GuardAction = Literal["allow", "flag", "review", "block", "replace"]
ENTRYPOINT: Final = "stellwerk/guard/decision"
# The roles whose text the guard reads on input: what users and tools (results sent back by
# clients) say. System prompts are the operator's; earlier assistant turns the model's.
SCREENED_ROLES: Final = frozenset({"user", "tool"})
log = structlog.get_logger("stellwerk.guard")


class GuardUnavailable(RuntimeError):
    """A detector or the guardrail policy failed: callers must refuse (fail closed)."""


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    score: float


@dataclass(frozen=True, slots=True)
class GuardDecision:
    direction: Direction
    action: GuardAction
    rule_id: str
    policy_version: str
    categories: list[Category]  # every category with a score above zero, highest first
    signals: tuple[str, ...] = ()
    # The fixed answer from the policy data (action ``replace`` only). Policy text, not content.
    safe_answer: str | None = field(default=None, repr=False)


Observe = Callable[[GuardDecision], None]
# How strict an action is (as the policy ranks them, guardrails.rego ``rank``).
RANK: Final[dict[str, int]] = {"allow": 0, "flag": 20, "review": 30, "replace": 45, "block": 50}


def stricter(a: GuardDecision | None, b: GuardDecision | None) -> GuardDecision | None:
    """The stricter of two decisions (the first on a tie): a streamed answer is moderated
    release by release, and its record is the strictest verdict."""
    if a is None or b is None:
        return a or b
    return b if RANK[b.action] > RANK[a.action] else a


def _ignore(_: GuardDecision) -> None:
    return None


class Guardrails:
    def __init__(self, policy_dir: Path, observe: Observe = _ignore) -> None:
        try:
            self._policy = BundledPolicy(policy_dir, ENTRYPOINT, check_interval=float("inf"))
        except (PolicyError, OSError, ValueError) as exc:
            raise GuardUnavailable(f"guardrail policy could not load: {type(exc).__name__}") from None
        self.observe = observe
        self._quantisers: dict[str, Callable[[float], float]] = {}

    def _quantiser(self, version: str, data: dict[str, Any]) -> Callable[[float], float]:
        step = self._quantisers.get(version)
        if step is None:
            if len(self._quantisers) > 64:  # versions come and go with pushes and rollbacks
                self._quantisers.clear()
            step = self._quantisers[version] = quantiser(thresholds(data))
        return step

    @property
    def policy_version(self) -> str:
        return self._policy.current().version

    @property
    def last_reload_error(self) -> str | None:
        return self._policy.last_error

    def reload(self) -> bool:
        return self._policy.reload()

    def replace(self, source: PolicySource) -> None:
        """Install a bundle from KV ``policies``; raises PolicyError if it does not compile."""
        self._policy.replace(source)

    def warm_up(self) -> None:
        """Load the classifier and evaluate the policy once per direction now, so a worker's
        first request does not pay for it (~0.1–0.5 s) — and a broken model or policy stops
        the worker at start instead of failing requests."""
        context = PolicyContext(usecase_class="chat", tenant="warm-up", business_unit="warm-up", user_role="warm-up")
        for direction in ("input", "output"):
            self._check(["Guten Tag, bitte fassen Sie den Vorgang zusammen."], direction, context)

    def check(self, texts: Sequence[str], *, direction: Direction, context: PolicyContext) -> GuardDecision:
        """Input: injection and topics; output: moderation. One decision for all texts."""
        try:
            decision = self._check(list(texts), direction, context)
        except GuardUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - fail closed; the type only, never the text
            raise GuardUnavailable(f"guardrails failed: {type(exc).__name__}") from None
        self.observe(decision)
        return decision

    def _check(self, texts: list[str], direction: Direction, context: PolicyContext) -> GuardDecision:
        injection = scan_injection(texts) if direction == "input" and texts else _NO_INJECTION
        topic = topics(texts) if direction == "input" else {}
        harm = moderation(texts) if direction == "output" else {}
        policy = self._policy.current()
        step = self._quantiser(policy.version, policy.data)
        out = policy.evaluate(
            {
                "direction": direction,
                "usecase_class": context.usecase_class,
                "tenant": context.tenant,
                "business_unit": context.business_unit,
                "user_role": context.user_role,
                # Scores floored to the nearest threshold the policy data names (every
                # ``score >= threshold`` comparison stays exact), zeros left out: a handful of
                # distinct inputs per use case, each answered from the compiled policy's
                # decision memo after its first evaluation (~1 ms of Rego, the largest part of
                # the guard's latency when it misses).
                "injection": {
                    "score": step(injection.score),
                    "quoted_score": step(injection.quoted_score),
                    "rule_severity": injection.rule_severity,
                    "signals": list(injection.signals),
                    "quoted_signals": list(injection.quoted_signals),
                    "encoded": injection.encoded,
                },
                "topics": {k: step(v) for k, v in topic.items() if step(v)},
                "moderation": {k: step(v) for k, v in harm.items() if step(v)},
            }
        )
        action, rule_id, answer_key = out.get("action"), out.get("rule_id"), out.get("safe_answer")
        if action not in get_args(GuardAction):
            raise GuardUnavailable("guardrail policy returned an unknown action")
        if not isinstance(rule_id, str) or not rule_id:
            raise GuardUnavailable("guardrail policy returned no rule_id")
        safe_answer: str | None = None
        if action == "replace":
            answers: dict[str, Any] = policy.data.get("stellwerk_guard", {}).get("safe_answers", {})
            safe_answer = answers.get(answer_key) if isinstance(answer_key, str) else None
            if not isinstance(safe_answer, str) or not safe_answer:
                raise GuardUnavailable("guardrail policy names no safe answer for replace")
        categories = [Category("injection", injection.score)] if injection.score else []
        if injection.quoted_score:
            categories.append(Category("quoted_injection", injection.quoted_score))
        categories += [Category(name, score) for name, score in {**topic, **harm}.items() if score > 0]
        categories.sort(key=lambda c: -c.score)
        return GuardDecision(
            direction=direction,
            action=cast(GuardAction, action),
            rule_id=rule_id,
            policy_version=policy.version,
            categories=categories,
            signals=(*injection.signals, *(f"quoted.{s}" for s in injection.quoted_signals)),
            safe_answer=safe_answer,
        )


_NO_INJECTION: Final = InjectionScan(0.0, (), "none", False)


def thresholds(data: dict[str, Any]) -> tuple[float, ...]:
    """Every number in (0, 1] under ``data.stellwerk_guard``: the thresholds scores meet."""
    found: set[float] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1:
            found.add(float(value))

    walk(data.get("stellwerk_guard", {}))
    return tuple(sorted(found))


def quantiser(levels: Sequence[float]) -> Callable[[float], float]:
    """``score`` floored to the highest of ``levels`` at or below it, else 0.0."""

    def step(score: float) -> float:
        index = bisect.bisect_right(levels, score + 1e-9)
        return levels[index - 1] if index else 0.0

    return step


def input_texts(messages: Sequence[ChatMessage]) -> list[str]:
    """What the guard reads of a conversation: user and tool messages, in order (the detector
    also reads the last few together: instructions split across messages)."""
    return [m.content for m in messages if m.role in SCREENED_ROLES and m.content]


def guard_audit(event: Envelope, decision: GuardDecision) -> AuditEvent:
    """The guard's own record: action, rule, policy version, scores and signal names."""
    attributes: dict[str, str] = {"direction": decision.direction}
    attributes.update({f"score.{c.name}": f"{c.score:.3f}" for c in decision.categories[:8]})
    if decision.signals:
        attributes["signals"] = "+".join(decision.signals)[:128]
    return AuditEvent(
        **envelope_fields(event),
        stage="guard",
        outcome=decision.action,
        rule_id=decision.rule_id,
        policy_version=decision.policy_version,
        attributes=attributes,
    )


def closing_audit(event: Envelope, stage: Literal["dlp_input", "dlp_output"], decision: GuardDecision | None,
                  code: Literal["guard_blocked_input", "guard_blocked_output", "guard_unavailable"]) -> AuditEvent:
    """The DLP stage's record that the request ended at the guard (the trail is written by
    the stage that ended it)."""
    return AuditEvent(
        **envelope_fields(event),
        stage=stage,
        outcome="blocked" if decision is not None else "failed",
        reason_code=code,
        rule_id=decision.rule_id if decision is not None else None,
        policy_version=decision.policy_version if decision is not None else None,
    )
