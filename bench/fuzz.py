"""Long fuzzing runs against a real gateway (issue 18).

    uv run python bench/fuzz.py [--examples 2000] [--seed 0] [--bus] [--url http://127.0.0.1:8080]

Without ``--url`` a whole mesh with the hardening tests' config is started in a temporary
directory (real nats-server, every service, the gateway). Runs the schemathesis cases of every
operation of the gateway's OpenAPI document and the hostile chat bodies of
``tests/fuzz/http_fuzz.py``, then prints cases tried, status codes, error codes, problems
(5xx, answers that are not OpenAI-shaped, errors quoting the input) and fuzzed strings found
in the gateway's logs. Exits 1 if anything was found.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from services.runtime.bus import connect
from tests.fuzz.bus_fuzz import BusTally, fuzz_bus
from tests.fuzz.http_fuzz import Tally, chat_bodies, gateway_schema, schema_cases, send_body, send_case
from tests.gateway.hardened import API_KEY, gateway_log, hardened_mesh


def _sender(http: httpx.Client, name: str, tally: Tally) -> Callable[[Any], None]:
    def send(value: Any) -> None:
        if name == "schemathesis":
            tally.judge(*send_case(http, value, API_KEY))
        else:
            tally.judge(value, send_body(http, value, API_KEY))

    return send


def fuzz(url: str, examples: int, seed_value: int, log_text: Callable[[], str]) -> int:
    tallies: dict[str, Tally] = {"schemathesis": Tally(), "chat bodies": Tally()}
    run_settings = settings(max_examples=examples, deadline=None, database=None,
                            suppress_health_check=list(HealthCheck))
    with httpx.Client(base_url=url, timeout=120) as http:
        strategies: dict[str, st.SearchStrategy[Any]] = {
            "schemathesis": schema_cases(gateway_schema(url)), "chat bodies": chat_bodies,
        }
        for name, strategy in strategies.items():
            seed(seed_value)(run_settings(given(strategy)(_sender(http, name, tallies[name]))))()
    logs = log_text()
    failed = 0
    for name, tally in tallies.items():
        leaked = tally.leaked_into(logs)
        print(f"{name}: {tally.cases} cases")
        print("  status codes: " + ", ".join(f"{s}×{n}" for s, n in sorted(tally.statuses.items())))
        print("  error codes:  " + ", ".join(f"{c}×{n}" for c, n in tally.codes.most_common()))
        print(f"  problems: {len(tally.problems)}; 5xx: {sum(n for s, n in tally.statuses.items() if s >= 500)}; "
              f"fuzzed strings in logs: {len(leaked)}")
        for problem in tally.problems[:20]:
            print("    " + problem)
        failed += len(tally.problems) + len(leaked)
    return 1 if failed else 0


def fuzz_the_bus(nats_url: str, seed_value: int) -> int:
    async def run() -> BusTally:
        nc = await connect(nats_url, "stellwerk-fuzz", persistent=False)
        try:
            return await fuzz_bus(nc, seed=seed_value)
        finally:
            await nc.close()

    tally = asyncio.run(run())
    print(f"bus: {sum(tally.published.values())} events published to {len(tally.published)} consumers")
    for consumer, count in tally.published.items():
        print(f"  {consumer:<11} published {count:>3}, dead-lettered {tally.dead_lettered[consumer]:>3}, "
              f"handled {tally.handled[consumer]:>3}")
    print("  DLQ reasons: " + ", ".join(f"{r}×{n}" for r, n in tally.reasons.items()))
    print(f"  undecodable but not dead-lettered: {len(tally.missing)} {sorted(set(k for _, k in tally.missing))[:8]}")
    print(f"  dead letters quoting the payload: {tally.details_quoting_content}; "
          f"duplicate dead letters: {tally.duplicate_dead_letters}")
    print("  results per duplicated request: " + ", ".join(
        f"{'expired' if r in tally.expired_duplicates else 'live'}={n}" for r, n in tally.results.items()))
    return 1 if tally.missing or tally.details_quoting_content else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/fuzz.py")
    parser.add_argument("--examples", type=int, default=2000, help="examples per strategy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", help="an already running gateway (its logs are not checked)")
    parser.add_argument("--bus", action="store_true", help="also fuzz every consumed subject (own mesh only)")
    args = parser.parse_args()
    if args.url:
        sys.exit(fuzz(args.url, args.examples, args.seed, lambda: ""))
    with tempfile.TemporaryDirectory() as root:
        for mesh in hardened_mesh(Path(root)):
            code = fuzz(mesh.gateway_url, args.examples, args.seed, lambda m=mesh: gateway_log(m))  # type: ignore[misc]
            if args.bus:
                code |= fuzz_the_bus(mesh.url, args.seed)
    sys.exit(code)


if __name__ == "__main__":
    main()
