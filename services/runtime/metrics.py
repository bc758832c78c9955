"""Prometheus metrics every worker exports, plus the decision metrics of the request path.

One registry per worker process, served on ``STELLWERK_METRICS_PORT`` (0 = off). Labels are
ids, enums and rule ids only: never content, never unbounded values such as request ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "stellwerk_stage_messages",
            "Messages handled per stage by outcome (ok, failed, expired, malformed, dead_lettered, retried)",
            ["service", "stage", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "stellwerk_stage_duration_seconds",
            "Handler time per message and stage",
            ["service", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.redeliveries = Counter(
            "stellwerk_stage_redeliveries",
            "Messages received again after a failed or unacknowledged delivery",
            ["service", "stage"],
            registry=self.registry,
        )
        self.dlp_decisions = Counter(
            "stellwerk_dlp_decisions",
            "DLP decisions by direction, action and rule",
            ["direction", "action", "rule_id"],
            registry=self.registry,
        )
        self.dlp_entities = Counter(
            "stellwerk_dlp_entities",
            "Detected entities by type",
            ["direction", "entity_type"],
            registry=self.registry,
        )
        # Guardrails (issue 16): decisions, categories that scored, and the reviews ops alert on.
        self.guard_decisions = Counter(
            "stellwerk_guard_decisions",
            "Guardrail decisions by direction, action and rule",
            ["direction", "action", "rule_id"],
            registry=self.registry,
        )
        self.guard_categories = Counter(
            "stellwerk_guard_categories",
            "Guardrail categories that scored (>= 0.5) by direction, category and the decision's action",
            ["direction", "category", "action"],
            registry=self.registry,
        )
        self.guard_reviews = Counter(
            "stellwerk_guard_reviews",
            "Requests let through with action review: a human should look (alert on the rate)",
            ["direction", "rule_id"],
            registry=self.registry,
        )
        self.routing_decisions = Counter(
            "stellwerk_routing_decisions",
            "Routing decisions by route and rule",
            ["route", "rule_id"],
            registry=self.registry,
        )
        self.inference_calls = Counter(
            "stellwerk_inference_calls",
            "Model calls by route, deployment and outcome (completed, fallback, failed)",
            ["route", "deployment", "outcome"],
            registry=self.registry,
        )
        self.inference_latency = Histogram(
            "stellwerk_inference_latency_seconds",
            "Model call latency",
            ["route", "deployment"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_ttft = Histogram(
            "stellwerk_inference_ttft_seconds",
            "Time to first token (streamed calls)",
            ["route", "deployment"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_tokens = Counter(
            "stellwerk_inference_tokens",
            "Tokens per deployment and kind (prompt, completion)",
            ["route", "deployment", "kind"],
            registry=self.registry,
        )
        self.inference_gpu_seconds = Counter(
            "stellwerk_inference_gpu_seconds",
            "GPU-seconds of local calls",
            ["deployment"],
            registry=self.registry,
        )
        self.prompt_tokens = Histogram(
            "stellwerk_prompt_tokens",
            "Prompt size in tokens at routing, by context bucket",
            ["context_length_bucket"],
            buckets=(128, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072),
            registry=self.registry,
        )
        self.service = service
        # Label children bound once per (stage, outcome): ``labels()`` per message costs a
        # lock and a tuple hash on the hot path.
        self._messages_of: dict[tuple[str, str], Counter] = {}
        self._duration_of: dict[str, Histogram] = {}
        self._redelivered_of: dict[str, Counter] = {}

    def observe(self, stage: str, outcome: str, seconds: float, messages: int = 1) -> None:
        key = (stage, outcome)
        counter = self._messages_of.get(key)
        if counter is None:
            counter = self._messages_of[key] = self.messages.labels(self.service, stage, outcome)
        counter.inc(messages)
        histogram = self._duration_of.get(stage)
        if histogram is None:
            histogram = self._duration_of[stage] = self.duration.labels(self.service, stage)
        histogram.observe(seconds)

    def redelivered(self, stage: str) -> None:
        counter = self._redelivered_of.get(stage)
        if counter is None:
            counter = self._redelivered_of[stage] = self.redeliveries.labels(self.service, stage)
        counter.inc()

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, addr="0.0.0.0", registry=self.registry)
