"""Money in the browser: credits granted on a team's page and seen in its ledger (and a job's
charge after it), a refused grant, the budget and billing form, a viewer who cannot change them,
spend against budgets on the overview, the portal's credits page, accessibility of these pages,
and the portal framed by an allowed origin and refused to another."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from cli.stack import Proc, Stack, free_port, start_api
from tests.conftest import TeamClient
from tests.ui.conftest import Account, axe_violations, create_account, shoot, sign_in

pytestmark = pytest.mark.browser
MODEL = "gpt-4o-mini"
NewContext = Callable[..., BrowserContext]


@pytest.fixture(scope="module")
def owner(stack: Stack) -> Account:
    return create_account(stack, "owner")


def _job(team: TeamClient, text: str) -> dict[str, Any]:
    job = team.submit(
        [{"custom_id": "a", "model": MODEL, "messages": [{"role": "user", "content": text}]}]
    )
    return team.wait(job["id"])


def _ledger_rows(page: Page) -> list[str]:
    return page.locator('[data-testid="ledger"] tbody tr').all_inner_texts()


def test_grant_credits_and_see_the_entry_the_balance_and_a_jobs_charge(
    new_context: NewContext, owner: Account, admin: httpx.Client, team: TeamClient
) -> None:
    page = new_context().new_page()
    sign_in(page, owner, f"/admin/teams/{team.team_id}")
    expect(page.get_by_test_id("credits-balance")).to_have_text("0")
    expires = (datetime.now(UTC) + timedelta(days=7)).replace(second=0, microsecond=0)
    page.get_by_label("Credits to grant").fill("10")
    page.get_by_label("Expires (UTC; empty: never)").fill(expires.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Note").fill("browser grant")
    page.get_by_role("button", name="Grant credits").click()
    expect(page.get_by_test_id("granted")).to_contain_text("Granted: ledger entry")
    expect(page.get_by_test_id("credits-balance")).to_have_text("10")
    (row,) = _ledger_rows(page)
    assert "grant" in row and "+10" in row and "browser grant" in row
    grants = page.locator('[data-testid="grants"] tbody tr').all_inner_texts()
    assert len(grants) == 1 and expires.strftime("%Y-%m-%d %H:%M") in grants[0]
    # The same figures as the API.
    ledger = admin.get(f"/api/admin/teams/{team.team_id}/ledger").json()["data"]
    assert [(e["kind"], Decimal(e["balance_after"])) for e in ledger] == [("grant", Decimal(10))]

    # A job the team runs is charged one credit (job mode) when it succeeds: its entry links it.
    job = _job(team, "charge me")
    assert job["status"] == "succeeded"
    page.reload()
    expect(page.get_by_test_id("credits-balance")).to_have_text("9")
    newest = page.locator('[data-testid="ledger"] tbody tr').first
    expect(newest).to_contain_text("charge")
    expect(newest).to_contain_text("-1")
    expect(newest.get_by_role("link", name=job["id"])).to_be_visible()
    shoot(page, "admin-team-credits-1280")

    # A rule the ledger refuses: the message by the form, nothing written.
    page.get_by_label("Credits to grant").fill("-3")
    page.get_by_role("button", name="Grant credits").click()
    expect(page.get_by_test_id("grant-error")).to_have_text(
        "a grant is positive; use kind adjustment"
    )
    expect(page.get_by_label("Credits to grant")).to_have_value("-3")
    expect(page.get_by_label("Credits to grant")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("credits-balance")).to_have_text("9")
    assert len(_ledger_rows(page)) == 2
    shoot(page, "admin-team-grant-refused-1280")
    assert len(admin.get(f"/api/admin/teams/{team.team_id}/ledger").json()["data"]) == 2


def test_edit_the_budget_and_billing_mode_and_they_stick(
    new_context: NewContext, owner: Account, admin: httpx.Client, team: TeamClient
) -> None:
    page = new_context().new_page()
    sign_in(page, owner, f"/admin/teams/{team.team_id}")
    page.get_by_label("Budget in USD (empty: none)").fill("4.5")
    page.get_by_label("Period (UTC calendar)").select_option("day")
    page.get_by_label("Thresholds, % of budget").fill("50, 90")
    page.get_by_label("At the limit").select_option("pause")
    page.locator("#b-mode").select_option("tokens")
    page.get_by_label("Tokens per credit (tokens mode)").fill("500")
    page.get_by_label("Price markup %").fill("15")
    page.get_by_label("Per-model prices").fill("gpt-4o-mini 0.000001 0.000002")
    page.get_by_label("Largest n (empty: no cap)").fill("1")
    page.get_by_label("Default max_tokens").fill("300")
    page.get_by_role("button", name="Save budget and billing").click()
    expect(page.get_by_test_id("billing-saved")).to_be_visible()
    page.reload()
    expect(page.get_by_label("Budget in USD (empty: none)")).to_have_value("4.5")
    expect(page.get_by_label("Period (UTC calendar)")).to_have_value("day")
    expect(page.get_by_label("At the limit")).to_have_value("pause")
    expect(page.locator("#b-mode")).to_have_value("tokens")
    expect(page.get_by_label("Tokens per credit (tokens mode)")).to_have_value("500")
    expect(page.get_by_label("Per-model prices")).to_have_value("gpt-4o-mini 0.000001 0.000002")
    expect(page.get_by_label("Thresholds, % of budget")).to_have_value("50, 90")
    expect(page.get_by_test_id("budget")).to_contain_text("$4.5 per day")
    t = admin.get(f"/api/admin/teams/{team.team_id}").json()
    assert (t["billing_mode"], t["budget_period"], t["on_limit"]) == ("tokens", "day", "pause")
    assert Decimal(t["budget_usd"]) == Decimal("4.5") and t["budget_thresholds"] == [50, 90]
    assert t["tokens_per_credit"] == 500 and t["max_n"] == 1 and t["default_max_tokens"] == 300
    assert Decimal(t["price_markup_pct"]) == 15
    shoot(page, "admin-team-billing-1280")

    # A refused value: the message, the typed value kept, the saved one unchanged.
    page.get_by_label("Thresholds, % of budget").fill("0")
    page.get_by_role("button", name="Save budget and billing").click()
    expect(page.get_by_test_id("billing-error")).to_contain_text("budget_thresholds")
    expect(page.get_by_label("Thresholds, % of budget")).to_have_value("0")
    assert admin.get(f"/api/admin/teams/{team.team_id}").json()["budget_thresholds"] == [50, 90]

    # The overview lists the team's spend against its new budget.
    page.goto("/admin")
    row = page.locator(f'[data-testid="spend"] tr[data-team="{team.team_id}"]')
    expect(row).to_contain_text("today")
    expect(row).to_contain_text("$4.5")
    expect(row.get_by_role("meter")).to_have_attribute("value", "0.0")
    shoot(page, "admin-overview-spend-1280")


def test_a_viewer_sees_the_money_but_no_form_and_a_forced_post_is_refused(
    new_context: NewContext, stack: Stack, admin: httpx.Client, team: TeamClient
) -> None:
    admin.post(f"/api/admin/teams/{team.team_id}/credits", json={"amount": "3"})
    viewer = create_account(stack, "viewer")
    ctx = new_context()
    page = ctx.new_page()
    sign_in(page, viewer, f"/admin/teams/{team.team_id}")
    expect(page.get_by_test_id("credits-balance")).to_have_text("3")
    expect(page.get_by_test_id("billing-readonly")).to_contain_text("Billing mode")
    for button in ("Grant credits", "Save budget and billing"):
        assert page.get_by_role("button", name=button).count() == 0
    assert page.get_by_label("Credits to grant").count() == 0
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    assert token
    for path, form in (
        (f"/admin/teams/{team.team_id}/credits", {"amount": "1000"}),
        (f"/admin/teams/{team.team_id}/billing", {"budget_usd": "1", "billing_mode": "usd"}),
    ):
        answer = ctx.request.post(path, form={**form, "csrf_token": token})
        assert answer.status == 403, (path, answer.status)
    t = admin.get(f"/api/admin/teams/{team.team_id}").json()
    assert Decimal(t["credits_balance"]) == 3 and t["budget_usd"] is None
    assert t["billing_mode"] == "job"
    shoot(page, "admin-team-money-viewer-1280")


def _portal(ctx: BrowserContext, url: str) -> Page:
    page = ctx.new_page()
    page.goto(url)
    page.get_by_role("button", name="Open the portal").click()
    page.wait_for_url(re.compile(r"/portal$"))
    return page


def test_money_pages_have_no_serious_accessibility_violations_at_1280_and_390_pixels(
    new_context: NewContext,
    owner: Account,
    admin: httpx.Client,
    make_team: Callable[..., TeamClient],
) -> None:
    team = make_team(budget_usd="2", budget_period="week")
    for amount in ("5", "2.5"):
        admin.post(f"/api/admin/teams/{team.team_id}/credits", json={"amount": amount})
    expires = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    admin.post(
        f"/api/admin/teams/{team.team_id}/credits",
        json={"amount": "1", "expires_at": expires, "note": "trial"},
    )
    _job(team, "axe money")
    found: dict[str, Any] = {}
    for width in (1280, 390):
        page = new_context(width=width).new_page()
        sign_in(page, owner, f"/admin/teams/{team.team_id}")
        for path, name, ready in (
            (f"/admin/teams/{team.team_id}", "admin-team-money", "credits-balance"),
            ("/admin", "admin-overview-spend", "spend"),
        ):
            page.goto(path)
            expect(page.get_by_test_id(ready)).to_be_visible()
            found[f"{name}-{width}"] = axe_violations(page)
            shoot(page, f"{name}-{width}")
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), (
                path,
                width,
            )
        # The grant form's refusal, too.
        page.goto(f"/admin/teams/{team.team_id}")
        page.get_by_label("Credits to grant").fill("0")
        page.get_by_role("button", name="Grant credits").click()
        expect(page.get_by_test_id("grant-error")).to_be_visible()
        found[f"admin-team-grant-refused-{width}"] = axe_violations(page)
        link = admin.post(f"/api/admin/teams/{team.team_id}/portal-links").json()["url"]
        portal = _portal(new_context(width=width), link)
        for path in ("/portal/credits", "/portal/usage"):
            portal.goto(path)
            expect(
                portal.get_by_test_id("credits-balance" if "credits" in path else "usage-balance")
            ).to_have_text("7.5")
            name = "portal" + path[len("/portal") :].replace("/", "-")
            found[f"{name}-{width}"] = axe_violations(portal)
            shoot(portal, f"{name}-{width}")
            assert portal.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth + 1"
            ), (path, width)
        rows = portal.goto("/portal/credits")
        assert rows is not None and rows.status == 200
        assert len(portal.locator('[data-testid="ledger"] tbody tr').all()) == 4
        expect(portal.get_by_test_id("budget")).to_contain_text("per week")
    bad = {k: v for k, v in found.items() if v}
    assert bad == {}, json.dumps(bad, indent=2)
    assert len(found) == 2 * 5


# -- the portal in another origin's iframe ----------------------------------------------------


class _Embedder:
    """A page on another origin whose only content is an iframe of `src`."""

    def __init__(self, host: str) -> None:
        self.src = ""
        embedder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (
                    '<!doctype html><html lang="en"><head><title>Embedder</title></head><body>'
                    f'<h1>Host app</h1><iframe id="portal" title="Team portal" src="{embedder.src}"'
                    ' width="1000" height="700"></iframe></body></html>'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.origin = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def embedders() -> Iterator[tuple[_Embedder, _Embedder]]:
    # 127.0.0.2 is another site than the API's 127.0.0.1 (a site is the scheme and the host;
    # an IP address has no registrable domain); 127.0.0.1 on another port is the same site.
    allowed, refused = _Embedder("127.0.0.2"), _Embedder("127.0.0.1")
    yield allowed, refused
    allowed.stop()
    refused.stop()


@pytest.fixture(scope="module")
def framed_api(stack: Stack, embedders: tuple[_Embedder, _Embedder]) -> Iterator[str]:
    """A second API process on the same database, allowing only the first embedder's origin."""
    allowed, _ = embedders
    port = free_port()
    env = {**stack.env, "PORTAL_FRAME_ANCESTORS": allowed.origin}
    proc: Proc = start_api(env, port, stack.log_dir, name="api-framed")
    yield f"http://127.0.0.1:{port}"
    proc.stop()


