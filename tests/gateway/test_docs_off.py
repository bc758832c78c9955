"""No unauthenticated API documentation at the gateway (issue 14): Swagger UI and ReDoc are never
served; the schema only with ``gateway_openapi`` and a valid key."""

from __future__ import annotations

import httpx

from services.gateway.app import create_app
from services.runtime.settings import MeshSettings
from stellwerk.supervisor import Mesh
from tests.gateway.hardened import API_KEY


def test_the_default_gateway_serves_no_docs_and_no_schema() -> None:
    app = create_app(MeshSettings())  # the default config; nothing connects before the lifespan
    paths = {getattr(route, "path", "") for route in app.routes}
    assert not paths & {"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}
    assert app.openapi_url is None and app.docs_url is None and app.redoc_url is None


def test_docs_are_not_found_and_the_schema_needs_a_key(mesh: Mesh) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert httpx.get(mesh.gateway_url + path).status_code == 404, path
    refused = httpx.get(mesh.gateway_url + "/openapi.json")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    schema = httpx.get(mesh.gateway_url + "/openapi.json", headers={"Authorization": f"Bearer {API_KEY}"})
    assert schema.status_code == 200 and "/v1/chat/completions" in schema.json()["paths"]
