"""What ``stellwerk status`` reports: live workers and consumer backlogs."""

from __future__ import annotations

from typing import Any

from nats.js.errors import NotFoundError

from schemas.streams import CONSUMERS
from services.runtime.bus import connect
from stellwerk.discovery import ping_workers


async def collect_status(nats_url: str) -> dict[str, Any]:
    nc = await connect(nats_url, "stellwerk-status", persistent=False)
    try:
        js = nc.jetstream()
        workers = await ping_workers(nc)
        consumers: list[dict[str, Any]] = []
        for definition in CONSUMERS:
            try:
                info = await js.consumer_info(definition.stream, definition.durable)
            except NotFoundError:
                consumers.append({"stream": definition.stream, "consumer": definition.durable,
                                  "pending": 0, "ack_pending": 0, "redelivered": 0, "waiting": 0,
                                  "exists": False})
                continue
            consumers.append({
                "stream": definition.stream,
                "consumer": definition.durable,
                "pending": info.num_pending or 0,
                "ack_pending": info.num_ack_pending or 0,
                "redelivered": info.num_redelivered or 0,
                "waiting": info.num_waiting or 0,
                "exists": True,
            })
        return {"nats_url": nats_url, "workers": workers, "consumers": consumers}
    finally:
        await nc.close()
