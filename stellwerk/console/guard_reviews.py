"""The console's page "Guard reviews" (issue 16): guard decisions ``review`` waiting for a
human — the same KV items as ``stellwerk guard reviews`` (``services.dlp.reviews``), listed
with request, rule and scores (never text), resolved by a click (confirmed: the guard was
right; dismissed: a false alarm). A resolution is a compare-and-set (resolved once, whoever
clicks second is told) and an ``approval`` audit record on the request's trail.

Its own module, registered on the console app with one call, so the console's shared files
change by a line each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from schemas import subjects
from schemas.events import encode
from schemas.kv import GuardReview
from schemas.streams import KV_GUARD_REVIEWS
from services.dlp.reviews import Refused, ReviewStore, resolution_audit

PAGE: Final = "guard_reviews"
RESOLUTIONS: Final = ("confirmed", "dismissed")


async def open_reviews(nc: Any, tenant: str | None, *, include_resolved: bool = False) -> list[GuardReview]:
    """The items, oldest first; ``tenant`` limits them to one tenant (None: every tenant)."""
    store = ReviewStore(await nc.jetstream().key_value(KV_GUARD_REVIEWS))
    return [r for r in await store.items(include_resolved=include_resolved) if tenant is None or r.tenant == tenant]


def register(app: FastAPI, state: dict[str, Any], who: Callable[[Request, str], Any],
             acting: Callable[[Request, str, str], Any], page: Callable[..., HTMLResponse]) -> None:
    @app.get("/console/guard-reviews", response_class=HTMLResponse)
    async def guard_reviews(request: Request, notice: str | None = None, resolved: bool = False) -> Response:
        operator = who(request, PAGE)
        if isinstance(operator, Response):
            return operator
        tenant = None if operator.role == "operator" else operator.tenant
        items = await open_reviews(state["nc"], tenant, include_resolved=resolved)
        return page(request, "guard_reviews.html", operator, reviews=items, notice=notice, show_all=resolved)

    @app.post("/console/guard-reviews/{review_id}")
    async def resolve(request: Request, review_id: str, resolution: Annotated[str, Form()],
                      csrf: Annotated[str, Form()] = "") -> Response:
        operator = acting(request, PAGE, csrf)
        if isinstance(operator, Response):
            return operator
        if resolution not in RESOLUTIONS:
            return RedirectResponse("/console/guard-reviews?notice=invalid_resolution", 303)
        nc = state["nc"]
        store = ReviewStore(await nc.jetstream().key_value(KV_GUARD_REVIEWS))
        found = await store.get(review_id)
        if found is None or (operator.role != "operator" and found[0].tenant != operator.tenant):
            return RedirectResponse("/console/guard-reviews?notice=not_found", 303)
        outcome = await store.resolve(review_id, operator.key_id, resolution)  # type: ignore[arg-type]
        if isinstance(outcome, Refused):
            return RedirectResponse(f"/console/guard-reviews?notice={outcome.reason}", 303)
        await nc.jetstream().publish(subjects.audit("approval"), encode(resolution_audit(outcome)),
                                     headers={"Nats-Msg-Id": f"guard-review:{review_id}"})
        return RedirectResponse(f"/console/guard-reviews?notice={resolution}", 303)
