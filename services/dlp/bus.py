"""DLP worker contract.

consumes  stellwerk.v1.request.submitted   (durable ``dlp-input``)
          stellwerk.v1.response.generated  (durable ``dlp-output``)
publishes stellwerk.v1.request.screened    (prompt allowed or redacted)
          stellwerk.v1.result.<id>         (answer screened — or blocked / failed, typed)
          stellwerk.v1.audit.dlp_input, stellwerk.v1.audit.dlp_output
"""

from __future__ import annotations

import asyncio

from schemas import subjects
from schemas.events import (
    AuditEvent,
    ChatMessage,
    DlpDecision,
    Envelope,
    RequestResult,
    RequestScreened,
    RequestSubmitted,
    ResponseGenerated,
    envelope_fields,
)
from schemas.streams import DLP_INPUT, DLP_OUTPUT
from schemas.vocabulary import Stage, max_sensitivity
from services.dlp.guard import DlpGuard, DlpSettings, DlpUnavailable, PolicyContext, restore_pseudonyms
from services.runtime.worker import Worker

RELOAD_INTERVAL_S = 2.0


def _context(event: Envelope) -> PolicyContext:
    return PolicyContext(
        usecase_class=event.usecase_class,
        tenant=event.tenant,
        business_unit=event.business_unit,
        user_role=event.user_role,
    )


def _count(worker: Worker, decision: DlpDecision) -> None:
    worker.metrics.dlp_decisions.labels(decision.direction, decision.action, decision.rule_id).inc()
    for entity in decision.entities:
        worker.metrics.dlp_entities.labels(decision.direction, entity.type).inc(entity.count)


def _audit(event: Envelope, stage: Stage, decision: DlpDecision) -> AuditEvent:
    return AuditEvent(
        **envelope_fields(event),
        stage=stage,
        outcome=decision.action,
        rule_id=decision.rule_id,
        policy_version=decision.policy_version,
        data_sensitivity=decision.derived_sensitivity,
        entities=decision.entities,
        attributes={"language": decision.language, "medical": str(decision.has_medical_terms).lower()},
    )


def build(worker: Worker) -> None:
    guard = DlpGuard.from_settings(DlpSettings())

    async def on_submitted(event: RequestSubmitted) -> None:
        try:
            screening = guard.screen(
                [m.content for m in event.messages],
                direction="input",
                context=_context(event),
                pseudonymize=event.pseudonymize,
            )
        except DlpUnavailable:
            await worker.fail(event, "dlp_unavailable", stage="dlp_input")
            return
        decision = screening.decision
        _count(worker, decision)
        audit = _audit(event, "dlp_input", decision)
        if decision.action == "block" or screening.texts is None:
            await worker.audit(audit)
            await worker.fail(
                event,
                "dlp_blocked_input",
                stage="dlp_input",
                status="blocked",
                already_audited=True,
                rule_id=decision.rule_id,
                dlp_input=decision,
            )
            return
        attributes = event.attributes
        attributes.data_sensitivity = max_sensitivity(
            attributes.data_sensitivity, decision.derived_sensitivity
        )
        screened = worker.publish(
            subjects.REQUEST_SCREENED,
            RequestScreened(
                **envelope_fields(event),
                messages=[
                    ChatMessage(role=m.role, content=text)
                    for m, text in zip(event.messages, screening.texts, strict=True)
                ],
                attributes=attributes,
                params=event.params,
                pseudonymize=event.pseudonymize,
                dlp_input=decision,
                pseudonyms=screening.pseudonyms,
            ),
            msg_id=f"{event.request_id}:screened",
        )
        await asyncio.gather(worker.audit(audit), screened)

    async def on_generated(event: ResponseGenerated) -> None:
        try:
            screening = guard.screen([event.content], direction="output", context=_context(event))
        except DlpUnavailable:
            await worker.fail(event, "dlp_unavailable", stage="dlp_output", routing=event.routing)
            return
        decision = screening.decision
        _count(worker, decision)
        audit = _audit(event, "dlp_output", decision)
        if decision.action == "block" or screening.texts is None:
            await worker.audit(audit)
            await worker.fail(
                event,
                "dlp_blocked_output",
                stage="dlp_output",
                status="blocked",
                already_audited=True,
                rule_id=decision.rule_id,
                dlp_input=event.dlp_input,
                routing=event.routing,
                dlp_output=decision,
            )
            return
        content = screening.texts[0]
        if event.pseudonyms:
            content = restore_pseudonyms(content, event.pseudonyms)
        await worker.audit(audit)  # the record exists before the caller sees the answer
        await worker.reply(
            RequestResult(
                **envelope_fields(event),
                status="ok",
                content=content,
                finish_reason=event.finish_reason,
                dlp_input=event.dlp_input,
                routing=event.routing,
                dlp_output=decision,
                inference=event.inference,
                usage=event.usage,
                cost=event.cost,
                currency=event.currency,
            )
        )

    async def reload_rules() -> None:
        # Org identifier patterns and the sensitivity policy take effect without a restart.
        if guard.reload():
            worker.log.warning("dlp_rules_reloaded", policy_version=guard.policy_version)

    worker.every(RELOAD_INTERVAL_S, reload_rules)
    worker.consume(DLP_INPUT, RequestSubmitted, on_submitted)
    worker.consume(DLP_OUTPUT, ResponseGenerated, on_generated)
