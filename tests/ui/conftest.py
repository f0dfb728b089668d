"""Browser fixtures: Debian's chromium driven by Playwright, against the session's real stack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from cli.stack import Stack
from tests.ui.accounts import Account, create_account

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
__all__ = ["Account", "create_account"]


@pytest.fixture(scope="session")
def playwright(stack: Stack) -> Iterator[Playwright]:
    # After the stack: Playwright's sync API holds an event loop in this thread, and the stack's
    # set-up (migrations) runs asyncio.run.
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield b
    b.close()


@pytest.fixture
def new_context(browser: Browser, stack: Stack) -> Iterator[Any]:
    """`new_context(width=1280)`: a fresh browser profile (cookies) on the stack's API.

    CSP is bypassed only so the test can inject axe-core; the pages' own CSP is asserted
    separately on the response headers."""
    made: list[BrowserContext] = []

    def make(width: int = 1280, height: int = 900) -> BrowserContext:
        ctx = browser.new_context(
            base_url=stack.api_url, viewport={"width": width, "height": height}, bypass_csp=True
        )
        ctx.set_default_timeout(30_000)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def sign_in(page: Page, account: Account, next_path: str = "/admin") -> None:
    page.goto(next_path)
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/admin/login" not in url)


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Serious or critical axe-core violations on the current page."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document)")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def shoot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
