"""DLP screening as a service: ``stellwerk.v1.dlp.screen`` (core NATS request-reply, queue
group ``dlp``), ``ScreenRequest`` → ``ScreenReply``.

Callers outside the request path — the tool gateway, for tool arguments and results — screen
with the DLP workers' own guard, so an org-identifier or policy change (``guard.reload()``,
every two seconds in each worker) reaches chat and tools alike; nobody else loads a copy of
the guard. Each request goes to one worker of the queue group. The guard is CPU-bound and
synchronous, so a worker answers one screening at a time between its pipeline messages.

The reply never carries anything but the decision and the texts as they may pass on;
failures are typed (``dlp_unavailable``, ``invalid_request``, ``deadline_exceeded``) and
the caller refuses (fail closed) — as it does when no worker answers in time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from schemas import subjects
from schemas.events import DlpDecision, ScreenFinding, ScreenReply, ScreenRequest, encode
from services.dlp.guard import DlpGuard, DlpUnavailable
from services.dlp.handlers import policy_context

QUEUE: Final = "dlp"
log = structlog.get_logger("stellwerk.dlp")
_decoder = msgspec.json.Decoder(ScreenRequest)


def _ignore(_: DlpDecision) -> None:
    return None


def answer(guard: DlpGuard, data: bytes, observe: Callable[[DlpDecision], None] = _ignore) -> ScreenReply:
    """One screening request, decided (pure apart from the guard; no server needed)."""
    try:
        request = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ScreenReply(error="invalid_request")
    if request.remaining_s() <= 0:
        return ScreenReply(error="deadline_exceeded")  # the caller has stopped waiting
    try:
        screening = guard.screen(request.texts, direction=request.direction, context=policy_context(request))
    except DlpUnavailable:
        return ScreenReply(error="dlp_unavailable")
    observe(screening.decision)
    if not request.detail:
        return ScreenReply(decision=screening.decision, texts=screening.texts)
    findings = [ScreenFinding(type=f.type, text_index=f.text_index, start=f.start, end=f.end, score=round(f.score, 3))
                for f in screening.findings]
    return ScreenReply(decision=screening.decision, texts=screening.texts, findings=findings,
                       medical_categories=screening.medical_categories)


async def serve_screening(
    nc: Client,
    guard: DlpGuard,
    *,
    observe: Callable[[DlpDecision], None] = _ignore,
    queue: str = QUEUE,
) -> Subscription:
    """Answer ``stellwerk.v1.dlp.screen`` with ``guard`` until the subscription ends."""

    async def on_request(msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            reply = answer(guard, msg.data, observe)
        except Exception as exc:  # noqa: BLE001 - the caller must get a typed answer
            log.error("dlp_screen_failed", error=type(exc).__name__)
            reply = ScreenReply(error="dlp_unavailable")
        await nc.publish(msg.reply, encode(reply))

    return await nc.subscribe(subjects.DLP_SCREEN, queue=queue, cb=on_request)
