"""The dashboard and the portal in a real browser (Debian's chromium through Playwright), against
the real stack: API, worker, LiteLLM proxy, Postgres, Redis; only the model provider is fake."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from cli.stack import Stack
from tests.conftest import TeamClient
from tests.fakes.receiver import Receiver
from tests.harness import wait_until
from tests.ui.conftest import Account, axe_violations, create_account, shoot, sign_in

pytestmark = pytest.mark.browser
MODEL = "gpt-4o-mini"
NewContext = Callable[..., BrowserContext]


@pytest.fixture(scope="module")
def owner(stack: Stack) -> Account:
    return create_account(stack, "owner")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _slug() -> str:
    return "ui-" + uuid.uuid4().hex[:8]


def _csrf(page: Page) -> str:
    value = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    assert value
    return value


def _accept_dialogs(page: Page) -> None:
    page.on("dialog", lambda dialog: dialog.accept())


def test_sign_in_sets_an_httponly_samesite_cookie_and_a_wrong_password_is_refused(
    new_context: NewContext, owner: Account, stack: Stack
) -> None:
    ctx = new_context()
    page = ctx.new_page()
    page.goto("/admin/teams")
    expect(page).to_have_url(re.compile(r"/admin/login\?next=/admin/teams"))
    page.get_by_label("Email").fill(owner.email)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_have_text("Wrong email or password.")
    assert not [c for c in ctx.cookies() if c["name"] == "saas_llm_admin"]
    page.get_by_label("Password").fill(owner.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/admin/teams$"))
    (cookie,) = [c for c in ctx.cookies() if c["name"] == "saas_llm_admin"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/admin"
    # The browser's scripts cannot read it.
    assert "saas_llm_admin" not in page.evaluate("document.cookie")
    headers = httpx.get(stack.api_url + "/admin/login").headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]


def test_a_form_post_without_the_csrf_token_is_refused(
    new_context: NewContext, owner: Account, admin: httpx.Client
) -> None:
    ctx = new_context()
    page = ctx.new_page()
    sign_in(page, owner, "/admin/teams")
    slug = _slug()
    for form in (
        {"team_id": slug, "name": "x"},
        {"team_id": slug, "name": "x", "csrf_token": "forged"},
    ):
        answer = ctx.request.post("/admin/teams", form=form)
        assert answer.status == 403
        assert "CSRF" in answer.text()
    assert admin.get(f"/api/admin/teams/{slug}").status_code == 404
    # The same post with the page's token goes through.
    answer = ctx.request.post(
        "/admin/teams", form={"team_id": slug, "name": "x", "csrf_token": _csrf(page)}
    )
    assert answer.status == 200
    assert admin.get(f"/api/admin/teams/{slug}").status_code == 200


def test_create_a_team_issue_a_key_watch_a_job_finish_live_and_see_its_cost_in_usage(
    new_context: NewContext, owner: Account, stack: Stack, admin: httpx.Client
) -> None:
    ctx = new_context()
    page = ctx.new_page()
    _accept_dialogs(page)
    sign_in(page, owner, "/admin/teams")
    slug = _slug()
    page.get_by_text("Create a team").click()
    page.get_by_label("Team id").fill(slug)
    page.get_by_label("Name", exact=True).fill("Browser team")
    page.get_by_role("button", name="Create team").click()
    expect(page).to_have_url(re.compile(f"/admin/teams/{slug}$"))
    expect(page.get_by_test_id("team-status")).to_have_text("active")
    shoot(page, "admin-team-1280")

    page.get_by_label("Key name").fill("browser")
    page.get_by_role("button", name="Issue key").click()
    key = page.get_by_test_id("new-key").inner_text().strip()
    assert key.startswith("sk-")
    api = httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )

    # A step job is open until we add its call: the page is loaded while it runs, for certain.
    r = api.post("/api/jobs/create", json={"job_type": "browser-test"})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    page.goto(f"/admin/jobs/{job_id}")
    expect(page.get_by_test_id("job-status")).to_have_text("open")
    page.evaluate("window.__sameDocument = 'yes'")
    r = api.post(
        f"/api/jobs/{job_id}/calls",
        json={
            "custom_id": "hello",
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hello from the browser"}],
        },
    )
    assert r.status_code == 202, r.text
    assert api.post(f"/api/jobs/{job_id}/complete").status_code == 200
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=60_000)
    assert page.evaluate("window.__sameDocument") == "yes"  # updated live, not reloaded
    job = api.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    assert job["cost_usd"] not in ("0", None)
    expect(page.get_by_test_id("job-cost")).to_have_text("$" + job["cost_usd"])
    expect(page.get_by_text("Say hello from the browser").first).to_be_visible()
    shoot(page, "admin-job-1280")

    page.goto(f"/admin/usage?team_id={slug}")
    expect(page.locator(f'[data-testid="usage-totals"] td[data-team="{slug}"]')).to_have_text(
        "$" + job["cost_usd"]
    )
    expect(page.locator('[data-chart="cost-data"] canvas').first).to_be_visible()
    shoot(page, "admin-usage-1280")
    csv = ctx.request.get(f"/admin/usage.csv?team_id={slug}")
    assert csv.status == 200
    lines = csv.text().strip().splitlines()
    assert lines[0].startswith("day,team_id,model,calls")
    (row,) = [line.split(",") for line in lines[1:] if f",{slug}," in line]
    assert row[2].endswith(MODEL) and row[3] == "1"  # the model that served it
    assert Decimal(row[6]) == Decimal(job["cost_usd"])

    # Key revoke from the team page: the key stops working.
    page.goto(f"/admin/teams/{slug}")
    page.get_by_role("button", name=re.compile("Revoke key")).click()
    expect(page.get_by_text("revoked")).to_be_visible()
    assert api.get("/api/jobs").status_code == 401

    # Every action is in the audit log, with who and from where.
    page.goto("/admin/audit?q=" + slug)
    rows = page.locator('[data-testid="audit"] tbody tr')
    texts = rows.all_inner_texts()
    assert any("team.create" in t and owner.email in t and "127.0.0.1" in t for t in texts)
    assert any("key.create" in t for t in texts)
    assert any("key.revoke" in t for t in texts)
    api.close()


def test_admin_api_actions_are_audited(
    new_context: NewContext, owner: Account, admin: httpx.Client
) -> None:
    slug = _slug()
    assert admin.post("/api/admin/teams", json={"team_id": slug, "name": slug}).status_code == 201
    assert admin.post(f"/api/admin/teams/{slug}/suspend").status_code == 200
    page = new_context().new_page()
    sign_in(page, owner, f"/admin/audit?q={slug}")
    texts = page.locator('[data-testid="audit"] tbody tr').all_inner_texts()
    assert any("POST /api/admin/teams" in t and "admin-api-key" in t and "api" in t for t in texts)
    assert any("/suspend" in t for t in texts)


def test_a_viewer_sees_but_cannot_change_anything(
    new_context: NewContext, owner: Account, admin: httpx.Client, team: TeamClient
) -> None:
    # The owner adds the viewer on the Admins page.
    owner_page = new_context().new_page()
    sign_in(owner_page, owner, "/admin/admins")
    viewer = Account(f"viewer-{uuid.uuid4().hex[:8]}@example.com", "pw-" + uuid.uuid4().hex)
    owner_page.get_by_label("Email").fill(viewer.email)
    owner_page.get_by_label("Password (at least 12 characters)").fill(viewer.password)
    owner_page.locator("#n-role").select_option("viewer")
    owner_page.get_by_role("button", name="Add account").click()
    expect(owner_page.get_by_role("cell", name=viewer.email, exact=True)).to_be_visible()

    ctx = new_context()
    page = ctx.new_page()
    sign_in(page, viewer, f"/admin/teams/{team.team_id}")
    expect(page.get_by_role("heading", name=re.compile(team.team_id))).to_be_visible()
    for button in ("Issue key", "Suspend team", "Save settings", "Create portal link"):
        assert page.get_by_role("button", name=button).count() == 0
    assert page.get_by_role("button", name=re.compile("Revoke")).count() == 0
    expect(page.get_by_label("Name", exact=True)).to_be_disabled()
    token = _csrf(page)  # a real token: only the role stops these
    for path, form in (
        (f"/admin/teams/{team.team_id}/suspend", {}),
        (f"/admin/teams/{team.team_id}/keys", {"name": "x"}),
        (f"/admin/teams/{team.team_id}/keys/{team.key_id}/revoke", {}),
        (f"/admin/teams/{team.team_id}/settings", {"name": "hacked"}),
        ("/admin/teams", {"team_id": _slug(), "name": "x"}),
        ("/admin/admins", {"email": "x@example.com", "password": "x" * 20, "role": "owner"}),
    ):
        answer = ctx.request.post(path, form={**form, "csrf_token": token})
        assert answer.status == 403, (path, answer.status)
    after = admin.get(f"/api/admin/teams/{team.team_id}").json()
    assert after["status"] == "active" and after["name"] == team.team_id
    assert team.get("/api/jobs").status_code == 200  # the key still works
    shoot(page, "admin-team-viewer-1280")


def _portal(ctx: BrowserContext, url: str) -> Page:
    page = ctx.new_page()
    page.goto(url)
    page.get_by_role("button", name="Open the portal").click()
    return page


def test_the_portal_shows_only_its_team_and_its_link_works_once(
    new_context: NewContext,
    admin: httpx.Client,
    make_team: Callable[..., TeamClient],
    receiver: Receiver,
) -> None:
    mine, other = make_team(), make_team()
    req = [{"custom_id": "a", "model": MODEL, "messages": [{"role": "user", "content": "portal"}]}]
    my_job = mine.submit(req)["id"]
    other_job = other.submit(req)["id"]
    mine.wait(my_job)
    other.wait(other_job)
    r = admin.post(f"/api/admin/teams/{mine.team_id}/portal-links")
    assert r.status_code == 201, r.text
    link = r.json()["url"]

    ctx = new_context()
    page = _portal(ctx, link)
    expect(page).to_have_url(re.compile(r"/portal$"))
    expect(page.get_by_role("link", name=my_job)).to_be_visible()
    assert page.get_by_role("link", name=other_job).count() == 0
    (cookie,) = [c for c in ctx.cookies() if c["name"] == "saas_llm_portal"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
    assert cookie["expires"] > 0
    shoot(page, "portal-jobs-1280")

    page.goto(f"/portal/jobs/{my_job}")
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded")
    answer = page.goto(f"/portal/jobs/{other_job}")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert ctx.request.get(f"/portal/jobs/{other_job}/live").status == 404
    assert ctx.request.get(f"/portal/jobs/{other_job}/events").status == 404
    # The portal's session does not open the dashboard.
    assert "/admin/login" in ctx.request.get("/admin").url

    # A second use of the link fails, in any browser.
    again = _portal(new_context(), link)
    expect(again.get_by_role("heading", name="Link not valid")).to_be_visible()
    expect(again.get_by_text("already used")).to_be_visible()

    # Webhooks: add an endpoint, send a test event, see the attempt, rotate the secret.
    page.goto("/portal/webhooks")
    page.get_by_label("URL").fill(receiver.url)
    page.get_by_role("button", name="Add endpoint").click()
    first_secret = page.get_by_test_id("endpoint-secret").inner_text().strip()
    assert first_secret.startswith("whsec_")
    page.get_by_role("button", name="Send a test event").click()
    # The form's redirect lands before anything polls the page: a reload while that
    # navigation is still in flight detaches the page in Chromium.
    expect(page.get_by_role("status").filter(has_text="webhook.test")).to_be_visible()
    endpoint_page = page.url
    wait_until(
        lambda: any(b"webhook.test" in req.body for req in receiver.requests),
        timeout=60,
        what="the test event at the receiver",
    )

    def attempt_shown() -> bool:
        page.goto(endpoint_page)
        return page.locator("td").filter(has_text=re.compile(r"^200$")).count() > 0

    wait_until(attempt_shown, timeout=60, what="the attempt in the portal")
    shoot(page, "portal-endpoint-1280")
    _accept_dialogs(page)
    page.get_by_role("button", name="Rotate secret").click()
    second = page.get_by_test_id("endpoint-secret").inner_text().strip()
    assert second.startswith("whsec_") and second != first_secret
    page.get_by_role("button", name=re.compile("Redeliver event")).first.click()
    expect(page.get_by_text("queued for delivery again")).to_be_visible()
    # The other team's endpoint list stays empty: the portal wrote only to this team.
    assert other.get("/api/webhooks/endpoints").json()["data"] == []
    assert len(mine.get("/api/webhooks/endpoints").json()["data"]) == 1


def test_sign_in_is_throttled_after_repeated_failures(
    new_context: NewContext, stack: Stack
) -> None:
    account = create_account(stack, "admin")
    page = new_context().new_page()
    page.goto("/admin/login")
    for _ in range(5):
        page.get_by_label("Email").fill(account.email)
        page.get_by_label("Password").fill("wrong-password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#login-error")).to_be_visible()
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    with page.expect_response(
        lambda r: r.url.endswith("/admin/login") and r.request.method == "POST"
    ) as info:
        page.get_by_role("button", name="Sign in").click()
    assert info.value.status == 429
    expect(page.get_by_text("too many failed sign-ins")).to_be_visible()


ADMIN_PAGES = [
    "/admin",
    "/admin/teams",
    "/admin/jobs",
    "/admin/usage",
    "/admin/webhooks",
    "/admin/audit",
    "/admin/admins",
]


def test_every_page_has_no_serious_accessibility_violations_at_1280_and_390_pixels(
    new_context: NewContext, owner: Account, admin: httpx.Client, team: TeamClient
) -> None:
    job_id = team.submit(
        [{"custom_id": "a", "model": MODEL, "messages": [{"role": "user", "content": "axe"}]}]
    )["id"]
    team.wait(job_id)
    link = admin.post(f"/api/admin/teams/{team.team_id}/portal-links").json()["url"]
    endpoint = team.post("/api/webhooks/endpoints", json={"url": "http://127.0.0.1:9/none"}).json()[
        "id"
    ]
    found: dict[str, Any] = {}
    for width in (1280, 390):
        ctx = new_context(width=width)
        page = ctx.new_page()
        page.goto("/admin/login")
        found[f"login-{width}"] = axe_violations(page)
        shoot(page, f"admin-login-{width}")
        sign_in(page, owner)
        pages = [*ADMIN_PAGES, f"/admin/teams/{team.team_id}", f"/admin/jobs/{job_id}"]
        for path in pages:
            page.goto(path)
            if path == "/admin":
                expect(page.get_by_test_id("queue-depth")).to_be_visible()
                expect(page.get_by_test_id("workers-alive")).to_contain_text("yes")
            name = "admin" + (path[len("/admin") :].replace("/", "-") or "-overview")
            name = re.sub(r"-(job|t)[-_][A-Za-z0-9-]+", r"-\1", name)
            found[f"{name}-{width}"] = axe_violations(page)
            shoot(page, f"{name}-{width}")
            # Readable at this width: nothing pushes the page wider than the window.
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), (
                path,
                width,
            )
        portal_ctx = new_context(width=width)
        if width == 1280:
            portal = _portal(portal_ctx, link)
        else:
            portal = _portal(
                portal_ctx,
                admin.post(f"/api/admin/teams/{team.team_id}/portal-links").json()["url"],
            )
        for path in [
            "/portal",
            f"/portal/jobs/{job_id}",
            "/portal/usage",
            "/portal/webhooks",
            f"/portal/webhooks/{endpoint}",
        ]:
            portal.goto(path)
            name = "portal" + (path[len("/portal") :].replace("/", "-") or "-jobs")
            name = re.sub(r"-(job|whep)[-_][A-Za-z0-9-]+", r"-\1", name)
            found[f"{name}-{width}"] = axe_violations(portal)
            shoot(portal, f"{name}-{width}")
            assert portal.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth + 1"
            ), (path, width)
    bad = {k: v for k, v in found.items() if v}
    assert bad == {}, json.dumps(bad, indent=2)
    assert len(found) >= 2 * 15


def test_keyboard_reaches_the_skip_link_and_the_navigation_with_a_visible_focus(
    new_context: NewContext, owner: Account
) -> None:
    page = new_context().new_page()
    sign_in(page, owner)
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent.trim()")
    assert focused == "Skip to content"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Overview"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/admin/teams$"))
