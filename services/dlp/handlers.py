"""DLP handlers: a screening decision in, effects out (no bus, no I/O; unit-tested directly).

Input screening forwards the prompt (allowed or redacted) to routing with its decision on
the request's audit trail, or ends the request as blocked. Output screening ends every
request: it writes the trail, then replies — the record exists before the caller sees the
answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from schemas import subjects
from schemas.events import (
    AuditEvent,
    DlpDecision,
    Envelope,
    GeneratedChoice,
    RequestResult,
    RequestScreened,
    RequestSubmitted,
    ResponseGenerated,
    ResponseStreaming,
    ToolCall,
    envelope_fields,
)
from schemas.vocabulary import Stage, max_sensitivity
from services.dlp.guard import DlpGuard, DlpUnavailable, PolicyContext, restore_pseudonyms
from services.dlp.guardrails import (
    GuardDecision,
    Guardrails,
    GuardUnavailable,
    closing_audit,
    guard_audit,
    input_texts,
)
from services.dlp.texts import TextSlots, choice_slots, message_slots
from services.runtime.effects import Effects, Fail, Publish, Record, Reply

Observe = Callable[[DlpDecision], None]


def _ignore(_: DlpDecision) -> None:
    return None


def policy_context(event: Envelope) -> PolicyContext:
    return PolicyContext(
        usecase_class=event.usecase_class,
        tenant=event.tenant,
        business_unit=event.business_unit,
        user_role=event.user_role,
    )


def decision_audit(event: Envelope, stage: Stage, decision: DlpDecision) -> AuditEvent:
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


def screen_input(
    guard: DlpGuard, event: RequestSubmitted, observe: Observe = _ignore, guardrails: Guardrails | None = None
) -> Effects:
    # The guardrails first (issue 16), on the original user and tool messages: an injection
    # or a denied topic ends the request before DLP spends time on it.
    guarded: list[AuditEvent] = []
    if guardrails is not None:
        try:
            verdict = guardrails.check(input_texts(event.messages), direction="input", context=policy_context(event))
        except GuardUnavailable:
            return [Fail("guard_unavailable", "dlp_input",
                         audits=[closing_audit(event, "dlp_input", None, "guard_unavailable")])]
        guarded.append(guard_audit(event, verdict))
        if verdict.action == "block":
            return [Fail("guard_blocked_input", "dlp_input", status="blocked", rule_id=verdict.rule_id,
                         audits=[*guarded, closing_audit(event, "dlp_input", verdict, "guard_blocked_input")])]
    # Every text the model will read: contents, tool results, earlier tool calls' arguments.
    slots, rebuild = message_slots(event.messages)
    try:
        screening = guard.screen(
            slots.texts,
            direction="input",
            context=policy_context(event),
            pseudonymize=event.pseudonymize,
        )
    except DlpUnavailable:
        return [Fail("dlp_unavailable", "dlp_input")]
    decision = screening.decision
    observe(decision)
    audit = decision_audit(event, "dlp_input", decision)
    if decision.action == "block" or screening.texts is None:
        return [
            Fail(
                "dlp_blocked_input",
                "dlp_input",
                status="blocked",
                rule_id=decision.rule_id,
                audits=[*guarded, audit],
                result_fields={"dlp_input": decision},
            )
        ]
    attributes = event.attributes
    attributes.data_sensitivity = max_sensitivity(attributes.data_sensitivity, decision.derived_sensitivity)
    slots.fill(screening.texts)
    screened = RequestScreened(
        **envelope_fields(event),
        messages=rebuild(),
        attributes=attributes,
        params=event.params,
        pseudonymize=event.pseudonymize,
        stream=event.stream,
        trail=[*event.trail, *guarded, audit],
        dlp_input=decision,
        pseudonyms=screening.pseudonyms,
    )
    return [Publish(subjects.REQUEST_SCREENED, screened, f"{event.request_id}:screened")]


def screen_output(
    guard: DlpGuard, event: ResponseGenerated, observe: Observe = _ignore, guardrails: Guardrails | None = None
) -> Effects:
    # Every choice's text and every tool call's arguments: the model wrote them all.
    first = GeneratedChoice(index=0, content=event.content, finish_reason=event.finish_reason,
                            tool_calls=event.tool_calls)
    more_choices = event.more_choices
    guarded: list[AuditEvent] = []
    if guardrails is not None:  # output moderation (issue 16) before DLP: a replaced answer is screened too
        texts = [c.content for c in (first, *more_choices) if c.content]
        try:
            verdict = guardrails.check(texts, direction="output", context=policy_context(event))
        except GuardUnavailable:
            return [Fail("guard_unavailable", "dlp_output", result_fields={"routing": event.routing},
                         audits=[closing_audit(event, "dlp_output", None, "guard_unavailable")])]
        guarded.append(guard_audit(event, verdict))
        if verdict.action == "block":
            return [Fail("guard_blocked_output", "dlp_output", status="blocked", rule_id=verdict.rule_id,
                         audits=[*guarded, closing_audit(event, "dlp_output", verdict, "guard_blocked_output")],
                         result_fields={"dlp_input": event.dlp_input, "routing": event.routing})]
        if verdict.action == "replace" and verdict.safe_answer is not None:
            first = GeneratedChoice(index=0, content=verdict.safe_answer, finish_reason="content_filter")
            more_choices = []
    slots, rebuild = choice_slots([first, *more_choices])
    try:
        screening = guard.screen(slots.texts, direction="output", context=policy_context(event))
    except DlpUnavailable:
        return [Fail("dlp_unavailable", "dlp_output", result_fields={"routing": event.routing})]
    decision = screening.decision
    observe(decision)
    audit = decision_audit(event, "dlp_output", decision)
    if decision.action == "block" or screening.texts is None:
        return [
            Fail(
                "dlp_blocked_output",
                "dlp_output",
                status="blocked",
                rule_id=decision.rule_id,
                audits=[*guarded, audit],
                result_fields={"dlp_input": event.dlp_input, "routing": event.routing, "dlp_output": decision},
            )
        ]
    texts = screening.texts
    if event.pseudonyms:
        texts = [restore_pseudonyms(text, event.pseudonyms) for text in texts]
    slots.fill(texts)
    choices = rebuild()
    result = RequestResult(
        **envelope_fields(event),
        status="ok",
        content=choices[0].content,
        finish_reason=first.finish_reason,
        tool_calls=choices[0].tool_calls,
        more_choices=choices[1:],
        dlp_input=event.dlp_input,
        routing=event.routing,
        dlp_output=decision,
        inference=event.inference,
        usage=event.usage,
        cost=event.cost,
        currency=event.currency,
    )
    return [Record([*event.trail, *guarded, audit]), Reply(result)]


def screen_tool_calls(
    guard: DlpGuard, event: ResponseStreaming, calls: list[ToolCall]
) -> tuple[list[ToolCall] | None, DlpDecision]:
    """The tool calls of a streamed answer, screened whole at its end (a half-written call
    cannot be run, so nothing is lost by waiting): redacted and pseudonyms restored, or None
    when the policy blocks. Raises DlpUnavailable like every screening."""
    slots = TextSlots()
    screened = slots.add_tool_calls(calls)
    screening = guard.screen(slots.texts, direction="output", context=policy_context(event))
    if screening.decision.action == "block" or screening.texts is None:
        return None, screening.decision
    texts = screening.texts
    if event.pseudonyms:
        texts = [restore_pseudonyms(text, event.pseudonyms) for text in texts]
    slots.fill(texts)
    return screened(), screening.decision


@dataclass(frozen=True, slots=True)
class StreamModeration:
    """Output moderation of one release of a streamed answer (``streaming.Moderate``)."""

    verdict: GuardDecision | None  # None: the guard could not decide
    stop: Effects | None  # the effects that end the stream now (block, guard failure), else None


def moderate_stream(guardrails: Guardrails, event: ResponseStreaming, text: str) -> StreamModeration:
    """Output moderation of streamed text about to be released. ``block`` (and a guard
    failure) end the stream with ``content_filter`` — nothing of ``text`` is released;
    ``replace`` is for the stream to carry out (``replace_stream``: it knows what was already
    released); ``allow``/``flag``/``review`` let it through and the strictest of them is the
    stream's guard record (``streaming.StreamScreening``)."""
    try:
        verdict = guardrails.check([text], direction="output", context=policy_context(event))
    except GuardUnavailable:
        return StreamModeration(None, [Fail("guard_unavailable", "dlp_output", result_fields={"routing": event.routing},
                                            audits=[closing_audit(event, "dlp_output", None, "guard_unavailable")])])
    if verdict.action != "block":
        return StreamModeration(verdict, None)
    return StreamModeration(verdict, [
        Fail(
            "guard_blocked_output",
            "dlp_output",
            status="blocked",
            rule_id=verdict.rule_id,
            audits=[guard_audit(event, verdict), closing_audit(event, "dlp_output", verdict, "guard_blocked_output")],
            result_fields={"dlp_input": event.dlp_input, "routing": event.routing, "finish_reason": "content_filter"},
        )
    ])


SAFE_ANSWER_SEPARATOR: Final = "\n\n"


def replace_stream(event: ResponseStreaming, verdict: GuardDecision, released: str,
                   decision: DlpDecision | None) -> Effects:
    """``replace`` decided mid-stream: what was already released stays (it cannot be taken
    back), the policy's fixed answer follows it, and the stream ends with ``finish_reason:
    "content_filter"`` — nothing of the moderated text is released. Like a whole answer's
    replacement; the fixed answer is the policy's text, so the DLP window does not read it."""
    safe = verdict.safe_answer or ""
    content = f"{released}{SAFE_ANSWER_SEPARATOR}{safe}" if released else safe
    audits = [guard_audit(event, verdict)]
    if decision is not None:
        audits.append(decision_audit(event, "dlp_output", decision))
    result = RequestResult(
        **envelope_fields(event),
        status="ok",
        content=content,
        finish_reason="content_filter",
        dlp_input=event.dlp_input,
        routing=event.routing,
        dlp_output=decision,
    )
    return [Record([*event.trail, *audits]), Reply(result)]
