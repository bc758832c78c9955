"""Sealed checkpoints: periodic, signed statements of a chain's head.

A chain alone proves that records fit together, not that nobody rewrote all of them or cut
off the newest ones. A checkpoint "record N of partition P has hash H", sealed with a key the
writer of a copy does not hold (HMAC-SHA256), pins everything up to N: altering or removing
any record at or before N no longer verifies, and a chain that ends before N is truncated.
Checkpoints are also the anchors from which ``verify --since`` and exports start.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from schemas.events import AuditCheckpoint, AuditRecord, utcnow
from services.audit.canonical import canonical

SealCheck = Literal["valid", "invalid", "unverifiable"]


@dataclass(frozen=True, slots=True)
class SealKey:
    secret: bytes = b""
    key_id: str = ""

    @classmethod
    def from_secret(cls, secret: str) -> SealKey:
        raw = secret.encode()
        # The id names the key in every checkpoint without revealing it.
        return cls(raw, "k-" + hashlib.sha256(b"stellwerk-seal-key-id\n" + raw).hexdigest()[:16])


def _seal(checkpoint: AuditCheckpoint, key: SealKey | None) -> str:
    payload = canonical(checkpoint, drop="seal")
    if key is None:
        return hashlib.sha256(payload).hexdigest()
    return hmac.new(key.secret, payload, hashlib.sha256).hexdigest()


def seal_checkpoint(
    head: AuditRecord,
    head_stream_seq: int,
    *,
    sealed_by: str,
    key: SealKey | None,
    sealed_at: datetime | None = None,
) -> AuditCheckpoint:
    checkpoint = AuditCheckpoint(
        partition=head.partition,
        seq=head.seq,
        head_hash=head.hash,
        head_stream_seq=head_stream_seq,
        sealed_at=sealed_at or utcnow(),
        sealed_by=sealed_by,
        seal_alg="hmac-sha256" if key else "sha256",
        key_id=key.key_id if key else None,
        seal="0" * 64,  # placeholder: the seal covers every other field
    )
    checkpoint.seal = _seal(checkpoint, key)
    return checkpoint


def check_seal(checkpoint: AuditCheckpoint, key: SealKey | None) -> SealCheck:
    """With a key every checkpoint must carry that key's HMAC; without one, HMACs cannot be checked."""
    if key is not None:
        if checkpoint.seal_alg != "hmac-sha256" or checkpoint.key_id != key.key_id:
            return "invalid"
        expected = _seal(checkpoint, key)
    elif checkpoint.seal_alg == "hmac-sha256":
        return "unverifiable"
    else:
        expected = _seal(checkpoint, None)
    return "valid" if hmac.compare_digest(expected, checkpoint.seal) else "invalid"


def crosses_boundary(previous_seq: int, new_seq: int, every: int) -> bool:
    """True when appending took a chain past a multiple of ``every`` records."""
    return every > 0 and new_seq // every > previous_seq // every
