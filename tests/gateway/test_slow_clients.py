"""A streaming client that stops reading does not pin the gateway (issue 18).

The gateway's guard and HTTP protocol in front of an endless SSE endpoint, served by a real
uvicorn on a real socket; the client reads the first bytes and then nothing. The guard's send
timeout ends the response: the stream's generator is closed (its model call would be
cancelled with it), the per-key slot is released, and the connection is closed — while the
client still holds its end open. Independent of how the gateway produces its stream."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from services.gateway.errors import gateway_protocol
from services.gateway.guard import GatewayGuard, key_lookup
from services.gateway.settings import GatewayLimits
from stellwerk.supervisor import free_port
from tests.integration.mesh import eventually

KEY = "sk-slow-client"
CHUNK = b'data: {"choices": [{"delta": {"content": "' + b"x" * 2000 + b'"}}]}\n\n'


async def test_an_sse_client_that_stops_reading_is_cut_off_and_releases_everything() -> None:
    chunks_sent = [0]
    stream_closed = asyncio.Event()

    async def endless(_: Request) -> StreamingResponse:
        async def sse() -> AsyncIterator[bytes]:
            try:
                while True:
                    chunks_sent[0] += 1
                    yield CHUNK
            finally:
                stream_closed.set()

        return StreamingResponse(sse(), media_type="text/event-stream")

    limits = GatewayLimits(send_timeout_s=0.5)
    errors: list[tuple[int, str]] = []
    guard = GatewayGuard(
        Starlette(routes=[Route("/v1/chat/completions", endless, methods=["POST"])]),
        limits, key_lookup({hashlib.sha256(KEY.encode()).hexdigest(): "slow"}),
        on_error=lambda status, code: errors.append((status, code)),
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(guard, host="127.0.0.1", port=port, http=gateway_protocol(limits),
                                           loop="asyncio", log_level="critical", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await eventually(lambda: _started(server))
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}").encode())
        first = await loop.sock_recv(sock, 1024)
        assert first.startswith(b"HTTP/1.1 200")
        assert guard.in_flight["slow"] == 1, "the stream holds its key's slot while it is sent"
        # From here on the client reads nothing.
        await eventually(lambda: _released(guard), timeout_s=60)
        sent = chunks_sent[0]
        # Nothing holds the stream any more: once collected, its generator is closed.
        gc.collect()
        await asyncio.wait_for(stream_closed.wait(), timeout=30)
        received = len(first)
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), timeout=30):
            received += len(chunk)
        # The loop ended: the server closed the connection; the client got at most what was
        # produced before the cut-off (the kernel's buffers), never an end of stream.
        assert received <= len(first) + sent * (len(CHUNK) + 16)
        assert chunks_sent[0] == sent, "nothing more was produced after the cut-off"
        assert errors == []
    finally:
        sock.close()
        server.should_exit = True
        await serving


async def _started(server: uvicorn.Server) -> bool:
    return server.started


async def _released(guard: GatewayGuard) -> bool:
    return guard.in_flight["slow"] == 0
