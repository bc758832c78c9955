"""Canary test: personal and medical data sent through every path of the running mesh never
reaches the audit trail, the logs, the traces or the metrics — and every path's story can be
told from the audit records alone.

Paths: allowed (medical terms, no person), redacted (e-mail, IBAN), blocked (a name next to a
diagnosis), failed (deadline passed while the model is slow), and tool calls through the tool
gateway (allowed, refused by policy, parked for a human's approval).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from nats.aio.client import Client

from schemas import subjects
from schemas.streams import AUDIT
from services.audit.query import Selection
from services.audit.reader import scan
from services.audit.story import Step, story
from services.audit.trail import request_records, verify_stream
from stellwerk.supervisor import Mesh
from tests.integration.mesh import eventually

API_KEY = "sk-stellwerk-demo"
EMAIL = "kanarie.vogelsang@example.org"
IBAN = "DE89 3704 0044 0532 0130 00"
NAME = "Ilse Vogelsang"
MEDICAL = ("Diabetes mellitus", "Metformin")
CANARIES = (EMAIL, IBAN, IBAN.replace(" ", ""), NAME, "Vogelsang", *MEDICAL, "Leitlinie")

PROMPTS = {
    "allowed": "Welche Therapie empfiehlt die Leitlinie bei Diabetes mellitus Typ 2 mit Metformin?",
    "redacted": f"Bitte überweise die Erstattung auf {IBAN} und schicke die Bestätigung an {EMAIL}.",
    "blocked": f"Frau {NAME} hat Diabetes mellitus Typ 2 und nimmt Metformin.",
    "failed": f"Schreibe {NAME} an {EMAIL} wegen der Überweisung auf {IBAN}.",
}
# What each path's story must show, in order (stage, outcome).
STORIES = {
    "allowed": [("gateway", "received"), ("dlp_input", "allow"), ("router", "routed"),
                ("inference", "completed"), ("dlp_output", "allow")],
    "redacted": [("gateway", "received"), ("dlp_input", "redact"), ("router", "routed"),
                 ("inference", "completed"), ("dlp_output", "allow")],
    "blocked": [("gateway", "received"), ("dlp_input", "block")],
    # Which stage notices the passed deadline depends on timing (usually inference, or dlp_output
    # once the slow answer arrives; on a loaded machine even dlp_input): the test finds the
    # "failed" step wherever it is.
    "failed": [("gateway", "received")],
}


async def _send(http: httpx.AsyncClient, mesh: Mesh, prompt: str, timeout_s: str | None = None,
                usecase: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    if usecase:
        headers["X-Stellwerk-Usecase-Class"] = usecase
    if timeout_s:
        headers["X-Stellwerk-Timeout"] = timeout_s
    return await http.post(mesh.gateway_url + "/v1/chat/completions", headers=headers, timeout=30,
                           json={"model": "stellwerk", "messages": [{"role": "user", "content": prompt}]})


def _request_id(response: httpx.Response) -> str:
    body = response.json()
    found = body.get("stellwerk", {}).get("request_id") or body.get("error", {}).get("stellwerk", {}).get("request_id")
    assert found, body
    return str(found)


async def _story(nc: Client, request_id: str, expected: list[tuple[str, str]], must_fail: bool) -> list[Step]:
    found: list[tuple[str, str]] = []

    async def told() -> list[Step] | None:
        records = await request_records(nc.jetstream(), AUDIT.name, request_id, Selection(tenant="acme-insurance"))
        steps = story(records)
        found[:] = [(s.stage, s.outcome) for s in steps]
        complete = all(step in found for step in expected)
        return steps if complete and (not must_fail or any(s.outcome == "failed" for s in steps)) else None
    try:
        return await eventually(told, timeout_s=30)
    except AssertionError as exc:
        raise AssertionError(f"story of {request_id}: expected {expected}, found {found}") from exc


async def test_canary_data_never_leaves_the_request_path(mesh: Mesh, nc: Client) -> None:
    faults = [f"http://127.0.0.1:{s.port}/admin/faults" for s in mesh.config.simulators]
    responses: dict[str, httpx.Response] = {}
    async with httpx.AsyncClient() as http:
        for path in ("allowed", "redacted", "blocked"):
            # A therapy question is decision support: the guardrails refuse medical advice in
            # the plain chat use case (services/dlp/guard_policies), and this path must pass.
            responses[path] = await _send(http, mesh, PROMPTS[path],
                                          usecase="decision_support" if path == "allowed" else None)
        for url in faults:
            await http.post(url, json={"ttft_ms": 3000})
        try:
            responses["failed"] = await _send(http, mesh, PROMPTS["failed"], timeout_s="1.5")
        finally:
            for url in faults:
                await http.post(url, json={"ttft_ms": 0})
        metrics = (await http.get(mesh.gateway_url + "/metrics")).text

    assert responses["allowed"].status_code == 200
    # The model saw the medical terms (the simulator echoes): the canaries did travel the path.
    assert MEDICAL[0] in responses["allowed"].json()["choices"][0]["message"]["content"]
    assert responses["redacted"].status_code == 200
    answer = responses["redacted"].json()["choices"][0]["message"]["content"]
    assert EMAIL not in answer and "<EMAIL_ADDRESS>" in answer and "<IBAN_CODE>" in answer
    assert responses["blocked"].json()["error"]["code"] == "dlp_blocked_input"
    assert responses["failed"].status_code == 504

    # The story of every path, from the audit records alone, in the order it happened.
    for path, expected in STORIES.items():
        steps = await _story(nc, _request_id(responses[path]), expected, must_fail=path == "failed")
        told = [(s.stage, s.outcome) for s in steps]
        assert [step for step in told if step in expected] == expected, (path, told)
        assert steps[0].since_start_ms == 0 and all(s.since_previous_ms >= 0 for s in steps)
        if path == "redacted":
            dlp = next(s for s in steps if s.stage == "dlp_input")
            assert "EMAIL_ADDRESS:1" in dlp.detail and "IBAN_CODE:1" in dlp.detail
        if path == "blocked":
            dlp = next(s for s in steps if s.stage == "dlp_input")  # after the guard's own record
            assert "rule=dlp.block.pii_with_medical" in dlp.detail
        if path == "failed":
            failure = next(s for s in steps if s.outcome == "failed")
            assert "reason=deadline_exceeded" in failure.detail or "reason=provider_timeout" in failure.detail

    # Now the canaries: nowhere in the audit trail (every subject), logs, traces, metrics.
    trail: list[bytes] = []
    await scan(nc.jetstream(), AUDIT.name, subjects.AUDIT_ALL,
               lambda m: trail.append(m.subject.encode() + b" " + m.data) is None)
    haystacks = {
        "AUDIT stream": b"\n".join(trail).decode(errors="replace"),
        "gateway /metrics": metrics,
        "trace file": Path(mesh.extra_env["STELLWERK_TRACE_FILE"]).read_text(errors="replace"),
        **{f"log {p.name}": p.read_text(errors="replace") for p in sorted(mesh.logs.iterdir()) if p.is_file()},
    }
    assert len(trail) > 20 and any(r in haystacks["AUDIT stream"] for r in ("dlp.block.pii_with_medical",))
    assert haystacks["trace file"], "spans were written, so the trace check means something"
    leaks = [(where, canary) for where, text in haystacks.items() for canary in CANARIES if canary in text]
    assert leaks == [], leaks

    # And the trail those requests left is intact.
    report = await verify_stream(nc.jetstream(), AUDIT.name)
    assert report.ok, report


async def test_canary_data_in_tool_call_arguments_is_not_audited(mesh: Mesh, nc: Client) -> None:
    """Agents call tools through the gateway: canary arguments to an allowed call, a denied
    call and a critical call waiting for approval leave only shapes in the trail."""
    from stellwerk.tools_client import ToolsClient

    client = ToolsClient(nc, tenant="acme-insurance", business_unit="claims", user_role="analyst",
                         agent_id="canary-agent", user_id="canary-user")
    allowed = await client.call("tickets.search_tickets", {"text": MEDICAL[0]}, timeout_s=30)
    assert allowed.status == "ok", allowed
    # A person next to a diagnosis in the arguments: the DLP guard refuses the call.
    screened = await client.call("tickets.search_tickets", {"text": f"{NAME} {MEDICAL[0]}"}, timeout_s=30)
    assert screened.status == "refused" and screened.error is not None and screened.error.rule_id
    denied = await client.call("tickets.create_ticket", {"title": f"Rückruf {NAME}", "description": f"{EMAIL} {IBAN}"},
                               timeout_s=30)
    assert denied.status == "refused" and denied.error is not None and denied.error.rule_id
    supporter = ToolsClient(nc, tenant="acme-insurance", business_unit="claims", user_role="support-agent",
                            agent_id="canary-agent", user_id="canary-user")
    pending = asyncio.create_task(supporter.call(
        "tickets.create_ticket", {"title": f"Rückruf {NAME}", "description": f"{EMAIL} {MEDICAL[1]}"}, timeout_s=3
    ))
    waited = await pending  # nobody approves: the call is refused when the caller's deadline passes
    assert waited.status in ("refused", "failed")

    js = nc.jetstream()

    async def stored(stream: str, subject: str) -> str:
        parts: list[str] = []
        await scan(js, stream, subject, lambda m: parts.append(m.data.decode(errors="replace")) is None)
        return "".join(parts)

    async def tool_records() -> str | None:
        text = await stored(AUDIT.name, subjects.AUDIT_ALL)
        return text if '"toolgateway"' in text and allowed.call_id in text and denied.call_id in text else None

    trail = await eventually(tool_records, timeout_s=30)
    approvals = await stored("APPROVALS", subjects.TOOL_APPROVAL_ALL)
    leaks = [(where, canary) for where, text in (("AUDIT stream", trail), ("APPROVALS stream", approvals))
             for canary in CANARIES if canary in text]
    assert leaks == [], leaks
