"""Limits follow the identity, not the credential (issue 14).

* A rotated key counts on its predecessor's rate-limit document: rotating a key does not give
  its caller a fresh allowance (real nats-server, the gateway's KV limiter, the key store).
* An OIDC caller is covered by the per-key concurrency guard, counted per identity whichever of
  its tokens it presents; a token whose ``nbf`` lies in the future is refused
  (``not_yet_valid``). Tokens are signed with an RSA key whose discovery document and JWKS a
  real HTTP server on a loopback port publishes; the provider-process tests are in
  tests/integration/test_oidc.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.streams import KV_RATELIMITS
from services.gateway.guard import VERIFIED_TOKEN, GatewayGuard, identity_lookup
from services.gateway.ratelimit import KvRateLimiter
from services.gateway.settings import GatewayLimits, RateLimits
from services.kernel.limit_spec import LimitSpec
from services.runtime.bus import connect, ensure_topology
from services.runtime.keys import KeyRing, KeyStore, api_key_of
from services.runtime.oidc import OidcVerifier, TokenRejected
from services.runtime.settings import OidcConfig
from stellwerk.supervisor import free_port

AUDIENCE = "stellwerk-gateway"
CLAIMS = {"tenant": "acme-insurance", "business_unit": "claims", "roles": "analyst"}


# --- a rotated key keeps its caller's limits -------------------------------------------------


async def test_a_rotated_key_counts_on_its_predecessors_limit(nats_url: str) -> None:
    nc = await connect(nats_url, "test", persistent=False)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        store = await KeyStore.open(js)
        old_key, old = await store.create(tenant="acme-insurance", business_unit="claims", role="analyst",
                                          actor="test")
        limiter = KvRateLimiter(await js.key_value(KV_RATELIMITS),
                                RateLimits(users={"*": LimitSpec(requests=2, per_s=3600)}))
        for _ in range(2):
            assert await limiter.admit(api_key_of(old), "stellwerk", 10) is None
        new_key, new, _ = await store.rotate(old.key_id, "test", timedelta(hours=1))
        twice, newest, _ = await store.rotate(new.key_id, "test", timedelta(hours=1))
        assert (new.lineage, newest.lineage) == (old.key_id, old.key_id)  # the chain keeps its first id
        ring = KeyRing([])
        ring.apply(new.key_id, msgspec.json.encode(new))
        rotated = ring.lookup(new_key)
        assert rotated is not None and rotated.key_id == new.key_id and rotated.limit_id == old.key_id
        refused = await limiter.admit(rotated, "stellwerk", 10)
        assert refused is not None and (refused.scope, refused.metric) == ("user", "requests")
        assert await limiter.admit(api_key_of(newest), "stellwerk", 10) is not None
        assert ring.limit_id_of(new_key) == old.key_id  # the concurrency guard's identity too
        # A key that was never rotated from the old one has an allowance of its own.
        _, other = await store.create(tenant="acme-insurance", business_unit="claims", role="analyst", actor="test")
        assert await limiter.admit(api_key_of(other), "stellwerk", 10) is None
        assert old_key != new_key != twice
    finally:
        await nc.close()


# --- OIDC: a local issuer ---------------------------------------------------------------------


class Issuer:
    """Discovery and JWKS over real HTTP; tokens signed with its RSA key."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        documents = {
            "/.well-known/openid-configuration": {"issuer": self.url, "jwks_uri": self.url + "/jwks"},
            "/jwks": {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]},
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(documents.get(self.path, {})).encode()
                self.send_response(200 if self.path in documents else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def token(self, sub: str, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.url, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300, **CLAIMS, **claims}
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": "k1"})

    def config(self) -> OidcConfig:
        return OidcConfig(issuer=self.url, audience=[AUDIENCE], leeway_s=5,
                          claims={"tenant": "tenant", "business_unit": "business_unit", "role": "roles"})


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    running = Issuer()
    running.thread.start()
    yield running
    running.server.shutdown()


async def test_a_token_not_yet_valid_is_refused(issuer: Issuer) -> None:
    verifier = OidcVerifier(issuer.config())
    key, _ = await verifier.authenticate(issuer.token("alice"))
    assert key.key_id == "oidc:alice"
    with pytest.raises(TokenRejected) as refused:
        await verifier.authenticate(issuer.token("alice", nbf=int(time.time()) + 600))
    assert refused.value.reason == "not_yet_valid"
    # Within the configured leeway (clock skew) it is accepted.
    assert await verifier.authenticate(issuer.token("alice", nbf=int(time.time()) + 2))


@pytest.fixture
async def guarded(issuer: Issuer) -> AsyncIterator[tuple[GatewayGuard, asyncio.Event, list[str]]]:
    """The gateway's guard (2 in flight per identity) in front of an endpoint that holds every
    request until released, over a real HTTP server."""
    import uvicorn

    release = asyncio.Event()
    seen: list[str] = []

    async def held(request: Request) -> JSONResponse:
        verified = VERIFIED_TOKEN.get()  # the guard's verification, handed to the handler
        seen.append(verified[1][0].key_id if verified else "-")
        await release.wait()
        return JSONResponse({})

    guard = GatewayGuard(Starlette(routes=[Route("/v1/chat/completions", held, methods=["POST"])]),
                         GatewayLimits(max_concurrent_per_key=2),
                         identity_lookup(lambda presented: None, OidcVerifier(issuer.config())),
                         on_error=lambda status, code: None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(guard, host="127.0.0.1", port=port, loop="asyncio",
                                           log_level="critical", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    guard.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    try:
        yield guard, release, seen
    finally:
        release.set()
        server.should_exit = True
        await serving


async def test_an_oidc_identity_is_held_to_the_per_key_concurrency_limit(
    issuer: Issuer, guarded: tuple[GatewayGuard, asyncio.Event, list[str]]
) -> None:
    guard, release, seen = guarded
    url = guard.url + "/v1/chat/completions"  # type: ignore[attr-defined]
    # Three different tokens of one person: one identity, two slots.
    tokens = [issuer.token("alice", jti=str(i)) for i in range(3)]
    async with httpx.AsyncClient(timeout=30) as http:
        def post(token: str) -> Any:
            return http.post(url, json={}, headers={"Authorization": f"Bearer {token}"})

        first = [asyncio.create_task(post(t)) for t in tokens[:2]]
        while guard.in_flight["oidc:alice"] < 2:
            await asyncio.sleep(0.01)
        third = await post(tokens[2])
        assert third.status_code == 429 and third.headers["Retry-After"] == "1"
        other = asyncio.create_task(post(issuer.token("bob")))  # another person has slots of their own
        while guard.in_flight["oidc:bob"] < 1:
            await asyncio.sleep(0.01)
        release.set()
        assert [r.status_code for r in await asyncio.gather(*first, other)] == [200, 200, 200]
    assert sorted(seen) == ["oidc:alice", "oidc:alice", "oidc:bob"]
    assert not guard.in_flight  # every slot released
