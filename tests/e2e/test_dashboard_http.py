"""The dashboard and portal over plain HTTP (the browser suite covers the pages themselves):
portal links from the admin API, single use, audit entries, CSRF, bad input as 4xx pages."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cli.stack import ROOT, Stack
from tests.conftest import TeamClient
from tests.ui.accounts import Account, create_account, form_token, http_sign_in


@pytest.fixture(scope="module")
def owner(stack: Stack) -> Account:
    return create_account(stack, "owner")


@pytest.fixture
def browserless(stack: Stack, owner: Account) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        http_sign_in(client, owner)
        yield client


def test_portal_links_need_the_admin_key_a_real_team_and_at_most_a_day(
    stack: Stack, admin: httpx.Client, team: TeamClient
) -> None:
    anonymous = httpx.post(f"{stack.api_url}/api/admin/teams/{team.team_id}/portal-links")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    missing = admin.post("/api/admin/teams/no-such-team/portal-links")
    assert missing.status_code == 404 and missing.json()["error"]["request_id"]
    too_long = admin.post(
        f"/api/admin/teams/{team.team_id}/portal-links", json={"session_hours": 25}
    )
    assert too_long.status_code == 422, too_long.text
    made = admin.post(f"/api/admin/teams/{team.team_id}/portal-links", json={"session_hours": 2})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["team_id"] == team.team_id and body["session_hours"] == 2
    assert body["url"].startswith(f"{stack.api_url}/portal/enter/pl_")
    expires = datetime.fromisoformat(body["expires_at"])
    assert datetime.now(UTC) < expires <= datetime.now(UTC) + timedelta(minutes=15, seconds=5)


def test_a_portal_link_opens_one_session_and_then_is_spent(
    stack: Stack, admin: httpx.Client, team: TeamClient
) -> None:
    url = admin.post(f"/api/admin/teams/{team.team_id}/portal-links").json()["url"]
    path = url.removeprefix(stack.api_url)
    with httpx.Client(base_url=stack.api_url, timeout=30) as browser:
        page = browser.get(path)
        assert page.status_code == 200 and "Open the portal" in page.text
        # Looking at the link does not spend it; the button does.
        assert browser.get(path).status_code == 200
        token = form_token(browser.get(path).text)
        assert browser.post(path, data={}).status_code == 403  # no CSRF token
        entered = browser.post(path, data={"csrf_token": token})
        assert entered.status_code == 303 and entered.headers["location"] == "/portal"
        cookie = entered.headers["set-cookie"]
        assert "saas_llm_portal=" in cookie and "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower() and "Path=/portal" in cookie
        assert "Max-Age=7200" not in cookie  # default session: the 24 h cap
        home = browser.get("/portal")
        assert home.status_code == 200 and team.team_id in home.text
        frame = home.headers["content-security-policy"]
        assert "frame-ancestors 'self'" in frame
        again = browser.post(path, data={"csrf_token": token})
        assert again.status_code == 401 and "already used" in again.text


def test_admin_api_changes_are_audited_with_the_caller(
    admin: httpx.Client, browserless: httpx.Client
) -> None:
    slug = "audit-" + uuid.uuid4().hex[:8]
    assert admin.post("/api/admin/teams", json={"team_id": slug, "name": slug}).status_code == 201
    assert admin.patch(f"/api/admin/teams/{slug}", json={"name": "renamed"}).status_code == 200
    assert admin.get(f"/api/admin/teams/{slug}").status_code == 200  # reads are not logged
    # A refused change leaves no entry: the entry commits with the change.
    assert admin.post("/api/admin/teams", json={"team_id": slug, "name": slug}).status_code == 409
    page = browserless.get("/admin/audit", params={"q": slug}).text
    assert page.count("POST /api/admin/teams</code>") == 1
    assert page.count("PATCH /api/admin/teams/{team_id}</code>") == 1
    assert "GET /api/admin" not in page
    assert "admin-api-key" in page and "127.0.0.1" in page


def test_dashboard_forms_refuse_a_missing_token_and_bad_input_with_a_4xx_page(
    browserless: httpx.Client, admin: httpx.Client
) -> None:
    slug = "csrf-" + uuid.uuid4().hex[:8]
    refused = browserless.post("/admin/teams", data={"team_id": slug, "name": "x"})
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert admin.get(f"/api/admin/teams/{slug}").status_code == 404
    token = form_token(browserless.get("/admin/teams").text)
    bad = browserless.post(
        "/admin/teams", data={"team_id": "Bad Slug!", "name": "x", "csrf_token": token}
    )
    assert bad.status_code == 400 and "team_id" in bad.text
    assert browserless.get("/admin/jobs", params={"status": "bogus"}).status_code == 400
    assert browserless.get("/admin/jobs", params={"since": "yesterday"}).status_code == 400
    assert browserless.get("/admin/usage", params={"since": "2026-13-01"}).status_code == 400
    assert (
        browserless.get(
            "/admin/usage", params={"since": "2026-12-02", "until": "2026-12-01"}
        ).status_code
        == 400
    )
    assert browserless.get("/admin/jobs/job_nope").status_code == 404
    assert browserless.get("/admin/teams/nope").status_code == 404


def test_a_tampered_or_missing_session_goes_back_to_sign_in(
    stack: Stack, browserless: httpx.Client
) -> None:
    cookie = browserless.cookies.get("saas_llm_admin")
    assert cookie
    with httpx.Client(base_url=stack.api_url, timeout=30) as other:
        other.cookies.set("saas_llm_admin", cookie[:-3] + "abc", path="/admin")
        r = other.get("/admin/teams")
        assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")
        assert other.get("/admin/overview/live").status_code == 303


def test_admin_create_refuses_a_duplicate_and_a_short_password(
    stack: Stack, owner: Account
) -> None:
    def run(email: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "cli.main",
                "admin",
                "create",
                "--email",
                email,
                "--password-env",
                "--database-url",
                stack.env["DATABASE_URL"],
            ],
            env={**stack.env, "SAAS_LLM_ADMIN_PASSWORD": password},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )

    dup = run(owner.email, "a-long-enough-password")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    short = run(f"x-{uuid.uuid4().hex[:6]}@example.com", "short")
    assert short.returncode == 1 and "at least 12" in short.stderr


def test_generated_password_is_printed_once(
    stack: Stack, make_team: Callable[..., TeamClient]
) -> None:
    email = f"gen-{uuid.uuid4().hex[:6]}@example.com"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "admin",
            "create",
            "--email",
            email,
            "--role",
            "viewer",
            "--database-url",
            stack.env["DATABASE_URL"],
        ],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    password = done.stdout.split("password (shown once): ", 1)[1].strip()
    assert len(password) >= 20
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        http_sign_in(client, Account(email, password))
        assert client.get("/admin").status_code == 200
