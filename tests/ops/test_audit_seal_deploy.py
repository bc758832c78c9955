"""Compose and Kubernetes seal the audit trail with Ed25519 by default (issue 17): the setup
step generates the signing key, the audit service alone gets it as a file, verifiers get the
public key; HMAC seals only by explicit opt-in. Uses the real Compose binary and its .env
parser, and the audit service's own settings to see what it would seal with."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.audit.checkpoint import Ed25519Signer, SealKey
from services.audit.settings import AuditSettings
from stellwerk import nats_auth
from tests.ops.test_compose import BINARY, COMPOSE, ROOT, SERVICES


def compose_config(env_file: Path, compose_file: Path = COMPOSE) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "STELLWERK_"))}
    result = subprocess.run([str(BINARY), "-f", str(compose_file), "--env-file", str(env_file), "config",
                             "--format", "json"], capture_output=True, text=True, env=clean, check=False)
    assert result.returncode == 0, result.stderr
    rendered: dict[str, Any] = json.loads(result.stdout)
    return rendered


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    """compose/.env as the documented setup step writes it."""
    path = tmp_path / ".env"
    assert nats_auth.main(["secrets", str(path)]) == 0
    return path


def test_setup_generates_a_signing_key_compose_reads_back_and_its_public_key(env_file: Path, tmp_path: Path) -> None:
    # What Compose's .env parser makes of the escaped PEM is the key itself.
    probe = tmp_path / "probe.yaml"
    probe.write_text("services:\n  probe:\n    image: x\n    environment:\n"
                     "      KEY: ${STELLWERK_AUDIT_SEAL_SIGNING_KEY}\n")
    pem = compose_config(env_file, probe)["services"]["probe"]["environment"]["KEY"]
    signer = Ed25519Signer.from_pem(pem.encode())
    public = nats_auth.public_key_file(env_file).read_bytes()
    assert public == signer.public_pem()
    assert "STELLWERK_AUDIT_SEAL_KEY" not in nats_auth.read_env_file(env_file)


def test_compose_hands_the_signing_key_to_the_audit_service_alone(env_file: Path) -> None:
    rendered = compose_config(env_file)
    assert rendered["secrets"]["audit-seal-signing"]["environment"] == "STELLWERK_AUDIT_SEAL_SIGNING_KEY"
    services = rendered["services"]
    holders = [name for name in SERVICES if any(s["source"] == "audit-seal-signing"
                                                for s in services[name].get("secrets", []))]
    assert holders == ["audit"]
    env = services["audit"]["environment"]
    assert env["STELLWERK_AUDIT_SEAL_SIGNING_KEY_FILE"] == "/run/secrets/audit-seal-signing"
    assert env["STELLWERK_AUDIT_SEAL_KEY"] == ""


def test_the_audit_service_signs_by_default_and_uses_hmac_only_when_opted_in(
    env_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The file compose mounts holds the .env's key; the service with compose's environment signs.
    key_file = tmp_path / "audit-seal-signing"
    probe = tmp_path / "probe.yaml"
    probe.write_text("services:\n  probe:\n    image: x\n    environment:\n"
                     "      KEY: ${STELLWERK_AUDIT_SEAL_SIGNING_KEY}\n")
    key_file.write_text(compose_config(env_file, probe)["services"]["probe"]["environment"]["KEY"])
    monkeypatch.setenv("STELLWERK_AUDIT_SEAL_SIGNING_KEY_FILE", str(key_file))
    monkeypatch.setenv("STELLWERK_AUDIT_SEAL_KEY", "")
    assert isinstance(AuditSettings().key(), Ed25519Signer)

    # Opt-in: no signing-key file, an HMAC secret — and compose passes exactly that through.
    with env_file.open("a") as out:
        out.write("STELLWERK_AUDIT_SEAL_SIGNING_KEY_FILE=\nSTELLWERK_AUDIT_SEAL_KEY=opted-in-secret\n")
    env = compose_config(env_file)["services"]["audit"]["environment"]
    assert env["STELLWERK_AUDIT_SEAL_SIGNING_KEY_FILE"] == ""
    monkeypatch.setenv("STELLWERK_AUDIT_SEAL_SIGNING_KEY_FILE", env["STELLWERK_AUDIT_SEAL_SIGNING_KEY_FILE"])
    monkeypatch.setenv("STELLWERK_AUDIT_SEAL_KEY", env["STELLWERK_AUDIT_SEAL_KEY"])
    assert isinstance(AuditSettings().key(), SealKey)


def test_an_older_env_gets_the_signing_key_added_without_new_passwords(tmp_path: Path) -> None:
    old = tmp_path / ".env"
    old.write_text("NATS_PASSWORD_AUDIT=keep-me\nSTELLWERK_AUDIT_SEAL_KEY=old-hmac\n")
    assert nats_auth.main(["secrets", str(old)]) == 1  # never overwritten by accident
    assert nats_auth.main(["secrets", str(old), "--add-missing"]) == 0
    values = nats_auth.read_env_file(old)
    assert values["NATS_PASSWORD_AUDIT"] == "keep-me" and values["STELLWERK_AUDIT_SEAL_KEY"] == "old-hmac"
    assert "STELLWERK_AUDIT_SEAL_SIGNING_KEY" in values and nats_auth.public_key_file(old).exists()


def test_kubernetes_mounts_the_signing_key_into_the_audit_deployment_only() -> None:
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "services.yaml").read_text()))
    deployments = {d["metadata"]["name"]: d for d in documents if d and d["kind"] == "Deployment"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert "STELLWERK_AUDIT_SEAL_KEY" not in env  # HMAC only by explicit choice
        assert ("stellwerk-audit-seal-signing" in secrets) == (name == "audit")
        if name == "audit":
            path = env["STELLWERK_AUDIT_SEAL_SIGNING_KEY_FILE"]["value"]
            mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
            assert path == mounts["audit-seal"] + "/seal-signing.pem"
