"""The web console in a real headless browser (Debian's chromium, driven by Playwright)
against a whole mesh: sign-in by role, the DLP playground, a request's story, budgets and
spend, and an approval decided by clicking (issue 15)."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from schemas.events import ToolCallResult
from stellwerk.supervisor import DEFAULT_SCALE, Mesh, free_port
from stellwerk.tools_client import ToolsClient
from tests.integration.mesh import running_mesh, write_test_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium on a closed network: no background connections, no sandbox as root.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
OPERATOR, APPROVER, ANALYST = "sk-stellwerk-operator", "sk-stellwerk-approver", "sk-stellwerk-demo"
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


def test_dlp_playground_shows_what_the_running_service_sees(browser: Browser, mesh: Mesh, tmp_path: Path) -> None:
    page = signed_in(browser, mesh, OPERATOR)
    page.goto(mesh.console_url + "/dlp")
    page.fill("#text", f"Bitte an {EMAIL} schreiben, IBAN DE89 3704 0044 0532 0130 00.")
    page.click("button[type=submit]")
    expect(page.locator("#action")).to_have_text("redact")
    expect(page.locator("#redacted")).to_contain_text("<EMAIL_ADDRESS>")
    expect(page.locator("#redacted")).not_to_contain_text(EMAIL)
    expect(page.locator("#entities")).to_contain_text("EMAIL_ADDRESS")
    page.screenshot(path=str(tmp_path / "dlp.png"), full_page=True)


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
    expect(story).not_to_contain_text("Hallo Konsole")  # the story is metadata only


def test_budgets_and_spend(browser: Browser, mesh: Mesh) -> None:
    httpx.post(mesh.gateway_url + "/v1/chat/completions", timeout=60, headers={"Authorization": f"Bearer {ANALYST}"},
               json={"model": "stellwerk", "messages": [{"role": "user", "content": "Budget"}]})
    page = signed_in(browser, mesh, OPERATOR)
    page.goto(mesh.console_url + "/budgets")
    expect(page.locator("#budgets")).to_contain_text("acme-monthly")
    expect(page.locator("#routes")).to_contain_text("local-vllm")
    expect(page.locator("svg.chart").first).to_be_visible()


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
    card.locator("button[name=approve]").click()
    expect(page.locator("#notice")).to_have_text("approved")
    caller.join(timeout=60)
    assert result and result[0].status == "ok", result
