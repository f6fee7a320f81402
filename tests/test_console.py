"""The run console (/console) in a real browser: Playwright drives Debian's Chromium against the real
gateway and server (in this event loop). A run pauses and completes after Approve (or Reject), a
slow run streams live and is cancelled, the list filters and follows state changes, the API key
field works with auth on, and a failed webhook delivery is sent again with Retry.

Every state is kept as a screenshot under $AGENTRUN_CONSOLE_SHOTS (else the test's tmp_path);
AGENTRUN_CONSOLE_README_PNG=docs/console.png makes the approval test write the README's picture."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Locator, Page, async_playwright, expect

from server.webhooks.deliverer import WebhookSettings
from tests import gateway_harness
from tests.conftest import Launcher
from tests.gateway_harness import Gateway, GatewayLauncher
from tests.test_auth import Tenants, tenants  # noqa: F401 - the fixture
from tests.test_webhooks import Receiver

gateways = gateway_harness.gateways
database_url = gateway_harness.database_url

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox as root; no GPU, and nothing that reaches for the network (this machine has none:
# Chromium would stall on the lookups).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous: two shared cores run the browser, the server and other tests at once.
expect.set_options(timeout=20_000)


@dataclasses.dataclass
class Console:
    page: Page
    shots: Path
    name: str
    taken: int = 0

    async def shot(self, state: str) -> None:
        self.taken += 1
        await self.page.screenshot(path=self.shots / f"{self.name}-{self.taken:02d}-{state}.png")

    async def start(self, agent: str, message: str) -> str:
        """Starts a run with the console's form; returns its id once the detail view shows it."""
        before = self.page.url
        await self.page.select_option("#new-agent", agent)
        await self.page.fill("#new-message", message)
        await self.page.click("#new-run button[type=submit]")
        await self.page.wait_for_url(lambda url: "#/runs/" in url and url != before)
        run_id = self.page.url.split("#/runs/", 1)[1]
        await expect(self.page.locator("#detail dl.meta")).to_contain_text(run_id)
        return run_id

    def state(self) -> Locator:
        return self.page.locator("#run-state")

    def row(self, run_id: str) -> Locator:
        return self.page.locator(f'#runs tbody tr[data-id="{run_id}"]')

    def rows(self) -> Locator:
        return self.page.locator("#runs tbody tr:not(.empty)")


OpenConsole = Callable[..., Awaitable[Console]]


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium: in CI (scripts/dev test installs it) a missing one fails the tests."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: apt-get install chromium (scripts/dev test does)"
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("AGENTRUN_CONSOLE_SHOTS") or tmp_path / "shots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
async def open_console(
    browser: Browser, gateways: GatewayLauncher, shots: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenConsole]:
    """Opens the console of a gateway in a fresh browser context (its own storage); at the end the
    last state is kept as a screenshot (the one to look at when a test fails) and the page must not
    have thrown or logged an error. Depends on `gateways`, so pages close before their gateways stop."""
    async with contextlib.AsyncExitStack() as stack:
        opened: list[tuple[Console, list[str]]] = []

        async def open_(gw: Gateway, fragment: str = "") -> Console:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            stack.push_async_callback(context.close)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))

            # Logged errors too (a blocked script or style, say), but not the refused calls of the
            # auth test, which the page reports itself.
            def logged(message: ConsoleMessage) -> None:
                if message.type == "error" and "Failed to load resource" not in message.text:
                    errors.append(message.text)

            page.on("console", logged)
            console = Console(page, shots, request.node.name)
            opened.append((console, errors))
            await page.goto(f"{gw.running.url}/console{fragment}")
            return console

        yield open_
        for console, errors in opened:
            await console.shot("last")
            assert not errors, f"the page threw or logged errors: {errors}"


