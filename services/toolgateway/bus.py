"""Tool gateway worker contract.

serves    stellwerk.v1.tool.call.requested  ToolCallRequested → ToolCallResult
          stellwerk.v1.tool.list            ToolListRequested → ToolCatalog
          stellwerk.v1.tool.decide          ApprovalDecisionRequested → ApprovalDecisionReply
          (core NATS request-reply, queue group ``toolgateway``: each request to one worker)
loads     KV policies current.tools at start and follows it
watches   KV approvals ``call.>``  (pending approvals: expiry, execution lease, metrics)
writes    KV approvals, KV ratelimits ``tool.>``
requests  stellwerk.v1.dlp.screen            ScreenRequest → ScreenReply (the DLP workers screen
                                            tool arguments and results; no answer = refused)
publishes stellwerk.v1.tool.approval.requested, stellwerk.v1.tool.approval.decided  (APPROVALS)
          stellwerk.v1.audit.toolgateway, stellwerk.v1.audit.approval
calls     the MCP servers of the platform config's ``tool_servers``

A call that needs approval is parked in KV together with the caller's reply subject, and
answered by whichever worker sees the decision (or the timeout) — the caller keeps waiting
on its one request, across a restart of the worker that parked it.
"""

from __future__ import annotations

import msgspec
from nats.aio.msg import Msg

from schemas import subjects
from schemas.events import (
    ApprovalDecided,
    ApprovalDecisionReply,
    ApprovalDecisionRequested,
    ApprovalRequested,
    AuditEvent,
    ToolCallRequested,
    ToolCallResult,
    ToolListRequested,
    decode,
    encode,
)
from schemas.streams import KV_APPROVALS, KV_KEYS, KV_RATELIMITS
from services.runtime import policy_bundles
from services.runtime.keys import KeyRing
from services.runtime.telemetry import inject_headers
from services.runtime.worker import Worker
from services.toolgateway.approval_store import RECORD_PREFIX, ApprovalStore, decode_record
from services.toolgateway.approvals import ApprovalRecord
from services.toolgateway.approvers import Approvers, approver_tokens
from services.toolgateway.gateway import ToolGateway
from services.toolgateway.limiter import ToolRateLimiter
from services.toolgateway.mcp_pool import McpPool
from services.toolgateway.metrics import ToolMetrics
from services.toolgateway.outcome import failed, malformed, result_of
from services.toolgateway.policy import ToolPolicy
from services.toolgateway.screening import BusScreener
from services.toolgateway.settings import ToolConfig, ToolGatewaySettings
from services.toolgateway.validation import SchemaCache

QUEUE = "toolgateway"
_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)


class BusOutbox:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def reply(self, reply_to: str | None, result: ToolCallResult) -> None:
        if reply_to:
            await self.worker.nc.publish(reply_to, encode(result), headers=inject_headers({}))

    async def audit(self, event: AuditEvent, msg_id: str) -> None:
        # Not Worker.audit: its message id (request + stage + outcome) would merge the audit
        # events of several tool calls of one request.
        await self.worker.publish(subjects.audit(event.stage), event, msg_id)

    async def approval_requested(self, event: ApprovalRequested) -> None:
        await self.worker.publish(subjects.TOOL_APPROVAL_REQUESTED, event, f"approval:{event.approval_id}:requested")

    async def approval_decided(self, event: ApprovalDecided) -> None:
        await self.worker.publish(subjects.TOOL_APPROVAL_DECIDED, event, f"approval:{event.approval_id}:decided")


