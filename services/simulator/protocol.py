"""The OpenAI wire shapes the simulator reads and the error bodies it writes."""

from __future__ import annotations

import msgspec


class ContentPart(msgspec.Struct, frozen=True):
    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct, frozen=True):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, frozen=True):
    """Unknown fields (temperature, tools, ...) are accepted and ignored, as a sampler stand-in may."""

    model: str
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None

    @property
    def token_limit(self) -> int | None:
        # max_completion_tokens is the newer name; OpenAI prefers it when both are sent.
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens


request_decoder = msgspec.json.Decoder(ChatCompletionRequest)
json_encoder = msgspec.json.Encoder()


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return json_encoder.encode({"error": {"message": message, "type": type_, "param": param, "code": code}})
