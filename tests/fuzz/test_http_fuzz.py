"""Property-based fuzzing of the gateway over real HTTP (issue 18): bounded and derandomized
here; ``uv run python bench/fuzz.py`` runs the same for longer."""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings

from stellwerk.supervisor import Mesh
from tests.fuzz.http_fuzz import Tally, chat_bodies, gateway_schema, schema_cases, send_body, send_case
from tests.gateway.hardened import API_KEY, gateway_log

FUZZ = settings(max_examples=60, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def test_schemathesis_cases_of_every_operation_get_typed_answers(mesh: Mesh) -> None:
    tally = Tally()
    with httpx.Client(base_url=mesh.gateway_url, timeout=60) as http:

        @FUZZ
        @given(schema_cases(gateway_schema(mesh.gateway_url)))
        def run(case: Any) -> None:
            sent, response = send_case(http, case, API_KEY)
            tally.judge(sent, response)

        run()
    assert tally.problems == []
    assert tally.cases >= 60 and len(tally.statuses) >= 2, tally.statuses
    assert tally.leaked_into(gateway_log(mesh)) == []


def test_hostile_chat_bodies_get_typed_answers_and_are_never_quoted(mesh: Mesh) -> None:
    tally = Tally()
    with httpx.Client(base_url=mesh.gateway_url, timeout=60) as http:

        @FUZZ
        @given(chat_bodies)
        def run(body: object) -> None:
            tally.judge(body, send_body(http, body, API_KEY))

        run()
    assert tally.problems == []
    assert tally.statuses[400] > 0, tally.statuses
    assert tally.leaked_into(gateway_log(mesh)) == []
