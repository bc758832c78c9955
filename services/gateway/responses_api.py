"""OpenAI's Responses API (``POST /v1/responses``) onto the chat completions wire.

The current ``openai`` SDK and the openai-agents SDK speak the Responses API by default. This
module translates, and does nothing else (no I/O): a Responses request becomes a chat
completions request, which the gateway validates, screens, routes and accounts like any other;
the chat completion (or its chunks) becomes a Responses ``response`` object (or its
server-sent events). docs/responses.md lists what maps and what is refused.

Refusals are :class:`ResponsesRequestError` (``ResponsesUnsupported``: 400
``unsupported_parameter``; ``ResponsesInvalid``: 400 ``invalid_value``) with ``param`` naming
the field (``input[2].content[0].type``, ``tools[1].type``) and a fixed message: they never
quote the caller's values. Nothing is silently dropped: a field set to anything but a value
that changes nothing is refused by name.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ResponsesInvalid",
    "ResponsesRequestError",
    "ResponsesStream",
    "ResponsesUnsupported",
    "chat_request_from_responses",
    "response_from_chat",
    "responses_param",
    "sse",
]


class ResponsesRequestError(Exception):
    """A Responses request the gateway cannot carry. ``code`` is the OpenAI error code,
    ``param`` the field (a path of known names and indices), ``message`` a fixed sentence."""

    code: str = "invalid_value"

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


class ResponsesUnsupported(ResponsesRequestError):
    """A parameter or value Stellwerk does not support on ``/v1/responses``: 400
    ``unsupported_parameter`` naming ``param``."""

    code = "unsupported_parameter"


class ResponsesInvalid(ResponsesRequestError):
    """A field of the wrong shape: 400 ``invalid_value`` naming ``param``."""

    code = "invalid_value"


# --- Fixed messages (they name our parameter paths, never the caller's values) ---------------

_STATE: Final = (
    "{param} is not supported: Stellwerk keeps no server-side conversation state (it stores no "
    "conversation content). Send the whole conversation in input."
)
_BUILTIN_TOOLS: Final = (
    "{param}: only tools of type function are supported. Built-in tools (web search, file search, "
    "computer use, code interpreter, hosted MCP, image generation, shell, …) would run outside "
    "Stellwerk's governance; connect tools through Stellwerk's tool gateway and pass them as function tools."
)
_NON_TEXT: Final = (
    "{param}: only text content is supported. Images, files and audio cannot be screened by DLP "
    "and are refused (fail closed)."
)
_ITEM_TYPE: Final = (
    "{param}: only input items of type message, function_call, function_call_output (and reasoning "
    "items without content) are supported. Items of built-in tools would run outside Stellwerk's governance."
)
_REASONING_ITEM: Final = (
    "{param}: reasoning items with a summary or content are not supported: the chat completions "
    "wire cannot carry them, and dropping them would change the conversation."
)
_BACKGROUND: Final = (
    "background is not supported: responses are answered on the request's connection; Stellwerk "
    "stores no responses to poll."
)
_NOT_YET: Final = "{param} is not supported by this gateway yet."
_UNKNOWN: Final = "Unrecognized request argument supplied: {name}"
_TYPE: Final = "Invalid type for {param}: expected {expected}."
_VALUE: Final = "Invalid value for {param}: expected {expected}."

_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_TEXT_PARTS: Final = frozenset({"input_text", "output_text"})
_MEDIA_PARTS: Final = frozenset({"input_image", "input_file", "input_audio"})
_ROLES: Final = frozenset({"user", "system", "developer", "assistant"})


def _show(key: object) -> str:
    """A caller's key in a message or param: shown if it looks like an identifier."""
    return key if isinstance(key, str) and _IDENTIFIER.match(key) else "<key>"


def _unsupported(param: str, message: str = _NOT_YET) -> ResponsesUnsupported:
    return ResponsesUnsupported(param, message.format(param=param))