def build(worker: Worker) -> None:
    settings = ToolGatewaySettings()
    config = worker.config
    tools = ToolConfig.load(worker.settings.config_file)  # this service's own sections
    metrics = ToolMetrics()
    outbox = BusOutbox(worker)
    pool = McpPool(tools.tool_servers, settings.refresh_interval_s)
    policy = ToolPolicy(settings.policy_dir, settings.policy_check_interval_s)
    # The tool policy in force in the mesh (KV policies, issue 17): loaded at start, followed.
    policy_bundles.follow(worker, "tools", lambda: policy.version, policy.replace)
    board: dict[str, ApprovalRecord] = {}  # every approval record in KV, kept current by a watch
    # Issue 14: approvers prove who they are with a key of the ``keys`` bucket or an OIDC token.
    keyring = KeyRing(config.api_keys)
    worker.watch(KV_KEYS, keyring.apply)
    approvers = Approvers(keyring, approver_tokens(config), tools.tool_approvals)
    gateway: ToolGateway | None = None

    async def start() -> None:
        nonlocal gateway
        metrics.serve(settings.metrics_port)
        pool.start()
        missing = await pool.wait_listed(settings.discovery_wait_s)
        if missing:
            worker.log.warning("tool_servers_not_listed", servers=",".join(missing))
        gateway = ToolGateway(
            pool=pool,
            policy=policy,
            schemas=SchemaCache(strict=settings.strict_arguments),
            screener=BusScreener(worker.nc, settings.dlp_timeout_s),
            limiter=ToolRateLimiter(await worker.kv(KV_RATELIMITS), tools.tool_rate_limits),
            approval_store=ApprovalStore(await worker.kv(KV_APPROVALS)),
            outbox=outbox,
            metrics=metrics,
            servers=tools.tool_servers,
            approval_rules=tools.tool_approvals,
            approvers=approvers,
        )

    worker.on_start(start)  # first: the watch and the sweep below use the gateway

    def on_approval_change(key: str, value: bytes | None) -> None:
        approval_id = key.removeprefix(RECORD_PREFIX)
        if value is None:
            board.pop(approval_id, None)
            return
        try:
            board[approval_id] = decode_record(value)
        except _DECODE_ERRORS:
            worker.log.error("approval_record_malformed", approval_id=approval_id)

    worker.watch(KV_APPROVALS, on_approval_change, keys=f"{RECORD_PREFIX}>")

    async def sweep_approvals() -> None:
        for name, up in pool.connected().items():
            metrics.server_up.labels(name).set(1 if up else 0)
        if gateway is not None:
            await gateway.sweep(board.values())

    worker.every(tools.tool_approvals.sweep_interval_s, sweep_approvals)

    async def on_call(msg: Msg) -> None:
        reply_to = msg.reply or None
        try:
            call = decode(msg.data, ToolCallRequested)
        except _DECODE_ERRORS as exc:
            await outbox.reply(reply_to, malformed(str(exc)))
            return
        assert gateway is not None  # subscribers start after the start hooks
        try:
            await gateway.handle(call, reply_to)
        except Exception as exc:  # noqa: BLE001 - the caller must get an answer, typed
            worker.log.error("tool_call_crashed", error=type(exc).__name__, call_id=call.call_id)
            await outbox.reply(reply_to, result_of(call, failed("internal_error", type(exc).__name__), latency_ms=0))

    async def on_list(msg: Msg) -> None:
        try:
            request = decode(msg.data, ToolListRequested) if msg.data else ToolListRequested()
        except _DECODE_ERRORS:
            request = ToolListRequested()
        assert gateway is not None
        if msg.reply:
            await worker.nc.publish(msg.reply, encode(gateway.catalog(request)), headers=inject_headers({}))

    async def on_decide(msg: Msg) -> None:
        try:
            request = decode(msg.data, ApprovalDecisionRequested)
        except _DECODE_ERRORS:
            reply = ApprovalDecisionReply(approval_id="invalid", accepted=False, reason="invalid_request")
        else:
            assert gateway is not None
            reply = await gateway.decide(request)
        if msg.reply:
            await worker.nc.publish(msg.reply, encode(reply), headers=inject_headers({}))

    for subject, handler, concurrency in (
        (subjects.TOOL_CALL_REQUESTED, on_call, settings.max_in_flight),
        (subjects.TOOL_LIST, on_list, 1),
        (subjects.TOOL_APPROVAL_DECIDE, on_decide, 4),
    ):
        worker.serve(subject, handler, queue=QUEUE, max_in_flight=concurrency)