async def test_an_approval_run_pauses_and_goes_on_after_approve_or_reject(
    gateways: GatewayLauncher, open_console: OpenConsole
) -> None:
    gw = await gateways()
    await gw.run("tools", "what is 6*7?", wait=True)  # company in the list (and the README's picture)
    await gw.run("echo", "hello", wait=True)
    console = await open_console(gw)
    page = console.page
    await expect(console.rows()).to_have_count(2)
    run_id = await console.start("approval", "send the report")
    await expect(console.state()).to_have_text("PAUSED")
    await expect(page.locator("#pending")).to_contain_text("send_email is waiting for approval")
    await expect(page.locator("#pending pre")).to_contain_text("team@example.com")
    await expect(page.locator("#transcript .reasoning")).to_have_text(
        "Sending an email needs a human's approval."
    )
    await expect(console.row(run_id).locator(".state")).to_have_text("PAUSED")
    assert (await gw.get(run_id))["state"] == "RUN_STATE_PAUSED"
    await console.shot("paused")
    if readme := os.environ.get("AGENTRUN_CONSOLE_README_PNG"):
        await page.screenshot(path=readme)

    await page.get_by_role("button", name="Approve").click()
    await expect(console.state()).to_have_text("COMPLETED")
    await expect(page.locator("#transcript .content")).to_have_text("The email was sent.")
    await expect(page.locator("#transcript .tool")).to_contain_text("→ send_email")
    await expect(page.locator("#transcript .tool .tool-result")).to_contain_text("←")
    await expect(page.locator("#transcript .marker.stop")).to_have_text("completed")
    await expect(page.locator("#result .output")).to_have_text("The email was sent.")
    await expect(page.locator("#pending")).to_be_hidden()
    await expect(console.row(run_id).locator(".state")).to_have_text("COMPLETED")
    await expect(page.locator("#events tbody tr")).to_have_count(int((await gw.get(run_id))["lastSeq"]))
    await expect(page.locator(".run-header.live")).to_have_count(0)  # the stream ended with the run
    run = await gw.get(run_id)
    assert run["state"] == "RUN_STATE_COMPLETED" and run["decisions"][0]["decision"] == "DECISION_APPROVE"
    await console.shot("completed")

    rejected = await console.start("approval", "email the board")
    await expect(console.state()).to_have_text("PAUSED")
    await page.fill("#pending .reason", "not today")
    await page.get_by_role("button", name="Reject").click()
    await expect(console.state()).to_have_text("COMPLETED")
    refused = "The email was not sent because the request was refused: not today."
    await expect(page.locator("#transcript .content")).to_have_text(refused)
    await expect(page.locator("#transcript .tool.failed")).to_contain_text("refused by a human: not today")
    assert (await gw.get(rejected))["decisions"][0]["decision"] == "DECISION_REJECT"
    await console.shot("rejected")


async def test_a_slow_run_streams_live_and_is_cancelled(
    gateways: GatewayLauncher, open_console: OpenConsole
) -> None:
    gw = await gateways()
    console = await open_console(gw)
    page = console.page
    # A quick run may end while its page loads: the transcript still gets every event.
    await console.start("echo", "over before it is shown")
    await expect(console.state()).to_have_text("COMPLETED")
    await expect(page.locator("#transcript .content")).to_have_text("over before it is shown")
    await expect(page.locator("#transcript .marker.stop")).to_have_text("completed")
    run_id = await console.start("slow", "tokens=600 delay_ms=50")
    await expect(console.state()).to_have_text("RUNNING")
    await expect(page.locator(".run-header.live")).to_be_visible()
    # Tokens arrive one by one over the stream: the text grows while the page stays as it is.
    content = page.locator("#transcript .content")
    await expect(content).to_contain_text("t3 ")
    await expect(content).to_contain_text("t12 ")
    await console.shot("running")

    await page.click("#cancel-run")
    await expect(console.state()).to_have_text("CANCELLED")
    await expect(page.locator("#transcript .marker.error")).to_contain_text("CANCELLED")
    await expect(page.locator("#result .error")).to_contain_text("CANCELLED")
    await expect(page.locator("#cancel-run")).to_be_disabled()
    await expect(page.locator(".run-header.live")).to_have_count(0)
    await expect(console.row(run_id).locator(".state")).to_have_text("CANCELLED")
    run = await gw.get(run_id)
    assert run["state"] == "RUN_STATE_CANCELLED" and "t599" not in (await content.text_content() or "")
    await console.shot("cancelled")


async def test_the_list_filters_and_follows_state_changes(
    gateways: GatewayLauncher, open_console: OpenConsole
) -> None:
    gw = await gateways()
    await gw.run("echo", "first", wait=True, sessionId="s-one")
    await gw.run("echo", "second", wait=True, sessionId="s-two")
    await gw.run("slow", "tokens=1 delay_ms=0", wait=True)
    paused = await gw.run("approval", "mail it", wait=True)
    console = await open_console(gw)
    page = console.page
    await expect(console.rows()).to_have_count(4)
    await expect(page.locator("#runs-count")).to_have_text("(4)")

    await page.select_option("#filter-agent", "echo")
    await expect(console.rows()).to_have_count(2)
    await page.fill("#filter-session", "s-two")
    await expect(console.rows()).to_have_count(1)
    await expect(console.rows()).to_contain_text("second")
    await console.shot("agent-and-session")

    await page.select_option("#filter-agent", "")
    await page.fill("#filter-session", "")
    await page.select_option("#filter-state", "RUN_STATE_PAUSED")
    await expect(console.rows()).to_have_count(1)
    await expect(console.row(paused["id"])).to_contain_text("approval")
    await page.select_option("#filter-state", "RUN_STATE_COMPLETED")
    await expect(console.rows()).to_have_count(3)
    # Decided elsewhere: the open list catches up by itself.
    decided = await gw.http.post(f"/v1/runs/{paused['id']}:continue", json={"decision": "DECISION_APPROVE"})
    assert decided.status_code == 200, decided.text
    await expect(console.rows()).to_have_count(4)
    await expect(console.row(paused["id"]).locator(".state")).to_have_text("COMPLETED")
    await console.shot("completed-filter")

    await page.select_option("#filter-state", "")
    await page.fill("#filter-after", "2999-01-01T00:00")
    await expect(page.locator("#runs tbody tr.empty")).to_have_text("No runs match.")
    await expect(console.rows()).to_have_count(0)
    await console.shot("time-filter-empty")
    await page.fill("#filter-after", "2000-01-01T00:00")
    await page.fill("#filter-before", "2999-01-01T00:00")
    await expect(console.rows()).to_have_count(4)


