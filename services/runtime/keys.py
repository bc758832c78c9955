"""API keys as data in the mesh (issue 14, docs/identity.md).

Keys live in the KV bucket ``keys`` (``<key_id>`` → ``schemas.kv.KeyRecord``): the key's
SHA-256 and what it grants, never the key itself. Operators change them with ``stellwerk
keys create|list|revoke|rotate``; every gateway replica watches the bucket and applies a
change as soon as the watch delivers it (well under the 2 s the docs promise), without a
restart. The keys of the YAML config are the bootstrap set: each gateway imports them at
start with create-if-absent, so the import is idempotent and never undoes a revocation.

Every change is an audit event of stage ``identity`` (outcome ``key_created``,
``key_revoked``, ``key_rotated``, ``key_imported``) naming its actor — the metadata only:
the key's id, never the key or its hash.

``KeyStore`` writes (the CLI, the gateway's import); ``KeyRing`` is a replica's read view.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from schemas import subjects
from schemas.events import AuditEvent, deadline_in, encode, new_id, utcnow
from schemas.kv import KeyRecord, KeySource
from schemas.streams import KV_KEYS
from schemas.vocabulary import BudgetClass, DataSensitivity, QualityTier, UsecaseClass
from services.runtime.settings import ApiKey

log = structlog.get_logger("stellwerk.keys")

KEY_PREFIX: Final = "sk-stellwerk-"
SYSTEM_ACTOR: Final = "system"
_KEY_ID: Final = re.compile(r"^[A-Za-z0-9_=\-]{1,64}$")  # a KV key and an Ident alike
_ACTOR: Final = re.compile(r"^[A-Za-z0-9_.:@/<>=+\-]{1,128}$")
_DURATION: Final = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_decode = msgspec.json.Decoder(KeyRecord).decode


class KeyChangeRefused(Exception):
    """A key change that cannot be made: ``reason`` is a code (not_found, exists, revoked, ...)."""

    def __init__(self, reason: str, key_id: str) -> None:
        super().__init__(f"{reason}: {key_id}")
        self.reason = reason
        self.key_id = key_id


def hash_key(presented: str) -> str:
    return hashlib.sha256(presented.encode("utf-8", "replace")).hexdigest()


def new_key() -> str:
    """A fresh key: ``sk-stellwerk-`` and 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key-" + secrets.token_hex(6)


def valid_key_id(key_id: str) -> bool:
    return bool(_KEY_ID.match(key_id))


def valid_actor(actor: str) -> bool:
    return bool(_ACTOR.match(actor))


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``30d``, ``2w`` → a positive duration; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not match or float(match[1]) <= 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h, 30d, 2w)")
    return timedelta(seconds=float(match[1]) * _UNIT_S[match[2]])


def record_of(key: ApiKey, actor: str, source: KeySource = "config") -> KeyRecord:
    """A key of the YAML config as the bucket stores it."""
    return KeyRecord(created_by=actor, source=source, **key.model_dump(include=set(_API_KEY_FIELDS)))


def api_key_of(record: KeyRecord) -> ApiKey:
    """What the gateway's admission reads (the same fields as a config key)."""
    return ApiKey.model_validate({f: getattr(record, f) for f in _API_KEY_FIELDS})


_API_KEY_FIELDS: Final = frozenset(ApiKey.model_fields)


def _audit(record: KeyRecord, outcome: str, actor: str, **attributes: str) -> AuditEvent:
    return AuditEvent(
        request_id=new_id(),
        correlation_id=record.key_id,
        deadline=deadline_in(60),
        tenant=record.tenant,
        business_unit=record.business_unit,
        user_role=record.user_role,
        usecase_class=record.usecase_class,
        stage="identity",
        outcome=outcome,
        attributes={"key_id": record.key_id, "actor": actor, "source": record.source, **attributes},
    )


