"""vLLM-named Prometheus metrics on a registry of the app's own (many apps may share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.simulator.faults import Fault
from services.simulator.scheduler import Scheduler

# vLLM's TTFT buckets, with finer sub-millisecond steps for zero-latency baseline runs.
TTFT_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0,
    20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


class SimulatorMetrics:
    def __init__(self, model: str, scheduler: Scheduler) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model_name",)
        registry = self.registry

        # Gauges read the scheduler at scrape time, so requests pay nothing to keep them current.
        running = Gauge("vllm:num_requests_running", "Requests being generated.", labels, registry=registry)
        running.labels(model_name=model).set_function(lambda: scheduler.running)
        waiting = Gauge(
            "vllm:num_requests_waiting",
            "Requests queued beyond max_num_seqs.",
            labels,
            registry=registry,
        )
        waiting.labels(model_name=model).set_function(lambda: scheduler.waiting)
        kv_usage = Gauge(
            "vllm:kv_cache_usage_perc",
            "Simulated KV-cache usage: tokens of running requests / capacity (1 = full).",
            labels,
            registry=registry,
        )
        kv_usage.labels(model_name=model).set_function(scheduler.kv_cache_usage)

        self.e2e_latency = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Arrival to last token, queueing included.",
            labels,
            registry=registry,
            buckets=E2E_BUCKETS,
        ).labels(model_name=model)
        self.time_to_first_token = Histogram(
            "vllm:time_to_first_token_seconds",
            "Arrival to first token, queueing included.",
            labels,
            registry=registry,
            buckets=TTFT_BUCKETS,
        ).labels(model_name=model)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prefill tokens processed.", labels, registry=registry
        ).labels(model_name=model)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generation tokens produced.", labels, registry=registry
        ).labels(model_name=model)
        faults = Counter(
            "simulator:injected_faults",
            "Faults injected instead of an answer.",
            ("model_name", "fault"),
            registry=registry,
        )
        self.injected_faults = {fault: faults.labels(model, fault.value) for fault in Fault}
