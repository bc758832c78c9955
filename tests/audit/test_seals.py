"""Signed checkpoint seals: Ed25519, verified with the public key only.

A seal verifies with the public key; a tampered checkpoint fails; whoever holds only what a
verifier holds (the public key) cannot make a seal that verifies — neither an HMAC keyed with
it nor a signature of their own under its key id nor a downgrade to a plain hash. Checkpoints
sealed with the older HMAC secret keep verifying. Against a real nats-server: an audit
worker signs, ``stellwerk audit verify --public-key`` checks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from typer.testing import CliRunner

from schemas import subjects
from schemas.events import AuditCheckpoint, encode
from schemas.streams import AUDIT
from services.audit.appender import Appender
from services.audit.checkpoint import Ed25519Signer, Keyring, SealKey, check_seal, load_public_keys
from services.audit.cli import app
from services.audit.metrics import AuditMetrics
from services.audit.trail import verify_stream
from services.runtime.bus import connect, ensure_topology
from tests.audit.helpers import chain, checkpoint_of, event
from tests.audit.test_audit_worker import Workers, drained, ready

SIGNER = Ed25519Signer.generate()
RING = Keyring.of([SIGNER.public_pem()])
OLD_HMAC = SealKey.from_secret("the secret before signatures")


def test_a_signed_seal_verifies_with_the_public_key() -> None:
    checkpoint = checkpoint_of(chain(3)[-1], SIGNER)
    assert (checkpoint.seal_alg, checkpoint.key_id) == ("ed25519", SIGNER.key_id)
    assert len(checkpoint.seal) == 128
    assert check_seal(checkpoint, RING) == "valid"
    again = msgspec.json.decode(encode(checkpoint), type=AuditCheckpoint)  # the schema accepts it
    assert check_seal(again, RING) == "valid"


@pytest.mark.parametrize("change", [
    {"head_hash": "f" * 64}, {"seq": 4}, {"partition": "other"}, {"sealed_by": "someone"}, {"head_stream_seq": 99},
])
def test_a_tampered_checkpoint_fails(change: dict[str, object]) -> None:
    checkpoint = checkpoint_of(chain(3)[-1], SIGNER)
    assert check_seal(msgspec.structs.replace(checkpoint, **change), RING) == "invalid"


def test_a_verifier_cannot_make_a_seal() -> None:
    record = chain(3)[-1]
    public_pem = SIGNER.public_pem()
    # The verifier's keyring holds public keys only: nothing in it can sign.
    assert all(isinstance(k, Ed25519PublicKey) and not hasattr(k, "sign") for k in RING.public_keys.values())
    # HMAC-style forgery keyed with the verification key, under the signer's key id
    hmac_forgery = checkpoint_of(record, SealKey(public_pem, SIGNER.key_id))
    assert check_seal(hmac_forgery, RING) == "invalid"
    # a signature with a key of one's own, claiming the signer's key id
    impostor = Ed25519Signer(Ed25519PrivateKey.generate(), SIGNER.key_id)
    assert check_seal(checkpoint_of(record, impostor), RING) == "invalid"
    # the forger's own key is simply not trusted
    assert check_seal(checkpoint_of(record, Ed25519Signer.generate()), RING) == "invalid"
    # a downgrade to a plain hash, and a signature copied from another checkpoint
    assert check_seal(checkpoint_of(record), RING) == "invalid"
    other = checkpoint_of(chain(4)[-1], SIGNER)
    copied = msgspec.structs.replace(checkpoint_of(record, SIGNER), seal=other.seal)
    assert check_seal(copied, RING) == "invalid"


def test_old_hmac_and_plain_checkpoints_still_verify() -> None:
    record = chain(3)[-1]
    old, plain, signed = checkpoint_of(record, OLD_HMAC), checkpoint_of(record), checkpoint_of(record, SIGNER)
    both = Keyring.of([SIGNER.public_pem()], hmac=OLD_HMAC)
    assert check_seal(old, both) == "valid" and check_seal(signed, both) == "valid"
    assert check_seal(old, OLD_HMAC) == "valid"  # the pre-signature way still works
    assert check_seal(old, RING) == "invalid", "with keys, a seal none of them checks does not count"
    assert check_seal(plain, None) == "valid"
    assert check_seal(signed, None) == "unverifiable" and check_seal(old, None) == "unverifiable"


def test_rotation_keeps_old_public_keys_valid() -> None:
    record = chain(3)[-1]
    new = Ed25519Signer.generate()
    ring = Keyring.of([SIGNER.public_pem() + new.public_pem()])  # one file, both keys
    assert set(load_public_keys(SIGNER.public_pem() + new.public_pem())) == {SIGNER.key_id, new.key_id}
    assert check_seal(checkpoint_of(record, SIGNER), ring) == "valid"
    assert check_seal(checkpoint_of(record, new), ring) == "valid"


def test_keygen_writes_a_usable_pair(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["keygen", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    private, public = tmp_path / "seal-signing.pem", tmp_path / "seal-public.pem"
    assert private.stat().st_mode & 0o077 == 0
    signer = Ed25519Signer.from_file(private)
    assert signer.key_id in result.output
    ring = Keyring.of([public.read_bytes()])
    assert check_seal(checkpoint_of(chain(2)[-1], signer), ring) == "valid"
    assert CliRunner().invoke(app, ["keygen", "--out", str(tmp_path)]).exit_code == 1  # never overwrites


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    signing, public, wrong = tmp_path / "signing.pem", tmp_path / "public.pem", tmp_path / "wrong.pem"
    signing.write_bytes(SIGNER.private_pem())
    public.write_bytes(SIGNER.public_pem())
    wrong.write_bytes(Ed25519Signer.generate().public_pem())
    return signing, public, wrong


@pytest.fixture
def signing_worker(nats_url: str, tmp_path: Path, keys: tuple[Path, Path, Path]) -> Iterator[Workers]:
    group = Workers(nats_url, tmp_path, {"STELLWERK_AUDIT_SEAL_KEY": "",
                                         "STELLWERK_AUDIT_SEAL_SIGNING_KEY_FILE": str(keys[0])})
    group.start()
    yield group
    group.stop()


async def test_the_audit_worker_signs_and_verify_needs_only_the_public_key(
    nats_url: str, signing_worker: Workers, keys: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, public, wrong = keys
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await ready(nc, 1)
    events = [event(i, tenant=f"t{i % 2}", stage="dlp_input", outcome="allow") for i in range(250)]
    await asyncio.gather(*(js.publish(subjects.audit(e.stage), encode(e)) for e in events))
    await drained(nc, len(events))
    await nc.close()

    monkeypatch.delenv("STELLWERK_AUDIT_SEAL_KEY", raising=False)
    result = await asyncio.to_thread(CliRunner().invoke, app, [
        "verify", "--nats-url", nats_url, "--public-key", str(public), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["checkpoints"] >= 2 and report["unverifiable_seals"] == 0
    result = await asyncio.to_thread(CliRunner().invoke, app, [
        "verify", "--nats-url", nats_url, "--public-key", str(wrong), "--format", "json"])
    assert result.exit_code == 1
    assert {p["first_break"]["problem"] for p in json.loads(result.stdout)["partitions"]} == {"bad_seal"}


async def test_a_trail_sealed_first_with_hmac_then_signed_verifies(nats_url: str) -> None:
    nc = await connect(nats_url, "test", persistent=False)
    js = nc.jetstream()
    await ensure_topology(js)
    for key in (OLD_HMAC, SIGNER):
        appender = Appender(nc, js, stream=AUDIT.name, metrics=AuditMetrics(), sealed_by="test", key=key,
                            checkpoint_every=20)
        await appender.append("acme", [event(i, tenant="acme") for i in range(30)])
        await appender.seal_grown()
    both = Keyring.of([SIGNER.public_pem()], hmac=OLD_HMAC)
    report = await verify_stream(js, AUDIT.name, key=both)
    assert report.ok and report.records == 60 and report.unverifiable_seals == 0, report
    only_public = await verify_stream(js, AUDIT.name, key=RING)
    assert not only_public.ok  # the HMAC checkpoints need the old secret: documented
    await nc.close()