def _plain_context(browser: Browser, width: int = 1280) -> BrowserContext:
    # Not the fixture's context: that one bypasses CSP (for axe), and CSP is what is tested here.
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    ctx.set_default_timeout(30_000)
    return ctx


def test_the_portal_loads_in_an_allowed_origins_iframe_and_not_in_another(
    browser: Browser,
    admin: httpx.Client,
    framed_api: str,
    embedders: tuple[_Embedder, _Embedder],
    team: TeamClient,
) -> None:
    allowed, refused = embedders
    admin.post(f"/api/admin/teams/{team.team_id}/credits", json={"amount": "4"})
    with httpx.Client(base_url=framed_api, headers=admin.headers, timeout=30) as framed_admin:
        link = framed_admin.post(f"/api/admin/teams/{team.team_id}/portal-links").json()["url"]
        other_link = framed_admin.post(f"/api/admin/teams/{team.team_id}/portal-links").json()[
            "url"
        ]
    answer = httpx.get(link)
    assert answer.status_code == 200, (answer.status_code, answer.text[:300])
    headers = answer.headers
    assert f"frame-ancestors 'self' {allowed.origin}" in headers["content-security-policy"]
    assert "x-frame-options" not in headers

    # Allowed: the magic link opens, its button signs in inside the frame, the pages work there.
    ctx = _plain_context(browser)
    try:
        allowed.src = link
        page = ctx.new_page()
        page.goto(allowed.origin + "/")
        frame = page.frame_locator("#portal")
        frame.get_by_role("button", name="Open the portal").click()
        expect(frame.get_by_role("link", name="Credits")).to_be_visible()
        frame.get_by_role("link", name="Credits").click()
        expect(frame.get_by_test_id("credits-balance")).to_have_text("4")
        (portal_frame,) = [f for f in page.frames if f.url.startswith(framed_api)]
        assert portal_frame.url == framed_api + "/portal/credits"
        (cookie,) = [c for c in ctx.cookies() if c["name"] == "saas_llm_portal"]
        # Cross-site (127.0.0.2 framing 127.0.0.1): only a SameSite=None cookie is sent, None
        # needs Secure (Chromium takes Secure cookies from http://127.0.0.1: loopback is a
        # secure context), and with third-party cookies blocked (as in this incognito-like
        # context) only a Partitioned one is kept, under the embedding site.
        assert cookie["sameSite"] == "None" and cookie["secure"] is True
        assert cookie["httpOnly"] is True
        assert cookie.get("partitionKey") == "http://127.0.0.2", cookie
        shoot(page, "portal-framed-1280")
        # Signing out inside the frame clears the partitioned cookie (a Lax deletion would be
        # ignored in a cross-site frame).
        frame.get_by_role("button", name="Sign out").click()
        expect(
            frame.get_by_role("heading", name="You are signed out of the portal")
        ).to_be_visible()
        assert not [c for c in ctx.cookies() if c["name"] == "saas_llm_portal"]
    finally:
        ctx.close()

    # Not allowed: the same portal framed by an origin not in the list shows nothing of it.
    ctx = _plain_context(browser)
    try:
        refused.src = other_link
        page = ctx.new_page()
        blocked: list[str] = []
        page.on(
            "console", lambda m: blocked.append(m.text) if "frame-ancestors" in m.text else None
        )
        page.goto(refused.origin + "/", wait_until="load")
        expect(page.get_by_role("heading", name="Host app")).to_be_visible()
        frame_el = page.locator("#portal")
        expect(frame_el).to_be_attached()
        frame = frame_el.content_frame
        assert frame is not None
        assert frame.get_by_role("button", name="Open the portal").count() == 0
        (child,) = page.main_frame.child_frames
        assert not child.url.startswith(framed_api + "/portal"), child.url
        assert "Open the portal" not in child.content()
        assert any("frame-ancestors" in m for m in blocked), blocked
        # The link was not spent by the refused frame: it still opens at the top level.
        top = ctx.new_page()
        top.goto(other_link)
        expect(top.get_by_role("button", name="Open the portal")).to_be_visible()
    finally:
        ctx.close()
