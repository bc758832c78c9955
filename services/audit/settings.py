"""Audit worker settings from the environment (``STELLWERK_AUDIT_*``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.audit.checkpoint import Ed25519Signer, Keyring, SealKey, SigningKey


class AuditSettings(BaseSettings):
    # An empty variable counts as unset: compose passes ``STELLWERK_AUDIT_SEAL_SIGNING_KEY_FILE=``
    # to opt out of signatures (HMAC only as an explicit choice), never a path "".
    model_config = SettingsConfigDict(env_prefix="STELLWERK_AUDIT_", extra="ignore", env_ignore_empty=True)

    # Prometheus endpoint of the runbook counters; 0 = off.
    metrics_port: int = 0
    # Events taken from the intake per round; one atomic append holds at most 1,000 messages.
    batch: int = 1000
    # A sealed checkpoint every N records of a partition, and at the latest every T seconds
    # for a partition that grew (so the newest records are soon covered too).
    checkpoint_every: int = 1000
    checkpoint_interval_s: float = 60.0
    # Append up to 1,000 records per JetStream atomic batch (needs ``allow_atomic`` on AUDIT,
    # which the worker switches on); false: one publish-and-ack per record.
    atomic_batches: bool = True
    # Ed25519 private key (PEM, PKCS#8) signing the checkpoints: only the audit service has it.
    seal_signing_key_file: Path | None = None
    # Ed25519 public key(s) (PEM; several one after the other during a rotation) for verifiers.
    seal_public_key_file: Path | None = None
    # The older shared HMAC secret: seals with it where no signing key is set; verifiers give it
    # to check checkpoints sealed before the switch to signatures. Neither: plain SHA-256.
    seal_key: SecretStr | None = None

    def hmac_key(self) -> SealKey | None:
        return SealKey.from_secret(self.seal_key.get_secret_value()) if self.seal_key else None

    def key(self) -> SigningKey | None:
        """What the audit service seals with: the Ed25519 key if set, else the HMAC secret."""
        if self.seal_signing_key_file is not None:
            return Ed25519Signer.from_file(self.seal_signing_key_file)
        return self.hmac_key()

    def keyring(self, public_key_files: Iterable[Path] = ()) -> Keyring:
        """What a verifier checks with: public keys only (never the signing key), plus the old
        HMAC secret when it is set."""
        files = [*public_key_files, *([self.seal_public_key_file] if self.seal_public_key_file else [])]
        return Keyring.of((f.read_bytes() for f in files), hmac=self.hmac_key())
