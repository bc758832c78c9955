"""The model call is an OpenTelemetry GenAI span when tracing is on (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stellwerk.supervisor import Mesh
from tests.integration.mesh import eventually
from tests.integration.test_request_path import openai_client


async def test_model_call_is_a_genai_client_span_with_usage_and_no_text(mesh: Mesh) -> None:
    prompt = "Wie funktioniert ein Stellwerk?"
    completion = await openai_client(mesh).chat.completions.create(
        model="stellwerk", messages=[{"role": "user", "content": prompt}]
    )
    request_id = completion.model_extra["stellwerk"]["request_id"]  # type: ignore[index]
    trace_file = Path(mesh.extra_env["STELLWERK_TRACE_FILE"])

    async def genai_span() -> dict[str, Any] | None:
        spans = [json.loads(line) for line in trace_file.read_text().splitlines() if line.strip()]
        trace_ids = {s["context"]["trace_id"] for s in spans
                     if (s.get("attributes") or {}).get("stellwerk.request_id") == request_id}
        return next((s for s in spans if s["context"]["trace_id"] in trace_ids
                     and s["name"].startswith("chat ")), None)

    span = await eventually(genai_span)
    attributes = span["attributes"]
    assert span["kind"] == "SpanKind.CLIENT"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.usage.input_tokens"] > 0 and attributes["gen_ai.usage.output_tokens"] > 0
    assert prompt not in json.dumps(span)
