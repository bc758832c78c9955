"""Single sign-on to the console (issue 15) against a real OpenID Connect provider process
(``oidc-provider-mock``) in a real browser: authorization code with PKCE, the ID token verified
and its claims mapped as at the gateway; a role outside the console and a tampered state are
refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from stellwerk.supervisor import DEFAULT_SCALE, Mesh, free_port
from tests.console.test_console import CHROMIUM, FLAGS
from tests.integration.mesh import running_mesh, write_test_config
from tests.integration.test_oidc import Provider

CLIENT_ID = "stellwerk-console"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    running = Provider(tmp_path_factory.mktemp("oidc"), free_port())
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def mesh(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("console-oidc")
    path = write_test_config(root, console_port=free_port())
    config = yaml.safe_load(path.read_text())
    config["oidc"] = {
        "issuer": provider.url, "audience": "stellwerk-gateway", "leeway_s": 0,
        "claims": {"tenant": "tenant", "business_unit": "department", "role": "roles"},
        "roles": {"Stellwerk.Approver": "approver", "Stellwerk.Operator": "operator", "Claims.Analyst": "analyst"},
    }
    # The mock wants a client secret; by reference, as plaintext secrets are refused (issue 14).
    secret = root / "console-client-secret"
    secret.write_text("console-secret\n")
    config["console_oidc"] = {"client_id": CLIENT_ID, "client_secret": f"file:{secret}"}
    path.write_text(yaml.safe_dump(config))
    # Only what the console needs: the bus and the console itself (no gateway imports the
    # config's keys into the bucket, so operator keys are tested in test_console.py).
    scale = {name: 0 for name in DEFAULT_SCALE} | {"console": 1}
    with running_mesh(root, path, scale=scale) as running:
        yield running


@pytest.fixture(scope="module")
def browser(mesh: Mesh) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield launched
        launched.close()


def sso(browser: Browser, mesh: Mesh, provider: Provider, sub: str, claims: dict[str, object]) -> Page:
    assert httpx.put(f"{provider.url}/users/{sub}", json=claims).status_code == 204
    page = browser.new_context().new_page()
    page.goto(mesh.console_url + "/")
    expect(page).to_have_url(mesh.console_url + "/login")
    page.get_by_role("link", name="Sign in with single sign-on").click()
    page.wait_for_url(f"{provider.url}/oauth2/authorize**")
    query = parse_qs(urlparse(page.url).query)
    assert query["client_id"] == [CLIENT_ID] and query["code_challenge_method"] == ["S256"]
    assert query["nonce"] and query["state"]
    page.fill("input[name=sub]", sub)
    page.get_by_role("button", name="Authorize").click()
    return page


def test_single_sign_on_maps_the_providers_role(browser: Browser, mesh: Mesh, provider: Provider) -> None:
    page = sso(browser, mesh, provider, "alice",
               {"tenant": "acme-insurance", "department": "claims", "roles": ["Stellwerk.Approver"]})
    expect(page).to_have_url(mesh.console_url + "/")
    expect(page.locator("header")).to_contain_text("oidc:alice · approver")
    page.goto(mesh.console_url + "/budgets")  # an approver has no business with budgets
    expect(page.locator("h1")).to_have_text("Not for your role")
    page.goto(mesh.console_url + "/approvals")
    expect(page.locator("h1")).to_contain_text("Approvals")


def test_a_role_outside_the_console_is_refused(browser: Browser, mesh: Mesh, provider: Provider) -> None:
    page = sso(browser, mesh, provider, "bob",
               {"tenant": "acme-insurance", "department": "claims", "roles": ["Claims.Analyst"]})
    expect(page.get_by_role("alert")).to_contain_text("does not open the console")
    page.goto(mesh.console_url + "/")
    expect(page).to_have_url(mesh.console_url + "/login")  # no session


def test_a_tampered_state_is_refused(mesh: Mesh, provider: Provider) -> None:
    assert httpx.put(f"{provider.url}/users/carol", json={
        "tenant": "acme-insurance", "roles": ["Stellwerk.Operator"]}).status_code == 204
    with httpx.Client() as console:
        started = console.get(mesh.console_url + "/login/oidc")
        assert started.status_code == 303
        authorize = started.headers["location"]
        authorized = httpx.post(authorize, data={"sub": "carol"})
        callback = urlparse(authorized.headers["location"])
        params = parse_qs(callback.query)
        code, state = params["code"][0], params["state"][0]
        url = mesh.console_url + "/login/oidc/callback"
        refused = console.get(url, params={"code": code, "state": state[:-2] + "xx"})
        assert refused.status_code == 403 and "state" in refused.text
        assert "stellwerk_console" not in refused.cookies
        # The state cookie of another browser (none here) does not match either.
        assert httpx.get(url, params={"code": code, "state": state}).status_code == 403
        # The untouched state signs in; the code's second use is refused by the provider.
        started = console.get(mesh.console_url + "/login/oidc")
        authorized = httpx.post(started.headers["location"], data={"sub": "carol"})
        params = parse_qs(urlparse(authorized.headers["location"]).query)
        accepted = console.get(url, params={"code": params["code"][0], "state": params["state"][0]})
        assert accepted.status_code == 200, accepted.text
        assert console.get(mesh.console_url + "/status").status_code == 200  # carol is an operator
