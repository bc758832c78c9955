"""Circuit breaker per route, fed by real call outcomes.

closed (healthy) → open (down) after ``failure_threshold`` consecutive failures; after
``cooldown_s`` one probe is let through (half-open, reported as degraded); a success closes
it, a failure re-opens it. Slow successes (above ``slow_call_ms``) report degraded without
opening. Time is injected so the logic is testable without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.vocabulary import ProviderHealth


@dataclass
class CircuitBreaker:
    failure_threshold: int = 3
    cooldown_s: float = 15.0
    slow_call_ms: float = 20_000.0
    consecutive_failures: int = 0
    opened_at: float | None = None
    last_slow: bool = False
    _probing: bool = field(default=False, repr=False)

    def state(self, now: float) -> ProviderHealth:
        if self.opened_at is not None:
            return "degraded" if now - self.opened_at >= self.cooldown_s else "down"
        return "degraded" if self.last_slow else "healthy"

    def allows(self, now: float) -> bool:
        """Whether a call may go to this route now (one probe at a time when half-open)."""
        if self.opened_at is None:
            return True
        if now - self.opened_at < self.cooldown_s or self._probing:
            return False
        self._probing = True
        return True

    def record_success(self, latency_ms: float) -> None:
        self.consecutive_failures = 0
        self.opened_at = None
        self._probing = False
        self.last_slow = latency_ms > self.slow_call_ms

    def record_failure(self, now: float) -> None:
        self.consecutive_failures += 1
        self._probing = False
        if self.opened_at is not None or self.consecutive_failures >= self.failure_threshold:
            self.opened_at = now
