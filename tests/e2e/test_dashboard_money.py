"""The dashboard's money forms over plain HTTP against the real stack: a grant form is
idempotent and audited, a rule the billing service refuses is shown and writes nothing, the
budget and billing form goes through the team service, viewers are refused, the ledger pages,
spend against budgets on the overview, the portal's credits page."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from cli.stack import Stack
from shared.config import Settings
from tests.conftest import TeamClient
from tests.ui.accounts import Account, create_account, form_token, http_sign_in

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def owner(stack: Stack) -> Account:
    return create_account(stack, "owner")


@pytest.fixture
def signed_in(stack: Stack, owner: Account) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        http_sign_in(client, owner)
        yield client


def _grant_form(client: httpx.Client, team_id: str) -> dict[str, str]:
    page = client.get(f"/admin/teams/{team_id}").text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
    assert key, page[:300]
    return {"csrf_token": form_token(page), "idempotency_key": key.group(1)}


def _ledger(admin: httpx.Client, team_id: str) -> list[dict[str, str]]:
    r = admin.get(f"/api/admin/teams/{team_id}/ledger", params={"limit": 500})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def _audit_count(client: httpx.Client, team_id: str, action: str) -> int:
    page = client.get("/admin/audit", params={"q": team_id}).text
    return page.count(f"<code>{action}</code>")


def test_a_grant_sent_twice_from_one_form_is_granted_once_and_audited(
    signed_in: httpx.Client, admin: httpx.Client, team: TeamClient
) -> None:
    form = _grant_form(signed_in, team.team_id)
    expires = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    data = {**form, "amount": "12.5", "expires_at": expires, "note": "welcome"}
    first = signed_in.post(f"/admin/teams/{team.team_id}/credits", data=data)
    assert first.status_code == 303, first.text
    assert "granted=" in first.headers["location"] and "replayed" not in first.headers["location"]
    again = signed_in.post(f"/admin/teams/{team.team_id}/credits", data=data)
    assert again.status_code == 303
    assert "replayed=1" in again.headers["location"]
    (entry,) = _ledger(admin, team.team_id)
    assert entry["kind"] == "grant" and Decimal(entry["amount"]) == Decimal("12.5")
    assert Decimal(entry["balance_after"]) == Decimal("12.5")
    credits = team.get("/api/credits").json()
    assert Decimal(credits["balance"]) == Decimal("12.5")
    (grant,) = credits["grants"]
    # The datetime-local field is read as UTC.
    assert datetime.fromisoformat(grant["expires_at"]) == datetime.fromisoformat(expires).replace(
        tzinfo=UTC
    )
    assert grant["note"] == "welcome"
    assert _audit_count(signed_in, team.team_id, "credits.grant") == 1
    # The page shows the new balance, the grant with its expiry and the entry.
    page = signed_in.get(f"/admin/teams/{team.team_id}").text
    assert 'data-testid="credits-balance">12.5<' in page
    assert f'data-entry="{entry["id"]}"' in page
    # A new form (a reload) is a new grant.
    data2 = {**_grant_form(signed_in, team.team_id), "amount": "1"}
    assert signed_in.post(f"/admin/teams/{team.team_id}/credits", data=data2).status_code == 303
    assert [Decimal(e["balance_after"]) for e in _ledger(admin, team.team_id)] == [
        Decimal("13.5"),
        Decimal("12.5"),
    ]


def test_a_form_key_sent_again_with_other_values_is_refused_not_granted(
    signed_in: httpx.Client, admin: httpx.Client, team: TeamClient
) -> None:
    form = _grant_form(signed_in, team.team_id)
    ok = signed_in.post(f"/admin/teams/{team.team_id}/credits", data={**form, "amount": "2"})
    assert ok.status_code == 303
    # Back, change the amount, send the same (already used) form again.
    r = signed_in.post(f"/admin/teams/{team.team_id}/credits", data={**form, "amount": "20"})
    assert r.status_code == 409, r.text[:300]
    assert "already sent with other values" in r.text
    assert [Decimal(e["amount"]) for e in _ledger(admin, team.team_id)] == [Decimal(2)]
    # An API caller's Idempotency-Key of the same text is another key: no replay of the form's.
    api = admin.post(
        f"/api/admin/teams/{team.team_id}/credits",
        json={"amount": "3"},
        headers={"Idempotency-Key": form["idempotency_key"]},
    )
    assert api.status_code == 201, api.text
    assert len(_ledger(admin, team.team_id)) == 2


@pytest.mark.parametrize(
    ("amount", "expires_at", "message"),
    [
        ("-5", "", "a grant is positive"),
        ("0", "", "amount must not be 0"),
        ("ten", "", "amount"),
        ("5", "2001-01-01T00:00", "expires_at must be in the future"),
        ("5", "next week", "expires_at: a date and time"),
        ("1" * 30, "", "amount"),
    ],
)
def test_a_grant_the_billing_service_refuses_shows_why_and_writes_nothing(
    signed_in: httpx.Client,
    admin: httpx.Client,
    team: TeamClient,
    amount: str,
    expires_at: str,
    message: str,
) -> None:
    form = _grant_form(signed_in, team.team_id)
    r = signed_in.post(
        f"/admin/teams/{team.team_id}/credits",
        data={**form, "amount": amount, "expires_at": expires_at},
    )
    assert r.status_code == 400, r.text[:300]
    shown = re.search(r'data-testid="grant-error">([^<]+)<', r.text)
    assert shown and message in html.unescape(shown.group(1)), shown
    assert 'aria-invalid="true"' in r.text
    assert f'value="{html.escape(amount)}"' in r.text  # what was typed stays in the form
    assert _ledger(admin, team.team_id) == []
    assert Decimal(team.get("/api/credits").json()["balance"]) == 0
    assert _audit_count(signed_in, team.team_id, "credits.grant") == 0


def _billing_form(**over: str) -> dict[str, str]:
    form = {
        "billing_mode": "usd",
        "credits_per_usd": "250",
        "tokens_per_credit": "1000",
        "price_markup_pct": "20",
        "model_prices": "gpt-4o-mini 0.0000002 0.0000008",
        "enforce_credits": "on",
        "budget_usd": "3.75",
        "budget_period": "week",
        "budget_thresholds": "25, 75 100",
        "on_limit": "pause",
        "default_max_tokens": "512",
        "max_n": "2",
        "max_tokens_cap": "2048",
        "low_credits_threshold": "5",
        "monthly_allowance": "",
    }
    form.update(over)
    return form


def test_the_budget_and_billing_form_saves_through_the_team_service(
    signed_in: httpx.Client, admin: httpx.Client, team: TeamClient
) -> None:
    token = form_token(signed_in.get(f"/admin/teams/{team.team_id}").text)
    r = signed_in.post(
        f"/admin/teams/{team.team_id}/billing", data={**_billing_form(), "csrf_token": token}
    )
    assert r.status_code == 303, r.text[:300]
    t = admin.get(f"/api/admin/teams/{team.team_id}").json()
    assert t["billing_mode"] == "usd" and Decimal(t["credits_per_usd"]) == 250
    assert Decimal(t["price_markup_pct"]) == 20 and t["tokens_per_credit"] == 1000
    assert {k: {f: Decimal(v) for f, v in p.items()} for k, p in t["model_prices"].items()} == {
        "gpt-4o-mini": {
            "input_cost_per_token": Decimal("0.0000002"),
            "output_cost_per_token": Decimal("0.0000008"),
        }
    }
    assert t["enforce_credits"] is True and t["on_limit"] == "pause"
    assert Decimal(t["budget_usd"]) == Decimal("3.75") and t["budget_period"] == "week"
    assert t["budget_thresholds"] == [25, 75, 100]
    assert t["default_max_tokens"] == 512 and t["max_n"] == 2 and t["max_tokens_cap"] == 2048
    assert Decimal(t["low_credits_threshold"]) == 5 and t["monthly_allowance"] is None
    assert _audit_count(signed_in, team.team_id, "team.billing") == 1
    # The same caps apply to the team's requests: n above max_n is a clear 400.
    r = team.post(
        "/api/jobs",
        json={
            "requests": [
                {
                    "custom_id": "a",
                    "model": MODEL,
                    "n": 3,
                    "messages": [{"role": "user", "content": "three please"}],
                }
            ]
        },
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].endswith("n"), r.text
    # The page shows the saved values; the budget is this week's.
    page = signed_in.get(f"/admin/teams/{team.team_id}").text
    assert 'name="budget_usd" inputmode="decimal" value="3.75"' in page
    assert '<option value="pause" selected>' in page
    assert "$3.75 per week" in page
    # Clearing the budget and the caps: empty fields.
    token = form_token(page)
    cleared = _billing_form(budget_usd="", max_n="", max_tokens_cap="", low_credits_threshold="")
    del cleared["enforce_credits"]  # an unticked box is not sent
    r = signed_in.post(
        f"/admin/teams/{team.team_id}/billing", data={**cleared, "csrf_token": token}
    )
    assert r.status_code == 303
    t = admin.get(f"/api/admin/teams/{team.team_id}").json()
    assert t["budget_usd"] is None and t["max_n"] is None and t["max_tokens_cap"] is None
    assert t["enforce_credits"] is False and t["low_credits_threshold"] is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("budget_thresholds", "0 50", "budget_thresholds are percentages"),
        ("billing_mode", "cents", "billing_mode"),
        ("budget_usd", "-1", "budget_usd"),
        ("max_n", "1.5", "max_n"),
        ("max_n", "1000", "max_n"),
        ("model_prices", "gpt-4o-mini 0.1", "model_prices: line 1"),
        ("model_prices", "gpt-4o-mini x 0.1", "is not a number"),
        ("model_prices", "gpt-4o-mini -1 0.1", "model_prices"),
        ("credits_per_usd", "0", "credits_per_usd"),
        ("model_prices", "m 0 0\n" * 5000, "model_prices: at most 20000 characters"),
    ],
)
def test_a_billing_value_the_team_service_refuses_is_shown_and_nothing_changes(
    signed_in: httpx.Client,
    admin: httpx.Client,
    team: TeamClient,
    field: str,
    value: str,
    message: str,
) -> None:
    before = admin.get(f"/api/admin/teams/{team.team_id}").json()
    token = form_token(signed_in.get(f"/admin/teams/{team.team_id}").text)
    r = signed_in.post(
        f"/admin/teams/{team.team_id}/billing",
        data={**_billing_form(**{field: value}), "csrf_token": token},
    )
    assert r.status_code == 400, r.text[:300]
    shown = re.search(r'data-testid="billing-error">([^<]+)<', r.text)
    assert shown and message in html.unescape(shown.group(1)), shown
    if field != "billing_mode":  # a select shows its options, not the forged value
        assert html.escape(value.strip()) in r.text  # the typed values are shown again
    after = admin.get(f"/api/admin/teams/{team.team_id}").json()
    assert {k: v for k, v in after.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"
    }
    assert _audit_count(signed_in, team.team_id, "team.billing") == 0


def test_a_viewer_gets_no_money_forms_and_a_forced_post_is_refused(
    stack: Stack, admin: httpx.Client, team: TeamClient
) -> None:
    viewer = create_account(stack, "viewer")
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        http_sign_in(client, viewer)
        page = client.get(f"/admin/teams/{team.team_id}").text
        assert 'data-testid="credits-balance"' in page and 'data-testid="billing-readonly"' in page
        assert 'data-testid="grant-form"' not in page and 'data-testid="billing-form"' not in page
        token = form_token(page)  # the sign-out form's: a real token, only the role stops it
        for path, data in (
            (f"/admin/teams/{team.team_id}/credits", {"amount": "100"}),
            (f"/admin/teams/{team.team_id}/billing", _billing_form()),
        ):
            r = client.post(path, data={**data, "csrf_token": token})
            assert r.status_code == 403, (path, r.status_code)
            assert "viewer" in r.text
    assert _ledger(admin, team.team_id) == []
    assert admin.get(f"/api/admin/teams/{team.team_id}").json()["budget_usd"] is None


def test_the_grant_and_billing_forms_need_the_csrf_token(
    signed_in: httpx.Client, admin: httpx.Client, team: TeamClient
) -> None:
    for path, data in (
        (f"/admin/teams/{team.team_id}/credits", {"amount": "100"}),
        (f"/admin/teams/{team.team_id}/billing", _billing_form()),
    ):
        assert signed_in.post(path, data=data).status_code == 403
        assert signed_in.post(path, data={**data, "csrf_token": "forged"}).status_code == 403
    assert _ledger(admin, team.team_id) == []
    assert signed_in.post("/admin/teams/no-such-team/credits", data={}).status_code == 403


def test_the_ledger_is_shown_in_keyset_pages_with_the_balance_after_each_entry(
    signed_in: httpx.Client, admin: httpx.Client, team: TeamClient
) -> None:
    for i in range(1, 26):
        r = admin.post(f"/api/admin/teams/{team.team_id}/credits", json={"amount": str(i)})
        assert r.status_code == 201
    entries = _ledger(admin, team.team_id)
    page = signed_in.get(f"/admin/teams/{team.team_id}").text
    shown = re.findall(r'data-entry="(\d+)"', page)
    assert shown == [str(e["id"]) for e in entries[:20]]
    older = re.search(r'href="(/admin/teams/[^"]+\?ledger_after=(\d+))#h-ledger" rel="next"', page)
    assert older and older.group(2) == str(entries[19]["id"])
    second = signed_in.get(html.unescape(older.group(1))).text
    assert re.findall(r'data-entry="(\d+)"', second) == [str(e["id"]) for e in entries[20:]]
    assert 'rel="next"' not in second
    # The balance after each entry, oldest page last: 1, 1+2, ... as the ledger has them.
    rows = re.findall(
        r'data-entry="\d+">.*?<td class="num">\+([\d.]+)</td><td class="num">([\d.]+)</td>',
        second,
    )
    assert rows == [("5", "15"), ("4", "10"), ("3", "6"), ("2", "3"), ("1", "1")]
    assert signed_in.get(f"/admin/teams/{team.team_id}?ledger_after=x").status_code == 400


def test_the_overview_shows_this_periods_spend_against_each_budget(
    signed_in: httpx.Client, admin: httpx.Client, make_team: Callable[..., TeamClient]
) -> None:
    # The overview lists the 20 teams nearest their budget; other tests' teams share this
    # database, so these two are made to lead: one spent past a budget lowered after the fact,
    # one with a budget of 0 (nothing may be spent; listed first).
    spender = make_team(budget_usd="5", budget_period="day")
    idle = make_team(budget_usd="0", budget_period="month")
    job = spender.submit(
        [{"custom_id": "a", "model": MODEL, "messages": [{"role": "user", "content": "spend"}]}]
    )
    assert spender.wait(job["id"])["status"] == "succeeded"
    lowered = admin.patch(f"/api/admin/teams/{spender.team_id}", json={"budget_usd": "0.000001"})
    assert lowered.status_code == 200
    budget = spender.get("/api/credits").json()["budget"]
    assert Decimal(budget["spent_usd"]) > Decimal("0.000001")
    live = signed_in.get("/admin/overview/live").text
    row = re.search(rf'<tr data-team="{spender.team_id}">(.*?)</tr>', live, re.S)
    assert row, live[:500]
    assert f'data-testid="spent-{spender.team_id}">${budget["spent_usd"]}' in row.group(1)
    assert "today" in row.group(1) and "$0.000001<" in row.group(1)
    assert 'value="100.0"' in row.group(1)
    idle_row = re.search(rf'<tr data-team="{idle.team_id}">(.*?)</tr>', live, re.S)
    assert idle_row, live[:500]
    assert "this month" in idle_row.group(1) and f'spent-{idle.team_id}">$0<' in idle_row.group(1)


def test_the_portal_shows_its_own_credits_and_ledger_only(
    stack: Stack, admin: httpx.Client, make_team: Callable[..., TeamClient]
) -> None:
    mine, other = make_team(), make_team()
    mine_entry = admin.post(
        f"/api/admin/teams/{mine.team_id}/credits", json={"amount": "7.25", "note": "mine"}
    ).json()
    other_entry = admin.post(
        f"/api/admin/teams/{other.team_id}/credits", json={"amount": "99", "note": "other"}
    ).json()
    url = admin.post(f"/api/admin/teams/{mine.team_id}/portal-links").json()["url"]
    path = url.removeprefix(stack.api_url)
    with httpx.Client(base_url=stack.api_url, timeout=30) as browser:
        token = form_token(browser.get(path).text)
        assert browser.post(path, data={"csrf_token": token}).status_code == 303
        page = browser.get("/portal/credits")
        assert page.status_code == 200
        assert 'data-testid="credits-balance">7.25<' in page.text
        assert f'data-entry="{mine_entry["id"]}"' in page.text and "mine" in page.text
        # Not the bare "99": random ids and timestamps on the page may hold it.
        assert f'data-entry="{other_entry["id"]}"' not in page.text and "other" not in page.text
        assert "Grant credits" not in page.text
        usage = browser.get("/portal/usage").text
        assert 'data-testid="usage-balance">7.25<' in usage
        assert browser.get("/portal/credits", params={"after": "nope"}).status_code == 400


@pytest.mark.parametrize(
    "value",
    ["*", "'unsafe-inline'", "https://a.example.com; script-src *", "example.com", "ftp://x.y"],
)
def test_portal_frame_ancestors_takes_only_origins(value: str) -> None:
    with pytest.raises(ValueError, match="PORTAL_FRAME_ANCESTORS"):
        Settings(portal_frame_ancestors=value)


def test_portal_frame_ancestors_accepts_origins_and_a_subdomain_wildcard() -> None:
    s = Settings(
        portal_frame_ancestors="https://app.example.com, http://127.0.0.2:8123 "
        "https://*.example.org"
    )
    assert s.frame_ancestors == [
        "https://app.example.com",
        "http://127.0.0.2:8123",
        "https://*.example.org",
    ]
