"""Canary and shadow (issue 17): which variant a request gets, and whether a variant breached.

Pure. The pick is a hash of the request id, not a random draw: the same request id always
gets the same variant on every router replica, so a decision can be reproduced from the
audit trail and a redelivered request is not moved to another variant. Weights are relative
(90/10 and 9/1 are the same split); a variant with weight 0 (or rolled back) gets nothing.

``VariantWindow`` keeps one variant's recent calls and measures them; ``breach`` compares the
measurement with the configured thresholds. No threshold is judged on fewer calls than
``min_requests``: five calls with two errors are noise, not a 40 % error rate.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

BreachReason = Literal["error_rate", "p95_latency"]


def hash_point(request_id: str, salt: str) -> float:
    """A point in [0, 1) that depends only on the request id and the salt (the route, plus a
    tag so the variant pick and the shadow share are independent draws)."""
    digest = hashlib.sha256(f"{salt}\x00{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick(weights: Sequence[tuple[str, float]], request_id: str, salt: str) -> str | None:
    """The variant whose share of the weight line the request's point falls in; None when every
    weight is 0. Order matters only for reproducibility: the config's order is kept."""
    live = [(name, w) for name, w in weights if w > 0]
    total = sum(w for _, w in live)
    if not live:
        return None
    point = hash_point(request_id, f"{salt}:variant") * total
    upto = 0.0
    for name, weight in live:
        upto += weight
        if point < upto:
            return name
    return live[-1][0]  # float rounding at the very end of the line


def mirrored(share_pct: float, request_id: str, salt: str) -> bool:
    """Whether this request is mirrored to the shadow (``share_pct`` of requests, 0–100)."""
    return hash_point(request_id, f"{salt}:shadow") * 100 < share_pct


@dataclass(frozen=True, slots=True)
class Measured:
    requests: int
    errors: int
    error_rate: float
    p95_latency_ms: float


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class VariantWindow:
    """One variant's calls of the last ``window_s`` seconds: (time, ok, latency)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._calls: deque[tuple[float, bool, float]] = deque()

    def add(self, now: float, ok: bool, latency_ms: float) -> None:
        self._calls.append((now, ok, latency_ms))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._calls and self._calls[0][0] < now - self.window_s:
            self._calls.popleft()

    def measure(self, now: float) -> Measured:
        self._trim(now)
        n = len(self._calls)
        errors = sum(1 for _, ok, _ in self._calls if not ok)
        # Latency of the calls that answered: a failed call's time says nothing about speed.
        latencies = [latency for _, ok, latency in self._calls if ok]
        return Measured(n, errors, errors / n if n else 0.0, p95(latencies))


def breach(
    measured: Measured,
    min_requests: int,
    max_error_rate: float | None,
    max_p95_latency_ms: float | None,
) -> BreachReason | None:
    """The first threshold the measurement exceeds, None while it holds (or too few calls)."""
    if measured.requests < min_requests:
        return None
    if max_error_rate is not None and measured.error_rate > max_error_rate:
        return "error_rate"
    if max_p95_latency_ms is not None and measured.p95_latency_ms > max_p95_latency_ms:
        return "p95_latency"
    return None
