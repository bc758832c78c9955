"""Sealed checkpoints: periodic, signed statements of a chain's head.

A chain alone proves that records fit together, not that nobody rewrote all of them or cut
off the newest ones. A checkpoint "record N of partition P has hash H", sealed with a key the
writer of a copy does not hold, pins everything up to N: altering or removing any record at
or before N no longer verifies, and a chain that ends before N is truncated. Checkpoints are
also the anchors from which ``verify --since`` and exports start.

Seals are Ed25519 signatures (``seal_alg`` ed25519): the private key stays with the audit
service, verifiers hold only the public key, so being able to verify a seal does not mean
being able to make one. Older trails carry HMAC-SHA256 seals (whoever checks them holds the
secret that makes them) or, without any key, a plain SHA-256; both still verify.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.events import AuditCheckpoint, AuditRecord, utcnow
from services.audit.canonical import canonical

SealCheck = Literal["valid", "invalid", "unverifiable"]
_PEM_PUBLIC = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def ed25519_key_id(public: Ed25519PublicKey) -> str:
    """``ed-`` + the first 16 hex digits of SHA-256 over the raw 32-byte public key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed-" + hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Ed25519Signer:
    """The audit service's signing key (PEM, PKCS#8, as ``stellwerk audit keygen`` or
    ``openssl genpkey -algorithm ed25519`` write it)."""

    private: Ed25519PrivateKey
    key_id: str

    @classmethod
    def from_pem(cls, pem: bytes) -> Ed25519Signer:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the seal signing key is not an Ed25519 private key")
        return cls(key, ed25519_key_id(key.public_key()))

    @classmethod
    def from_file(cls, path: Path) -> Ed25519Signer:
        return cls.from_pem(path.read_bytes())

    @classmethod
    def generate(cls) -> Ed25519Signer:
        key = Ed25519PrivateKey.generate()
        return cls(key, ed25519_key_id(key.public_key()))

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def private_pem(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_keys(pem: bytes) -> dict[str, Ed25519PublicKey]:
    """Every Ed25519 public key in a PEM text (several, one after the other, during a key
    rotation), by key id."""
    keys: dict[str, Ed25519PublicKey] = {}
    for block in _PEM_PUBLIC.findall(pem):
        key = serialization.load_pem_public_key(block)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("a seal verification key is not an Ed25519 public key")
        keys[ed25519_key_id(key)] = key
    if not keys:
        raise ValueError("no PEM public key found")
    return keys


@dataclass(frozen=True, slots=True)
class SealKey:
    secret: bytes = b""
    key_id: str = ""

    @classmethod
    def from_secret(cls, secret: str) -> SealKey:
        raw = secret.encode()
        # The id names the key in every checkpoint without revealing it.
        return cls(raw, "k-" + hashlib.sha256(b"stellwerk-seal-key-id\n" + raw).hexdigest()[:16])


@dataclass(frozen=True, slots=True)
class Keyring:
    """What a verifier holds: Ed25519 public keys by key id (current and rotated-out ones)
    and, for trails sealed before the switch to signatures, the old HMAC secret."""

    public_keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    hmac: SealKey | None = None

    @classmethod
    def of(cls, public_pems: Iterable[bytes] = (), hmac: SealKey | None = None) -> Keyring:
        keys: dict[str, Ed25519PublicKey] = {}
        for pem in public_pems:
            keys.update(load_public_keys(pem))
        return cls(keys, hmac)

    @property
    def empty(self) -> bool:
        return not self.public_keys and self.hmac is None


SigningKey = SealKey | Ed25519Signer
VerifyingKey = SealKey | Keyring


def _payload(checkpoint: AuditCheckpoint) -> bytes:
    return canonical(checkpoint, drop="seal")


def _seal(checkpoint: AuditCheckpoint, key: SealKey | None) -> str:
    payload = _payload(checkpoint)
    if key is None:
        return hashlib.sha256(payload).hexdigest()
    return hmac.new(key.secret, payload, hashlib.sha256).hexdigest()


def seal_checkpoint(
    head: AuditRecord,
    head_stream_seq: int,
    *,
    sealed_by: str,
    key: SigningKey | None,
    sealed_at: datetime | None = None,
) -> AuditCheckpoint:
    checkpoint = AuditCheckpoint(
        partition=head.partition,
        seq=head.seq,
        head_hash=head.hash,
        head_stream_seq=head_stream_seq,
        sealed_at=sealed_at or utcnow(),
        sealed_by=sealed_by,
        seal_alg="ed25519" if isinstance(key, Ed25519Signer) else "hmac-sha256" if key else "sha256",
        key_id=key.key_id if key else None,
        seal="0" * 64,  # placeholder: the seal covers every other field
    )
    if isinstance(key, Ed25519Signer):
        checkpoint.seal = key.private.sign(_payload(checkpoint)).hex()
    else:
        checkpoint.seal = _seal(checkpoint, key)
    return checkpoint


def check_seal(checkpoint: AuditCheckpoint, key: VerifyingKey | None) -> SealCheck:
    """Check one checkpoint's seal.

    With keys (public keys and/or the old HMAC secret) every checkpoint must verify under one
    of them — an Ed25519 signature by a known key, or the given secret's HMAC — anything else
    (a plain hash, an unknown key, an HMAC the verifier cannot check) is ``invalid``, so a
    copy cannot be re-sealed in a weaker way. Without keys plain hashes are checked and
    signatures and HMACs reported as ``unverifiable``.
    """
    ring = Keyring(hmac=key) if isinstance(key, SealKey) else key
    if ring is None or ring.empty:
        if checkpoint.seal_alg != "sha256":
            return "unverifiable"
        return "valid" if hmac.compare_digest(_seal(checkpoint, None), checkpoint.seal) else "invalid"
    if checkpoint.seal_alg == "ed25519":
        public = ring.public_keys.get(checkpoint.key_id or "")
        if public is None:
            return "invalid"
        try:
            public.verify(bytes.fromhex(checkpoint.seal), _payload(checkpoint))
        except (InvalidSignature, ValueError):
            return "invalid"
        return "valid"
    if checkpoint.seal_alg == "hmac-sha256" and ring.hmac is not None and checkpoint.key_id == ring.hmac.key_id:
        return "valid" if hmac.compare_digest(_seal(checkpoint, ring.hmac), checkpoint.seal) else "invalid"
    return "invalid"


def crosses_boundary(previous_seq: int, new_seq: int, every: int) -> bool:
    """True when appending took a chain past a multiple of ``every`` records."""
    return every > 0 and new_seq // every > previous_seq // every
