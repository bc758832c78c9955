"""Audit worker settings from the environment (``STELLWERK_AUDIT_*``)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.audit.checkpoint import SealKey


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STELLWERK_AUDIT_", extra="ignore")

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
    # HMAC key sealing the checkpoints; without one they carry a plain SHA-256.
    seal_key: SecretStr | None = None

    def key(self) -> SealKey | None:
        return SealKey.from_secret(self.seal_key.get_secret_value()) if self.seal_key else None
