"""A provider's tokens-per-minute quota, reported in OpenAI's rate-limit headers.

Hosted APIs tell each caller how much of its quota is left (``x-ratelimit-limit-tokens``,
``x-ratelimit-remaining-tokens``); the simulator does the same so the platform's quota
tracking can be tested against real HTTP responses.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenQuota:
    def __init__(self, tokens_per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.limit = tokens_per_minute
        self._clock = clock
        self._minute = -1
        self._used = 0

    def charge(self, tokens: int) -> dict[str, str]:
        """Count a call's tokens in the current minute; the headers to send with its answer."""
        minute = int(self._clock() // 60)
        if minute != self._minute:
            self._minute, self._used = minute, 0
        self._used += tokens
        return {
            "x-ratelimit-limit-tokens": str(self.limit),
            "x-ratelimit-remaining-tokens": str(max(0, self.limit - self._used)),
        }
