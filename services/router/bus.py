"""Router worker contract.

consumes  stellwerk.v1.request.screened  (durable ``router``)
          stellwerk.v1.control.policy.push  (every worker: install a pushed policy)
loads     KV policies current.routing at start, before the first request, and follows it
watches   KV provider_health, capacity, budgets (runtime signals, never awaited per request)
          KV rollouts (route variants and the routing-policy canary rolled back, issue 17)
writes    KV rollouts policy.<digits> (the policy canary breached its thresholds)
publishes stellwerk.v1.request.routed    (route, rule, policy version, allowed fallbacks; decision on the trail)
          stellwerk.v1.result.<id>       (fallback-policy: typed refusal with retry hint)
          stellwerk.v1.audit.trail.router (the request's trail, when the policy refuses it)
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js.errors import KeyWrongLastSequenceError

from schemas import subjects
from schemas.events import PolicyPushAck, PolicyPushed, RequestScreened, decode, encode, utcnow
from schemas.streams import KV_BUDGETS, KV_CAPACITY, KV_POLICIES, KV_PROVIDER_HEALTH, KV_ROLLOUTS, ROUTER
from services.router.context_length import load_encoding
from services.router.decision import RouterSettings, RoutingEngine
from services.router.handlers import route_request
from services.router.policy_canary import PolicyCanaryState
from services.router.signals import SignalBoard
from services.runtime import policy_bundles
from services.runtime.effects import Effects
from services.runtime.rego import PolicyError, PolicySource
from services.runtime.rollouts import RolledBack, RolloutMetrics, until_landed, variant_rollback_audit
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
    canary: list[PolicyCanaryState] = []  # the routing-policy canary, once loaded
    rolled_back = RolledBack(rollout_metrics)

    def follow_rollouts(key: str, value: bytes | None) -> None:
        rolled_back.apply(key, value)
        for state in canary:
            state.follow(state.key in rolled_back)

    worker.watch(RolledBack.bucket, follow_rollouts)

    async def load_policy_canary() -> None:
        spec = worker.config.policy_canary
        if spec is None:
            return
        # Fail safe: without its stored bundle the canary decides nothing (the policy in force
        # decides every request), and says so.
        try:
            bundle = await policy_bundles.find(await worker.kv(KV_POLICIES), spec.version, "routing")
            if bundle is None:
                worker.log.error("policy_canary_unavailable", version=spec.version, error="NotStored")
                return
            canary_engine = RoutingEngine(RouterSettings())
            canary_engine.replace(policy_bundles.source_of(bundle))
        except Exception as exc:  # noqa: BLE001 - any failure leaves the policy in force alone
            worker.log.error("policy_canary_unavailable", version=spec.version, error=type(exc).__name__)
            return
        state = PolicyCanaryState(spec, canary_engine)
        state.rolled_back = state.key in rolled_back
        canary.append(state)

    worker.on_start(load_policy_canary)

    async def roll_back_policy(state: PolicyCanaryState, reason: Any, measured: Any) -> None:
        rollout = state.state(reason, measured)

        async def create() -> bool:
            kv = await worker.kv(KV_ROLLOUTS)
            try:
                await kv.create(state.key, msgspec.json.encode(rollout))  # one writer, one record
            except KeyWrongLastSequenceError:
                return False
            return True

        # Retried until it lands: the other routers only learn of the breach from KV.
        if not await until_landed(create, lambda exc: worker.log.warning(
                "policy_canary_rollback_write_failed", error=type(exc).__name__)):
            return
        rollout_metrics.rollbacks.labels(rollout.route, rollout.variant, reason).inc()
        worker.log.warning("policy_canary_rolled_back", version=state.spec.version, reason=reason)
        await worker.audit(variant_rollback_audit(rollout, state.spec.rollback, "router", utcnow(),
                                                  subjects.token(worker.settings.worker_id)))

    writing: set[asyncio.Task[None]] = set()  # rollback writes being retried (kept referenced)

    async def on_screened(event: RequestScreened) -> Effects:
        signals = board.signals_for(event.tenant, event.business_unit, event.usecase_class, end_user=event.end_user)
        state = canary[0] if canary else None
        effects = route_request(engine, signals, event, encoding, worker.metrics, board.routes_for(),
                                worker.config, rolled_back.keys, rollout_metrics, state)
        verdict = state.breached() if state is not None else None
        if state is not None and verdict is not None:
            # This router stops at once and stays stopped until KV has the record (a watch
            # event of another key must not resume it); the others follow KV.
            rolled_back.hold(state.key)
            state.follow(True)
            writing.add(task := asyncio.create_task(rolling_back(state, *verdict)))
            task.add_done_callback(writing.discard)
        return effects

    async def rolling_back(state: PolicyCanaryState, reason: Any, measured: Any) -> None:
        try:
            await roll_back_policy(state, reason, measured)
        except Exception as exc:  # noqa: BLE001 - the requests are routed either way; this router stays stopped
            worker.log.error("policy_canary_rollback_failed", error=type(exc).__name__)

    # A policy decision costs well under a millisecond: a few in flight overlap the publishes.
    worker.consume(ROUTER, RequestScreened, on_screened, max_in_flight=engine.settings.max_in_flight)
