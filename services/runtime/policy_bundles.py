"""Policy bundles in the mesh: every version stored by its content hash in KV ``policies``,
the version in force per policy, and the history of pushes and rollbacks (issue 17).

Writers: ``stellwerk policy push | rollback``. Readers: workers load ``current.<policy>`` at
start and follow it (KV watch); ``stellwerk policy show | history``. Bundles are never
deleted, so any ``policy_version`` in the audit trail resolves to its text.
"""

from __future__ import annotations

import time
from typing import Final, get_args

import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from schemas.kv import PolicyAction, PolicyBundle, PolicyChange, PolicyName
from services.runtime.rego import PolicySource

POLICIES: Final[tuple[PolicyName, ...]] = get_args(PolicyName)
# The module file that names a policy directory's policy, and its entrypoint.
ENTRYPOINTS: Final[dict[PolicyName, str]] = {
    "routing": "stellwerk/routing/decision",
    "sensitivity": "stellwerk/dlp/decision",
    "tools": "stellwerk/tools/decision",
    "guard": "stellwerk/guard/decision",
}
MODULE_OF: Final[dict[str, PolicyName]] = {
    "routing.rego": "routing", "sensitivity.rego": "sensitivity", "tools.rego": "tools", "guard.rego": "guard",
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


async def put_in_force(kv: KeyValue, bundle: PolicyBundle, action: PolicyAction, actor: str,
                       message: str) -> PolicyChange:
    """Store the bundle (once per content hash), make it the version in force, log the change."""
    key = bundle_key(bundle.policy, bundle.version)
    if await _get(kv, key) is None:
        await kv.put(key, msgspec.json.encode(bundle))
    change = PolicyChange(policy=bundle.policy, version=bundle.version, action=action, actor=actor,
                          message=message)
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
