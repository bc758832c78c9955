"""A model call's cost at call time: GPU-seconds and the deployment's token and GPU-hour price.

Inference reports this estimate with every call (``UsageRecorded.cost``); FinOps books the
call again from its dated price table (``services.finops.pricing.PriceBook``), with the same
GPU-seconds. Pure; a deployment is anything with the four price fields (the platform
config's ``Deployment`` is one).

A batched deployment serves many calls at once, so a call is charged its *share* of the
deployment's busy time (``GpuClock``: every busy second is divided equally among the calls
in flight during it), never its whole wall time; docs/finops.md has the formula.
"""

from __future__ import annotations

from typing import Protocol


class PricedDeployment(Protocol):
    @property
    def gpu_share(self) -> float: ...
    @property
    def gpu_hour_rate(self) -> float: ...
    @property
    def input_price_per_1k(self) -> float: ...
    @property
    def output_price_per_1k(self) -> float: ...


def gpu_seconds(deployment: PricedDeployment, shared_s: float) -> float:
    """GPU time charged to a call: its share of the deployment's busy wall time
    (``GpuClock.finish``) × the GPUs the deployment holds."""
    return shared_s * deployment.gpu_share


class GpuClock:
    """Processor-sharing meter for one deployment: who gets which part of its busy time.

    Between two events (a call starting or finishing) the deployment is busy for ``dt``
    with ``k`` calls in flight; each of them is charged ``dt / k``. The clock keeps the
    running sum ``V(t) = Σ dt / k`` (the *virtual time*); a call is charged
    ``V(end) − V(start)``. Summed over all calls that is exactly the wall time during which
    at least one call was in flight — the deployment's busy time — however many overlap.

    ``others`` is the number of calls in flight at the deployment that this clock does not
    see (other inference workers, as the deployment's own metrics report them): with it the
    divisor is ``max(k, others_total)``, so several workers together still book the busy
    time once, not once per worker. It only ever lowers a call's charge.
    """

    __slots__ = ("_at", "_external", "_external_until", "_in_flight", "_virtual")

    # A reading of the deployment's metrics counts this long (they are polled every second).
    EXTERNAL_TTL_S = 3.0

    def __init__(self) -> None:
        self._virtual = 0.0
        self._at = 0.0
        self._in_flight = 0
        self._external = 0.0
        self._external_until = 0.0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _advance(self, now: float) -> None:
        if self._in_flight and now > self._at:
            external = self._external if self._at < self._external_until else 0.0
            self._virtual += (now - self._at) / max(self._in_flight, external)
        self._at = max(self._at, now)

    def observe(self, now: float, running_at_deployment: float) -> None:
        """The deployment's own count of calls in flight (all workers), from its metrics."""
        self._advance(now)
        self._external = max(0.0, running_at_deployment)
        self._external_until = now + self.EXTERNAL_TTL_S

    def start(self, now: float) -> float:
        """A call begins; the returned mark goes back to ``finish``."""
        self._advance(now)
        self._in_flight += 1
        return self._virtual

    def finish(self, mark: float, now: float) -> float:
        """A call ends: its share of the busy wall time in seconds."""
        self._advance(now)
        self._in_flight = max(0, self._in_flight - 1)
        return self._virtual - mark


def price_call(deployment: PricedDeployment, prompt_tokens: int, completion_tokens: int, gpu_s: float) -> float:
    """Inference's estimate at call time, from the deployment's fields."""
    token_cost = (
        prompt_tokens / 1000 * deployment.input_price_per_1k
        + completion_tokens / 1000 * deployment.output_price_per_1k
    )
    return round(token_cost + gpu_s / 3600 * deployment.gpu_hour_rate, 8)
