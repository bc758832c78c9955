"""Service contracts: what each service consumes, serves, publishes and keeps in KV (DESIGN.md §7).

Plain data. Every channel of the mesh is declared once here (``CHANNELS``: subject, payload,
description); every service declares its contract once in ``services/<name>/contract.py``
(``services/contracts.py`` lists them). Generated from the contracts, so they cannot drift:

* the NATS permissions of every service user (``stellwerk/nats_auth.py``),
* the AsyncAPI 3.0 document (``schemas/export.py``, ``stellwerk schemas export``),
* the contracts section of docs/architecture.md (``python -m schemas.export --docs``; a test
  fails when the committed section differs).

A channel's address is a NATS subject in which ``{name}`` stands for one token (the request
id, the stage, ...); a service that may only use some values of a token says which
(``Publishes(AUDIT_TRAIL, stage=("dlp_input", "dlp_output"))``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import msgspec

from schemas import subjects
from schemas.events import (
    ApprovalDecided,
    ApprovalDecisionReply,
    ApprovalDecisionRequested,
    ApprovalRequested,
    AuditCheckpoint,
    AuditEvent,
    AuditRecord,
    AuditTrail,
    DeadLetter,
    FinopsAlert,
    PolicyPushAck,
    PolicyPushed,
    RequestCancelled,
    RequestResult,
    RequestRouted,
    RequestScreened,
    RequestSubmitted,
    ResponseGenerated,
    ResponseStreaming,
    ScreenReply,
    ScreenRequest,
    StreamChunk,
    StreamDelta,
    ToolCallRequested,
    ToolCallResult,
    ToolCatalog,
    ToolListRequested,
    UsageRecorded,
)
from schemas.streams import ConsumerDef, StreamDef

_PARAM: Final = re.compile(r"\{([a-z_]+)\}")

# What a ``{name}`` token of an address stands for (AsyncAPI channel parameters).
PARAMETERS: Final[Mapping[str, str]] = {
    "request_id": "The request's id (one token).",
    "stage": "The stage that wrote the event (schemas.vocabulary.Stage).",
    "partition": "The audit chain's partition (a tenant, or _platform).",
    "service": "The service that dead-lettered the message.",
}


@dataclass(frozen=True, slots=True)
class Channel:
    """One subject (pattern) of the mesh and the payload it carries."""

    id: str  # AsyncAPI channel id, camelCase
    address: str  # NATS subject; ``{name}`` is one token
    payload: type[msgspec.Struct]
    description: str

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(_PARAM.findall(self.address))

    @property
    def pattern(self) -> str:
        """The subject with every parameter as a wildcard token."""
        return _PARAM.sub("*", self.address)

    def subject(self, **values: str) -> str:
        return _PARAM.sub(lambda m: values.get(m.group(1), "*"), self.address)


def channel(channel_id: str, address: str, payload: type[msgspec.Struct], description: str) -> Channel:
    return Channel(channel_id, address, payload, description)


# --- every channel of the mesh -----------------------------------------------------------------

REQUEST_SUBMITTED: Final = channel("requestSubmitted", subjects.REQUEST_SUBMITTED, RequestSubmitted,
                                   "A request enters the mesh.")
REQUEST_SCREENED: Final = channel("requestScreened", subjects.REQUEST_SCREENED, RequestScreened,
                                  "The prompt passed DLP input screening.")
REQUEST_ROUTED: Final = channel("requestRouted", subjects.REQUEST_ROUTED, RequestRouted,
                                "The routing policy chose a route.")
RESPONSE_GENERATED: Final = channel("responseGenerated", subjects.RESPONSE_GENERATED, ResponseGenerated,
                                    "The model answered.")
RESPONSE_STREAMING: Final = channel("responseStreaming", subjects.RESPONSE_STREAMING, ResponseStreaming,
                                    "The model is streaming its answer into CHUNKS.")
CHUNK: Final = channel("chunk", subjects.CHUNK_PREFIX + ".{request_id}", StreamChunk,
                       "Raw chunks of a streamed answer, read in order by one output-DLP worker.")
DELTA: Final = channel("delta", subjects.DELTA_PREFIX + ".{request_id}", StreamDelta,
                       "Screened text of a streamed answer, to the caller (core NATS).")
CANCEL: Final = channel("cancel", subjects.CANCEL_PREFIX + ".{request_id}", RequestCancelled,
                        "The caller of a streamed request went away: stop its model call (core NATS).")
RESULT: Final = channel("result", subjects.RESULT_PREFIX + ".{request_id}", RequestResult,
                        "Final result to the caller (core NATS).")
USAGE_RECORDED: Final = channel("usageRecorded", subjects.USAGE_RECORDED, UsageRecorded,
                                "Tokens, GPU-seconds and cost of one call.")
AUDIT_EVENT: Final = channel("auditEvent", subjects.AUDIT_PREFIX + ".{stage}", AuditEvent,
                             "Metadata-only audit event of one stage (outside the request path).")
AUDIT_TRAIL: Final = channel("auditTrail", subjects.AUDIT_TRAIL_PREFIX + ".{stage}", AuditTrail,
                             "A request's audit events, written once by the stage that ended it.")
AUDIT_CHAIN: Final = channel("auditChain", subjects.AUDIT_CHAIN_PREFIX + ".{partition}", AuditRecord,
                             "Hash-chained audit record.")
AUDIT_CHECKPOINT: Final = channel("auditCheckpoint", subjects.AUDIT_CHECKPOINT_PREFIX + ".{partition}",
                                  AuditCheckpoint, "Sealed checkpoint over a chain's head.")
FINOPS_ALERT: Final = channel("finopsAlert", subjects.FINOPS_ALERT, FinopsAlert, "A budget threshold was crossed.")
TOOL_CALL: Final = channel("toolCallRequested", subjects.TOOL_CALL_REQUESTED, ToolCallRequested,
                           "An agent asks to call a tool (request).")
TOOL_LIST: Final = channel("toolList", subjects.TOOL_LIST, ToolListRequested, "What may this caller call? (request)")
TOOL_DECIDE: Final = channel("approvalDecide", subjects.TOOL_APPROVAL_DECIDE, ApprovalDecisionRequested,
                             "A human decides on a parked tool call (request).")
APPROVAL_REQUESTED: Final = channel("approvalRequested", subjects.TOOL_APPROVAL_REQUESTED, ApprovalRequested,
                                    "A tool call awaits a human.")
APPROVAL_DECIDED: Final = channel("approvalDecided", subjects.TOOL_APPROVAL_DECIDED, ApprovalDecided,
                                  "A human decided on a tool call.")
DLP_SCREEN: Final = channel("dlpScreen", subjects.DLP_SCREEN, ScreenRequest,
                            "Texts outside the request path (tool calls) to screen (request).")
POLICY_PUSH: Final = channel("policyPush", subjects.CONTROL_POLICY_PUSH, PolicyPushed,
                             "A new routing policy bundle for every router (request).")
DEAD_LETTER: Final = channel("deadLetter", subjects.DLQ_PREFIX + ".{service}", DeadLetter,
                             "A message a service could not process, with the reason.")

# Replies of request-reply channels: they travel on the requester's inbox, so they have no
# address of their own (AsyncAPI: ``address: null``).
TOOL_CALL_RESULT: Final = channel("toolCallResult", "", ToolCallResult, "The tool gateway's typed reply.")
TOOL_CATALOG: Final = channel("toolCatalog", "", ToolCatalog, "The tools a caller may call.")
DECISION_REPLY: Final = channel("approvalDecideReply", "", ApprovalDecisionReply, "Outcome of a decision.")
SCREEN_REPLY: Final = channel("dlpScreenReply", "", ScreenReply, "The DLP guard's decision, or a typed error.")
POLICY_PUSH_REPLY: Final = channel("policyPushAck", "", PolicyPushAck, "One router's answer to a policy push.")

CHANNELS: Final = (
    REQUEST_SUBMITTED, REQUEST_SCREENED, REQUEST_ROUTED, RESPONSE_GENERATED, RESPONSE_STREAMING, CHUNK, DELTA, CANCEL,
    RESULT, USAGE_RECORDED, AUDIT_EVENT, AUDIT_TRAIL, AUDIT_CHAIN, AUDIT_CHECKPOINT, FINOPS_ALERT, TOOL_CALL,
    TOOL_CALL_RESULT, TOOL_LIST, TOOL_CATALOG, TOOL_DECIDE, DECISION_REPLY, APPROVAL_REQUESTED, APPROVAL_DECIDED,
    DLP_SCREEN, SCREEN_REPLY, POLICY_PUSH, POLICY_PUSH_REPLY, DEAD_LETTER,
)


# --- what a service does with them ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publishes:
    """Sends on a channel (into a stream, or core NATS), limited to some token values."""

    channel: Channel
    only: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def subjects(self) -> tuple[str, ...]:
        names = [n for n in self.channel.parameters if n in self.only]
        combos = itertools.product(*(self.only[n] for n in names))
        return tuple(self.channel.subject(**dict(zip(names, combo, strict=True))) for combo in combos)


@dataclass(frozen=True, slots=True)
class Serves:
    """Answers requests on a core-NATS channel (a queue group shares them; ``None``: every
    instance gets every request)."""

    request: Channel
    reply: Channel
    queue: str | None


@dataclass(frozen=True, slots=True)
class Requests:
    """Asks another service on a request-reply channel and waits for the reply."""

    request: Channel
    reply: Channel


@dataclass(frozen=True, slots=True)
class Listens:
    """A core-NATS subscription without a reply (the caller of a request awaiting its result)."""

    channel: Channel


@dataclass(frozen=True, slots=True)
class ServiceContract:
    name: str
    description: str
    consumes: tuple[ConsumerDef, ...] = ()  # durable consumers, one event (or batch) at a time
    serves: tuple[Serves, ...] = ()
    listens: tuple[Listens, ...] = ()
    publishes: tuple[Publishes, ...] = ()
    requests: tuple[Requests, ...] = ()
    reads_streams: tuple[StreamDef, ...] = ()  # scans, replays, ordered consumers of its own
    kv_reads: tuple[str, ...] = ()
    kv_writes: tuple[str, ...] = ()
    # A worker of the engine: declares the topology at start, dead-letters, answers discovery.
    worker: bool = True
    # Reads the pending counts of every durable (the gateway sheds load on the backlog).
    reads_backlog: bool = False
    # Users whose inboxes this service may publish to outside a reply (a tool call parked for
    # approval is answered later, by whichever tool gateway worker sees the decision).
    answers_later: tuple[str, ...] = ()

    @property
    def stages(self) -> tuple[str, ...]:
        """The audit stages this service writes (``audit.<stage>`` and trails)."""
        found: list[str] = []
        for p in self.publishes:
            if p.channel in (AUDIT_EVENT, AUDIT_TRAIL):
                found.extend(s for s in p.only.get("stage", ()) if s not in found)
        return tuple(found)

    def channels_sent(self) -> tuple[Channel, ...]:
        sent = [p.channel for p in self.publishes] + [r.request for r in self.requests]
        sent += [s.reply for s in self.serves]
        return tuple(dict.fromkeys(sent))

    def channels_received(self) -> tuple[Channel, ...]:
        received = [c for d in self.consumes for c in CHANNELS if c.address and c.pattern in d.filter_subjects]
        received += [s.request for s in self.serves] + [x.channel for x in self.listens]
        received += [r.reply for r in self.requests]
        return tuple(dict.fromkeys(received))
