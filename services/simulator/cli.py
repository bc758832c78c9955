"""``python -m services.simulator``: flags override env vars, which override defaults."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import uvicorn

from services.simulator.app import create_app
from services.simulator.settings import Mode, SimulatorSettings


def build_parser() -> argparse.ArgumentParser:
    # argparse rather than typer: start-up stays free of click/rich imports.
    # SUPPRESS leaves unset flags out of the namespace so env vars and defaults still apply.
    parser = argparse.ArgumentParser(
        prog="python -m services.simulator",
        description="OpenAI-compatible vLLM simulator.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--name", help="instance name, reported by /health")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--model", help="the main chat model id (reported by /health)")
    parser.add_argument("--served-models", help="further chat model ids, comma-separated")
    parser.add_argument("--embedding-models", help="embedding model ids, comma-separated")
    parser.add_argument("--embedding-dims", type=int, help="length of the embedding vectors")
    parser.add_argument("--mode", choices=[mode.value for mode in Mode])
    parser.add_argument("--canned-text", help="answer text in canned mode")
    parser.add_argument("--ttft-ms", type=float, help="time to first token")
    parser.add_argument("--itl-ms", type=float, help="inter-token latency")
    parser.add_argument("--max-num-seqs", type=int, help="concurrent requests before queueing")
    parser.add_argument("--kv-capacity-tokens", type=int, help="simulated KV-cache size")
    parser.add_argument("--max-model-len", type=int, help="context window (prompt + completion)")
    parser.add_argument("--rate-429", type=float, help="share of requests answered 429")
    parser.add_argument("--rate-500", type=float, help="share of requests answered 500")
    parser.add_argument("--rate-timeout", type=float, help="share of requests that hang")
    parser.add_argument("--timeout-s", type=float, help="how long a hanging request hangs")
    parser.add_argument("--retry-after-s", type=int, help="Retry-After value of a 429")
    parser.add_argument("--seed", type=int, help="seed of the fault RNG")
    parser.add_argument("--piece-chars", type=int, help="stream pieces of N characters instead of one per token")
    parser.add_argument("--tokens-per-minute", type=int, help="quota reported in x-ratelimit-*-tokens headers")
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> SimulatorSettings:
    given: dict[str, Any] = vars(build_parser().parse_args(argv))
    return SimulatorSettings(**given)


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        # Stop within seconds even if a paced stream or an injected hang is still open.
        timeout_graceful_shutdown=2,
    )
