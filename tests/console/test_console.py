"""The web console in a real headless browser (Debian's chromium, driven by Playwright)
against a whole mesh: sign-in by role, the DLP playground, a request's story, budgets and
spend, and an approval decided by clicking (issue 15)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from schemas.events import ChatMessage, RequestResult, ToolCallResult
from stellwerk.client import StellwerkClient
from stellwerk.supervisor import DEFAULT_SCALE, Mesh, free_port
from stellwerk.tools_client import ToolsClient
from tests.integration.mesh import running_mesh, write_test_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium on a closed network: no background connections, no sandbox as root.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
OPERATOR, APPROVER, ANALYST = "sk-stellwerk-operator", "sk-stellwerk-approver", "sk-stellwerk-demo"
OTHER_TENANT_APPROVER = "sk-stellwerk-clinic-approver"
AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(os.environ.get("STELLWERK_TEST_ARTIFACTS", ".stellwerk/test-artifacts")) / "console"
EMAIL = "erika.mustermann@example.org"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("console")
    config = write_test_config(root, console_port=free_port())
    with running_mesh(root, config, scale={**DEFAULT_SCALE, "console": 1}) as running:
        yield running


@pytest.fixture(scope="module")
def browser(mesh: Mesh) -> Iterator[Browser]:
    # After the mesh: Playwright's sync API keeps an event loop running on this thread, and
    # the mesh fixture starts with asyncio.run.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield launched
        launched.close()


def signed_in(browser: Browser, mesh: Mesh, key: str) -> Page:
    page = browser.new_context().new_page()
    page.goto(mesh.console_url + "/")
    expect(page).to_have_url(mesh.console_url + "/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    return page


def test_only_console_roles_sign_in(browser: Browser, mesh: Mesh) -> None:
    page = signed_in(browser, mesh, ANALYST)
    expect(page.get_by_role("alert")).to_contain_text("does not open the console")
    page = signed_in(browser, mesh, "sk-wrong")
    expect(page.get_by_role("alert")).to_be_visible()
    page = signed_in(browser, mesh, APPROVER)
    expect(page.locator("header")).to_contain_text("claims-approver")
    page.goto(mesh.console_url + "/budgets")  # an approver has no business with budgets
    expect(page.locator("h1")).to_have_text("Not for your role")


def test_dlp_playground_shows_what_the_running_service_sees(browser: Browser, mesh: Mesh) -> None:
    page = signed_in(browser, mesh, OPERATOR)
    page.goto(mesh.console_url + "/dlp")
    page.fill("#text", f"Bitte an {EMAIL} schreiben, IBAN DE89 3704 0044 0532 0130 00.")
    page.click("button[type=submit]")
    expect(page.locator("#action")).to_have_text("redact")
    expect(page.locator("#redacted")).to_contain_text("<EMAIL_ADDRESS>")
    expect(page.locator("#redacted")).not_to_contain_text(EMAIL)
    expect(page.locator("#entities")).to_contain_text("EMAIL_ADDRESS")
    expect(page.locator("#entities")).to_contain_text("IBAN_CODE")  # with its span and score
    expect(page.locator("#entities tr", has_text="EMAIL_ADDRESS")).to_contain_text("9–37")
    shot(page, "dlp")


def test_request_story_from_the_audit_trail(browser: Browser, mesh: Mesh) -> None:
    response = httpx.post(mesh.gateway_url + "/v1/chat/completions", timeout=60,
                          headers={"Authorization": f"Bearer {ANALYST}"},
                          json={"model": "stellwerk", "messages": [{"role": "user", "content": "Hallo Konsole"}]})
    request_id = response.headers["x-stellwerk-request-id"]
    page = signed_in(browser, mesh, OPERATOR)
    page.goto(mesh.console_url + "/requests")
    page.fill("input[name=request_id]", request_id)
    page.click("button[type=submit]")
    story = page.locator("#story")
    expect(story).to_contain_text(request_id)
    stages = page.locator("tr.step td:nth-child(3)")
    expect(stages.first).to_be_visible()
    seen = set(stages.all_inner_texts())
    assert {"gateway", "dlp_input", "router", "inference", "dlp_output"} <= seen
    expect(page.locator("#chain")).to_have_text("verified")
    shot(page, "request-story")
    expect(story).not_to_contain_text("Hallo Konsole")  # the story is metadata only


def test_budgets_and_spend(browser: Browser, mesh: Mesh) -> None:
    httpx.post(mesh.gateway_url + "/v1/chat/completions", timeout=60, headers={"Authorization": f"Bearer {ANALYST}"},
               json={"model": "stellwerk", "messages": [{"role": "user", "content": "Budget"}]})
    page = signed_in(browser, mesh, OPERATOR)
    page.goto(mesh.console_url + "/budgets")
    expect(page.locator("#budgets")).to_contain_text("acme-monthly")
    expect(page.locator("#routes")).to_contain_text("local-vllm")
    expect(page.locator("svg.chart").first).to_be_visible()
    shot(page, "budgets")


def test_an_approver_decides_a_critical_call_by_clicking(browser: Browser, mesh: Mesh) -> None:
    result: list[ToolCallResult] = []

    async def call() -> None:
        nc = await nats.connect(mesh.url)
        try:
            agent = ToolsClient(nc, tenant="acme-insurance", business_unit="claims", user_role="support-agent",
                                agent_id="console-bot", user_id="erika")
            result.append(await agent.call("tickets.create_ticket", {"title": "Zebrafink Konsole"}, timeout_s=90))
        finally:
            await nc.drain()

    caller = threading.Thread(target=lambda: asyncio.run(call()))
    caller.start()
    page = signed_in(browser, mesh, APPROVER)
    page.goto(mesh.console_url + "/approvals")
    card = page.locator(".approval", has_text="console-bot")
    expect(card).to_be_visible(timeout=30_000)  # the page refreshes itself every 5 s
    expect(card).to_contain_text("tickets.create_ticket")
    expect(card).to_contain_text("/title")  # the argument's shape …
    expect(card).not_to_contain_text("Zebrafink")  # … never its value
    shot(page, "approvals")
    other = signed_in(browser, mesh, OTHER_TENANT_APPROVER)  # the clinic's approver: another tenant
    other.goto(mesh.console_url + "/approvals")
    expect(other.locator("h1")).to_contain_text("Approvals")
    expect(other.locator(".approval", has_text="console-bot")).to_have_count(0)
    card.locator("button[name=approve]").click()
    expect(page.locator("#notice")).to_have_text("approved")
    caller.join(timeout=60)
    assert result and result[0].status == "ok", result


def axe_violations(page: Page) -> list[dict[str, str]]:
    """axe-core's violations on the page as it stands."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => JSON.stringify(await axe.run(document, {resultTypes: ['violations']}))")
    violations: list[dict[str, str]] = json.loads(result)["violations"]
    return violations


