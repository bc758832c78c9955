"""Fuzzing the bus contract (issue 18), shared by tests/fuzz and ``bench/fuzz.py --bus``.

For every consumed subject (``schemas.streams.CONSUMERS``) random and mutated events are
published to the real nats-server the real workers consume from: garbage bytes, wrong types,
missing fields, oversized fields, invalid identifiers, unknown fields, expired and far-future
deadlines, and duplicates of one event (same ``event_id``, different publish ids). Every
message must end in the service's DLQ with a reason or be handled (acknowledged); no consumer
is left with pending messages, no worker exits, and a duplicated request yields one result.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from schemas import events, subjects
from schemas.events import ChatMessage, DeadLetter, RequestSubmitted, deadline_in, decode, encode, new_id
from schemas.streams import CONSUMERS, ConsumerDef
from tests.integration.mesh import eventually, stored

# What each durable consumer decodes (by name: a consumer added later without an entry is
# still fuzzed, with garbage and mutations of a request).
EVENT_TYPES: dict[str, str] = {
    "dlp-input": "RequestSubmitted", "router": "RequestScreened", "inference": "RequestRouted",
    "dlp-output": "ResponseGenerated", "dlp-stream": "ResponseStreaming", "finops": "UsageRecorded",
    "audit": "AuditEvent",
}
SECRET = "Geheimnis"  # in every fuzzed string value: must never appear in a DLQ detail


def base_request(request_id: str, deadline_s: float = 30.0) -> dict[str, Any]:
    event = RequestSubmitted(
        request_id=request_id, correlation_id=request_id, deadline=deadline_in(deadline_s),
        tenant="acme-insurance", business_unit="claims", user_role="analyst", usecase_class="chat",
        messages=[ChatMessage(role="user", content="Wie ist der Status von Vorgang 4711?")],
    )
    return msgspec.json.decode(encode(event))  # type: ignore[no-any-return]


WRONG_VALUES: list[Any] = [
    None, 0, -1, 2**70, 1.5e308, True, [], {}, [SECRET], {SECRET: SECRET},
    f"{SECRET} with spaces", f"{SECRET}\u0000", f"{SECRET}\ud800"[:-1] + "\u202e", SECRET * 20_000,
    "", f"{SECRET}-ü-\U0001f600",
]


def mutations(rng: random.Random, request_id: str) -> list[tuple[str, bytes]]:
    """(kind, payload) for one consumer: each kind once, values chosen by ``rng``."""
    out: list[tuple[str, bytes]] = [
        ("not_json", rng.randbytes(rng.randint(0, 64)) + SECRET.encode()),
        ("json_scalar", json.dumps(rng.choice([1, "x" + SECRET, None, [SECRET]])).encode()),
        ("truncated", encode_dict(base_request(new_id()))[: rng.randint(1, 60)]),
        ("invalid_utf8", b'{"request_id": "\xff\xfe' + SECRET.encode() + b'"}'),
    ]
    base = base_request(new_id())
    for key in list(base):
        mutated = dict(base, request_id=new_id())
        mutated[key] = rng.choice(WRONG_VALUES)
        out.append((f"wrong:{key}", encode_dict(mutated)))
    for key in ("request_id", "deadline", "messages", "tenant"):
        mutated = dict(base, request_id=new_id())
        del mutated[key]
        out.append((f"missing:{key}", encode_dict(mutated)))
    out.append(("unknown_field", encode_dict(dict(base, request_id=new_id(), unexpected=SECRET))))
    out.append(("enum_value", encode_dict(dict(base, request_id=new_id(), usecase_class=SECRET))))
    return out


def encode_dict(value: dict[str, Any]) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@dataclass
class BusTally:
    published: Counter[str] = field(default_factory=Counter)  # per consumer
    dead_lettered: Counter[str] = field(default_factory=Counter)
    handled: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    missing: list[tuple[str, str]] = field(default_factory=list)  # undecodable, not in the DLQ: (consumer, kind)
    unreasoned: int = 0
    details_quoting_content: int = 0
    duplicate_dead_letters: int = 0
    results: Counter[str] = field(default_factory=Counter)  # request id -> results seen
    expired_duplicates: set[str] = field(default_factory=set)


async def fuzz_bus(nc: Client, seed: int = 0, duplicates: int = 5) -> BusTally:
    rng = random.Random(seed)
    js = nc.jetstream()
    tally = BusTally()
    sent: list[tuple[ConsumerDef, str, bytes, bool]] = []  # consumer, kind, payload, decodable

    async def on_result(msg: Msg) -> None:
        tally.results[msg.subject.rsplit(".", 1)[-1]] += 1

    results = await nc.subscribe(subjects.result("*"), cb=on_result)
    try:
        for consumer in CONSUMERS:
            event_type = getattr(events, EVENT_TYPES.get(consumer.durable, ""), None)
            subject = _subject(consumer)
            for kind, payload in mutations(rng, new_id()):
                decodable = event_type is not None and _decodes(payload, event_type)
                await js.publish(subject, payload, headers={"Nats-Msg-Id": f"fuzz:{new_id()}"})
                sent.append((consumer, kind, payload, decodable))
                tally.published[consumer.durable] += 1
        # Duplicates of valid requests (same event id, new publish id), fresh and expired:
        # each request must produce one result, however often its event is delivered.
        duplicated: list[str] = []
        for index in range(duplicates):
            request_id = f"fuzzdup{index}{new_id()[:12]}"
            event = base_request(request_id, deadline_s=30.0 if index % 2 == 0 else -1.0)
            if index % 2:
                tally.expired_duplicates.add(request_id)
            for _ in range(2):
                await js.publish(subjects.REQUEST_SUBMITTED, encode_dict(event),
                                 headers={"Nats-Msg-Id": f"fuzz:{new_id()}"})
            duplicated.append(request_id)
        far_future = base_request(f"fuzzfar{new_id()[:12]}")
        far_future["deadline"] = (datetime.now(UTC) + timedelta(days=3650)).isoformat()
        await js.publish(subjects.REQUEST_SUBMITTED, encode_dict(far_future), headers={"Nats-Msg-Id": f"fuzz:{new_id()}"})
        duplicated.append(far_future["request_id"])

        async def drained() -> bool:
            for consumer in CONSUMERS:
                info = await js.consumer_info(consumer.stream, consumer.durable)
                if info.num_pending or info.num_ack_pending:
                    return False
            return all(tally.results[r] >= 1 for r in duplicated)

        await eventually(drained, timeout_s=90)
        await asyncio.sleep(0.5)  # a late duplicate result would arrive now
    finally:
        await results.unsubscribe()
    letters = [decode(data, DeadLetter) for data in await stored(js, subjects.DLQ_ALL)]
    by_payload: Counter[tuple[str, bytes]] = Counter((letter.subject, letter.payload) for letter in letters)
    for letter in letters:
        if not letter.reason:
            tally.unreasoned += 1
        if SECRET in letter.detail:
            tally.details_quoting_content += 1
    ours = {(_subject(consumer), payload) for consumer, _, payload, _ in sent}
    for letter in letters:
        if (letter.subject, letter.payload) in ours:
            tally.reasons[letter.reason] += 1
    for consumer, kind, payload, decodable in sent:
        count = by_payload[(_subject(consumer), payload)]
        if count > 1:
            tally.duplicate_dead_letters += 1
        if count:
            tally.dead_lettered[consumer.durable] += 1
        else:
            tally.handled[consumer.durable] += 1
            if not decodable:
                tally.missing.append((consumer.durable, kind))
    tally.results = Counter({r: n for r, n in tally.results.items() if r in set(duplicated)})
    return tally


def _subject(consumer: ConsumerDef) -> str:
    if consumer.filter_subject.endswith(".*"):  # audit.<stage>
        return consumer.filter_subject[:-1] + "gateway"
    return consumer.filter_subject


def _decodes(payload: bytes, event_type: type[msgspec.Struct]) -> bool:
    try:
        msgspec.json.decode(payload, type=event_type)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):  # msgspec: bad UTF-8 in a string
        return False
    return True
