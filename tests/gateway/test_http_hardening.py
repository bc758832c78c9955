"""Bad requests against a real gateway in a real mesh get typed, OpenAI-shaped answers (issue 18).

One regression test per finding of the issue, then the limits, the HTTP server's own
answers, slow clients and the per-key concurrency cap. Nothing is mocked."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from stellwerk.supervisor import Mesh
from tests.gateway.hardened import (
    API_KEY,
    MAX_CONCURRENT_PER_KEY,
    TIGHT_KEY,
    gateway_log,
    is_openai_error,
)
from tests.integration.mesh import eventually

AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON = {"Content-Type": "application/json"}
MARKER = "Zebrafink-Quittung-93172"  # content that must never come back or reach a log


def chat(mesh: Mesh, body: bytes | dict[str, object], headers: dict[str, str] | None = None,
         key: str = API_KEY) -> httpx.Response:
    request_headers = {"Authorization": f"Bearer {key}", **JSON, **(headers or {})}
    url = mesh.gateway_url + "/v1/chat/completions"
    with httpx.Client(timeout=60) as http:
        if isinstance(body, bytes):
            return http.post(url, content=body, headers=request_headers)
        return http.post(url, json=body, headers=request_headers)


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def assert_error(response: httpx.Response, status: int, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert is_openai_error(response), response.text
    error = response.json()["error"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    assert MARKER not in response.text


# --- the findings of the issue ----------------------------------------------------------------


def test_lone_surrogate_is_a_400_naming_the_field_not_a_500(mesh: Mesh) -> None:
    body = ('{"messages": [{"role": "user", "content": "\\ud800 ' + MARKER + '"}]}').encode()
    assert_error(chat(mesh, body), 400, "invalid_value", "messages[0].content")
    assert MARKER not in gateway_log(mesh)


def test_deep_nesting_is_an_openai_shaped_400(mesh: Mesh) -> None:
    response = chat(mesh, b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert_error(response, 400, "json_too_deep")
    assert "detail" not in response.json()


def test_max_tokens_beyond_any_context_is_a_400_not_a_429(mesh: Mesh) -> None:
    assert_error(chat(mesh, {"messages": user("hi"), "max_tokens": 10**12}), 400, "invalid_value", "max_tokens")
    assert_error(chat(mesh, {"messages": user("hi"), "max_completion_tokens": 10**12}), 400, "invalid_value",
                 "max_completion_tokens")


def test_ten_megabyte_prompt_is_a_413(mesh: Mesh) -> None:
    assert_error(chat(mesh, {"messages": user(MARKER + "x" * 10_000_000)}), 413, "request_too_large")


def test_unknown_path_and_wrong_method_are_openai_shaped(mesh: Mesh) -> None:
    with httpx.Client(timeout=30, headers=AUTH) as http:
        speech = http.post(mesh.gateway_url + "/v1/audio/speech", json={"input": "x"})
        assert_error(speech, 404, "unknown_url")
        assert "/v1/audio/speech" in speech.json()["error"]["message"]
        unknown = http.get(mesh.gateway_url + f"/v1/{MARKER}")
        assert_error(unknown, 404, "unknown_url")
        wrong = http.get(mesh.gateway_url + "/v1/chat/completions")
        assert_error(wrong, 405, "method_not_allowed")
        assert wrong.headers["allow"] == "POST"


# --- issue 13: nothing is silently dropped --------------------------------------------------


@pytest.mark.parametrize(("extra", "param"), [
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"store": True}, "store"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"bogus_parameter": 1}, "bogus_parameter"),
])
def test_unsupported_and_unknown_parameters_are_refused_by_name(
    mesh: Mesh, extra: dict[str, object], param: str
) -> None:
    assert_error(chat(mesh, {"messages": user("hi"), **extra}), 400, "unsupported_parameter", param)


def test_image_parts_and_tool_messages_are_refused_by_name(mesh: Mesh) -> None:
    image = [{"role": "user", "content": [{"type": "text", "text": "what is this"},
                                          {"type": "image_url", "image_url": {"url": "https://example.org/a.png"}}]}]
    assert_error(chat(mesh, {"messages": image}), 400, "unsupported_parameter", "messages[0].content[1].type")
    function = [*user("hi"), {"role": "function", "name": "f", "content": "42"}]
    assert_error(chat(mesh, {"messages": function}), 400, "unsupported_parameter", "messages[1].role")


@pytest.mark.parametrize(("extra", "param"), [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"n": 9}, "n"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
])
def test_inconsistent_parameters_are_a_400_naming_them(mesh: Mesh, extra: dict[str, object], param: str) -> None:
    response = chat(mesh, {"messages": user("hi"), **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_the_openai_sdk_sees_a_bad_request_naming_the_parameter(mesh: Mesh) -> None:
    client = openai.AsyncOpenAI(base_url=mesh.gateway_url + "/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="stellwerk", messages=[{"role": "user", "content": "hi"}],
            logprobs=True,
        )
    assert info.value.code == "unsupported_parameter" and info.value.param == "logprobs"
    # What clients send by default keeps working: OpenAI's defaults and the end-user id.
    completion = await client.chat.completions.create(
        model="stellwerk", messages=[{"role": "user", "content": "Hallo"}], n=1, frequency_penalty=0,
        presence_penalty=0, user="open-webui-user-17", temperature=0.2, top_p=0.9, stop=["\n\n"], max_tokens=64,
    )
    assert completion.choices[0].message.content == "Hallo"


# --- limits and the HTTP server's own answers -------------------------------------------------


def test_metadata_and_message_count_limits(mesh: Mesh) -> None:
    assert_error(chat(mesh, {"messages": user("hi"), "metadata": {f"k{i}": "v" for i in range(17)}}), 400,
                 "metadata_too_large", "metadata")
    assert_error(chat(mesh, {"messages": user("hi") * 1025}), 400, "too_many_messages", "messages")


def test_headers_over_the_limit_are_a_431_from_the_server_itself(mesh: Mesh) -> None:
    response = chat(mesh, {"messages": user("hi")}, headers={"X-Padding": MARKER + "p" * 20_000})
    assert_error(response, 431, "headers_too_large")


def test_malformed_http_gets_an_openai_shaped_400(mesh: Mesh) -> None:
    with raw_connection(mesh) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        status, body = read_response(sock)
    assert status == 400 and '"invalid_http_request"' in body


def test_invalid_correlation_id_and_timeout_headers_are_400s(mesh: Mesh) -> None:
    assert_error(chat(mesh, {"messages": user("hi")}, headers={"X-Correlation-Id": "has spaces"}), 400,
                 "invalid_request", "x-correlation-id")
    assert_error(chat(mesh, {"messages": user("hi")}, headers={"X-Stellwerk-Timeout": "nan"}), 400,
                 "invalid_request", "x-stellwerk-timeout")


def test_a_request_larger_than_the_keys_token_window_is_not_told_to_retry(mesh: Mesh) -> None:
    # The tight key may use 20,000 tokens per minute: waiting never makes 30,000 fit.
    prompt = chat(mesh, {"messages": user("wort " * 24_000)}, key=TIGHT_KEY)
    assert_error(prompt, 413, "request_too_large", "messages")
    assert "retry-after" not in prompt.headers
    answer = chat(mesh, {"messages": user("hi"), "max_tokens": 25_000}, key=TIGHT_KEY)
    assert_error(answer, 400, "invalid_value", "max_tokens")


# --- slow and abusive clients ------------------------------------------------------------------


@contextmanager
def raw_connection(mesh: Mesh, rcvbuf: int | None = None) -> Iterator[socket.socket]:
    parts = urlsplit(mesh.gateway_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
    try:
        yield sock
    finally:
        sock.close()


def read_response(sock: socket.socket) -> tuple[int, str]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def request_head(length: int, key: str = API_KEY, extra: str = "") -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n").encode()


def test_a_body_that_stops_arriving_gets_a_408(mesh: Mesh) -> None:
    with raw_connection(mesh) as sock:
        sock.sendall(request_head(1000) + b'{"messages": [')
        status, body = read_response(sock)
    assert status == 408 and '"request_timeout"' in body


def test_headers_that_stop_arriving_get_a_408(mesh: Mesh) -> None:
    with raw_connection(mesh) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        status, body = read_response(sock)
    assert status == 408 and '"request_timeout"' in body


def test_concurrent_requests_per_key_are_capped(mesh: Mesh) -> None:
    held = [raw_connection(mesh) for _ in range(MAX_CONCURRENT_PER_KEY)]
    socks = [c.__enter__() for c in held]
    try:
        for sock in socks:  # each is admitted, then waits for a body that is slow to come
            sock.sendall(request_head(1000) + b"{")
        response = chat(mesh, {"messages": user("hi")})
        assert_error(response, 429, "too_many_concurrent_requests")
        assert response.headers["retry-after"] == "1"
    finally:
        for connection in held:
            connection.__exit__(None, None, None)
    # Once they are gone (the server times them out), the key is admitted again.
    ok = asyncio.run(eventually(_admitted(mesh)))
    assert ok.status_code == 200


def _admitted(mesh: Mesh):  # type: ignore[no-untyped-def]
    async def probe() -> httpx.Response | None:
        async with httpx.AsyncClient(timeout=60) as http:
            response = await http.post(mesh.gateway_url + "/v1/chat/completions", headers=AUTH,
                                       json={"messages": user("hi")})
        return response if response.status_code == 200 else None
    return probe
