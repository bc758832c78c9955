"""End-user identity at the gateway (issue 14): ``X-Stellwerk-End-User`` only for keys that may
forward one, hashed per tenant before anything leaves the gateway; per-end-user rate limits;
the endpoint limit keyed on what ``model`` resolved to, never on the client's string."""

from __future__ import annotations

import uuid

import httpx
from nats.aio.client import Client
from nats.js.errors import NoKeysError

from schemas.streams import KV_RATELIMITS
from services.kernel.end_user import end_user_hash
from stellwerk.supervisor import Mesh
from tests.gateway.hardened import API_KEY, END_USER_KEY, END_USER_REQUESTS
from tests.integration.mesh import audit_events, eventually

HEADER = "X-Stellwerk-End-User"
MESSAGES = [{"role": "user", "content": "Wie ist der Stand?"}]


async def chat(mesh: Mesh, key: str, headers: dict[str, str] | None = None, **body: object) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(mesh.gateway_url + "/v1/chat/completions",
                               headers={"Authorization": f"Bearer {key}", **(headers or {})},
                               json={"model": "stellwerk", "messages": MESSAGES, **body})


async def test_a_key_without_forward_end_user_cannot_name_one(mesh: Mesh) -> None:
    response = await chat(mesh, API_KEY, {HEADER: "alice@example.com"})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "end_user_not_allowed" and error["param"] == "x-stellwerk-end-user"
    assert HEADER in error["message"]
    # The OpenAI ``user`` field stays what it was for every key: hashed, never refused.
    assert (await chat(mesh, API_KEY, user="alice@example.com")).status_code == 200


async def test_a_forwarded_end_user_is_hashed_per_tenant_and_audited_as_the_hash(mesh: Mesh, nc: Client) -> None:
    person = f"person-{uuid.uuid4().hex}@example.com"
    response = await chat(mesh, END_USER_KEY, {HEADER: person}, user="someone-else")
    assert response.status_code == 200, response.text
    request_id = response.headers["x-stellwerk-request-id"]
    js = nc.jetstream()

    async def received() -> dict[str, str] | None:
        for event in await audit_events(js):
            if event.request_id == request_id and event.stage == "gateway":
                return event.attributes
        return None

    attributes = await eventually(received)
    assert attributes["end_user"] == end_user_hash("acme-insurance", person, None)  # the header wins over ``user``
    assert attributes["api_key"] == "enduser-app"
    assert person not in str(await audit_events(js))
    too_long = await chat(mesh, END_USER_KEY, {HEADER: "x" * 257})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "x-stellwerk-end-user"


async def test_end_users_have_their_own_rate_limit(mesh: Mesh) -> None:
    first, second = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    for _ in range(END_USER_REQUESTS):
        assert (await chat(mesh, END_USER_KEY, {HEADER: first})).status_code == 200
    refused = await chat(mesh, END_USER_KEY, {HEADER: first})
    assert refused.status_code == 429
    assert refused.json()["error"]["stellwerk"]["limit"] == "end_user.requests"
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await chat(mesh, END_USER_KEY, {HEADER: second})).status_code == 200  # another person
    assert (await chat(mesh, END_USER_KEY)).status_code == 200  # the application itself


async def test_varying_model_creates_no_limit_documents_of_its_own(mesh: Mesh, nc: Client) -> None:
    config = mesh.config
    names = ["stellwerk", *(r.name for r in config.routes if "chat" in r.capabilities),
             *{r.route_class for r in config.routes if "chat" in r.capabilities},
             *(d.model for d in config.deployments if d.route != "local-embeddings"), *config.model_aliases]
    for name in names:
        response = await chat(mesh, API_KEY, model=name)
        assert response.status_code in (200, 403), (name, response.text)  # 403: the policy refused the route
    for invented in (f"gpt-{uuid.uuid4().hex[:8]}", "GPT-4o", "local-vllm "):
        assert (await chat(mesh, API_KEY, model=invented)).status_code in (400, 404)
    kv = await nc.jetstream().key_value(KV_RATELIMITS)
    try:
        keys = await kv.keys()
    except NoKeysError:
        keys = []
    endpoints = {k.removeprefix("endpoint.") for k in keys if k.startswith("endpoint.")}
    allowed = {"stellwerk"} | {r.name for r in config.routes} | {r.route_class for r in config.routes}
    assert endpoints and endpoints <= allowed, endpoints - allowed
