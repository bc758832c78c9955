"""Fuzzing the gateway's HTTP API (issue 18), shared by tests/fuzz and ``bench/fuzz.py``.

Two sources of requests: schemathesis, from the gateway's own OpenAPI document (valid and
invalid cases of every operation), and Hypothesis strategies for the chat body with the
inputs that broke gateways before — lone surrogates, NUL, bidi controls, combining marks,
4-byte characters, huge and empty values, wrong types at every level. Every answer must be
a valid success or an OpenAI-shaped error, never a 5xx, and no error may quote the input.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.gateway.hardened import is_openai_error

MIN_ECHO_CHARS = 12  # fuzzed strings this long must not come back in an error

# Characters that break naive handling: lone surrogates, NUL and controls, bidi overrides,
# combining marks, zero-width, 4-byte (astral) characters, BOM, line separators.
EDGE_CHARS = [
    "\ud800", "\udfff", "\x00", "\x1b", "\u202e", "\u2066", "\u200f", "\u0301", "\u0338", "\u200b",
    "\ufeff", "\u2028", "\U0001f600", "\U00010348", "\U0010ffff", "\ufffd", '"', "\\", "{", "[",
]
edge_text = st.text(alphabet=st.sampled_from(EDGE_CHARS) | st.characters(codec=None), max_size=40)
huge_text = st.sampled_from([10, 1_000, 100_000]).map(lambda n: "ä" * n)
texts = edge_text | huge_text | st.just("")
json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | texts
wrong = json_scalars | st.lists(json_scalars, max_size=3) | st.dictionaries(texts, json_scalars, max_size=3)
roles = st.sampled_from(["user", "system", "assistant", "developer", "tool", "function", "", "USER"]) | wrong
content = texts | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]) | wrong,
                                                    "text": texts | wrong}), max_size=3) | wrong
message = st.fixed_dictionaries({"role": roles}, optional={"content": content, "name": texts | wrong})
messages = st.lists(message, max_size=4) | wrong
optional_fields: dict[str, st.SearchStrategy[Any]] = {
    "model": texts | wrong, "stream": st.booleans() | wrong,
    "max_tokens": st.integers(min_value=-5, max_value=10**13) | wrong,
    "temperature": st.floats() | wrong, "top_p": st.floats() | wrong,
    "stop": texts | st.lists(texts, max_size=6) | wrong,
    "metadata": st.dictionaries(texts, texts | wrong, max_size=20) | wrong,
    "user": texts | wrong, "n": st.integers(min_value=0, max_value=3) | wrong,
    "tools": st.lists(wrong, max_size=2), "stream_options": st.fixed_dictionaries({"include_usage": wrong}),
}
chat_bodies = st.fixed_dictionaries({"messages": messages}, optional=optional_fields) | wrong


def encode_body(body: object) -> bytes:
    """JSON as a client would send it; lone surrogates travel as ``\\udXXX`` escapes."""
    return json.dumps(body, allow_nan=True).encode()


def strings_in(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


@dataclass
class Tally:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    fuzzed: set[str] = field(default_factory=set)

    def judge(self, sent: object, response: httpx.Response) -> None:
        """Record one answer; a problem is a 5xx, an answer of the wrong shape, or an error
        that quotes a fuzzed string."""
        self.cases += 1
        self.statuses[response.status_code] += 1
        where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        if response.status_code >= 500:
            self.problems.append(f"{where}: server error {response.text[:200]!r}")
        if response.status_code >= 400:
            if not is_openai_error(response):
                self.problems.append(f"{where}: not an OpenAI error: {response.text[:200]!r}")
                return
            self.codes[response.json()["error"]["code"]] += 1
            for text in strings_in(sent):
                if len(text) >= MIN_ECHO_CHARS:
                    self.fuzzed.add(text)
                    if text in response.text or json.dumps(text)[1:-1] in response.text:
                        self.problems.append(f"{where}: the error quotes the input")
        elif (response.request.url.path == "/v1/chat/completions" and response.status_code == 200
              and "text/event-stream" not in response.headers.get("content-type", "")):
            body = response.json()
            if body.get("object") != "chat.completion" or not body.get("choices"):
                self.problems.append(f"{where}: not a chat.completion")

    def leaked_into(self, log_text: str) -> list[str]:
        return [s for s in self.fuzzed if s in log_text]


def gateway_schema(base_url: str) -> Any:
    document = httpx.get(base_url + "/openapi.json", timeout=30,  # behind auth (issue 14)
                         headers={"Authorization": "Bearer sk-stellwerk-demo"}).json()
    return schemathesis.openapi.from_dict(document)


def schema_cases(schema: Any) -> st.SearchStrategy[Any]:
    operations = [result.ok() for result in schema.get_all_operations()]
    return st.one_of(*(
        operation.as_strategy(generation_mode=mode)
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ))


def send_case(http: httpx.Client, case: Any, api_key: str) -> tuple[object, httpx.Response]:
    """One schemathesis case over real HTTP, with a valid API key unless the case sets one."""
    headers = {"Authorization": f"Bearer {api_key}", **{k: str(v) for k, v in (case.headers or {}).items()}}
    kwargs: dict[str, Any] = {"headers": headers, "params": case.query or None}
    body = case.body
    if isinstance(body, bytes):
        kwargs["content"] = body
        headers.setdefault("Content-Type", case.media_type or "application/json")
    elif body is not None and not _is_unset(body):
        kwargs["content"] = encode_body(body)
        headers.setdefault("Content-Type", "application/json")
    return body, http.request(case.method, case.formatted_path, **kwargs)


def _is_unset(value: object) -> bool:
    return type(value).__name__ == "NotSet"


def send_body(http: httpx.Client, body: object, api_key: str) -> httpx.Response:
    return http.post("/v1/chat/completions", content=encode_body(body),
                     headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