class KeyStore:
    """Changes to the ``keys`` bucket, each audited with its actor."""

    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self.js = js
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> KeyStore:
        return cls(js, await js.key_value(KV_KEYS))

    async def _audit(self, event: AuditEvent) -> None:
        await self.js.publish(subjects.audit("identity"), encode(event),
                              headers={"Nats-Msg-Id": f"audit:{event.request_id}:identity"})

    async def get(self, key_id: str) -> tuple[KeyRecord, int]:
        try:
            entry = await self.kv.get(key_id)
        except KeyNotFoundError:
            raise KeyChangeRefused("not_found", key_id) from None
        if entry.value is None or entry.operation in (KV_DEL, KV_PURGE):
            raise KeyChangeRefused("not_found", key_id)
        return _decode(entry.value), entry.revision or 0

    async def all(self) -> list[KeyRecord]:
        found: list[KeyRecord] = []
        watcher = await self.kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.value and entry.operation not in (KV_DEL, KV_PURGE):
                    with contextlib.suppress(msgspec.DecodeError):
                        found.append(_decode(entry.value))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return sorted(found, key=lambda r: (r.tenant, r.created_at, r.key_id))

    async def create(
        self,
        *,
        tenant: str,
        business_unit: str,
        role: str,
        actor: str,
        usecase: UsecaseClass = "chat",
        expires_in: timedelta | None = None,
        key_id: str | None = None,
        budget_class: BudgetClass = "standard",
        max_budget_class: BudgetClass = "standard",
        quality_tier: QualityTier = "standard",
        max_quality_tier: QualityTier = "high",
        sensitivity_floor: DataSensitivity = "internal",
        pseudonymize: bool = False,
        forward_end_user: bool = False,
        rotated_from: str | None = None,
        lineage: str | None = None,
        owner: str | None = None,
    ) -> tuple[str, KeyRecord]:
        """A new key: (the key, shown once; its record)."""
        key = new_key()
        record = KeyRecord(
            key_id=key_id or new_key_id(),
            key_sha256=hash_key(key),
            tenant=tenant,
            business_unit=business_unit,
            user_role=role,
            usecase_class=usecase,
            budget_class=budget_class,
            max_budget_class=max_budget_class,
            quality_tier=quality_tier,
            max_quality_tier=max_quality_tier,
            sensitivity_floor=sensitivity_floor,
            pseudonymize=pseudonymize,
            forward_end_user=forward_end_user,
            expires_at=utcnow() + expires_in if expires_in is not None else None,
            created_by=actor,
            rotated_from=rotated_from,
            lineage=lineage,
            owner=owner,
        )
        # Strict decoding checks the record (identifiers, enums) before it is stored.
        record = _decode(msgspec.json.encode(record))
        try:
            await self.kv.create(record.key_id, msgspec.json.encode(record))
        except KeyWrongLastSequenceError:
            raise KeyChangeRefused("exists", record.key_id) from None
        extra = {"expires_at": record.expires_at.isoformat()} if record.expires_at else {}
        if rotated_from:
            extra["rotated_from"] = rotated_from
        await self._audit(_audit(record, "key_created", actor, **extra))
        return key, record

    async def _update(self, record: KeyRecord, revision: int) -> None:
        try:
            await self.kv.update(record.key_id, msgspec.json.encode(record), last=revision)
        except KeyWrongLastSequenceError:
            raise KeyChangeRefused("changed_concurrently", record.key_id) from None

    async def revoke(self, key_id: str, actor: str) -> KeyRecord:
        record, revision = await self.get(key_id)
        if record.revoked:
            raise KeyChangeRefused("already_revoked", key_id)
        record = msgspec.structs.replace(record, revoked=True, revoked_by=actor, revoked_at=utcnow())
        await self._update(record, revision)
        await self._audit(_audit(record, "key_revoked", actor))
        return record

    async def rotate(self, key_id: str, actor: str, grace: timedelta) -> tuple[str, KeyRecord, KeyRecord]:
        """A new key with the same grants; the old one stays valid for ``grace`` (0: revoked
        at once). Returns (the new key, its record, the old record as updated)."""
        old, revision = await self.get(key_id)
        if not old.valid():
            raise KeyChangeRefused("not_valid", key_id)
        remaining = old.expires_at - utcnow() if old.expires_at else None
        key, new = await self.create(
            tenant=old.tenant, business_unit=old.business_unit, role=old.user_role, actor=actor,
            usecase=old.usecase_class, expires_in=remaining, budget_class=old.budget_class,
            max_budget_class=old.max_budget_class, quality_tier=old.quality_tier,
            max_quality_tier=old.max_quality_tier, sensitivity_floor=old.sensitivity_floor,
            pseudonymize=old.pseudonymize, forward_end_user=old.forward_end_user, rotated_from=old.key_id,
            lineage=old.lineage or old.key_id,  # the caller's limits carry over to the new key
            owner=old.owner,
        )
        ends = utcnow() + grace
        if old.expires_at is not None and old.expires_at < ends:
            ends = old.expires_at
        old = msgspec.structs.replace(old, expires_at=ends, rotated_to=new.key_id)
        await self._update(old, revision)
        await self._audit(_audit(old, "key_rotated", actor, rotated_to=new.key_id, expires_at=ends.isoformat()))
        return key, new, old

    async def import_keys(self, keys: Iterable[ApiKey], actor: str = SYSTEM_ACTOR) -> list[str]:
        """The config's keys, created where absent (idempotent: an existing record — also a
        revoked one — is left as it is). The ids imported now."""
        imported = []
        for key in keys:
            record = record_of(key, actor)
            try:
                await self.kv.create(record.key_id, msgspec.json.encode(record))
            except KeyWrongLastSequenceError:
                continue
            imported.append(record.key_id)
            await self._audit(_audit(record, "key_imported", actor))
        return imported


