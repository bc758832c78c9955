"""``stellwerk keys`` conventions and the key ring's validity rules (issue 14), without a mesh."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from typer.testing import CliRunner

from schemas.events import utcnow
from services.gateway.keys_cli import actor_of, app
from services.kernel.cli_conventions import INVALID_INPUT
from services.runtime.keys import KeyRing, hash_key, parse_duration
from services.runtime.settings import ApiKey


def test_the_actor_defaults_to_the_environment_then_the_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLWERK_ACTOR", "alice@ops")
    assert actor_of(None) == "alice@ops" and actor_of("bob") == "bob"
    monkeypatch.delenv("STELLWERK_ACTOR")
    assert actor_of(None)  # the OS user


def test_an_invalid_actor_or_duration_is_invalid_input() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["revoke", "key-1", "--actor", "two words", "--nats-url", "nats://127.0.0.1:1"])
    assert result.exit_code == INVALID_INPUT
    assert parse_duration("30d") == timedelta(days=30) and parse_duration("90s") == timedelta(seconds=90)
    for bad in ("soon", "0s", "-1h", "5y"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_the_ring_refuses_revoked_and_expired_keys_and_follows_changes() -> None:
    ring = KeyRing([ApiKey(key_id="boot", key_sha256=hash_key("sk-boot"), tenant="t", business_unit="b",
                           user_role="r")])
    assert ring.lookup("sk-boot") is not None and ring.key_id_of("sk-boot") == "boot"
    record = ring.record_for("sk-boot")
    assert record is not None
    ring.apply("boot", msgspec.json.encode(msgspec.structs.replace(record, revoked=True)))
    assert ring.lookup("sk-boot") is None
    ring.apply("boot", msgspec.json.encode(msgspec.structs.replace(record, expires_at=utcnow() - timedelta(seconds=1))))
    assert ring.lookup("sk-boot") is None
    ring.apply("boot", msgspec.json.encode(record))
    assert ring.lookup("sk-boot") is not None
    ring.apply("boot", None)
    assert ring.lookup("sk-boot") is None and len(ring) == 0
    assert ring.lookup("") is None
