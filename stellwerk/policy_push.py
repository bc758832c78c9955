"""Publishing a policy bundle to the running routers and collecting their acknowledgements."""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from schemas import subjects
from schemas.events import AuditEvent, PolicyPushAck, PolicyPushed, deadline_in, decode, encode, new_id
from services.runtime.bus import connect
from services.runtime.rego import PolicySource


async def push_routing_policy(nats_url: str, source: PolicySource, wait_s: float) -> list[PolicyPushAck]:
    nc = await connect(nats_url, "stellwerk-policy-push", persistent=False)
    try:
        acks: list[PolicyPushAck] = []

        async def collect(msg: Msg) -> None:
            acks.append(decode(msg.data, PolicyPushAck))

        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=collect)
        pushed = PolicyPushed(
            policy="routing", version=source.version, modules=source.modules, data=source.data
        )
        await nc.publish(subjects.CONTROL_POLICY_PUSH, encode(pushed), reply=inbox)
        await nc.flush()
        await asyncio.sleep(wait_s)
        await sub.unsubscribe()
        change_id = new_id()
        # The change itself is evidence: who runs which policy version since when.
        await nc.jetstream().publish(
            subjects.audit("router"),
            encode(
                AuditEvent(
                    request_id=change_id,
                    correlation_id=change_id,
                    deadline=deadline_in(0),
                    tenant="platform",
                    business_unit="platform",
                    user_role="operator",
                    usecase_class="chat",
                    stage="router",
                    outcome="policy_pushed",
                    policy_version=source.version,
                    attributes={"accepted": str(sum(a.accepted for a in acks)), "workers": str(len(acks))},
                )
            ),
            headers={"Nats-Msg-Id": f"policy-push:{change_id}"},
        )
        return acks
    finally:
        await nc.close()
