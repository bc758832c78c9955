"""Admission like vLLM's scheduler: at most ``max_num_seqs`` run, the rest wait in FIFO order.

KV-cache use is modelled as the tokens of the running sequences (prompt plus the full
answer, reserved at admission because the simulator knows the answer length up front)
against a fixed capacity. Preemption on a full cache is not modelled.
"""

from __future__ import annotations

import asyncio


class Scheduler:
    def __init__(self, max_num_seqs: int, kv_capacity_tokens: int) -> None:
        self.max_num_seqs = max_num_seqs
        self.kv_capacity_tokens = kv_capacity_tokens
        self.running = 0
        self.waiting = 0
        self.kv_tokens = 0
        self._slots = asyncio.Semaphore(max_num_seqs)

    async def acquire(self, kv_tokens: int) -> None:
        if self._slots.locked():
            self.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                # Also on cancellation: a client that gave up while queued is no longer waiting.
                self.waiting -= 1
        else:
            # Free slot: acquire() returns without suspending, so no await cost on the hot path.
            await self._slots.acquire()
        self.running += 1
        self.kv_tokens += kv_tokens

    def release(self, kv_tokens: int) -> None:
        self.running -= 1
        self.kv_tokens -= kv_tokens
        self._slots.release()

    def kv_cache_usage(self) -> float:
        return min(1.0, self.kv_tokens / self.kv_capacity_tokens)