def _wrong_type(param: str, expected: str) -> ResponsesInvalid:
    return ResponsesInvalid(param, _TYPE.format(param=param, expected=expected))


def _dict(value: object, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _wrong_type(param, "an object")
    return value


def _list(value: object, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise _wrong_type(param, "an array")
    return value


def _str(value: object, param: str) -> str:
    if not isinstance(value, str):
        raise _wrong_type(param, "a string")
    return value


def _only(obj: dict[str, Any], allowed: frozenset[str], path: str) -> None:
    """Refuse keys of ``obj`` outside ``allowed`` (an item's or a tool's unknown fields)."""
    for key in obj:
        if key not in allowed:
            raise _unsupported(f"{path}.{_show(key)}")


def _neutral(obj: dict[str, Any], path: str, neutral: dict[str, tuple[object, ...]]) -> None:
    """Refuse fields of ``neutral`` set to anything but ``null`` or one of their listed values."""
    for key, values in neutral.items():
        value = obj.get(key)
        if value is not None and not any(_same(value, v) for v in values):
            raise _unsupported(f"{path}.{key}" if path else key)


def _same(value: object, neutral: object) -> bool:
    """JSON equality: ``0`` and ``0.0`` are the same number, ``false`` is not ``0``."""
    if isinstance(value, bool) or isinstance(neutral, bool):
        return value is neutral
    if isinstance(value, int | float) and isinstance(neutral, int | float):
        return value == neutral
    return type(value) is type(neutral) and value == neutral


# --- Request: Responses → chat completions ----------------------------------------------------

# Forwarded as they are (the chat validator checks their ranges).
_PASSTHROUGH: Final = ("model", "temperature", "top_p", "parallel_tool_calls", "metadata", "user",
                       "safety_identifier")
# Accepted when null or one of these values (they change nothing here); refused otherwise.
# - store: OpenAI's default is true, so every client that omits it asks for storage already;
#   Stellwerk stores no response either way (and refuses previous_response_id, which needs it).
# - service_tier: the routing policy picks the deployment; auto/default ask for nothing else.
_TOP_NEUTRAL: Final[dict[str, tuple[object, ...]]] = {
    "store": (True, False),
    "service_tier": ("auto", "default"),
    "truncation": ("disabled",),
    "top_logprobs": (0,),
    "include": ([],),
    "max_tool_calls": (),
    "prompt": (),
    "prompt_cache_key": (),
    "prompt_cache_retention": (),
    "prompt_cache_options": (),
    "moderation": (),
    "context_management": ([],),
}
_STATEFUL: Final = ("previous_response_id", "conversation")
_HANDLED: Final = frozenset({
    *_PASSTHROUGH, *_TOP_NEUTRAL, *_STATEFUL, "input", "instructions", "max_output_tokens", "stream",
    "stream_options", "tools", "tool_choice", "text", "reasoning", "background",
})


def chat_request_from_responses(body: dict[str, Any]) -> dict[str, Any]:
    """A ``POST /v1/responses`` body as a ``POST /v1/chat/completions`` body.

    Raises :class:`ResponsesUnsupported` for anything Stellwerk does not carry and
    :class:`ResponsesInvalid` for fields of the wrong shape; the chat validator then checks
    the result like any chat request (ranges, limits)."""
    for key in body:
        if key not in _HANDLED:
            raise ResponsesUnsupported(_show(key), _UNKNOWN.format(name=_show(key)))
    for key in _STATEFUL:
        if body.get(key) is not None:
            raise _unsupported(key, _STATE)
    if body.get("background") not in (None, False):
        raise ResponsesUnsupported("background", _BACKGROUND)
    _neutral(body, "", _TOP_NEUTRAL)
    reasoning = body.get("reasoning")
    if reasoning is not None:
        for key, value in _dict(reasoning, "reasoning").items():
            if value is not None:
                raise _unsupported(f"reasoning.{_show(key)}")

    chat: dict[str, Any] = {key: body[key] for key in _PASSTHROUGH if body.get(key) is not None}
    chat["messages"] = _messages(body)
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    stream = body.get("stream")
    if stream is not None:
        chat["stream"] = stream
        if stream is True:
            chat["stream_options"] = {"include_usage": True}  # response.completed carries usage
    options = body.get("stream_options")
    if options is not None:
        _only(_dict(options, "stream_options"), frozenset({"include_obfuscation"}), "stream_options")
        # Obfuscation pads deltas against length side channels on OpenAI's network; the
        # gateway's deltas are screened pieces, not tokens: nothing to pad. Accepted, ignored.
    tools = body.get("tools")
    if tools is not None:
        chat_tools = [_tool(t, f"tools[{i}]") for i, t in enumerate(_list(tools, "tools"))]
        if chat_tools:
            chat["tools"] = chat_tools
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    text = body.get("text")
    if text is not None:
        response_format = _response_format(_dict(text, "text"))
        if response_format is not None:
            chat["response_format"] = response_format
    return chat


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        messages.append({"role": "system", "content": _str(instructions, "instructions")})
    items = body.get("input")
    if items is None:
        return messages
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    # The assistant message that function_call items join (consecutive calls, and calls right
    # after the assistant's text, are one chat turn).
    turn: dict[str, Any] | None = None
    for i, raw in enumerate(_list(items, "input")):
        path = f"input[{i}]"
        item = _dict(raw, path)
        kind = item.get("type", "message")
        if kind == "message":
            message = _message(item, path)
            messages.append(message)
            turn = message if message["role"] == "assistant" else None
        elif kind == "function_call":
            call = _function_call(item, path)
            if turn is None:
                turn = {"role": "assistant", "content": None, "tool_calls": []}
                messages.append(turn)
            turn.setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            messages.append(_function_output(item, path))
            turn = None
        elif kind == "reasoning":
            _reasoning(item, path)  # carries nothing: dropped
        elif kind == "item_reference":
            raise _unsupported(f"{path}.type", _STATE)
        else:
            raise _unsupported(f"{path}.type", _ITEM_TYPE)
    return messages


_MESSAGE_KEYS: Final = frozenset({"type", "role", "content", "id", "status", "phase"})
_PART_KEYS: Final = frozenset({"type", "text", "annotations", "logprobs"})


def _message(item: dict[str, Any], path: str) -> dict[str, Any]:
    # id, status: an earlier response's bookkeeping; phase (commentary/final_answer) labels an
    # earlier answer. None of them is content the model reads: accepted, not forwarded.
    _only(item, _MESSAGE_KEYS, path)
    role = item.get("role")
    if role not in _ROLES:
        raise ResponsesInvalid(f"{path}.role", _VALUE.format(param=f"{path}.role",
                                                             expected="user, system, developer or assistant"))
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    texts = _texts(_list(content, f"{path}.content"), f"{path}.content")
    if role == "assistant":  # one string, so tool calls can join the same message
        return {"role": role, "content": "".join(texts)}
    return {"role": role, "content": [{"type": "text", "text": t} for t in texts]}


def _texts(parts: list[Any], path: str) -> list[str]:
    texts: list[str] = []
    for j, raw in enumerate(parts):
        where = f"{path}[{j}]"
        part = _dict(raw, where)
        kind = part.get("type")
        if kind in _MEDIA_PARTS:
            raise _unsupported(f"{where}.type", _NON_TEXT)
        if kind not in _TEXT_PARTS:
            raise _unsupported(f"{where}.type")
        # annotations (citations of built-in tools) and logprobs of an earlier answer: not read
        # by the model, accepted and not forwarded.
        _only(part, _PART_KEYS, where)
        texts.append(_str(part.get("text"), f"{where}.text"))
    return texts


_CALL_KEYS: Final = frozenset({"type", "call_id", "name", "arguments", "id", "status", "namespace", "caller"})
_OUTPUT_KEYS: Final = frozenset({"type", "call_id", "output", "id", "status", "caller"})
_DIRECT: Final[dict[str, tuple[object, ...]]] = {"namespace": (), "caller": ({"type": "direct"},)}


def _function_call(item: dict[str, Any], path: str) -> dict[str, Any]:
    _only(item, _CALL_KEYS, path)
    _neutral(item, path, _DIRECT)
    return {
        "id": _str(item.get("call_id"), f"{path}.call_id"),
        "type": "function",
        "function": {
            "name": _str(item.get("name"), f"{path}.name"),
            "arguments": _str(item.get("arguments"), f"{path}.arguments"),
        },
    }


def _function_output(item: dict[str, Any], path: str) -> dict[str, Any]:
    _only(item, _OUTPUT_KEYS, path)
    _neutral(item, path, {"caller": _DIRECT["caller"]})
    output = item.get("output")
    if isinstance(output, str):
        content = output
    else:
        content = "".join(_texts(_list(output, f"{path}.output"), f"{path}.output"))
    return {"role": "tool", "tool_call_id": _str(item.get("call_id"), f"{path}.call_id"), "content": content}


def _reasoning(item: dict[str, Any], path: str) -> None:
    """Reasoning items carry the model's reasoning of an earlier turn. Stellwerk never emits
    them; one without summary, content or encrypted content (an id only) loses nothing when
    dropped. Any other is refused: the chat wire cannot carry it."""
    _only(item, frozenset({"type", "id", "summary", "content", "encrypted_content", "status"}), path)
    for key in ("summary", "content", "encrypted_content"):
        if item.get(key) not in (None, [], ""):
            raise _unsupported(f"{path}.{key}", _REASONING_ITEM)


_TOOL_KEYS: Final = frozenset({"type", "name", "description", "parameters", "strict", "defer_loading",
                               "allowed_callers", "output_schema"})


def _tool(raw: object, path: str) -> dict[str, Any]:
    tool = _dict(raw, path)
    if tool.get("type") != "function":
        raise _unsupported(f"{path}.type", _BUILTIN_TOOLS)
    _only(tool, _TOOL_KEYS, path)
    # Deferred loading (tool search), programmatic callers and declared output schemas are
    # features of OpenAI's runtime, not of the model call.
    _neutral(tool, path, {"defer_loading": (False,), "allowed_callers": (["direct"],), "output_schema": ()})
    function: dict[str, Any] = {"name": _str(tool.get("name"), f"{path}.name")}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _tool_choice(choice: object) -> object:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        _only(choice, frozenset({"type", "name"}), "tool_choice")
        return {"type": "function", "function": {"name": _str(choice.get("name"), "tool_choice.name")}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        raise _unsupported("tool_choice")
    if isinstance(choice, dict):
        raise _unsupported("tool_choice", _BUILTIN_TOOLS)
    raise ResponsesInvalid("tool_choice", _VALUE.format(param="tool_choice",
                                                        expected="auto, none, required or a function"))


_FORMAT_KEYS: Final = frozenset({"type", "name", "schema", "strict", "description"})


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    _only(text, frozenset({"format", "verbosity"}), "text")
    _neutral(text, "text", {"verbosity": ()})  # refused on chat as well: routes do not declare it
    raw = text.get("format")
    if raw is None:
        return None
    fmt = _dict(raw, "text.format")
    kind = fmt.get("type")
    if kind == "text":
        _only(fmt, frozenset({"type"}), "text.format")
        return None
    if kind == "json_object":
        _only(fmt, frozenset({"type"}), "text.format")
        return {"type": "json_object"}
    if kind == "json_schema":
        _only(fmt, _FORMAT_KEYS, "text.format")
        schema: dict[str, Any] = {"name": _str(fmt.get("name"), "text.format.name")}
        for key in ("schema", "strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    raise ResponsesInvalid("text.format.type", _VALUE.format(param="text.format.type",
                                                             expected="text, json_object or json_schema"))


_CHAT_NAMES: Final = (
    ("max_completion_tokens", "max_output_tokens"),
    ("response_format.json_schema.", "text.format."),
    ("response_format", "text.format"),
    ("messages", "input"),
    ("stream_options", "stream"),
)
_TOOL_FUNCTION: Final = re.compile(r"^(tools\[\d+\])\.function(\.|$)")


def responses_param(chat_param: str | None) -> str | None:
    """The Responses name of a parameter the chat validator or a limit named, for an error
    on ``/v1/responses``: ``max_completion_tokens`` → ``max_output_tokens``,
    ``tools[0].function.name`` → ``tools[0].name``. Message indices do not map one to one onto
    input items (instructions, merged function calls), so ``messages[…]`` becomes ``input``."""
    if chat_param is None:
        return None
    tool = _TOOL_FUNCTION.match(chat_param)
    if tool is not None:
        return tool.group(1) + chat_param[tool.end(1) + len(".function") :]
    if chat_param == "tool_choice" or chat_param.startswith("tool_choice."):
        return "tool_choice"
    for chat, responses in _CHAT_NAMES:
        if chat_param.startswith(chat):
            return "input" if chat == "messages" else responses + chat_param[len(chat) :]
    return chat_param


# --- Response: chat completion → Responses ----------------------------------------------------

_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}
# ResponseError.code is a closed list; the gateway's own code travels in ``stellwerk.error``.
_ERROR_CODES: Final = {"rate_limited": "rate_limit_exceeded", "too_many_concurrent_requests": "rate_limit_exceeded"}
_FAILED: Final = "The response failed."


def _suffix(chat_id: object) -> str:
    if isinstance(chat_id, str) and chat_id:
        return chat_id.removeprefix("chatcmpl-")
    return uuid.uuid4().hex


def _envelope(request: dict[str, Any], suffix: str, created_at: object, model: object) -> dict[str, Any]:
    """The response object around the output: the request's settings echoed as OpenAI does."""
    text = request.get("text") if isinstance(request.get("text"), dict) else {}
    assert isinstance(text, dict)
    fmt = text.get("format") or {"type": "text"}
    return {
        "id": f"resp_{suffix}",
        "object": "response",
        "created_at": created_at if isinstance(created_at, int | float) else int(time.time()),
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": model if isinstance(model, str) and model else request.get("model") or "stellwerk",
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "previous_response_id": None,
        "reasoning": None,
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": "default",
        "store": False,  # nothing is stored, whatever the request said
        "temperature": request.get("temperature", 1.0),
        "text": {"format": fmt},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": list(request.get("tools") or []),
        "top_logprobs": 0,
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _usage(usage: object) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": prompt_details.get("cached_tokens") or 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": completion_details.get("reasoning_tokens") or 0},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }


