"""The gateway's view of its bus (issue 19): liveness, readiness, and how long it has been cut off.

* ``/healthz`` — liveness: the process serves HTTP. Always 200 while it does; a gateway that
  lost NATS must not be restarted for it (it reconnects by itself, and a restart would only
  drop the requests it still holds).
* ``/readyz`` — readiness: the NATS connection is up *and* JetStream answered recently
  (the gateway reads its consumers' state every half second). 503 otherwise, naming what
  is missing (``nats``, ``jetstream``), so a load balancer sends callers elsewhere.
* ``stellwerk_gateway_bus_connected`` (0/1) and ``stellwerk_gateway_bus_disconnected_seconds``
  (0 while connected) on ``/metrics``; the alert ``StellwerkGatewayBusDisconnected`` fires
  on the latter.
"""

from __future__ import annotations

import time

import structlog
from nats.aio.client import Client
from prometheus_client import CollectorRegistry, Gauge

# A JetStream answer older than this no longer proves JetStream reachable.
JETSTREAM_FRESH_S = 3.0
# What a caller refused with ``bus_unavailable`` is told to wait: a supervised nats-server is
# back within ~1–2 s, a cluster node's clients move to another node within a few seconds.
RETRY_AFTER_S = 2.0


class BusHealth:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.nc: Client | None = None
        self.down_since: float | None = time.monotonic()  # not connected until connected
        self.jetstream_ok_at: float | None = None
        self.log = structlog.get_logger("stellwerk.gateway")
        connected = Gauge("stellwerk_gateway_bus_connected",
                          "1 while the gateway's NATS connection is up, 0 while it is away", registry=registry)
        connected.set_function(lambda: 1.0 if self.connected else 0.0)
        away = Gauge("stellwerk_gateway_bus_disconnected_seconds",
                     "Seconds since the gateway lost its NATS connection (0 while connected)", registry=registry)
        away.set_function(self.disconnected_s)

    def attach(self, nc: Client) -> None:
        self.nc = nc
        if nc.is_connected:
            self.down_since = None

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def disconnected_s(self) -> float:
        if self.connected or self.down_since is None:
            return 0.0
        return time.monotonic() - self.down_since

    async def on_disconnected(self) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
        self.jetstream_ok_at = None
        self.log.warning("nats_disconnected")

    async def on_reconnected(self) -> None:
        away = self.disconnected_s() if self.down_since is not None else 0.0
        self.down_since = None
        self.log.warning("nats_reconnected", away_s=round(away, 3))

    def jetstream_answered(self) -> None:
        self.jetstream_ok_at = time.monotonic()

    def missing(self) -> list[str]:
        """The dependencies this gateway cannot reach right now (empty: ready)."""
        if not self.connected:
            return ["nats", "jetstream"]
        if self.jetstream_ok_at is None or time.monotonic() - self.jetstream_ok_at > JETSTREAM_FRESH_S:
            return ["jetstream"]
        return []
