"""Policy bundles in the mesh: every version stored by its content hash in KV ``policies``,
the version in force per policy, and the history of pushes and rollbacks (issue 17).

Writers: ``stellwerk policy push | rollback``. Readers: workers load ``current.<policy>`` at
start and follow it (KV watch); ``stellwerk policy show | history``. Bundles are never
deleted, so any ``policy_version`` in the audit trail resolves to its text.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, get_args

import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from schemas.kv import PolicyAction, PolicyBundle, PolicyChange, PolicyName
from schemas.streams import KV_POLICIES
from services.runtime.rego import PolicyError, PolicySource

if TYPE_CHECKING:
    from services.runtime.worker import Worker

POLICIES: Final[tuple[PolicyName, ...]] = get_args(PolicyName)
# The module file that names a policy directory's policy, and its entrypoint.
ENTRYPOINTS: Final[dict[PolicyName, str]] = {
    "routing": "stellwerk/routing/decision",
    "sensitivity": "stellwerk/dlp/decision",
    "tools": "stellwerk/tools/decision",
    "guard": "stellwerk/guard/decision",
}
MODULE_OF: Final[dict[str, PolicyName]] = {
    "routing.rego": "routing", "sensitivity.rego": "sensitivity", "tools.rego": "tools", "guardrails.rego": "guard",
}

_bundle = msgspec.json.Decoder(PolicyBundle)
_change = msgspec.json.Decoder(PolicyChange)


def current_key(policy: str) -> str:
    return f"current.{policy}"


def bundle_key(policy: str, version: str) -> str:
    return f"bundle.{policy}.{digest_of(version)}"


def digest_of(version: str) -> str:
    """``sha256:1a2b…`` → ``1a2b…`` (the KV key token)."""
    return version.removeprefix("sha256:")


def policy_of(modules: dict[str, str]) -> PolicyName | None:
    for name in modules:
        if name in MODULE_OF:
            return MODULE_OF[name]
    return None


def source_of(bundle: PolicyBundle) -> PolicySource:
    return PolicySource(modules=bundle.modules, data=bundle.data, version=bundle.version)


def decode_current(value: bytes) -> PolicyBundle | None:
    change = _change.decode(value)
    return change.bundle


async def _get(kv: KeyValue, key: str) -> bytes | None:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return entry.value or None


async def _keys(kv: KeyValue, pattern: str) -> list[str]:
    """Keys matching a subject pattern (``bundle.>``, ``log.routing.*``)."""
    watcher = await kv.watch(pattern, ignore_deletes=True, meta_only=True)
    keys: list[str] = []
    try:
        async for entry in watcher:
            if entry is None:  # end of the snapshot
                break
            keys.append(entry.key)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return keys


async def current(kv: KeyValue, policy: str) -> PolicyBundle | None:
    value = await _get(kv, current_key(policy))
    return decode_current(value) if value else None


async def find(kv: KeyValue, version: str, policy: str | None = None) -> PolicyBundle | None:
    """The bundle of ``version`` (``sha256:…`` or the bare hex digits; a unique prefix will do)."""
    digest = digest_of(version)
    for name in [policy] if policy else POLICIES:
        value = await _get(kv, f"bundle.{name}.{digest}")
        if value:
            return _bundle.decode(value)
    matches = [k for k in await _keys(kv, "bundle.>") if k.split(".")[-1].startswith(digest)
               and (policy is None or k.split(".")[1] == policy)]
    if len(matches) == 1:
        value = await _get(kv, matches[0])
        return _bundle.decode(value) if value else None
    return None


async def in_force_revision(kv: KeyValue, policy: str) -> int:
    """The KV revision of ``current.<policy>`` (0: nothing in force yet, or deleted)."""
    try:
        entry = await kv.get(current_key(policy))
    except KeyNotFoundError:
        return 0
    return (entry.revision or 0) if entry.value else 0


async def put_in_force(kv: KeyValue, bundle: PolicyBundle, action: PolicyAction, actor: str, message: str,
                       announce: Callable[[PolicyChange, int], Awaitable[None]] | None = None) -> PolicyChange:
    """Store the bundle (once per content hash), make it the version in force, log the change.

    ``announce`` (the audit) runs before anything is written, with the revision of
    ``current.<policy>`` the change replaces: if it fails nothing changes, so no change is ever
    in force unaudited. Change and revision name the audit message (its JetStream message id),
    so retrying a push whose write failed after its audit does not audit it twice."""
    change = PolicyChange(policy=bundle.policy, version=bundle.version, action=action, actor=actor,
                          message=message)
    if announce is not None:
        await announce(change, await in_force_revision(kv, bundle.policy))
    key = bundle_key(bundle.policy, bundle.version)
    if await _get(kv, key) is None:
        await kv.put(key, msgspec.json.encode(bundle))
    await kv.put(f"log.{bundle.policy}.{time.time_ns()}", msgspec.json.encode(change))
    await kv.put(current_key(bundle.policy), msgspec.json.encode(msgspec.structs.replace(change, bundle=bundle)))
    return change


async def history(kv: KeyValue, policy: str | None = None) -> list[PolicyChange]:
    """Every push and rollback, oldest first."""
    keys = await _keys(kv, f"log.{policy}.*" if policy else "log.>")
    changes = []
    for key in sorted(keys, key=lambda k: int(k.rsplit(".", 1)[1])):
        value = await _get(kv, key)
        if value:
            changes.append(_change.decode(value))
    return changes


def follow(worker: Worker, policy: PolicyName, version: Callable[[], str],
           replace: Callable[[PolicySource], None]) -> None:
    """Run the version of ``policy`` in force in the mesh: load ``current.<policy>`` at start
    (before the first request) and follow it with a KV watch, so a worker started after a push
    (a scale-out, a restart) decides like the others, and a push or rollback reaches every
    worker without a restart. Without a bundle in force the worker keeps its shipped policy.

    ``replace`` raises PolicyError for a bundle that does not compile; the old one stays.
    """

    def install(bundle: PolicyBundle | None, how: str) -> None:
        if bundle is None or bundle.version == version():
            return
        try:
            replace(source_of(bundle))
        except PolicyError as exc:  # a stored bundle passed its tests when pushed; keep the old one
            worker.log.error("policy_bundle_rejected", policy=policy, version=bundle.version,
                             error=type(exc).__name__)
            return
        worker.log.warning("policy_bundle_installed", policy=policy, version=bundle.version, how=how)

    async def load() -> None:
        try:
            install(await current(await worker.kv(KV_POLICIES), policy), "start")
        except Exception as exc:  # noqa: BLE001 - no bucket yet / not allowed: the shipped policy
            worker.log.error("policy_bundle_unavailable", policy=policy, error=type(exc).__name__)

    def on_change(key: str, value: bytes | None) -> None:
        if value is not None:
            try:
                install(decode_current(value), "watch")
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                worker.log.error("policy_bundle_rejected", policy=policy, error=type(exc).__name__)

    worker.on_start(load)
    worker.watch(KV_POLICIES, on_change, keys=current_key(policy))
