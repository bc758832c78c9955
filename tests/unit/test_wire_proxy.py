"""The inference wire goes through the proxy the environment names, and around it for
NO_PROXY hosts (services/inference/openai_wire.py ``_via``), over real HTTP.

The "proxy" is a small aiohttp server that answers every request itself, recording the
absolute URL it was asked for — which only a client using it as a forward proxy sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from services.inference.openai_wire import OpenAIWire, ProviderError

_ANSWER = {
    "id": "x", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "via proxy"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(str(request.url) if request.path_qs.startswith("http") else request.raw_path)
        return web.json_response(_ANSWER)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_a_call_goes_through_the_environment_proxy(proxy: tuple[str, list[str]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    wire = OpenAIWire()
    try:
        answer = await wire.complete("http://model.invalid/v1", "k", {"model": "m", "messages": []}, 5.0)
    finally:
        await wire.aclose()
    assert answer.content == "via proxy"
    assert seen == ["http://model.invalid/v1/chat/completions"]


async def test_no_proxy_hosts_are_called_directly(proxy: tuple[str, list[str]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("NO_PROXY", "model.invalid")
    wire = OpenAIWire()
    try:
        with pytest.raises(ProviderError):  # no such host: the proxy was not asked
            await wire.complete("http://model.invalid/v1", "k", {"model": "m", "messages": []}, 5.0, retries=0)
    finally:
        await wire.aclose()
    assert seen == []
