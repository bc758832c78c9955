"""The tool gateway's decision path: one tool call from request to reply.

    policy (role/tenant allowlist) → tool known? → JSON Schema → DLP on the arguments
    → rate limits → [critical: park for a human] → MCP call → DLP on the result
    → injection check → reply + audit

Any step can end the call with a typed refusal or failure; nothing is skipped, and a step
that cannot decide refuses (fail closed). The bus shell (``bus.py``) supplies the ports:
the MCP pool, KV-backed limiter and approval store, and an ``Outbox`` that publishes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import msgspec
import structlog
from mcp import MCPError
from mcp.types import TextContent

from schemas.events import (
    ApprovalDecided,
    ApprovalDecisionReply,
    ApprovalDecisionRequested,
    ApprovalRequested,
    AuditEvent,
    DlpDecision,
    ParamShape,
    ToolCallRequested,
    ToolCallResult,
    ToolCatalog,
    ToolContent,
    ToolInfo,
    ToolListRequested,
    envelope_fields,
    new_id,
    utcnow,
)
from services.kernel.call_context import CallContext
from services.toolgateway import approvals
from services.toolgateway.approval_store import ApprovalStore
from services.toolgateway.approvals import ApprovalRecord, Rejection
from services.toolgateway.approvers import Approvers, may_decide
from services.toolgateway.injection import scan
from services.toolgateway.limiter import LimiterUnavailable, ToolRateLimiter
from services.toolgateway.mcp_pool import McpPool, ToolServerUnavailable, ToolSpec
from services.toolgateway.metrics import ToolMetrics
from services.toolgateway.outcome import Outcome, audit_of, failed, refused, result_of
from services.toolgateway.policy import (
    Annotations,
    ToolPolicy,
    ToolPolicyInput,
    ToolPolicyUnavailable,
    ToolVerdict,
)
from services.toolgateway.screening import (
    DlpUnavailable,
    Screener,
    mirrors,
    rendered,
    strings_in,
    with_strings,
)
from services.toolgateway.settings import ToolApprovals, ToolServer
from services.toolgateway.shape import parameter_shape
from services.toolgateway.validation import SchemaCache, SchemaUnusable

log = structlog.get_logger("stellwerk.toolgateway")

RETRY_UNAVAILABLE_S = 5.0
_STAGE_OUTCOME = {"ok": "completed", "refused": "refused", "failed": "failed"}


class Outbox(Protocol):
    async def reply(self, reply_to: str | None, result: ToolCallResult) -> None: ...
    async def audit(self, event: AuditEvent, msg_id: str) -> None: ...
    async def approval_requested(self, event: ApprovalRequested) -> None: ...
    async def approval_decided(self, event: ApprovalDecided) -> None: ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """A call that passed every check before execution."""

    call: ToolCallRequested
    arguments: dict[str, Any]  # as screened (redacted where the policy enforces it)
    spec: ToolSpec
    verdict: ToolVerdict
    dlp_input: DlpDecision | None


def arguments_digest(arguments: dict[str, Any]) -> str:
    return hashlib.sha256(msgspec.json.encode(arguments, order="sorted")).hexdigest()


class ToolGateway:
    def __init__(
        self,
        *,
        pool: McpPool,
        policy: ToolPolicy,
        schemas: SchemaCache,
        screener: Screener,
        limiter: ToolRateLimiter,
        approval_store: ApprovalStore,
        outbox: Outbox,
        metrics: ToolMetrics,
        servers: list[ToolServer],
        approval_rules: ToolApprovals,
        clock: Callable[[], datetime] = utcnow,
        approvers: Approvers | None = None,
    ) -> None:
        self.pool = pool
        self.policy = policy
        self.schemas = schemas
        self.screener = screener
        self.limiter = limiter
        self.approvals = approval_store
        self.outbox = outbox
        self.metrics = metrics
        self.servers = {s.name: s for s in servers}
        self.approval_rules = approval_rules
        self.clock = clock
        self.approvers = approvers  # issue 14: who may decide (None: names as given, as before)
        self._resuming: set[asyncio.Task[None]] = set()

    # --- a call ------------------------------------------------------------------------

    async def handle(self, call: ToolCallRequested, reply_to: str | None) -> None:
        started = time.perf_counter()
        self.metrics.request_seen(call.request_id)
        spec = self.pool.tool(call.server, call.tool)
        # Undeclared keys appear as <additional>; for an unknown tool that is every key.
        shape = parameter_shape(call.arguments, spec.input_schema if spec else None)
        checked = await self._admit(call, spec)
        if isinstance(checked, Outcome):
            await self._finish(call, reply_to, checked, shape, started=started)
            return
        if checked.verdict.approval_required:
            await self._park(checked, reply_to, shape, started)
            return
        outcome = await self._execute(
            call, checked.arguments, checked.spec, checked.verdict.injection_action, checked.dlp_input,
            checked.verdict.rule_id, checked.verdict.policy_version,
        )
        await self._finish(call, reply_to, outcome, shape, started=started)

    async def _admit(self, call: ToolCallRequested, spec: ToolSpec | None) -> Admitted | Outcome:
        if call.expired(self.clock()):
            return failed("deadline_exceeded")
        try:
            verdict = self.policy.decide(self._policy_input(call, spec.annotations if spec else Annotations()))
        except ToolPolicyUnavailable:
            return refused("policy_unavailable", "policy.unavailable")
        version = verdict.policy_version
        if not verdict.allow:
            return refused("tool_not_allowed", verdict.rule_id, policy_version=version)
        if spec is None:
            connection = self.pool.connections.get(call.server)
            if connection is not None and not connection.connected:
                return failed("tool_unavailable", "not_connected", policy_version=version,
                              retry_after_s=RETRY_UNAVAILABLE_S)
            if connection is not None:
                connection.refresh_soon()  # the server may have gained the tool since its last listing
            return refused("tool_unknown", "catalog.unknown_tool", policy_version=version)
        try:
            violation = self.schemas.check(spec.input_schema, call.arguments)
        except SchemaUnusable:
            return failed("tool_unavailable", "schema_unusable", policy_version=version)
        if violation is not None:
            return refused("tool_schema_violation", "schema.violation", violation=violation, policy_version=version)
        arguments = call.arguments
        dlp_input: DlpDecision | None = None
        strings = strings_in(arguments)
        if strings:
            try:
                screening = await self.screener.screen(strings, "input", call)
            except DlpUnavailable as exc:
                return failed(exc.code, policy_version=version)
            dlp_input = screening.decision
            if dlp_input.action == "block" or screening.texts is None:
                return refused("dlp_blocked_input", dlp_input.rule_id, dlp_input=dlp_input, policy_version=version)
            if dlp_input.action == "redact" and verdict.screen_arguments == "enforce":
                arguments = with_strings(arguments, iter(screening.texts))
                # A placeholder can break a constraint (length, pattern): then the redacted
                # call is not a call the tool accepts, and it is refused as a DLP block.
                violation = self.schemas.check(spec.input_schema, arguments)
                if violation is not None:
                    return refused("dlp_blocked_input", dlp_input.rule_id, dlp_input=dlp_input,
                                   violation=violation, policy_version=version)
        try:
            limited = await self.limiter.admit(call)
        except LimiterUnavailable:
            return refused("rate_limited", "ratelimit.unavailable", retry_after_s=1.0,
                           dlp_input=dlp_input, policy_version=version)
        if limited is not None:
            return refused("rate_limited", limited.rule_id, retry_after_s=round(max(limited.retry_after_s, 0.001), 3),
                           dlp_input=dlp_input, policy_version=version)
        return Admitted(call, arguments, spec, verdict, dlp_input)

    def _policy_input(self, call: ToolCallRequested, annotations: Annotations) -> ToolPolicyInput:
        return ToolPolicyInput(
            tenant=call.tenant,
            business_unit=call.business_unit,
            user_role=call.user_role,
            usecase_class=call.usecase_class,
            server=call.server,
            tool=call.tool,
            agent_id=call.agent_id,
            application=call.application,
            annotations=annotations,
        )

    async def _execute(
        self,
        call: ToolCallRequested,
        arguments: dict[str, Any],
        spec: ToolSpec,
        injection_action: str,
        dlp_input: DlpDecision | None,
        rule_id: str,
        policy_version: str,
    ) -> Outcome:
        outcome = await self._call_and_screen(call, arguments, spec, injection_action)
        # Refusals at this point carry their own rule (DLP, injection); everything else the
        # policy rule that admitted the call.
        outcome.rule_id = outcome.rule_id or rule_id
        outcome.policy_version = policy_version
        outcome.dlp_input = dlp_input
        return outcome

    async def _call_and_screen(
        self, call: ToolCallRequested, arguments: dict[str, Any], spec: ToolSpec, injection_action: str
    ) -> Outcome:
        remaining = call.remaining_s(self.clock())
        if remaining <= 0:
            return failed("deadline_exceeded")
        server = self.servers[spec.server]
        meta = CallContext(
            usecase_class=call.usecase_class, tenant=call.tenant, request_id=call.request_id, call_id=call.call_id
        ).to_meta()
        try:
            result = await self.pool.call(spec.server, spec.name, arguments, meta, min(server.timeout_s, remaining))
        except ToolServerUnavailable as exc:
            return failed("tool_unavailable", str(exc), retry_after_s=RETRY_UNAVAILABLE_S)
        except MCPError as exc:  # the server refused the request itself (JSON-RPC error)
            return failed("tool_error", f"mcp_error_{abs(exc.code)}")
        structured = result.structured_content
        blocks = [block.text for block in result.content if isinstance(block, TextContent)]
        texts = [text for text in blocks if not mirrors(text, structured)]
        mirrored = len(blocks) - len(texts)
        strings = texts + strings_in(structured)
        dlp_output: DlpDecision | None = None
        if strings:
            try:
                screening = await self.screener.screen(strings, "output", call)
            except DlpUnavailable as exc:
                return failed(exc.code)
            dlp_output = screening.decision
            if dlp_output.action == "block" or screening.texts is None:
                return refused("dlp_blocked_output", dlp_output.rule_id, dlp_output=dlp_output)
            strings = screening.texts
        injection = scan(strings)
        signals = list(injection.signals)
        if injection.severity == "high" and injection_action == "block":
            return refused("tool_result_injection", f"injection.{signals[0]}", dlp_output=dlp_output,
                           injection_signals=signals)
        screened = iter(strings)
        content = [ToolContent(text=next(screened)) for _ in texts]
        structured = with_strings(structured, screened) if structured is not None else None
        if structured is not None and mirrored:
            content.append(ToolContent(text=rendered(structured)))  # the JSON copy, as screened
        return Outcome(
            status="failed" if result.is_error else "ok",
            code="tool_error" if result.is_error else None,
            error_class="tool_error" if result.is_error else None,
            content=content,
            structured=structured,
            dlp_output=dlp_output,
            injection_signals=signals,
        )

    async def _finish(
        self,
        call: ToolCallRequested,
        reply_to: str | None,
        outcome: Outcome,
        shape: list[ParamShape],
        *,
        started: float | None,
        record: ApprovalRecord | None = None,
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        approval_id = record.approval_id if record else None
        result = result_of(call, outcome, latency_ms=latency_ms, approval_id=approval_id)
        stage_outcome = _STAGE_OUTCOME[outcome.status]
        event = audit_of(
            call, stage="toolgateway", outcome_name=stage_outcome, shape=shape, outcome=outcome,
            latency_ms=latency_ms, approval_id=approval_id,
            approver=record.approver if record else None,
            approval_wait_s=record.wait_s() if record else None,
        )
        await asyncio.gather(
            self.outbox.reply(reply_to, result),
            self.outbox.audit(event, f"audit:{call.call_id}:toolgateway:{stage_outcome}"),
        )
        self.metrics.finished(
            call.server, call.tool, outcome.status, outcome.code, outcome.rule_id,
            latency_ms / 1000 if started is not None else None,
        )

    # --- approvals ---------------------------------------------------------------------

    async def _park(self, admitted: Admitted, reply_to: str | None, shape: list[ParamShape], started: float) -> None:
        call, verdict = admitted.call, admitted.verdict
        now = self.clock()
        timeout_s = min(verdict.approval_timeout_s or self.approval_rules.default_timeout_s,
                        self.approval_rules.max_timeout_s)
        record = ApprovalRecord(
            approval_id=new_id(),
            state="pending",
            request=msgspec.structs.replace(call, arguments={}),
            reply_to=reply_to,
            rule_id=verdict.rule_id,
            policy_version=verdict.policy_version,
            arguments_sha256=arguments_digest(admitted.arguments),
            parameter_shape=shape,
            approvals_required=verdict.approvals_required,
            injection_action=verdict.injection_action,
            dlp_input=admitted.dlp_input,
            created_at=now,
            # The sweep must announce the expiry while the caller still waits.
            expires_at=approvals.expiry(now, call.deadline, timeout_s, self.approval_rules.sweep_interval_s + 1.0),
        )
        try:
            await self.approvals.create(record, admitted.arguments)
        except Exception as exc:  # noqa: BLE001 - cannot park it: refuse rather than run it unapproved
            log.error("approval_not_stored", error=type(exc).__name__, call_id=call.call_id)
            outcome = failed("internal_error", "approval_store_unavailable",
                             rule_id=verdict.rule_id, policy_version=verdict.policy_version)
            await self._finish(call, reply_to, outcome, shape, started=started)
            return
        await asyncio.gather(
            self.outbox.approval_requested(
                ApprovalRequested(
                    **envelope_fields(call),
                    approval_id=record.approval_id,
                    tool=call.tool,
                    server=call.server,
                    rule_id=record.rule_id,
                    policy_version=record.policy_version,
                    arguments_sha256=record.arguments_sha256,
                    call_id=call.call_id,
                    agent_id=call.agent_id,
                    user_id=call.user_id,
                    expires_at=record.expires_at,
                    parameter_shape=shape,
                    approvals_required=record.approvals_required,
                )
            ),
            self.outbox.audit(
                audit_of(call, stage="toolgateway", outcome_name="pending_approval", shape=shape,
                         rule_id=record.rule_id, policy_version=record.policy_version,
                         approval_id=record.approval_id),
                f"audit:{call.call_id}:toolgateway:pending_approval",
            ),
        )
        self.metrics.approvals_pending.inc()

    async def _approver(self, request: ApprovalDecisionRequested) -> tuple[str | None, Rejection | None]:
        """Who decides (the actor) and, if they may not, why: the identity the credential
        proves (issue 14), else — only where ``require_approver_identity`` is off and no
        credential came — the name given."""
        if request.credential is None and not self.approval_rules.require_approver_identity:
            return request.approver, None
        if self.approvers is None:
            return None, Rejection("identity_unavailable")
        identity = await self.approvers.identify(request.credential)
        if isinstance(identity, Rejection):
            return None, identity
        # Review 1a: the approver is counted by rotation chain, not by the key presented.
        approver = self.approvers.person(identity)
        found = await self.approvals.get(request.approval_id)
        if found is None:
            return approver, Rejection("not_found")
        return approver, may_decide(identity, found[0], self.approval_rules.approver_role,
                                    self.approvers.keyring.person_of)

    async def decide(self, request: ApprovalDecisionRequested) -> ApprovalDecisionReply:
        now = self.clock()
        approver, refusal = await self._approver(request)
        if refusal is not None or approver is None:
            return await self._refused(request, refusal or Rejection("identity_required"), approver)
        outcome = await self.approvals.transition(
            request.approval_id,
            lambda r: approvals.decide(r, approve=request.approve, approver=approver,
                                       reason=request.reason, now=now),
        )
        if isinstance(outcome, Rejection):
            return await self._refused(request, outcome, approver)
        if outcome.state == "pending":  # four eyes: the first approval of two, recorded with its actor
            call = outcome.request
            await self.outbox.audit(
                audit_of(call, stage="approval", outcome_name="first_approval", shape=outcome.parameter_shape,
                         rule_id=outcome.rule_id, policy_version=outcome.policy_version,
                         approval_id=outcome.approval_id, approver=approver),
                f"audit:{call.call_id}:approval:first_approval:{len(outcome.approvers)}",
            )
            return ApprovalDecisionReply(approval_id=request.approval_id, accepted=True, state="pending",
                                         approver=approver,
                                         approvals_missing=outcome.approvals_required - len(outcome.approvers))
        await self._announce_decision(outcome)
        if outcome.state == "denied":
            await self._end_parked(outcome, refused("approval_denied", "approval.denied", reason=outcome.reason,
                                                    policy_version=outcome.policy_version))
        else:
            task = asyncio.create_task(self._resume(outcome), name=f"resume-{outcome.approval_id}")
            self._resuming.add(task)
            task.add_done_callback(self._resuming.discard)
        return ApprovalDecisionReply(approval_id=request.approval_id, accepted=True, state=outcome.state,
                                     approver=approver)

    async def _refused(self, request: ApprovalDecisionRequested, refusal: Rejection,
                       actor: str | None) -> ApprovalDecisionReply:
        """A decision not taken is audited too, with its actor (issue 14): an agent trying to
        approve its own call, an approver of another tenant, a credential that proves nothing
        (actor ``unauthenticated``; the typed name is recorded as ``claimed``, never trusted)."""
        found = await self.approvals.get(request.approval_id)
        if found is not None:
            record = found[0]
            call = record.request
            event = audit_of(call, stage="approval", outcome_name="decision_refused", shape=record.parameter_shape,
                             rule_id=record.rule_id, policy_version=record.policy_version,
                             approval_id=record.approval_id, approver=actor)
            event.attributes = {"reason": refusal.reason, "actor": actor or "unauthenticated",
                                "claimed": request.approver, "decision": "approve" if request.approve else "deny"}
            await self.outbox.audit(event, f"audit:{call.call_id}:approval:refused:{new_id()}")
        return ApprovalDecisionReply(approval_id=request.approval_id, accepted=False, reason=refusal.reason,
                                     state=found[0].state if found else None, approver=actor)

    async def _announce_decision(self, record: ApprovalRecord) -> None:
        call = record.request
        wait_s = record.wait_s()
        decided = audit_of(call, stage="approval", outcome_name=record.state, shape=record.parameter_shape,
                           rule_id=record.rule_id, policy_version=record.policy_version,
                           approval_id=record.approval_id, approver=record.approver, approval_wait_s=wait_s)
        if len(record.approvers) > 1:  # four eyes: both approvers, in order
            decided.attributes = {"approvers": "+".join(record.approvers)}
        await asyncio.gather(
            self.outbox.approval_decided(
                ApprovalDecided(
                    **envelope_fields(call),
                    approval_id=record.approval_id,
                    approved=record.state == "approved",
                    approver=record.approver or approvals.SYSTEM_APPROVER,
                    reason=record.reason,
                    call_id=call.call_id,
                    state=record.state,
                    approvers=record.approvers,
                )
            ),
            self.outbox.audit(decided, f"audit:{call.call_id}:approval:{record.state}"),
        )
        if wait_s is not None:
            self.metrics.approval_wait.labels(record.state).observe(wait_s)

    async def _resume(self, record: ApprovalRecord) -> None:
        """Run an approved call and answer its caller (at most once, see ``approvals``)."""
        started = time.perf_counter()
        call = record.request
        try:
            arguments = await self.approvals.arguments(record.approval_id)
            spec = self.pool.tool(call.server, call.tool)
            if arguments is None:
                outcome = failed("internal_error", "arguments_missing")
            elif spec is None:
                outcome = failed("tool_unavailable", "not_listed", retry_after_s=RETRY_UNAVAILABLE_S)
            else:
                outcome = await self._execute(call, arguments, spec, record.injection_action, record.dlp_input,
                                              record.rule_id, record.policy_version)
        except Exception as exc:  # noqa: BLE001 - the caller must hear something
            outcome = failed("internal_error", type(exc).__name__)
        outcome.dlp_input = outcome.dlp_input or record.dlp_input
        final = await self.approvals.transition(
            record.approval_id, lambda r: approvals.finish(r, ok=outcome.status == "ok", now=self.clock())
        )
        if isinstance(final, Rejection):
            # The lease ran out while the tool was running: the sweeper already failed the
            # call for its caller. The tool did run — say so in the log, once.
            log.error("approved_call_finished_after_lease", approval_id=record.approval_id, status=outcome.status)
            return
        await self._finish(call, record.reply_to, outcome, record.parameter_shape, started=started, record=final)
        await self.approvals.forget_arguments(record.approval_id)

    async def _end_parked(self, record: ApprovalRecord, outcome: Outcome) -> None:
        """Answer the caller of a parked call that will not run."""
        outcome.dlp_input = outcome.dlp_input or record.dlp_input
        outcome.rule_id = outcome.rule_id or record.rule_id
        await self._finish(record.request, record.reply_to, outcome, record.parameter_shape, started=None,
                           record=record)
        await self.approvals.forget_arguments(record.approval_id)

    async def sweep(self, records: Iterable[ApprovalRecord]) -> None:
        """Expire pending approvals past their time, fail approved calls past their lease,
        forget old decided records. Every worker sweeps; compare-and-set picks one winner."""
        now = self.clock()
        pending = 0
        for record in list(records):
            if record.state == "pending" and now < record.expires_at:
                pending += 1
            elif record.state == "pending":
                expired = await self.approvals.transition(record.approval_id, lambda r: approvals.expire(r, now))
                if isinstance(expired, ApprovalRecord):
                    await self._announce_decision(expired)
                    await self._end_parked(expired, refused("approval_expired", "approval.expired",
                                                            policy_version=expired.policy_version))
            elif approvals.stale(record, now, self.approval_rules.execution_lease_s):
                ended = await self.approvals.transition(
                    record.approval_id, lambda r: approvals.finish(r, ok=False, now=now)
                    if approvals.stale(r, now, self.approval_rules.execution_lease_s) else Rejection("not_stale")
                )
                if isinstance(ended, ApprovalRecord):
                    await self._end_parked(ended, failed("internal_error", "execution_lease_expired",
                                                         policy_version=ended.policy_version))
            elif approvals.forgettable(record, now, self.approval_rules.keep_decided_s):
                await self.approvals.forget(record.approval_id)
        self.metrics.approvals_pending.set(pending)

    # --- the catalog -------------------------------------------------------------------

    def catalog(self, request: ToolListRequested) -> ToolCatalog:
        tools: list[ToolInfo] = []
        for spec in sorted(self.pool.catalog(), key=lambda s: (s.server, s.name)):
            info = ToolInfo(
                server=spec.server,
                name=spec.name,
                description=spec.description,
                read_only=spec.annotations.read_only,
                input_schema=spec.input_schema,
            )
            if request.role is not None:
                try:
                    verdict = self.policy.decide(
                        ToolPolicyInput(
                            tenant=request.tenant or "any",
                            business_unit=request.business_unit or "any",
                            user_role=request.role,
                            usecase_class=request.usecase_class,
                            server=spec.server,
                            tool=spec.name,
                            annotations=spec.annotations,
                        )
                    )
                except ToolPolicyUnavailable:
                    pass  # allowed stays None: the policy could not say
                else:
                    info.allowed = verdict.allow
                    info.approval_required = verdict.approval_required if verdict.allow else None
                    info.rule_id = verdict.rule_id
            tools.append(info)
        return ToolCatalog(tools=tools, servers=self.pool.connected(), policy_version=self._policy_version())

    def _policy_version(self) -> str | None:
        try:
            return self.policy.version
        except Exception:  # noqa: BLE001 - the catalog is informational
            return None
