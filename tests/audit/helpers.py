"""Building audit events and chains for tests."""

from __future__ import annotations

from datetime import datetime, timedelta

from schemas.events import AuditCheckpoint, AuditEvent, AuditRecord, EntityCount, deadline_in
from schemas.vocabulary import Stage
from services.audit.chain import next_record
from services.audit.checkpoint import SigningKey, seal_checkpoint


def event(i: int, tenant: str = "acme", stage: Stage = "router", outcome: str = "routed", **fields: object) -> AuditEvent:
    envelope: dict[str, object] = {
        "request_id": f"r{i}", "correlation_id": f"c{i}", "deadline": deadline_in(60), "tenant": tenant,
        "business_unit": "bu", "user_role": "analyst", "usecase_class": "chat",
    }
    return AuditEvent(**(envelope | fields), stage=stage, outcome=outcome)  # type: ignore[arg-type]


def chain(n: int, partition: str = "acme", start: datetime | None = None) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for i in range(n):
        at = (start + timedelta(seconds=i)) if start else None
        ev = event(i, tenant=partition, entities=[EntityCount(type="EMAIL_ADDRESS", count=1)])
        records.append(next_record(partition, records[-1] if records else None, ev, at))
    return records


def checkpoint_of(record: AuditRecord, key: SigningKey | None = None) -> AuditCheckpoint:
    return seal_checkpoint(record, head_stream_seq=record.seq, sealed_by="test", key=key)
