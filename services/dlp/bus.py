"""DLP worker contract.

consumes  stellwerk.v1.request.submitted   (durable ``dlp-input``)
          stellwerk.v1.response.generated  (durable ``dlp-output``)
          stellwerk.v1.response.streaming  (durable ``dlp-stream``; then the request's chunks,
                                           stellwerk.v1.chunk.<id>, with an ordered consumer)
publishes stellwerk.v1.request.screened    (prompt allowed or redacted; decision on the trail)
          stellwerk.v1.result.<id>         (answer screened — or blocked / failed, typed)
          stellwerk.v1.delta.<id>          (streamed answers: screened text as released)
          stellwerk.v1.audit.trail.dlp_output, stellwerk.v1.audit.trail.dlp_input
                                           (the request's audit trail, when it ends here)
loads     KV policies current.sensitivity, current.guard at start and follows them
writes    KV guard_reviews review.<id>          (a guard decision ``review`` for a human, issue 16)
serves    stellwerk.v1.dlp.screen          ScreenRequest → ScreenReply (queue group ``dlp``;
                                           tool arguments and results, same guard and reload)
"""

from __future__ import annotations

from prometheus_client import Counter

from schemas.events import DlpDecision, RequestSubmitted, ResponseGenerated, ResponseStreaming
from schemas.kv import GuardReview
from schemas.streams import DLP_INPUT, DLP_OUTPUT, DLP_STREAM, KV_GUARD_REVIEWS
from services.dlp.guard import DlpGuard, DlpSettings
from services.dlp.guardrails import GuardDecision, Guardrails
from services.dlp.handlers import (
    moderate_stream,
    policy_context,
    screen_input,
    screen_output,
    screen_tool_calls,
)
from services.dlp.reviews import ReviewStore, file_reviews, reviews_in
from services.dlp.screen_service import serve_screening
from services.dlp.stream_window import StreamScreen, growth_for
from services.dlp.streaming import StreamScreening
from services.runtime import policy_bundles
from services.runtime.effects import Effects
from services.runtime.rollouts import RolloutMetrics
from services.runtime.worker import Worker

RELOAD_INTERVAL_S = 2.0
# Screen a streamed answer every 128 new characters once under way (the first screening runs
# at the first whitespace, then after 8, 16, 32, 64 characters: the first release is not
# delayed by the cadence): a release about every 32 tokens, ~75 ms of DLP CPU per 1,000
# streamed characters (docs/dlp.md, "Streaming").
STREAM_SCREEN_EVERY = 128


