"""Live workers via the NATS micro-services protocol (``$SRV.PING``)."""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client
from nats.aio.msg import Msg


async def ping_workers(nc: Client, wait_s: float = 0.3) -> dict[str, list[str]]:
    """Scatter a ping, gather every worker's answer for ``wait_s``: service → worker ids."""
    inbox = nc.new_inbox()
    replies: list[Msg] = []

    async def collect(msg: Msg) -> None:
        replies.append(msg)

    sub = await nc.subscribe(inbox, cb=collect)
    await nc.publish("$SRV.PING", b"", reply=inbox)
    await nc.flush()
    await asyncio.sleep(wait_s)
    await sub.unsubscribe()
    workers: dict[str, list[str]] = {}
    for msg in replies:
        if not msg.data:  # "no responders" status: nobody is listening at all
            continue
        info = json.loads(msg.data)
        metadata = info.get("metadata") or {}
        service = metadata.get("service")
        if service:
            workers.setdefault(service, []).append(metadata.get("worker_id", info.get("id", "?")))
    return workers