async def test_with_auth_on_the_api_key_field_authorizes_every_call(
    launch: Launcher,
    gateways: GatewayLauncher,
    open_console: OpenConsole,
    tenants: Tenants,  # noqa: F811
) -> None:
    gw = await gateways(await launch(auth=tenants.settings))
    console = await open_console(gw)
    page = console.page
    streams: list[int] = []
    page.on("response", lambda r: streams.append(r.status) if ":stream" in r.url else None)
    notice = page.locator("#notice")
    await expect(notice).to_contain_text("(401): enter an API key above.")
    await expect(console.rows()).to_have_count(0)
    await console.shot("no-key")

    await page.fill("#api-key", "ar_not-a-key")
    await page.click("#key-form button[type=submit]")
    await expect(notice).to_contain_text("(401)")
    await page.fill("#api-key", tenants.a_user)
    await page.click("#key-form button[type=submit]")
    await expect(page.locator("#new-agent option[value=approval]")).to_have_count(1)
    await expect(notice).not_to_contain_text("401")
    run_id = await console.start("approval", "send it with a key")
    await expect(console.state()).to_have_text("PAUSED")
    await page.get_by_role("button", name="Approve").click()
    await expect(console.state()).to_have_text("COMPLETED")
    await expect(page.locator("#transcript .content")).to_have_text("The email was sent.")
    assert streams and set(streams) == {200}, streams  # the streams carried the key too
    await console.shot("with-key")

    stored = await page.evaluate("[sessionStorage.length, localStorage.length]")
    assert stored == [1, 0]  # this tab only, unless "remember" is ticked
    await page.reload()
    await expect(page.locator("#api-key")).to_have_value(tenants.a_user)
    await expect(console.row(run_id).locator(".state")).to_have_text("COMPLETED")
    await page.click("#forget-key")
    await expect(notice).to_contain_text("(401)")
    assert await page.evaluate("[sessionStorage.length, localStorage.length]") == [0, 0]


async def test_a_failed_webhook_delivery_is_sent_again_with_retry(
    launch: Launcher, gateways: GatewayLauncher, open_console: OpenConsole
) -> None:
    receiver = Receiver(statuses=[500])
    await receiver.start()
    try:
        webhooks = WebhookSettings(allow="127.0.0.1", max_attempts=1, backoff_s=0.05, poll_interval_s=0.05)
        gw = await gateways(await launch(webhooks=webhooks))
        run = await gw.run("echo", "tell the hook", wait=True, webhookUrl=receiver.url)
        console = await open_console(gw, f"#/runs/{run['id']}")
        page = console.page
        await expect(console.state()).to_have_text("COMPLETED")
        delivery = page.locator("#deliveries tbody tr")
        await expect(delivery.locator(".delivery-state")).to_have_text("FAILED")
        await expect(delivery).to_contain_text("HTTP 500")
        await console.shot("delivery-failed")

        await delivery.get_by_role("button", name="Retry").click()
        await expect(delivery.locator(".delivery-state")).to_have_text("DELIVERED")
        await expect(delivery).to_contain_text("HTTP 200")
        ids = receiver.ids()
        assert len(ids) == 2 and ids[0] == ids[1]  # the same delivery, sent again
        await console.shot("delivery-retried")
    finally:
        await receiver.stop()


async def test_the_page_and_its_assets_are_served_from_the_package(
    gateways: GatewayLauncher,
) -> None:
    gw = await gateways()
    page = await gw.http.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "https://" not in page.text and "http://" not in page.text  # nothing from a CDN
    for name in re.findall(r'(?:src|href)="/console/([^"]+)"', page.text):
        asset = await gw.http.get(f"/console/{name}")
        assert asset.status_code == 200, name
    for module in ("main.js", "detail.js", "api.js", "dom.js"):
        source = (await gw.http.get(f"/console/{module}")).text
        assert source.startswith("//") and "innerHTML" not in source, module
    assert (await gw.http.get("/console/index.html")).status_code == 404
    assert (await gw.http.get("/console/..%2Fconsole.py")).status_code == 404
