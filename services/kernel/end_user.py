"""The end user as the mesh knows them (issue 14, docs/identity.md): pseudonymous.

An application key serves many people; the OpenAI ``user`` field, the ``X-Stellwerk-End-User``
header or an OIDC token's subject says which one asked. The raw id never travels: the gateway
replaces it at once with a keyed hash, per tenant — HMAC-SHA256 over ``tenant NUL id`` with
the platform's ``end_user_hash_key`` — and only that hash is on the envelope, in the audit
trail, the usage events, rate-limit and budget documents.

Keyed, so that whoever reads the audit trail or the usage stream cannot recover an id by
hashing a list of candidate e-mail addresses; the key is held separately (a secret by
reference), and an auditor who holds it answers "who asked" with ``stellwerk audit end-user``
(the pseudonym of a candidate id, to search the trail for).
Per tenant, so the same person behind two tenants is two unrelated pseudonyms. Without a
configured key the hash is an unkeyed SHA-256 (development only; ``stellwerk up`` warns).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

HASH_HEX: Final = 32  # 128 bits: collision-free for any realistic population, short in KV keys
MAX_ID_CHARS: Final = 256


def end_user_hash(tenant: str, user: str, key: str | None) -> str:
    """The pseudonym of ``user`` within ``tenant``: 32 hex digits."""
    message = f"{tenant}\x00{user}".encode("utf-8", "replace")
    if key:
        return hmac.new(key.encode("utf-8", "replace"), message, hashlib.sha256).hexdigest()[:HASH_HEX]
    return hashlib.sha256(message).hexdigest()[:HASH_HEX]
