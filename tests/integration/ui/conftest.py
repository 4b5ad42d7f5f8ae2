"""The web UI in a real headless Chromium (Debian's `chromium`, driven by Playwright) against the
whole real stack: the commands service (`python -m services.commands`, which serves the UI), the
processor, the delivery worker and the projection worker as subprocesses on topics and a Postgres
schema of their own, the real SMTP sink. Two accounts with one operator each.

Playwright's own browser download is never used: the browser is `shutil.which("chromium")`
(scripts/browser.sh installs it when missing)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from bench.harness.delivery import DeliveryStack
from bench.harness.processor import REPO_ROOT
from bench.harness.projections import drop_schema, new_schema, spawn_projections, with_schema
from bench.harness.spawn import cli
from bench.harness.spawn import until as harness_until

SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery staple"
# Slow enough that a message of a few dozen contacts is seen sending (counts rising), fast
# enough that the tests finish.
DELIVERY_RATE = "8"


@dataclass
class Operator:
    email: str
    name: str
    account: str


@dataclass
class UiStack:
    base_url: str
    stack: DeliveryStack
    dsn: str
    ada: Operator
    eve: Operator
    browser: Browser

    @property
    def sender(self) -> str:
        return self.stack.sender

    async def context(self) -> BrowserContext:
        return await self.browser.new_context(viewport={"width": 1280, "height": 800})

    async def signed_in(self, who: Operator) -> tuple[BrowserContext, Page]:
        context = await self.context()
        page = await context.new_page()
        await sign_in(page, self.base_url, who.email, PASSWORD)
        await page.wait_for_url("**/ui/sent")
        return context, page


async def sign_in(page: Page, base_url: str, email: str, password: str) -> None:
    await page.goto(f"{base_url}/ui/signin")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


def operator_cli(dsn: str, *args: str, stdin: str | None = None) -> str:
    return cli("services.web.operators", dsn, *args, stdin=stdin, timeout=60)


#: How long `until` waits by default before it fails.
WITHIN = 120.0


async def until(what: str, check: Callable[[], Awaitable[Any]], within: float = WITHIN) -> Any:
    """Poll `check` until it returns something truthy (bounded): every UI test waits with it."""
    return await harness_until(what, check, within, every=0.2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ui(
    kafka_bootstrap: str,
    database_url: str,
    smtp_address: tuple[str, int],
    smtp_sink_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[UiStack]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is required: scripts/browser.sh installs it"
    schema = await new_schema(database_url, prefix="tui")
    dsn = with_schema(database_url, schema)
    tmp = tmp_path_factory.mktemp("ui")
    stack = DeliveryStack(kafka_bootstrap, dsn, smtp_address, smtp_sink_url, tmp)
    await stack.start()
    try:
        stack.spawn_dispatcher()
        stack.spawn_delivery(DELIVERY_RATE=DELIVERY_RATE)
        spawn_projections(stack, dsn)
        _, base_url = await stack.start_api(dsn, within=90)
        suffix = uuid.uuid4().hex[:6]
        ada = Operator(f"ada-{suffix}@example.org", "Ada Lovelace", f"ui-a-{suffix}")
        eve = Operator(f"eve-{suffix}@example.org", "Eve Other", f"ui-b-{suffix}")
        for op in (ada, eve):
            operator_cli(
                dsn,
                "create",
                "--account",
                op.account,
                "--email",
                op.email,
                "--name",
                op.name,
                stdin=PASSWORD + "\n",
            )
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                yield UiStack(base_url, stack, dsn, ada, eve, browser)
            finally:
                await browser.close()
    finally:
        await stack.close()
        await drop_schema(database_url, schema)


async def check_page(page: Page, name: str) -> None:
    """Save the page's screenshot under docs/screenshots/ and fail on any serious or critical
    accessibility violation (axe-core)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    results = await Axe().run(page)
    violations: list[dict[str, Any]] = results.response["violations"]
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in violations
        if v.get("impact") in ("serious", "critical")
    ]
    assert not bad, f"{name}: accessibility violations {bad}"


def shot_path(name: str) -> Path:
    return SCREENSHOTS / f"{name}.png"
