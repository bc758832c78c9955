"""What a replay, export or show selects: a time window, a tenant, a subject. Pure.

Times are when the AUDIT stream stored a message (the server's clock) — the order the trail
was written in, and what a JetStream consumer can start from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

from schemas import subjects
from services.audit.stored import StoredMsg, kind_of, partition_of_subject, to_ns

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
SUBJECT_ALIASES = {
    "records": subjects.AUDIT_CHAIN_ALL,
    "checkpoints": subjects.AUDIT_CHECKPOINT_ALL,
    "events": subjects.AUDIT_EVENTS,
    "all": subjects.AUDIT_ALL,
}

Verdict = Literal["keep", "skip", "stop"]


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (``2026-11-23``, ``2026-11-23T14:00:00+01:00``; naive means UTC) or an age (``90m``, ``24h``, ``7d``)."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        return (now or datetime.now(UTC)) - timedelta(seconds=float(match[1]) * _UNIT_S[match[2]])
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def resolve_subject(subject: str | None, tenant: str | None = None) -> str:
    """A subject filter from an alias (records, checkpoints, events, all), a stage name or a subject."""
    name = subject or "records"
    if name in SUBJECT_ALIASES:
        if tenant and name in ("records", "checkpoints"):
            # One tenant is one partition: let the server filter.
            prefix = subjects.AUDIT_CHAIN_PREFIX if name == "records" else subjects.AUDIT_CHECKPOINT_PREFIX
            return f"{prefix}.{subjects.token(tenant)}"
        return SUBJECT_ALIASES[name]
    if "." not in name:
        return f"{subjects.AUDIT_PREFIX}.{name}"  # a stage, e.g. dlp_input
    return name


class _Tenant(msgspec.Struct):
    tenant: str = ""


class _RecordTenant(msgspec.Struct):
    event: _Tenant = msgspec.field(default_factory=_Tenant)


_event_tenant = msgspec.json.Decoder(_Tenant)
_record_tenant = msgspec.json.Decoder(_RecordTenant)


@dataclass(frozen=True, slots=True)
class Selection:
    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None

    @property
    def until_ns(self) -> int | None:
        return to_ns(self.until) if self.until else None

    def verdict(self, msg: StoredMsg, until_ns: int | None) -> Verdict:
        if until_ns is not None and msg.time_ns > until_ns:
            return "stop"  # stored in order: nothing later can be in the window
        if self.tenant is None:
            return "keep"
        return "keep" if tenant_of(msg) in (self.tenant, subjects.token(self.tenant)) else "skip"


def tenant_of(msg: StoredMsg) -> str:
    kind = kind_of(msg.subject)
    if kind == "record":
        return _record_tenant.decode(msg.data).event.tenant
    if kind == "event":
        return _event_tenant.decode(msg.data).tenant
    if kind == "checkpoint":
        return partition_of_subject(msg.subject)  # a partition is the tenant as a subject token
    return ""