def shot(page: Page, name: str) -> None:
    """Each page as a test artefact (CI keeps the directory)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_operator_pages_routing_status_and_keys(browser: Browser, mesh: Mesh) -> None:
    page = signed_in(browser, mesh, OPERATOR)
    page.goto(mesh.console_url + "/routing")
    expect(page.locator("#routes")).to_contain_text("local-embeddings")
    page.select_option("select[name=sensitivity]", "highly_confidential")
    page.click("#explain button[type=submit]")
    expect(page.locator("#explained")).to_contain_text("sensitivity.local_only")
    expect(page.locator("#rules")).to_contain_text("default.local_first")
    shot(page, "routing")
    page.goto(mesh.console_url + "/status")
    expect(page.locator("#workers")).to_contain_text("router")
    expect(page.locator("#consumers")).to_contain_text("inference")
    shot(page, "status")
    page.goto(mesh.console_url + "/keys")
    page.fill("#create-key input[name=tenant]", "acme-insurance")
    page.fill("#create-key input[name=business_unit]", "claims")
    page.fill("#create-key input[name=role]", "analyst")
    page.click("#create-key button[type=submit]")
    notice = page.locator("#new-key")
    expect(notice).to_contain_text("sk-stellwerk-")
    key = next(word for word in notice.inner_text().split() if word.startswith("sk-stellwerk-"))
    key_id = page.locator("#new-key code").first.inner_text()

    def status_with(presented: str) -> int:
        return httpx.get(mesh.gateway_url + "/v1/models", headers={"Authorization": f"Bearer {presented}"}).status_code

    deadline = time.monotonic() + 10
    while status_with(key) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status_with(key) == 200  # the gateway follows the keys bucket
    page.click(f"button[aria-label='Revoke {key_id}']")
    expect(page.locator("#keys tr", has_text=key_id)).to_contain_text("revoked")
    deadline = time.monotonic() + 10
    while status_with(key) != 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status_with(key) == 401


def test_a_form_from_another_site_is_refused(browser: Browser, mesh: Mesh) -> None:
    page = signed_in(browser, mesh, OPERATOR)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    forged = httpx.post(mesh.console_url + "/dlp", data={"text": "x", "csrf": "forged"}, cookies=cookies)
    assert forged.status_code == 403


@pytest.mark.skipif(not AXE.exists(), reason="axe-core not installed (npm ci --prefix tests/console/axe)")
def test_every_page_passes_axe_without_serious_violations(browser: Browser, mesh: Mesh) -> None:
    page = signed_in(browser, mesh, OPERATOR)
    found: dict[str, list[str]] = {}
    for path in ("/", "/approvals", "/guard-reviews", "/requests", "/budgets", "/dlp", "/routing", "/status", "/keys", "/login"):
        page.goto(mesh.console_url + path)
        serious = [v["id"] for v in axe_violations(page) if v["impact"] in ("serious", "critical")]
        if serious:
            found[path] = serious
    assert not found, found
    page.goto(mesh.console_url + "/dlp")  # keyboard only: tab to the text area, type, submit
    page.keyboard.press("Tab")
    for _ in range(12):
        if page.evaluate("document.activeElement && document.activeElement.id") == "text":
            break
        page.keyboard.press("Tab")
    page.keyboard.type("Mail an erika.mustermann@example.org")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#action")).to_have_text("redact")


@pytest.mark.skipif(not AXE.exists(), reason="axe-core not installed (npm ci --prefix tests/console/axe)")
def test_an_operator_resolves_a_guard_review_by_clicking(browser: Browser, mesh: Mesh) -> None:
    """Guard reviews (issue 16) in the browser: a real chat the default guardrail policy lets
    through with ``review`` (legal advice in decision support) is listed with its rule — not
    its text —, resolved with a click and gone from the open list; the page passes axe."""
    question = "Should I sue my neighbour? Which lawyer should I take to court?"
    result: list[RequestResult] = []

    async def ask() -> None:
        nc = await nats.connect(mesh.url)
        try:
            result.append(await StellwerkClient(nc).chat(
                [ChatMessage(role="user", content=question)], tenant="acme-insurance", business_unit="claims",
                user_role="analyst", usecase_class="decision_support", timeout_s=60))
        finally:
            await nc.drain()

    # Its own thread: Playwright's sync API keeps an event loop running on this one.
    asker = threading.Thread(target=lambda: asyncio.run(ask()))
    asker.start()
    asker.join(timeout=90)
    assert result and result[0].status == "ok", result
    request_id = result[0].request_id
    page = signed_in(browser, mesh, OPERATOR)
    page.goto(mesh.console_url + "/guard-reviews")
    expect(page.locator("h1")).to_contain_text("Guard reviews")
    card = page.locator(".review", has_text=request_id)
    expect(card).to_be_visible()  # filed before the caller had the answer (services.dlp.reviews)
    expect(card).to_contain_text("guard.review.topic.legal_advice")
    expect(card).to_contain_text("decision_support")
    expect(page.locator("#reviews")).not_to_contain_text("neighbour")  # metadata only, never the text
    expect(page.locator("#reviews")).not_to_contain_text("lawyer")
    assert [v["id"] for v in axe_violations(page)] == []
    shot(page, "guard-reviews")
    card.locator("button[name=confirm]").click()
    expect(page.locator("#notice")).to_have_text("confirmed")
    expect(page.locator(".review", has_text=request_id)).to_have_count(0)  # gone from the open list
    assert [v["id"] for v in axe_violations(page)] == []  # the page with its notice, too
    page.goto(mesh.console_url + "/guard-reviews?resolved=true")
    expect(page.locator(".review", has_text=request_id)).to_contain_text("confirmed by console-operator")
