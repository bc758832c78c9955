"""Canary, shadow and prompt templates at inference (issue 17): pure decisions and records.

The worker (``bus.py``) does the I/O: it calls the shadow deployment, asks DLP to screen the
shadow's answer, writes KV ``rollouts``. Everything it decides or writes down is built here,
without a server, and tested in ``tests/handlers/test_rollout.py``.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import msgspec

from schemas.events import AuditEvent, ChatMessage, RequestRouted, TokenUsage, UsageRecorded, envelope_fields
from schemas.kv import RolloutState
from schemas.vocabulary import DlpAction, ErrorCode
from services.inference.engine import CIRCUIT_OPEN, CallOutcome, InferenceFailed
from services.kernel.variants import BreachReason, Measured, VariantWindow, breach
from services.runtime.prompts import PromptTemplate, envelope_values, inject
from services.runtime.rollouts import variant_rollback_audit
from services.runtime.settings import PlatformConfig, RouteSpec

SHADOW_VARIANT = "shadow"


def template_for(event: RequestRouted, config: PlatformConfig, templates: dict[str, PromptTemplate]
                 ) -> PromptTemplate | None:
    """The variant's template, else the use case's; None for embeddings and where none is set."""
    if event.attributes.operation != "chat":
        return None
    variant = event.routing.variant
    template_id = (variant.prompt_template if variant else None) or config.prompt_templates.get(event.usecase_class)
    return templates.get(template_id) if template_id else None


def with_template(event: RequestRouted, template: PromptTemplate | None) -> list[ChatMessage]:
    """The messages the model gets: the platform's system prompt (filled in from the envelope)
    before the caller's screened messages."""
    if template is None:
        return event.messages
    return inject(event.messages, template.render(
        envelope_values(event.tenant, event.business_unit, event.usecase_class)))


def variant_failed(event: RequestRouted, outcome: CallOutcome | None, failure: InferenceFailed | None) -> bool | None:
    """Whether the request's variant failed its call (None: the request has no variant, or
    the variant was never called).

    A variant with its own deployment failed when an attempt on that deployment failed; a
    template-only variant when the first attempt on the decided route did. An attempt skipped
    because the route's circuit breaker was open never reached the variant: it says nothing
    about the canary and is not counted in its window (a route outage would otherwise roll
    back a healthy canary)."""
    variant = event.routing.variant
    if variant is None:
        return None
    attempts = outcome.failed_attempts if outcome is not None else tuple(failure.attempts if failure else ())
    if variant.deployment is not None:
        mine = [a for a in attempts if a.deployment == variant.deployment]
        if any(a.error_type != CIRCUIT_OPEN for a in mine):
            return True
        return None if mine else False
    if not attempts or attempts[0].route != event.routing.route:
        return False
    return None if attempts[0].error_type == CIRCUIT_OPEN else True


def unless_rolled_back(event: RequestRouted, rolled_back: Collection[str]) -> RequestRouted:
    """The request without its variant when that variant is rolled back here: the route's
    stable deployments and the use case's template answer it. The router may not know yet —
    the breach is this replica's and its KV record still being written."""
    variant = event.routing.variant
    if variant is None or f"{event.routing.route}.{variant.name}" not in rolled_back:
        return event
    return msgspec.structs.replace(event, routing=msgspec.structs.replace(event.routing, variant=None))


def judge(window: VariantWindow, spec: RouteSpec, now: float) -> tuple[BreachReason, Measured] | None:
    """A canary's window against its route's rollback thresholds."""
    measured = window.measure(now)
    reason = breach(measured, spec.rollback.min_requests, spec.rollback.max_error_rate,
                    spec.rollback.max_p95_latency_ms)
    return (reason, measured) if reason is not None else None


def rollback_state(route: str, variant: str, reason: BreachReason, measured: Measured) -> RolloutState:
    return RolloutState(
        route=route, variant=variant, actor="system", reason=reason, requests=measured.requests,
        error_rate=round(measured.error_rate, 4), p95_latency_ms=round(measured.p95_latency_ms, 3),
    )


def rollback_audit(state: RolloutState, spec: RouteSpec, now: datetime, worker_id: str) -> AuditEvent:
    """The automatic rollback of a route variant, on the audit trail (actor ``system``)."""
    return variant_rollback_audit(state, spec.rollback, "inference", now, worker_id)


class ShadowSlots:
    """Shadow calls this worker has in flight, bounded (``shadow_max_in_flight``).

    A mirror runs outside the consumer's ``max_in_flight`` and holds a slot of its target
    deployment: unbounded, a burst of mirrored requests would starve the callers' own calls.
    When all slots are taken the mirror is dropped — counted, not audited (a shadow is a
    sample; a dropped one is no event of the request)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def admit(self, event: RequestRouted) -> tuple[str | None, bool]:
        """(the shadow deployment to call now — a slot taken, ``release`` it — or None, and
        whether the request's shadow was due but dropped for want of a free slot)."""
        target = event.routing.shadow
        if target is None or event.attributes.operation != "chat":
            return None, False
        if self.in_flight >= self.limit:
            return None, True
        self.in_flight += 1
        return target, False

    def release(self) -> None:
        self.in_flight -= 1


def shadow_records(event: RequestRouted, outcome: CallOutcome, currency: str, dlp_action: DlpAction | None,
                   template_version: str | None) -> tuple[AuditEvent, UsageRecorded]:
    """A shadow call's record and usage: booked like any call (``shadow: true``, its own call
    id), with the output screening's action; the answer itself goes nowhere."""
    deployment = outcome.deployment
    envelope = envelope_fields(event)
    audit = AuditEvent(
        **envelope,
        stage="inference",
        outcome="shadow_completed",
        route=outcome.route,
        deployment=deployment.name,
        model=deployment.model,
        model_version=deployment.model_version,
        config_version=deployment.config_version,
        prompt_template_version=template_version or deployment.prompt_template_version,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        latency_ms=round(outcome.latency_ms, 3),
        cost=outcome.cost,
        attributes={"shadow": "true", "dlp_output": dlp_action or "unavailable", "shadow_of": event.routing.route},
    )
    usage = UsageRecorded(
        **envelope,
        call_id=f"{event.request_id}.shadow.{deployment.name}",
        route=outcome.route,
        deployment=deployment.name,
        model=deployment.model,
        usage=TokenUsage(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens),
        ttft_ms=outcome.ttft_ms,
        latency_ms=outcome.latency_ms,
        gpu_seconds=outcome.gpu_seconds,
        cost=outcome.cost,
        currency=currency,
        variant=SHADOW_VARIANT,
        shadow=True,
    )
    return audit, usage


def shadow_failed_audit(event: RequestRouted, deployment: str, route: str, code: ErrorCode) -> AuditEvent:
    return AuditEvent(
        **envelope_fields(event),
        stage="inference",
        outcome="shadow_failed",
        reason_code=code,
        route=route,
        deployment=deployment,
        attributes={"shadow": "true", "shadow_of": event.routing.route},
    )
