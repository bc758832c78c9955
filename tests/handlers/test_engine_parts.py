"""Pure parts of the worker engine: policy memo, delivery counts, effect ordering."""

from __future__ import annotations

import json
import re
from pathlib import Path

from nats.aio.msg import Msg

from services.runtime.rego import CompiledPolicy
from services.runtime.worker import deliveries_of

POLICY_DIRS = sorted(Path("services").glob("*/policies"))


def test_policies_use_no_impure_builtins_so_decisions_may_be_memoised() -> None:
    impure = re.compile(r"\b(time\.now_ns|rand\.|uuid\.|http\.send|opa\.runtime|crypto\.x509)")
    offenders = [p for d in POLICY_DIRS for p in d.glob("*.rego") if impure.search(p.read_text())]
    assert POLICY_DIRS and offenders == []


def test_memoised_decision_is_equal_and_not_shared() -> None:
    policy = CompiledPolicy.from_dir(Path("services/dlp/policies"), "stellwerk/dlp/decision")
    cases = json.loads(Path("services/dlp/policies/sensitivity_test.json").read_text())
    features = cases[0]["input"]
    first = policy.evaluate(features)
    first["action"] = "tampered"
    second = policy.evaluate(dict(reversed(list(features.items()))))  # key order does not matter
    assert second.get("action") != "tampered"
    assert second == policy._parse(policy._evaluate_text(features))


def _msg(reply: str) -> Msg:
    return Msg(_client=None, subject="s", reply=reply, data=b"", headers=None)  # type: ignore[arg-type]


def test_delivery_count_is_read_from_the_ack_subject() -> None:
    assert deliveries_of(_msg("$JS.ACK.PIPELINE.router.3.10.5.1700000000.0")) == 3
    assert deliveries_of(_msg("$JS.ACK.dom.acc.PIPELINE.router.2.10.5.1700000000.0.tok")) == 2
    assert deliveries_of(_msg("")) == 1