def build(worker: Worker) -> None:
    guard = DlpGuard.from_settings(DlpSettings())
    metrics = worker.metrics

    def observe(decision: DlpDecision) -> None:
        metrics.dlp_decisions.labels(decision.direction, decision.action, decision.rule_id).inc()
        for entity in decision.entities:
            metrics.dlp_entities.labels(decision.direction, entity.type).inc(entity.count)

    def observe_guard(decision: GuardDecision) -> None:
        metrics.guard_decisions.labels(decision.direction, decision.action, decision.rule_id).inc()
        for category in decision.categories:
            if category.score >= 0.5:
                metrics.guard_categories.labels(decision.direction, category.name, decision.action).inc()
        if decision.action == "review":  # let through; ops alert on the counter, a human looks
            metrics.guard_reviews.labels(decision.direction, decision.rule_id).inc()
            worker.log.warning("guard_review", direction=decision.direction, rule_id=decision.rule_id,
                               policy_version=decision.policy_version)

    # Guardrails (issue 16): the same worker and texts as DLP, no extra hop; fail closed.
    guardrails = Guardrails(guard.settings.guard_policy_dir, observe=observe_guard)
    guardrails.warm_up()

    # Guard reviews (issue 16): a ``review`` decision's work item goes to KV guard_reviews
    # before the engine carries the effects out — the item exists before the caller has the
    # answer; a failure to store it fails the handler (redelivered), never silently.
    reviews: list[ReviewStore] = []

    async def review_store() -> ReviewStore:
        if not reviews:
            reviews.append(ReviewStore(await worker.js.key_value(KV_GUARD_REVIEWS)))
        return reviews[0]

    async def filed(effects: Effects) -> Effects:
        if reviews_in(effects):
            await file_reviews(await review_store(), effects)
        return effects

    async def file_review(review: GuardReview) -> bool:
        return await (await review_store()).file(review)

    # A streamed answer's review that could not be filed (the stream ended guard_unavailable,
    # the guard's record on the trail marked review_filed=false): ops alert on any.
    unfiled = Counter("stellwerk_guard_reviews_unfiled",
                      "Guard reviews not filed in KV guard_reviews (the request ended fail closed)",
                      ["direction", "rule_id"], registry=metrics.registry)

    async def on_submitted(event: RequestSubmitted) -> Effects:
        return await filed(screen_input(guard, event, observe, guardrails))

    # Issue 17: output screening per route variant (canary vs stable), next to the shadow's.
    rollout_metrics = RolloutMetrics(metrics.registry)

    async def on_generated(event: ResponseGenerated) -> Effects:
        variant = event.routing.variant
        if variant is None:
            return await filed(screen_output(guard, event, observe, guardrails))

        def observe_variant(decision: DlpDecision) -> None:
            observe(decision)
            if decision.direction == "output":
                rollout_metrics.dlp.labels(event.routing.route, variant.name, decision.action).inc()

        return await filed(screen_output(guard, event, observe_variant, guardrails))

    async def reload_rules() -> None:
        # Org identifier patterns and the sensitivity policy take effect without a restart.
        if guard.reload():
            worker.log.warning("dlp_rules_reloaded", policy_version=guard.policy_version)
        if guardrails.reload():
            worker.log.warning("guard_policy_reloaded", policy_version=guardrails.policy_version)

    worker.every(RELOAD_INTERVAL_S, reload_rules)
    # The versions in force in the mesh (KV policies, issue 17), loaded at start and followed:
    # a push or rollback reaches every DLP worker — chat, streams and dlp.screen — at once.
    policy_bundles.follow(worker, "sensitivity", lambda: guard.policy_version, guard.replace_policy)
    policy_bundles.follow(worker, "guard", lambda: guardrails.policy_version, guardrails.replace)

    async def serve_tool_screening() -> None:  # stellwerk.v1.dlp.screen: the tool gateway's DLP
        await serve_screening(worker.nc, guard, observe=observe)

    worker.on_start(serve_tool_screening)
    # CPU-bound: a few in flight keep the process busy while a publish awaits its ack; more
    # would only queue inside the process instead of in the stream, where another worker
    # could take them.
    worker.consume(DLP_INPUT, RequestSubmitted, on_submitted, max_in_flight=guard.settings.max_in_flight)
    worker.consume(DLP_OUTPUT, ResponseGenerated, on_generated, max_in_flight=guard.settings.max_in_flight)
    # Streamed answers mostly wait for the model: many at once per worker; each screening
    # step is short and the window bounds it (services/dlp/stream_window.py).
    growth_for(guard)  # size the window now (parses and compiles every pattern once), not on the first stream
    screen_stream = StreamScreening(
        worker,
        lambda event: StreamScreen.for_guard(
            guard, policy_context(event), event.pseudonyms, screen_every=STREAM_SCREEN_EVERY
        ),
        lambda event, calls: screen_tool_calls(guard, event, calls),
        moderate=lambda event, text: moderate_stream(guardrails, event, text),
        # Review 1b: a stream files its reviews itself, while it runs — before the reviewed
        # text is released, anything is carried out or the chunks are purged — not here
        # after it returns (streaming.StreamScreening._file says why and what a failure does).
        file_review=file_review,
        on_unfiled=lambda review: unfiled.labels(review.direction, review.rule_id).inc(),
    )

    async def on_streaming(event: ResponseStreaming) -> Effects:
        return await screen_stream(event)

    worker.consume(DLP_STREAM, ResponseStreaming, on_streaming, max_in_flight=256)
