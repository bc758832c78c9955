"""Prometheus metrics of the tool gateway (the "Agent Tooling" dashboard).

Each call is counted by the worker that handled it; sum over workers for platform totals:

* tool calls per request: ``sum(rate(stellwerk_tool_calls_total[5m]))
  / sum(rate(stellwerk_tool_requests_total[5m]))``
* tool error rate: ``sum(rate(stellwerk_tool_calls_total{status="failed"}[5m]))
  / sum(rate(stellwerk_tool_calls_total[5m]))``
* approvals pending (mesh-wide, from KV; every worker reports the same number — take max),
  their wait time: ``stellwerk_tool_approval_wait_seconds``
* denials by rule: ``sum by (rule_id) (rate(stellwerk_tool_denials_total[1h]))``
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_SEEN_REQUESTS: Final = 10_000  # request ids remembered to count each request once


class ToolMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "stellwerk_tool_calls", "Tool calls by outcome (status ok|refused|failed, code: error code or none)",
            ["server", "tool", "status", "code"], registry=self.registry,
        )
        self.requests = Counter(
            "stellwerk_tool_requests", "Requests that made at least one tool call (seen by this worker)",
            registry=self.registry,
        )
        self.duration = Histogram(
            "stellwerk_tool_call_seconds", "Gateway time of a tool call, without approval wait",
            ["server", "tool"], registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.denials = Counter(
            "stellwerk_tool_denials", "Refused tool calls by the rule that refused them",
            ["rule_id"], registry=self.registry,
        )
        self.approvals_pending = Gauge(
            "stellwerk_tool_approvals_pending", "Tool calls waiting for a human (mesh-wide, from KV)",
            registry=self.registry,
        )
        self.approval_wait = Histogram(
            "stellwerk_tool_approval_wait_seconds", "Time from approval request to decision",
            ["outcome"], registry=self.registry,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 14400, 86400),
        )
        self.server_up = Gauge(
            "stellwerk_tool_server_up", "1 while the MCP server is connected", ["server"], registry=self.registry,
        )
        self._seen: OrderedDict[str, None] = OrderedDict()

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)

    def request_seen(self, request_id: str) -> None:
        if request_id in self._seen:
            self._seen.move_to_end(request_id)
            return
        self._seen[request_id] = None
        if len(self._seen) > _SEEN_REQUESTS:
            self._seen.popitem(last=False)
        self.requests.inc()

    def finished(
        self, server: str, tool: str, status: str, code: str | None, rule_id: str | None, seconds: float | None
    ) -> None:
        self.calls.labels(server, tool, status, code or "none").inc()
        if status == "refused" and rule_id:
            self.denials.labels(rule_id).inc()
        if seconds is not None:
            self.duration.labels(server, tool).observe(seconds)