class KeyRing:
    """One gateway replica's view of the keys: the bucket as its watch delivered it.

    Seeded with the config's keys so the gateway can answer before the bucket was read; the
    first complete read of the bucket replaces the seed."""

    def __init__(self, seed: Iterable[ApiKey] = ()) -> None:
        self._by_id: dict[str, KeyRecord] = {}
        self._by_hash: dict[str, KeyRecord] = {}
        for key in seed:
            self._put(record_of(key, SYSTEM_ACTOR))
        self.loaded = asyncio.Event()

    def _put(self, record: KeyRecord) -> None:
        self._drop(record.key_id)
        self._by_id[record.key_id] = record
        self._by_hash[record.key_sha256] = record

    def _drop(self, key_id: str) -> None:
        old = self._by_id.pop(key_id, None)
        if old is not None and self._by_hash.get(old.key_sha256) is old:
            del self._by_hash[old.key_sha256]

    def apply(self, key_id: str, value: bytes | None) -> None:
        """One change of the bucket (``Worker.watch``'s callback): a record, or None if deleted."""
        if value is None:
            self._drop(key_id)
            return
        try:
            self._put(_decode(value))
        except msgspec.DecodeError:
            log.warning("keys_record_malformed", key_id=key_id)

    def record_for(self, presented: str, now: datetime | None = None) -> KeyRecord | None:
        """The valid key presented (None: unknown, revoked or expired)."""
        if not presented:
            return None
        found = self._by_hash.get(hash_key(presented))
        return found if found is not None and found.valid(now) else None

    def lookup(self, presented: str) -> ApiKey | None:
        record = self.record_for(presented)
        return api_key_of(record) if record is not None else None

    def key_id_of(self, presented: str) -> str | None:
        record = self.record_for(presented)
        return record.key_id if record is not None else None

    def limit_id_of(self, presented: str) -> str | None:
        """Whom the concurrency guard counts a presented key against: its lineage."""
        record = self.record_for(presented)
        return (record.lineage or record.key_id) if record is not None else None

    def person_of(self, key_id: str) -> str:
        """Whom four eyes counts a key id as (issue 14, review 1a): the person it belongs to
        (``owner``: the ``oidc:<sub>`` of their single sign-on, so their key and their token
        are one approver), else the lineage of its rotation chain, so a rotated key — its old
        one still valid for the grace — is the same approver. An id that is no key (an agent's
        name, ``oidc:<sub>``) is itself."""
        record = self._by_id.get(key_id)
        return (record.owner or record.lineage or record.key_id) if record is not None else key_id

    def __len__(self) -> int:
        return len(self._by_id)

    async def watch(self, kv: KeyValue, retry_s: float = 1.0) -> None:
        """Follow the bucket until cancelled; a broken watch is opened again (the bucket is
        read whole each time, so nothing is missed)."""
        while True:
            try:
                watcher = await kv.watchall()
                fresh: dict[str, KeyRecord] | None = {}
                try:
                    async for entry in watcher:
                        if entry is None:  # the bucket as it is now: replace the view
                            if fresh is not None:
                                self._by_id.clear()
                                self._by_hash.clear()
                                for kept in fresh.values():
                                    self._put(kept)
                                fresh = None
                                self.loaded.set()
                            continue
                        record = self._decoded(entry)
                        if fresh is not None:
                            if record is None:
                                fresh.pop(entry.key, None)
                            else:
                                fresh[entry.key] = record
                        elif record is None:
                            self._drop(entry.key)
                        else:
                            self._put(record)
                finally:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving the last view, watch again
                log.warning("keys_watch_failed", error=type(exc).__name__)
                await asyncio.sleep(retry_s)

    @staticmethod
    def _decoded(entry: KeyValue.Entry) -> KeyRecord | None:
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            return None
        try:
            return _decode(entry.value)
        except msgspec.DecodeError:
            log.warning("keys_record_malformed", key_id=entry.key)
            return None
