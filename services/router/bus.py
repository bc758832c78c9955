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
from schemas.kv import PolicyBundle
from schemas.streams import KV_BUDGETS, KV_CAPACITY, KV_POLICIES, KV_PROVIDER_HEALTH, ROUTER
from services.router.context_length import load_encoding
from services.router.decision import RouterSettings, RoutingEngine
from services.router.handlers import route_request
from services.router.signals import SignalBoard
from services.runtime import policy_bundles
from services.runtime.effects import Effects
from services.runtime.rego import PolicyError, PolicySource
from services.runtime.worker import Worker


def build(worker: Worker) -> None:
    engine = RoutingEngine(RouterSettings())
    encoding = engine.settings.tokenizer_encoding
    load_encoding(encoding)  # warm the tokenizer now, not on the first request
    board = SignalBoard(worker.config)
    worker.watch(KV_PROVIDER_HEALTH, board.apply_health)
    worker.watch(KV_CAPACITY, board.apply_capacity)
    worker.watch(KV_BUDGETS, board.apply_budget, keys="state.>")

    def install(bundle: PolicyBundle | None, how: str) -> None:
        if bundle is None or bundle.version == engine.policy_version:
            return
        try:
            engine.replace(policy_bundles.source_of(bundle))
        except PolicyError as exc:  # a stored bundle passed its tests when pushed; keep the old one
            worker.log.error("policy_bundle_rejected", version=bundle.version, error=type(exc).__name__)
            return
        worker.log.warning("policy_bundle_installed", version=bundle.version, how=how)

    async def load_bundle() -> None:
        # The version in force in the mesh, not the one baked into the image: a router that
        # starts after a push (a scale-out, a restart) decides like the others.
        try:
            install(await policy_bundles.current(await worker.kv(KV_POLICIES), "routing"), "start")
        except Exception as exc:  # noqa: BLE001 - no bucket yet / not allowed: the shipped policy
            worker.log.error("policy_bundle_unavailable", error=type(exc).__name__)

    def follow_bundle(key: str, value: bytes | None) -> None:
        if value is not None:
            try:
                install(policy_bundles.decode_current(value), "watch")
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                worker.log.error("policy_bundle_rejected", error=type(exc).__name__)

    worker.on_start(load_bundle)
    worker.watch(KV_POLICIES, follow_bundle, keys=policy_bundles.current_key("routing"))

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

    async def on_screened(event: RequestScreened) -> Effects:
        signals = board.signals_for(event.tenant, event.business_unit, event.usecase_class)
        return route_request(engine, signals, event, encoding, worker.metrics, board.routes_for())

    # A policy decision costs well under a millisecond: a few in flight overlap the publishes.
    worker.consume(ROUTER, RequestScreened, on_screened, max_in_flight=8)
