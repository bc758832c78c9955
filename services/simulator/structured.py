"""Deterministic tool calls and structured output: which tools the simulated model calls, and
JSON documents generated from a JSON schema (tool arguments, ``response_format``).

Rules (also in the README):

* the last message is a tool result → a text answer (echo mode: ``Tool result: <content>``);
* ``tool_choice`` names a function → that function is called;
* ``"required"`` → the first tool is called;
* ``"auto"`` (the default with tools) → every tool whose name appears in the last user message
  is called, in the order of ``tools`` (only the first if ``parallel_tool_calls`` is false);
  no name appears → a text answer;
* ``"none"`` → a text answer.

Generated values: string → the answer text, integer → 1, number → 1.0, boolean → true,
enum/const → its first value, array → one item, object → every declared property (recursively).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from services.simulator.protocol import ChatCompletionRequest, ChatMessage, FunctionDefinition, json_encoder
from services.simulator.tokenizer import message_text

INVALID_JSON = "[sim:invalid-json]"
INVALID_JSON_ALWAYS = "[sim:invalid-json-always]"
# Recursive schemas ($ref cycles) stop here: deeper objects get only their required properties.
MAX_DEPTH = 8

# Valid values for the string formats jsonschema validators check.
_FORMATS: Mapping[str, str] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "user@example.org",
    "idn-email": "user@example.org",
    "uri": "https://example.org/",
    "iri": "https://example.org/",
    "uri-reference": "https://example.org/",
    "hostname": "example.org",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "duration": "P1D",
}


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message_text(message)
    return ""


def trailing_tool_results(messages: Sequence[ChatMessage]) -> list[str]:
    """Contents of the tool messages that end the conversation (one per parallel call)."""
    results: list[str] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message_text(message))
    results.reverse()
    return results


def tools_to_call(body: ChatCompletionRequest, prompt: str) -> list[FunctionDefinition]:
    """The functions the simulated model calls (empty: it answers with text)."""
    tools = body.tools
    if not tools or body.messages[-1].role == "tool":
        return []
    choice = body.tool_choice if body.tool_choice is not None else "auto"
    if choice == "none":
        return []
    if choice == "required":
        return [tools[0].function]
    if not isinstance(choice, str):
        return [t.function for t in tools if t.function.name == choice.function.name][:1]
    called = [t.function for t in tools if t.function.name in prompt]
    return called[:1] if body.parallel_tool_calls is False else called


def tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def arguments_for(function: FunctionDefinition, text: str) -> str:
    document = instance(function.parameters, text) if function.parameters else {}
    return json_encoder.encode(document).decode()


def json_answer(body: ChatCompletionRequest, text: str) -> str | None:
    """The answer under ``response_format`` (None: plain text), honouring the invalid-JSON markers."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        document: Any = {"answer": text}
    else:
        schema = fmt.json_schema.schema if fmt.json_schema is not None else None
        document = instance(schema, text) if schema else {}
    encoded = json_encoder.encode(document).decode()
    if wants_invalid_json(body.messages):
        # Cut short by its last character: a document that never closes is not JSON.
        return encoded[:-1] if len(encoded) > 1 else "{"
    return encoded


def wants_invalid_json(messages: Sequence[ChatMessage]) -> bool:
    users = [message_text(m) for m in messages if m.role == "user"]
    if any(INVALID_JSON_ALWAYS in text for text in users):
        return True
    return bool(users) and INVALID_JSON in users[-1]


def instance(schema: Any, text: str, root: Any = None, depth: int = 0) -> Any:
    """A JSON value valid under ``schema`` (the common subset: types, properties, items, enum,
    const, $ref into $defs/definitions, anyOf/oneOf/allOf, numeric bounds, min items/lengths)."""
    if root is None:
        root = schema
    if not isinstance(schema, dict):
        # true / missing schema: anything goes; false cannot be satisfied — give the text.
        return text
    if "$ref" in schema:
        target = _resolve(root, schema["$ref"])
        return instance(target, text, root, depth + 1) if depth < MAX_DEPTH * 4 else None
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for combinator in ("anyOf", "oneOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            preferred = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return instance((preferred or options)[0], text, root, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in all_of:
            part = _resolve(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                _merge(merged, part)
        return instance(merged, text, root, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        return _object(schema, text, root, depth)
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        max_items = schema.get("maxItems")
        if isinstance(max_items, int):
            count = min(count, max_items)
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return [instance(item, text, root, depth + 1) for item in prefix]
        return [instance(schema.get("items", {}), text, root, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(_bounded(schema, 1))
    if kind == "number":
        return float(_bounded(schema, 1.0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, text)


def _object(schema: Mapping[str, Any], text: str, root: Any, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = [r for r in schema.get("required", []) if isinstance(r, str)]
    names = required if depth >= MAX_DEPTH else list(dict.fromkeys([*properties, *required]))
    return {name: instance(properties.get(name, {}), text, root, depth + 1) for name in names}


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or kind
        kind = kinds[0] if kinds else None
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _bounded(schema: Mapping[str, Any], value: float) -> float:
    minimum = schema.get("minimum")
    if isinstance(minimum, int | float) and value < minimum:
        value = minimum
    exclusive_min = schema.get("exclusiveMinimum")
    if isinstance(exclusive_min, int | float) and value <= exclusive_min:
        value = exclusive_min + 1
    maximum = schema.get("maximum")
    if isinstance(maximum, int | float) and value > maximum:
        value = maximum
    exclusive_max = schema.get("exclusiveMaximum")
    if isinstance(exclusive_max, int | float) and value >= exclusive_max:
        value = exclusive_max - 1
    return value


def _string(schema: Mapping[str, Any], text: str) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return _FORMATS[fmt]
    min_length = schema.get("minLength")
    if isinstance(min_length, int) and len(text) < min_length:
        text = text + "." * (min_length - len(text))
    max_length = schema.get("maxLength")
    if isinstance(max_length, int) and len(text) > max_length:
        text = text[:max_length]
    return text


def _resolve(root: Any, ref: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    node = root
    for part in ref.lstrip("#").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


def _merge(into: dict[str, Any], part: Mapping[str, Any]) -> None:
    for key, value in part.items():
        if key == "properties" and isinstance(value, dict):
            into["properties"] = {**into.get("properties", {}), **value}
        elif key == "required" and isinstance(value, list):
            into["required"] = [*into.get("required", []), *value]
        else:
            into.setdefault(key, value)
