"""Policy bundles in the mesh (issue 17): store a checked policy by its content hash with actor
and message, put it in force, roll back, list and show — and, for the routing policy, publish it
to the running routers and collect their acknowledgements.

Every worker using a policy loads ``current.<policy>`` from KV ``policies`` at start and
follows it; the direct push only makes the running routers answer at once.
"""

from __future__ import annotations

import asyncio
import getpass
import re
from pathlib import Path

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from schemas import subjects
from schemas.events import AuditEvent, PolicyPushAck, PolicyPushed, deadline_in, decode, encode
from schemas.kv import PolicyBundle, PolicyChange, PolicyName
from schemas.streams import KV_POLICIES
from services.router.policy_store import check_policy_dir
from services.runtime import policy_bundles
from services.runtime.bus import connect, key_value
from services.runtime.rego import PolicyError, PolicySource, read_policy_dir


def default_actor() -> str:
    """The OS user, as an identifier (``--actor`` overrides it)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return actor_id(name)


def actor_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:@/<>=+\-]", "_", name)[:128] or "unknown"


def check_bundle(directory: Path, policy: PolicyName | None = None) -> tuple[PolicyName, PolicySource]:
    """Which policy a directory holds (its ``<policy>.rego``), compiled and its case tables run;
    raises PolicyError when it does not compile or a case fails."""
    found = policy or policy_bundles.policy_of(read_policy_dir(directory).modules)
    if found is None:
        raise PolicyError(f"{directory} holds none of {', '.join(policy_bundles.MODULE_OF)}: pass --policy")
    return found, check_policy_dir(directory, policy_bundles.ENTRYPOINTS[found])


async def _policies(nc_url: str) -> tuple[Client, KeyValue]:
    nc = await connect(nc_url, "stellwerk-policy", persistent=False)
    return nc, await key_value(nc.jetstream(), KV_POLICIES)


def change_id(change: PolicyChange, revision: int) -> str:
    """A change's audit id, derived from the change and the revision of ``current.<policy>``
    it replaces: a retried push or rollback gets the same id (JetStream drops the duplicate),
    two changes never share one."""
    return f"policy-change.{change.policy}.{change.action}.{policy_bundles.digest_of(change.version)}.{revision}"


async def audit_change(nc: Client, change: PolicyChange, revision: int) -> None:
    """The change itself is evidence: who put which version of which policy in force, when.
    Published before the change is written (``put_in_force``): if this fails, nothing changes.
    Stage ``policy`` (the operator's own audit subject); the message is free text and stays in
    KV ``policies``, never in the audit trail."""
    audit_id = change_id(change, revision)
    await nc.jetstream().publish(
        subjects.audit("policy"),
        encode(
            AuditEvent(
                request_id=audit_id,
                correlation_id=audit_id,
                deadline=deadline_in(0),
                tenant="platform",
                business_unit="platform",
                user_role="operator",
                usecase_class="chat",
                stage="policy",
                outcome="policy_pushed" if change.action == "push" else "policy_rolled_back",
                policy_version=change.version,
                attributes={"policy": change.policy, "actor": actor_id(change.actor)},
            )
        ),
        headers={"Nats-Msg-Id": audit_id},
    )


async def store_bundle(nats_url: str, policy: PolicyName, source: PolicySource, actor: str,
                       message: str) -> PolicyChange:
    nc, kv = await _policies(nats_url)
    try:
        bundle = PolicyBundle(policy=policy, version=source.version, modules=source.modules, data=source.data,
                              actor=actor, message=message)
        return await policy_bundles.put_in_force(kv, bundle, "push", actor, message,
                                                 announce=lambda change, revision: audit_change(nc, change, revision))
    finally:
        await nc.close()


async def rollback(nats_url: str, version: str, policy: PolicyName | None, actor: str,
                   message: str) -> PolicyChange | None:
    """Put a stored version in force again; None if no bundle has that version."""
    nc, kv = await _policies(nats_url)
    try:
        bundle = await policy_bundles.find(kv, version, policy)
        if bundle is None:
            return None
        # The bundle passed its tests when it was pushed; compile it again to be sure it still loads.
        from services.runtime.rego import CompiledPolicy

        CompiledPolicy(policy_bundles.source_of(bundle), policy_bundles.ENTRYPOINTS[bundle.policy])
        return await policy_bundles.put_in_force(kv, bundle, "rollback", actor, message,
                                                 announce=lambda change, revision: audit_change(nc, change, revision))
    finally:
        await nc.close()


def shipped_dirs() -> dict[PolicyName, Path]:
    """The policy directories shipped in the images: what a worker runs until a push."""
    root = Path(__file__).resolve().parent.parent / "services"
    return {"routing": root / "router" / "policies", "sensitivity": root / "dlp" / "policies",
            "tools": root / "toolgateway" / "policies", "guard": root / "dlp" / "guard_policies"}


def shipped_bundle(version: str, policy: PolicyName | None) -> PolicyBundle | None:
    """A version never pushed but shipped (what workers run before the first push), so every
    ``policy_version`` in the audit trail resolves to its text."""
    digest = policy_bundles.digest_of(version)
    for name, directory in shipped_dirs().items():
        if policy not in (None, name):
            continue
        try:
            source = read_policy_dir(directory)
        except (PolicyError, OSError, ValueError):
            continue
        if len(digest) >= 4 and policy_bundles.digest_of(source.version).startswith(digest):
            return PolicyBundle(policy=name, version=source.version, modules=source.modules, data=source.data,
                                actor="shipped", message="shipped with this release")
    return None


async def show(nats_url: str, version: str, policy: PolicyName | None) -> PolicyBundle | None:
    nc, kv = await _policies(nats_url)
    try:
        return await policy_bundles.find(kv, version, policy) or shipped_bundle(version, policy)
    finally:
        await nc.close()


async def history(nats_url: str, policy: PolicyName | None) -> tuple[list[PolicyChange], dict[str, str]]:
    """Every change, oldest first, and the version now in force per policy."""
    nc, kv = await _policies(nats_url)
    try:
        in_force: dict[str, str] = {}
        for name in [policy] if policy else policy_bundles.POLICIES:
            bundle = await policy_bundles.current(kv, name)
            if bundle is not None:
                in_force[name] = bundle.version
        return await policy_bundles.history(kv, policy), in_force
    finally:
        await nc.close()


async def push_routing_policy(nats_url: str, source: PolicySource, wait_s: float) -> list[PolicyPushAck]:
    """Send a stored routing bundle to the running routers and collect their acknowledgements
    (the change is audited when it is stored: ``audit_change``)."""
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
        return acks
    finally:
        await nc.close()
