"""JSON Schema for every event and an AsyncAPI 3.0 document of the subjects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import msgspec

from schemas import subjects
from schemas.events import (
    EVENT_TYPES,
    ApprovalDecided,
    ApprovalDecisionReply,
    ApprovalDecisionRequested,
    ApprovalRequested,
    AuditCheckpoint,
    AuditEvent,
    AuditRecord,
    DeadLetter,
    FinopsAlert,
    RequestResult,
    RequestRouted,
    RequestScreened,
    RequestSubmitted,
    ResponseGenerated,
    ToolCallRequested,
    ToolCallResult,
    ToolCatalog,
    ToolListRequested,
    UsageRecorded,
)
from schemas.streams import CONSUMERS, STREAMS

# (channel id, address, payload, description)
CHANNELS: Final[tuple[tuple[str, str, type[msgspec.Struct], str], ...]] = (
    ("requestSubmitted", subjects.REQUEST_SUBMITTED, RequestSubmitted, "A request enters the mesh."),
    ("requestScreened", subjects.REQUEST_SCREENED, RequestScreened, "The prompt passed DLP input screening."),
    ("requestRouted", subjects.REQUEST_ROUTED, RequestRouted, "The routing policy chose a route."),
    ("responseGenerated", subjects.RESPONSE_GENERATED, ResponseGenerated, "The model answered."),
    (
        "result",
        subjects.RESULT_PREFIX + ".{request_id}",
        RequestResult,
        "Final result to the caller (core NATS).",
    ),
    ("usageRecorded", subjects.USAGE_RECORDED, UsageRecorded, "Tokens, GPU-seconds and cost of one call."),
    ("auditEvent", subjects.AUDIT_PREFIX + ".{stage}", AuditEvent, "Metadata-only audit event of one stage."),
    ("auditChain", subjects.AUDIT_CHAIN_PREFIX + ".{partition}", AuditRecord, "Hash-chained audit record."),
    (
        "auditCheckpoint",
        subjects.AUDIT_CHECKPOINT_PREFIX + ".{partition}",
        AuditCheckpoint,
        "Sealed checkpoint over a chain's head.",
    ),
    ("finopsAlert", subjects.FINOPS_ALERT, FinopsAlert, "A budget threshold was crossed."),
    (
        "toolCallRequested",
        subjects.TOOL_CALL_REQUESTED,
        ToolCallRequested,
        "An agent asks to call a tool (request).",
    ),
    (
        "toolCallResult",
        subjects.TOOL_CALL_REQUESTED + " (reply)",
        ToolCallResult,
        "The tool gateway's typed reply.",
    ),
    ("toolList", subjects.TOOL_LIST, ToolListRequested, "What may this caller call? (request)"),
    ("toolCatalog", subjects.TOOL_LIST + " (reply)", ToolCatalog, "The tools a caller may call."),
    (
        "approvalDecide",
        subjects.TOOL_APPROVAL_DECIDE,
        ApprovalDecisionRequested,
        "A human decides (request).",
    ),
    (
        "approvalDecideReply",
        subjects.TOOL_APPROVAL_DECIDE + " (reply)",
        ApprovalDecisionReply,
        "Outcome of a decision.",
    ),
    ("approvalRequested", subjects.TOOL_APPROVAL_REQUESTED, ApprovalRequested, "A tool call awaits a human."),
    ("approvalDecided", subjects.TOOL_APPROVAL_DECIDED, ApprovalDecided, "A human decided on a tool call."),
    ("deadLetter", subjects.DLQ_PREFIX + ".{service}", DeadLetter, "A message a service could not process."),
)


def json_schemas() -> dict[str, dict[str, Any]]:
    """One self-contained JSON Schema document per event type."""
    out: dict[str, dict[str, Any]] = {}
    for event_type in EVENT_TYPES:
        _, components = msgspec.json.schema_components([event_type], ref_template="#/$defs/{name}")
        root = components.pop(event_type.__name__)
        out[event_type.__name__] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **root,
            **({"$defs": components} if components else {}),
        }
    return out


def asyncapi() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [c[2] for c in CHANNELS], ref_template="#/components/schemas/{name}"
    )
    consumers_by_subject = {c.filter_subject: c for c in CONSUMERS}
    stream_of = {s: st.name for st in STREAMS for s in st.subjects}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for channel_id, address, payload, description in CHANNELS:
        name = payload.__name__
        bindings: dict[str, Any] = {}
        if address in stream_of:
            bindings["x-jetstream-stream"] = stream_of[address]
        channels[channel_id] = {
            "address": address,
            "description": description,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            **({"x-stellwerk": bindings} if bindings else {}),
        }
        consumer = consumers_by_subject.get(address)
        if consumer is not None:
            operations[f"{consumer.durable}.receive"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": f"{consumer.service}: {consumer.description}",
                "x-durable": consumer.durable,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Stellwerk event mesh",
            "version": "1.0.0",
            "description": "Subjects, payloads and consumers of the Stellwerk NATS mesh.",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:4222", "protocol": "nats"}},
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": components,
            "messages": {
                c[2].__name__: {
                    "name": c[2].__name__,
                    "payload": {"$ref": f"#/components/schemas/{c[2].__name__}"},
                }
                for c in CHANNELS
            },
        },
    }


def export_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2) + "\n")
        written.append(path)
    path = directory / "asyncapi.json"
    path.write_text(json.dumps(asyncapi(), indent=2) + "\n")
    written.append(path)
    return written
