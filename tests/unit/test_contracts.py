"""The service contracts and what is generated from them: the AsyncAPI document (validated
against the official AsyncAPI 3.0.0 JSON Schema, vendored in tests/data/asyncapi), the
docs section, the NATS permissions. The contracts themselves must match the topology."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, get_args

import jsonschema_rs
import pytest

from schemas.contracts import AUDIT_EVENT, AUDIT_TRAIL, CHANNELS
from schemas.export import DOCS_FILE, asyncapi, contracts_markdown, docs_with_contracts, main, stream_of
from schemas.streams import CONSUMERS
from schemas.vocabulary import Stage
from services.contracts import CONTRACTS
from stellwerk import nats_auth

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "asyncapi" / "asyncapi-3.0.0.schema.json"
TOKEN = re.compile(r"^(?:[A-Za-z0-9_-]+|\{[a-z_]+\})$")


@pytest.fixture(scope="module")
def validator() -> Any:
    return jsonschema_rs.Draft7Validator(json.loads(SCHEMA.read_text()))


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi()


def errors(validator: Any, doc: dict[str, Any]) -> list[str]:
    return [f"{list(e.instance_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def test_the_asyncapi_export_validates_against_the_official_schema(validator: Any, document: dict[str, Any]) -> None:
    assert errors(validator, document) == []


def test_the_validator_rejects_what_asyncapi_3_does_not_allow(validator: Any, document: dict[str, Any]) -> None:
    wrong = copy.deepcopy(document)
    wrong["operations"]["dlp.serve.dlpScreen"]["action"] = "publish"  # AsyncAPI 2 vocabulary
    wrong["channels"]["result"]["parameters"]["request_id"]["schema"] = {"type": "string"}  # 2.x style
    assert len(errors(validator, wrong)) >= 2


def test_addresses_are_subjects_and_every_placeholder_is_declared(document: dict[str, Any]) -> None:
    for channel_id, channel in document["channels"].items():
        address = channel["address"]
        declared = set(channel.get("parameters", {}))
        if address is None:  # a reply on the requester's inbox
            assert declared == set(), channel_id
            continue
        assert all(TOKEN.match(t) for t in address.split(".")), address
        assert set(re.findall(r"\{([a-z_]+)\}", address)) == declared, channel_id


def test_every_reference_resolves_and_operations_use_their_channels_messages(document: dict[str, Any]) -> None:
    def resolve(ref: str) -> Any:
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                assert node["$ref"].startswith("#/"), node["$ref"]
                resolve(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    for op_id, op in document["operations"].items():
        channel_ref = op["channel"]["$ref"]
        for message in op.get("messages", []):
            assert message["$ref"].startswith(channel_ref + "/messages/"), op_id
        if "reply" in op:
            reply = op["reply"]
            assert resolve(reply["channel"]["$ref"])["address"] is None, op_id
    tags = {tag["name"] for op in document["operations"].values() for tag in op["tags"]}
    assert tags == {c.name for c in CONTRACTS}


def test_every_durable_is_consumed_by_its_own_service_and_nothing_else() -> None:
    declared = [(c.name, d) for c in CONTRACTS for d in c.consumes]
    assert sorted(d.durable for _, d in declared) == sorted(d.durable for d in CONSUMERS)
    assert all(name == d.service for name, d in declared)
    for durable in CONSUMERS:  # every subject a durable filters is a declared channel
        for subject in durable.filter_subjects:
            assert any(ch.pattern == subject for ch in CHANNELS), subject


def test_every_channel_is_used_and_stages_are_the_vocabulary() -> None:
    used = {ch.id for c in CONTRACTS for ch in (*c.channels_sent(), *c.channels_received())}
    assert used >= {ch.id for ch in CHANNELS if ch.id != "deadLetter"}  # the DLQ is every worker's
    for contract in CONTRACTS:
        assert set(contract.stages) <= set(get_args(Stage)), contract.name
        for published in contract.publishes:
            if published.channel in (AUDIT_EVENT, AUDIT_TRAIL):
                assert published.only.get("stage"), f"{contract.name} may write any stage's audit"
    assert stream_of(AUDIT_TRAIL) == "AUDIT"


def test_permissions_are_exactly_generated_from_the_contracts() -> None:
    for contract in CONTRACTS:
        perms = nats_auth.principal(contract.name).permissions
        for published in contract.publishes:
            assert set(published.subjects()) <= perms.publish, contract.name
        for served in contract.serves:
            assert served.request.pattern in perms.subscribe, contract.name
        for requested in contract.requests:
            assert requested.request.pattern in perms.publish, contract.name
        # Nothing on the stellwerk subjects beyond the contract: the generated user is the contract.
        declared = {s for p in contract.publishes for s in p.subjects()} | {r.request.pattern for r in contract.requests}
        declared |= {f"{nats_auth.subjects.DLQ_PREFIX}.{contract.name}"} if contract.worker else set()
        own = {s for s in perms.publish if s.startswith("stellwerk.")}
        assert own == declared, contract.name


def test_the_docs_section_is_generated_from_the_contracts() -> None:
    text = DOCS_FILE.read_text()
    assert docs_with_contracts(text, contracts_markdown()) == text, (
        "docs/architecture.md's contracts section is stale: run `uv run python -m schemas.export docs`"
    )
    assert main(["docs", "--check"]) == 0
    assert "| serves | `stellwerk.v1.dlp.screen` | `ScreenRequest` → `ScreenReply` |" in contracts_markdown()
