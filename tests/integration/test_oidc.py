"""OIDC at the gateway (issue 14) against a real OpenID Connect provider process
(``oidc-provider-mock``): discovery, JWKS, claims mapped to the envelope; expired, wrong
audience, wrong issuer, tampered, unknown-key tokens refused; a key rotation at the provider
picked up without a restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import yaml

from services.runtime.bus import connect
from stellwerk.supervisor import Mesh, free_port, port_in_use
from tests.integration.mesh import audit_events

CLIENT_ID = "stellwerk-gateway"
TOKEN_AGE_S = 4
REDIRECT = "http://127.0.0.1/callback"
CLAIMS = {"tenant": "acme-insurance", "department": "claims", "roles": ["Stellwerk.User", "Claims.Analyst"]}


class Provider:
    def __init__(self, root: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = root / f"oidc-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "oidc_provider_mock", "-p", str(self.port), "-e", str(TOKEN_AGE_S)],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not port_in_use(self.port):
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the OIDC provider did not listen"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def token(self, sub: str, client_id: str = CLIENT_ID, claims: dict[str, object] | None = None,
              host: str | None = None) -> str:
        """An ID token through the authorization-code flow, as a login would get one."""
        assert httpx.put(f"{self.url}/users/{sub}", json=claims or CLAIMS).status_code == 204
        authorized = httpx.post(f"{self.url}/oauth2/authorize", data={"sub": sub}, params={
            "client_id": client_id, "redirect_uri": REDIRECT, "response_type": "code", "scope": "openid",
            "state": "s"})
        code = parse_qs(urlparse(authorized.headers["location"]).query)["code"][0]
        issued = httpx.post(f"{self.url}/oauth2/token", headers={"Host": host} if host else None, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": client_id,
            "client_secret": "unused"})
        assert issued.status_code == 200, issued.text
        token: str = issued.json()["id_token"]
        return token


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    running = Provider(tmp_path_factory.mktemp("oidc"), free_port())
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def gateway(mesh: Mesh, provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway replica on the mesh's bus whose config trusts the provider."""
    root = tmp_path_factory.mktemp("oidc-gateway")
    config = yaml.safe_load(mesh.config_file.read_text())
    config["oidc"] = {
        "issuer": provider.url, "audience": CLIENT_ID, "leeway_s": 0,
        "claims": {"tenant": "tenant", "business_unit": "department", "role": "roles"},
        "roles": {"Claims.Analyst": "analyst", "Stellwerk.Approver": "approver"},
        "grants": {"max_quality_tier": "high"},
    }
    path = root / "stellwerk.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    with (root / "gateway.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "services.gateway", "--port", str(port)],
                                   env={**mesh.env(), "STELLWERK_CONFIG_FILE": str(path)},
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not (port_in_use(port) and httpx.get(url + "/readyz").status_code == 200):
            assert process.poll() is None, (root / "gateway.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def chat(gateway: str, token: str) -> httpx.Response:
    return httpx.post(gateway + "/v1/chat/completions", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                      json={"model": "stellwerk", "messages": [{"role": "user", "content": "Wie ist der Stand?"}]})


def refusal(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    reason: str = error["stellwerk"]["reason"]
    return reason


def test_a_token_of_the_provider_is_accepted_and_its_claims_mapped(mesh: Mesh, provider: Provider, gateway: str) -> None:
    response = chat(gateway, provider.token("alice"))
    assert response.status_code == 200, response.text
    request_id = response.headers["x-stellwerk-request-id"]

    async def received() -> list[tuple[str, str, str, str]]:
        nc = await connect(mesh.url, "test-oidc", persistent=False)
        try:
            return [(e.tenant, e.business_unit, e.user_role, e.attributes.get("api_key", ""))
                    for e in await audit_events(nc.jetstream())
                    if e.request_id == request_id and e.stage == "gateway"]
        finally:
            await nc.close()

    for _ in range(100):
        if records := asyncio.run(received()):
            break
        time.sleep(0.1)
    assert records == [("acme-insurance", "claims", "analyst", "oidc:alice")]
    assert httpx.get(gateway + "/v1/models", headers={"Authorization": f"Bearer {provider.token('alice')}"}
                     ).status_code == 200
    # API keys keep working beside tokens.
    assert httpx.get(gateway + "/v1/models", headers={"Authorization": "Bearer sk-stellwerk-demo"}).status_code == 200


def test_unmapped_claims_are_refused_naming_the_claim(provider: Provider, gateway: str) -> None:
    response = chat(gateway, provider.token("bob", claims={"tenant": "acme-insurance", "roles": ["Claims.Analyst"]}))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "identity_not_mapped"
    assert response.json()["error"]["stellwerk"]["field"] == "business_unit"


def test_wrong_audience_wrong_issuer_and_tampered_tokens_are_refused(provider: Provider, gateway: str) -> None:
    assert refusal(chat(gateway, provider.token("alice", client_id="another-app"))) == "wrong_audience"
    # Signed with the provider's own key, but naming another issuer (its URL as another host).
    assert refusal(chat(gateway, provider.token("alice", host=f"localhost:{provider.port}"))) == "wrong_issuer"
    header, payload, signature = provider.token("alice").split(".")
    tampered = f"{header}.{payload[:-4]}{'AAAA' if payload[-4:] != 'AAAA' else 'BBBB'}.{signature}"
    assert refusal(chat(gateway, tampered)) in ("bad_signature", "malformed", "invalid")
    other_signature = provider.token("mallory").split(".")[2]  # valid, but over another payload
    assert refusal(chat(gateway, f"{header}.{payload}.{other_signature}")) == "bad_signature"


def test_an_expired_token_is_refused(provider: Provider, gateway: str) -> None:
    token = provider.token("alice")
    assert chat(gateway, token).status_code == 200
    time.sleep(TOKEN_AGE_S + 1.1)
    assert refusal(chat(gateway, token)) == "expired"


def test_a_key_rotation_at_the_provider_is_picked_up(provider: Provider, gateway: str,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    before = provider.token("alice")
    assert chat(gateway, before).status_code == 200
    provider.stop()  # the mock makes a new signing key at every start: a rotation
    provider.start()
    after = provider.token("alice")
    assert chat(gateway, after).status_code == 200  # the gateway fetched the new keys
    assert refusal(chat(gateway, before)) == "bad_signature"  # the old key is gone from the set
    # A token of another provider: unknown to the gateway whatever it fetches.
    other = Provider(tmp_path_factory.mktemp("oidc-other"), free_port())
    other.start()
    try:
        assert refusal(chat(gateway, other.token("alice"))) in ("bad_signature", "wrong_issuer")
    finally:
        other.stop()
