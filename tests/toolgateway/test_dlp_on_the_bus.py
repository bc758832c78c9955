"""The tool gateway screens through the DLP service on the bus (``stellwerk.v1.dlp.screen``).

A real nats-server; the DLP side is ``services.dlp.screen_service.serve_screening`` with a
real guard over a private copy of the shipped data, the tool side ``BusScreener``. Fail
closed: no DLP worker, no answer in time, a typed error or a reply that does not fit the
request all raise ``DlpUnavailable``.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg

from schemas import subjects
from schemas.events import (
    DlpDecision,
    ScreenReply,
    ScreenRequest,
    ToolCallRequested,
    deadline_in,
    encode,
    utcnow,
)
from services.dlp.guard import DlpGuard
from services.dlp.screen_service import answer, serve_screening
from services.dlp.settings import PACKAGE_DIR, DlpSettings
from services.runtime.bus import connect
from services.toolgateway.screening import BusScreener, DlpUnavailable

CODE = "QZ-739214"  # matches no shipped recognizer; PROJECT_CODE once the data file says so
NEW_PATTERN = "      - regex: '\\bQZ-\\d{6}\\b'\n        score: 0.7\n"


def call(**overrides: object) -> ToolCallRequested:
    fields: dict[str, object] = {
        "request_id": "r-1", "correlation_id": "r-1", "deadline": deadline_in(30), "tenant": "acme-insurance",
        "business_unit": "claims", "user_role": "analyst", "usecase_class": "chat", "tool": "search_tickets",
        "server": "tickets", "arguments": {}, "agent_id": "test-agent",
    }
    return ToolCallRequested(**{**fields, **overrides})  # type: ignore[arg-type]


def add_project_code_pattern(org_file: Path) -> None:
    """A second pattern for the shipped PROJECT_CODE identifier (a confidential entity)."""
    text = org_file.read_text()
    anchor = "      - regex: '\\bPRJ-20\\d{2}-\\d{4}\\b'\n        score: 0.7\n"
    assert anchor in text
    org_file.write_text(text.replace(anchor, anchor + NEW_PATTERN))


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> DlpSettings:
    data = tmp_path_factory.mktemp("dlp-data") / "data"
    shutil.copytree(PACKAGE_DIR / "data", data)
    return DlpSettings(org_identifiers_file=data / "org_identifiers.yaml")


@pytest.fixture(scope="module")
def guard(settings: DlpSettings) -> DlpGuard:
    return DlpGuard.from_settings(settings)


@pytest_asyncio.fixture
async def bus(nats_url: str) -> AsyncIterator[Client]:
    nc = await connect(nats_url, "test", persistent=False)
    yield nc
    await nc.close()


def entity_types(decision: DlpDecision | None) -> set[str]:
    assert decision is not None
    return {e.type for e in decision.entities}


async def test_tool_strings_are_screened_by_the_dlp_workers_guard_and_follow_its_reload(
    bus: Client, nats_url: str, guard: DlpGuard, settings: DlpSettings
) -> None:
    dlp = await connect(nats_url, "dlp", persistent=False)
    seen: list[str] = []
    await serve_screening(dlp, guard, observe=lambda d: seen.append(d.direction))
    await dlp.flush()
    screener = BusScreener(bus, timeout_s=10)
    texts = ["Mail an erika.mustermann@example.org", f"Projekt {CODE}"]

    before = await screener.screen(texts, "input", call())
    assert (before.decision.action, entity_types(before.decision)) == ("redact", {"EMAIL_ADDRESS"})
    assert before.texts is not None and "<EMAIL_ADDRESS>" in before.texts[0]
    assert before.texts[1] == texts[1]  # the code is not an identifier yet

    add_project_code_pattern(settings.org_identifiers_file)
    assert guard.reload() is True  # what every DLP worker does on its schedule
    after = await screener.screen(texts, "output", call())
    assert entity_types(after.decision) == {"EMAIL_ADDRESS", "PROJECT_CODE"}
    assert after.decision.direction == "output"
    assert after.texts is not None and after.texts[1] == "Projekt <PROJECT_CODE>"
    assert seen == ["input", "output"]
    await dlp.close()


async def test_no_dlp_worker_refuses_at_once(bus: Client) -> None:
    started = utcnow()
    with pytest.raises(DlpUnavailable) as refused:
        await BusScreener(bus, timeout_s=10).screen(["Hallo"], "input", call())
    assert refused.value.code == "dlp_unavailable"
    assert utcnow() - started < timedelta(seconds=5)  # no responders: no waiting for the timeout


async def test_a_silent_or_wrong_dlp_answer_refuses(bus: Client, nats_url: str) -> None:
    other = await connect(nats_url, "fake-dlp", persistent=False)
    replies = [
        None,  # silent: the timeout decides
        ScreenReply(error="dlp_unavailable"),
        ScreenReply(error="deadline_exceeded"),
        ScreenReply(),  # neither decision nor error
        b"not json",
    ]
    decision = DlpDecision(direction="input", action="allow", rule_id="dlp.allow.no_pii", policy_version="v1",
                           language="de", derived_sensitivity="internal", has_pii=False, has_medical_terms=False)
    replies.append(ScreenReply(decision=decision, texts=["one", "too many"]))  # does not fit the request

    async def respond(msg: Msg) -> None:
        reply = replies.pop(0)
        if reply is not None:
            await msg.respond(reply if isinstance(reply, bytes) else encode(reply))

    await other.subscribe(subjects.DLP_SCREEN, queue="dlp", cb=respond)
    await other.flush()
    screener = BusScreener(bus, timeout_s=0.3)
    codes = []
    for _ in range(6):
        with pytest.raises(DlpUnavailable) as refused:
            await screener.screen(["Hallo"], "input", call())
        codes.append(refused.value.code)
    assert codes == ["dlp_unavailable", "dlp_unavailable", "deadline_exceeded", "dlp_unavailable",
                     "dlp_unavailable", "dlp_unavailable"]
    await other.close()


async def test_an_expired_call_is_not_sent(bus: Client) -> None:
    expired = call(deadline=utcnow() - timedelta(seconds=1))
    with pytest.raises(DlpUnavailable) as refused:
        await BusScreener(bus).screen(["Hallo"], "input", expired)
    assert refused.value.code == "deadline_exceeded"


def test_the_responder_answers_typed_errors_without_a_server(guard: DlpGuard) -> None:
    assert answer(guard, b"{").error == "invalid_request"
    assert answer(guard, b'{"texts": "not a list"}').error == "invalid_request"
    base = msgspec.structs.asdict(call())
    envelope = {k: base[k] for k in ("request_id", "correlation_id", "tenant", "business_unit", "user_role",
                                     "usecase_class")}
    late = ScreenRequest(**envelope, deadline=utcnow() - timedelta(seconds=1), direction="input", texts=["x"])
    assert answer(guard, encode(late)).error == "deadline_exceeded"
    fine = ScreenRequest(**envelope, deadline=deadline_in(10), direction="input", texts=["Guten Tag"])
    reply = answer(guard, encode(fine))
    assert reply.error is None and reply.decision is not None and reply.decision.action == "allow"
    assert reply.texts == ["Guten Tag"]
