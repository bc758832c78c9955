"""Router worker contract.

consumes  stellwerk.v1.request.screened  (durable ``router``)
          stellwerk.v1.control.policy.push  (every worker: install a pushed policy)
loads     KV policies current.routing at start, before the first request, and follows it
watches   KV provider_health, capacity, budgets (runtime signals, never awaited per request)
publishes stellwerk.v1.request.routed    (route, rule, policy version, allowed fallbacks; decision on the trail)
          stellwerk.v1.result.<id>       (fallback-policy: typed refusal with retry hint)
          stellwerk.v1.audit.trail.router (the request's trail, when the policy refuses it)
"""

from __future__ import annotations

import msgspec
from nats.aio.msg import Msg

from schemas import subjects
from schemas.events import PolicyPushAck, PolicyPushed, RequestScreened, decode, encode
from schemas.streams import KV_BUDGETS, KV_CAPACITY, KV_PROVIDER_HEALTH, ROUTER
from services.router.context_length import load_encoding
from services.router.decision import RouterSettings, RoutingEngine
from services.router.handlers import route_request
from services.router.signals import SignalBoard
from services.runtime import policy_bundles
from services.runtime.effects import Effects
from services.runtime.rego import PolicyError, PolicySource
from services.runtime.rollouts import RolledBack, RolloutMetrics
from services.runtime.worker import Worker


def build(worker: Worker) -> None:
    engine = RoutingEngine(RouterSettings())
    encoding = engine.settings.tokenizer_encoding
    load_encoding(encoding)  # warm the tokenizer now, not on the first request
    board = SignalBoard(worker.config)
    worker.watch(KV_PROVIDER_HEALTH, board.apply_health)
    worker.watch(KV_CAPACITY, board.apply_capacity)
    worker.watch(KV_BUDGETS, board.apply_budget, keys="state.>")

    # The version in force in the mesh, not the one baked into the image: a router that
    # starts after a push (a scale-out, a restart) decides like the others.
    policy_bundles.follow(worker, "routing", lambda: engine.policy_version, engine.replace)

    async def subscribe_pushes() -> None:
        await worker.nc.subscribe(subjects.CONTROL_POLICY_PUSH, cb=on_push)

    async def on_push(msg: Msg) -> None:
        try:
            pushed = decode(msg.data, PolicyPushed)
            if pushed.policy != "routing":
                return
            engine.replace(PolicySource(modules=pushed.modules, data=pushed.data, version=pushed.version))
        except (msgspec.ValidationError, msgspec.DecodeError, PolicyError) as exc:
            worker.log.error("policy_push_rejected", error=type(exc).__name__)
            if msg.reply:
                await msg.respond(
                    encode(
                        PolicyPushAck(
                            worker_id=worker.settings.worker_id, accepted=False, version=engine.policy_version
                        )
                    )
                )
            return
        worker.log.warning("policy_pushed", version=pushed.version)
        if msg.reply:
            await msg.respond(
                encode(
                    PolicyPushAck(
                        worker_id=worker.settings.worker_id, accepted=True, version=engine.policy_version
                    )
                )
            )

    worker.on_start(subscribe_pushes)

    # Canary rollbacks in force (issue 17): every replica follows KV rollouts, so a variant
    # rolled back by any inference replica gets weight 0 here at once.
    rollout_metrics = RolloutMetrics(worker.metrics.registry)
    rolled_back = RolledBack(rollout_metrics)
    worker.watch(RolledBack.bucket, rolled_back.apply)

    async def on_screened(event: RequestScreened) -> Effects:
        signals = board.signals_for(event.tenant, event.business_unit, event.usecase_class, end_user=event.end_user)
        return route_request(engine, signals, event, encoding, worker.metrics, board.routes_for(),
                             worker.config, rolled_back.keys, rollout_metrics)

    # A policy decision costs well under a millisecond: a few in flight overlap the publishes.
    worker.consume(ROUTER, RequestScreened, on_screened, max_in_flight=8)
