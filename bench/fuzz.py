"""Long fuzzing runs against a real gateway (issue 18).

    uv run python bench/fuzz.py [--examples 2000] [--seed 0] [--url http://127.0.0.1:8080]

Without ``--url`` a whole mesh with the hardening tests' config is started in a temporary
directory (real nats-server, every service, the gateway). Runs the schemathesis cases of every
operation of the gateway's OpenAPI document and the hostile chat bodies of
``tests/fuzz/http_fuzz.py``, then prints cases tried, status codes, error codes, problems
(5xx, answers that are not OpenAI-shaped, errors quoting the input) and fuzzed strings found
in the gateway's logs. Exits 1 if anything was found.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz.http_fuzz import Tally, chat_bodies, gateway_schema, schema_cases, send_body, send_case
from tests.gateway.hardened import API_KEY, gateway_log, hardened_mesh


def fuzz(url: str, examples: int, seed_value: int, log_text: Callable[[], str]) -> int:
    tallies: dict[str, Tally] = {"schemathesis": Tally(), "chat bodies": Tally()}
    run_settings = settings(max_examples=examples, deadline=None, database=None,
                            suppress_health_check=list(HealthCheck))
    with httpx.Client(base_url=url, timeout=120) as http:
        strategies: dict[str, st.SearchStrategy[Any]] = {
            "schemathesis": schema_cases(gateway_schema(url)), "chat bodies": chat_bodies,
        }
        for name, strategy in strategies.items():
            tally = tallies[name]

            @seed(seed_value)
            @run_settings
            @given(strategy)
            def run(value: Any, tally: Tally = tally, name: str = name) -> None:
                if name == "schemathesis":
                    tally.judge(*send_case(http, value, API_KEY))
                else:
                    tally.judge(value, send_body(http, value, API_KEY))

            run()
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/fuzz.py")
    parser.add_argument("--examples", type=int, default=2000, help="examples per strategy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", help="an already running gateway (its logs are not checked)")
    args = parser.parse_args()
    if args.url:
        sys.exit(fuzz(args.url, args.examples, args.seed, lambda: ""))
    with tempfile.TemporaryDirectory() as root:
        for mesh in hardened_mesh(Path(root)):
            code = fuzz(mesh.gateway_url, args.examples, args.seed, lambda m=mesh: gateway_log(m))  # type: ignore[misc]
    sys.exit(code)


if __name__ == "__main__":
    main()
