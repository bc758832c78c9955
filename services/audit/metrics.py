"""Prometheus counters of the audit worker, counted once per chained record.

Runbooks read rates: ``increase(stellwerk_audit_dlp_blocks_total[1h])`` is DLP blocks per
hour. Labels are bounded vocabularies (tenant, stage, rule id), never content.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, start_http_server

from schemas.events import AuditRecord
from services.audit.runbook import signal_of


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.records = Counter(
            "stellwerk_audit_records", "Audit records chained.", ["stage", "outcome"], registry=self.registry
        )
        self.checkpoints = Counter(
            "stellwerk_audit_checkpoints", "Sealed checkpoints written.", registry=self.registry
        )
        self.append_conflicts = Counter(
            "stellwerk_audit_append_conflicts",
            "Appends retried because another worker extended the chain first.",
            registry=self.registry,
        )
        self.dlp_blocks = Counter(
            "stellwerk_audit_dlp_blocks", "Requests or answers blocked by DLP.",
            ["tenant", "stage", "rule_id"], registry=self.registry,
        )
        self.tool_denials = Counter(
            "stellwerk_audit_tool_denials", "Tool calls denied by policy or by a human.",
            ["tenant", "stage", "rule_id"], registry=self.registry,
        )
        self.budget_breaches = Counter(
            "stellwerk_audit_budget_breaches", "Budget limits reached (refusals and FinOps crossings).",
            ["tenant", "stage"], registry=self.registry,
        )

    def observe(self, records: Sequence[AuditRecord]) -> None:
        # Count per label set first: a label lookup costs more than chaining a record.
        outcomes = collections.Counter((record.event.stage, record.event.outcome) for record in records)
        for (stage, outcome), count in outcomes.items():
            self.records.labels(stage, outcome).inc(count)
        for record in records:
            event = record.event
            signal = signal_of(event)
            if signal == "dlp_block":
                self.dlp_blocks.labels(event.tenant, event.stage, event.rule_id or "none").inc()
            elif signal == "tool_denial":
                self.tool_denials.labels(event.tenant, event.stage, event.rule_id or "none").inc()
            elif signal == "budget_breach":
                self.budget_breaches.labels(event.tenant, event.stage).inc()

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