def _message_item(item_id: str, text: str, status: str, refusal: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def _finish(response: dict[str, Any], finish_reason: object) -> None:
    """Status and incomplete_details from the chat finish_reason."""
    reason = _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    if reason is None:
        response["status"] = "completed"
        response["completed_at"] = int(time.time())
    else:
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": reason}


def response_from_chat(completion: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` body (the gateway's, with its ``stellwerk`` object) as a
    Responses ``response`` object for the Responses ``request`` it answers."""
    suffix = _suffix(completion.get("id"))
    response = _envelope(request, suffix, completion.get("created"), completion.get("model"))
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    finish_reason = choice.get("finish_reason")
    _finish(response, finish_reason)
    item_status = "completed" if response["status"] == "completed" else "incomplete"
    text = message.get("content") or ""
    refusal = message.get("refusal")
    if text or refusal:
        response["output"].append(_message_item(f"msg_{suffix}", text, item_status, refusal))
    for i, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        response["output"].append(_call_item(
            f"fc_{suffix}_{i}", call.get("id") or f"call_{suffix}_{i}", function.get("name") or "",
            function.get("arguments") or "", item_status,
        ))
    response["usage"] = _usage(completion.get("usage"))
    if completion.get("stellwerk") is not None:
        response["stellwerk"] = completion["stellwerk"]
    return response


# --- Streaming: chat.completion.chunk → Responses server-sent events ---------------------------


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event as OpenAI sends them: ``event: <type>`` and the JSON data."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


@dataclass(slots=True)
class _Item:
    kind: str  # "message" | "function_call"
    output_index: int
    item_id: str
    text: str = ""
    call_id: str = ""
    name: str = ""
    closed: bool = False


class ResponsesStream:
    """Chat completion chunks in, Responses stream events out, in OpenAI's order:
    ``response.created``, ``response.in_progress``, per output item ``output_item.added`` … its
    deltas … ``output_item.done``, then ``response.completed`` / ``response.incomplete`` /
    ``response.failed`` with the whole response. ``sequence_number`` counts from 0.

    ``feed`` takes each chunk as the gateway streams it — also the usage chunk (empty
    ``choices``) and an OpenAI error object (``{"error": {...}}``), which fails the response;
    ``finish`` ends the stream (a stream without a finish_reason failed). Events are dicts;
    :func:`sse` frames them. No ``[DONE]`` follows: the Responses API does not send one."""

    def __init__(self, request: dict[str, Any], *, created_at: int | None = None) -> None:
        self._request = request
        self._created_at = created_at
        self._seq = 0
        self._response: dict[str, Any] | None = None
        self._items: list[_Item] = []
        self._current: _Item | None = None
        self._calls: dict[int, _Item] = {}
        self._finish_reason: str | None = None
        self._usage: object = None
        self._stellwerk: dict[str, Any] | None = None
        self._done = False

    @property
    def done(self) -> bool:
        """A terminal event was sent: further chunks are ignored."""
        return self._done

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _start(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self._response is not None:
            return []
        created = self._created_at if self._created_at is not None else chunk.get("created")
        self._response = _envelope(self._request, _suffix(chunk.get("id")), created, chunk.get("model"))
        return [self._event("response.created", response=copy.deepcopy(self._response)),
                self._event("response.in_progress", response=copy.deepcopy(self._response))]

    @property
    def _suffix(self) -> str:
        assert self._response is not None
        return str(self._response["id"]).removeprefix("resp_")

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self._done:
            return []
        events = self._start(chunk)
        if chunk.get("error") and not chunk.get("choices"):
            return events + self._fail(chunk["error"])
        assert self._response is not None
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self._response["model"] = chunk["model"]  # the gateway names the routed model last
        if isinstance(chunk.get("stellwerk"), dict):
            self._stellwerk = {**(self._stellwerk or {}), **chunk["stellwerk"]}
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Responses has one answer; the translated request asks for one
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text(delta["content"])
            for call in delta.get("tool_calls") or ():
                events += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        error = (self._stellwerk or {}).get("error")
        if self._finish_reason in ("content_filter", "error") and isinstance(error, dict):
            events += self._fail(error)
        return events

    def _open(self, item: _Item, added: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close("completed")
        self._items.append(item)
        self._current = item
        events.append(self._event("response.output_item.added", output_index=item.output_index, item=added))
        return events

    def _text(self, piece: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        item = self._current
        if item is None or item.kind != "message":
            n = sum(1 for i in self._items if i.kind == "message")
            item = _Item("message", len(self._items), f"msg_{self._suffix}" + (f"_{n}" if n else ""))
            events += self._open(item, _message_item(item.item_id, "", "in_progress"))
            events.append(self._event(
                "response.content_part.added", item_id=item.item_id, output_index=item.output_index,
                content_index=0, part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            ))
        item.text += piece
        events.append(self._event("response.output_text.delta", item_id=item.item_id,
                                  output_index=item.output_index, content_index=0, delta=piece, logprobs=[]))
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        index = call.get("index", 0)
        function = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            item = _Item("function_call", len(self._items), f"fc_{self._suffix}_{index}",
                         call_id=call.get("id") or f"call_{self._suffix}_{index}", name=function.get("name") or "")
            self._calls[index] = item
            events += self._open(item, _call_item(item.item_id, item.call_id, item.name, "", "in_progress"))
        elif function.get("name") and not item.name:
            item.name = function["name"]
        piece = function.get("arguments") or ""
        if piece:
            item.text += piece
            events.append(self._event("response.function_call_arguments.delta", item_id=item.item_id,
                                      output_index=item.output_index, delta=piece))
        return events

    def _close(self, status: str) -> list[dict[str, Any]]:
        item, self._current = self._current, None
        if item is None or item.closed:
            return []
        item.closed = True
        where = {"item_id": item.item_id, "output_index": item.output_index}
        if item.kind == "message":
            part = {"type": "output_text", "text": item.text, "annotations": [], "logprobs": []}
            return [
                self._event("response.output_text.done", **where, content_index=0, text=item.text, logprobs=[]),
                self._event("response.content_part.done", **where, content_index=0, part=part),
                self._event("response.output_item.done", output_index=item.output_index,
                            item=_message_item(item.item_id, item.text, status)),
            ]
        return [
            self._event("response.function_call_arguments.done", **where, name=item.name, arguments=item.text),
            self._event("response.output_item.done", output_index=item.output_index,
                        item=_call_item(item.item_id, item.call_id, item.name, item.text, status)),
        ]

    def _output(self, status: str) -> list[dict[str, Any]]:
        """Every item as it ends: items closed earlier completed, the last one ``status``."""
        out: list[dict[str, Any]] = []
        for item in self._items:
            done = "completed" if item is not self._items[-1] else status
            if item.kind == "message":
                out.append(_message_item(item.item_id, item.text, done))
            else:
                out.append(_call_item(item.item_id, item.call_id, item.name, item.text, done))
        return out

    def _terminal(self, status: str) -> dict[str, Any]:
        assert self._response is not None
        response = self._response
        response["output"] = self._output(status)
        response["usage"] = _usage(self._usage)
        if self._stellwerk is not None:
            response["stellwerk"] = self._stellwerk
        self._done = True
        return response

    def _fail(self, error: object) -> list[dict[str, Any]]:
        """The gateway ended the stream with an error (a blocked answer, a broken stream)."""
        events = self._close("incomplete")
        response = self._terminal("incomplete")
        err = error if isinstance(error, dict) else {}
        code = str(err["code"]) if isinstance(err.get("code"), str) else "server_error"
        message = str(err["message"]) if isinstance(err.get("message"), str) else _FAILED
        response["status"] = "failed"
        response["error"] = {"code": _ERROR_CODES.get(code, "server_error"), "message": message}
        gateway = {"code": code, **{k: v for k, v in (err.get("stellwerk") or {}).items() if k == "rule_id"}}
        response["stellwerk"] = {**response.get("stellwerk", {}), "error": gateway}
        events.append(self._event("response.failed", response=copy.deepcopy(response)))
        return events

    def finish(self) -> list[dict[str, Any]]:
        """Close the open item and send the terminal event (once)."""
        if self._done:
            return []
        events = self._start({})
        if self._finish_reason is None or self._finish_reason == "error":
            return events + self._fail({"code": "stream_interrupted",
                                        "message": "The stream ended before the answer was complete."})
        assert self._response is not None
        _finish(self._response, self._finish_reason)
        status = "completed" if self._response["status"] == "completed" else "incomplete"
        events += self._close(status)
        response = self._terminal(status)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(kind, response=copy.deepcopy(response)))
        return events
