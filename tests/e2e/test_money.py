"""Money end to end, over HTTP against real processes: hard budgets under concurrency (reject
and pause), credits in each billing mode, thresholds and pause events as signed webhooks, usage
reports, and a budget check that never fails open."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from standardwebhooks import Webhook

from cli.stack import Stack
from tests.conftest import TERMINAL, TeamClient, nonce
from tests.e2e.money_helpers import one_call, submit_concurrently, worst_usd
from tests.fakes.receiver import Receiver
from tests.harness import provider_requests, wait_until

D = Decimal


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _wait_settled(team: TeamClient, ids: list[str], *, allow_paused: bool = False) -> list[Any]:
    """Wait until every job has ended (or, with allow_paused, ended or paused with nothing
    running)."""
    done = set(TERMINAL) | ({"paused"} if allow_paused else set())

    def settled() -> list[dict[str, Any]] | None:
        jobs = [team.get(f"/api/jobs/{j}").json() for j in ids]
        if all(j["status"] in done for j in jobs):
            if allow_paused and any(j["request_counts"]["running"] for j in jobs):
                return None
            return jobs
        return None

    return list(wait_until(settled, timeout=120, what="every job to settle"))


def _credits(team: TeamClient) -> dict[str, Any]:
    r = team.get("/api/credits")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _ledger(admin: httpx.Client, team_id: str) -> list[dict[str, Any]]:
    """Every ledger entry, through the cursor pages."""
    entries: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if after:
            params["after"] = after
        page = admin.get(f"/api/admin/teams/{team_id}/ledger", params=params).json()
        entries += page["data"]
        if not page["has_more"]:
            return entries
        after = page["next_cursor"]


def _ledger_matches_balance(admin: httpx.Client, team: TeamClient) -> D:
    entries = _ledger(admin, team.team_id)
    balance = D(_credits(team)["balance"])
    assert sum((D(e["amount"]) for e in entries), D(0)) == balance
    if entries:
        assert D(entries[0]["balance_after"]) == balance  # newest first
    return balance


def _endpoint(team: TeamClient, url: str, types: list[str]) -> str:
    r = team.post("/api/webhooks/endpoints", json={"url": url, "event_types": types})
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


def _verified(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    hook = Webhook(secret)
    out = []
    for req in list(receiver.requests):
        out.append(dict(hook.verify(req.body, req.headers)))  # raises if not signed right
    return out


# -- hard budgets under concurrency ----------------------------------------------------------


def test_budget_reject_never_overspends_under_concurrency(
    make_team: Callable[..., TeamClient], stack: Stack, provider: httpx.Client
) -> None:
    tag = "rej-" + nonce()
    bodies = [one_call(tag, i) for i in range(40)]
    worst = worst_usd(D(25), bodies[0])  # the same for each: same lengths
    budget = worst * 10
    tag_team = make_team(price_markup_pct="25", budget_thresholds=[], budget_usd=str(budget))
    responses = submit_concurrently(stack.api_url, tag_team.key, bodies, 8)
    statuses = {r.status_code for r in responses}
    assert statuses <= {202, 402}, [r.text for r in responses if r.status_code not in (202, 402)]
    for r in responses:
        if r.status_code == 402:
            error = r.json()["error"]
            assert error["type"] == "budget_exceeded" and "remaining_usd" in error
    ids = [r.json()["id"] for r in responses if r.status_code == 202]
    jobs = _wait_settled(tag_team, ids)
    succeeded = [j for j in jobs if j["status"] == "succeeded"]
    refused = [j for j in jobs if j["status"] == "failed"]
    assert len(succeeded) >= 10 and len(succeeded) + len(refused) == len(ids)
    assert len(succeeded) < 40  # the budget really stopped work
    for job in refused:
        (call,) = tag_team.get(f"/api/jobs/{job['id']}", params={"include_calls": "true"}).json()[
            "calls"
        ]
        assert call["error"]["type"] == "budget_exceeded", call
        assert job["credits_charged"] == "0"
    spent = sum((D(j["billed_usd"]) for j in succeeded), D(0))
    assert spent <= budget
    for job in succeeded:  # the markup, exactly
        assert D(job["billed_usd"]) == (D(job["cost_usd"]) * D("1.25")).quantize(D("1e-10"))
    state = _credits(tag_team)["budget"]
    assert D(state["spent_usd"]) == spent and D(state["reserved_usd"]) == 0
    # refused calls never reached the provider; every succeeded one exactly once
    seen = provider_requests(provider, tag)
    assert len(seen) == len(succeeded)


def test_pause_at_the_budget_then_raising_it_resumes_without_repeats(
    make_team: Callable[..., TeamClient],
    admin: httpx.Client,
    stack: Stack,
    provider: httpx.Client,
    receiver: Receiver,
) -> None:
    tag = "pause-" + nonce()
    bodies = [one_call(tag, i) for i in range(20)]
    worst = worst_usd(D(0), bodies[0])
    team = make_team(on_limit="pause", budget_usd=str(worst * 6), budget_thresholds=[50, 80])
    secret = _endpoint(
        team, receiver.url, ["job.paused", "job.resumed", "budget.threshold_crossed"]
    )
    responses = submit_concurrently(stack.api_url, team.key, bodies, 5)
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses]
    ids = [r.json()["id"] for r in responses]
    jobs = _wait_settled(team, ids, allow_paused=True)
    paused = [j for j in jobs if j["status"] == "paused"]
    assert paused and all(j["pause_reason"] == "budget_exceeded" for j in paused)
    assert all(j["status"] in ("succeeded", "paused") for j in jobs)
    spent_before = D(_credits(team)["budget"]["spent_usd"])
    assert spent_before <= worst * 6

    raised = admin.patch(f"/api/admin/teams/{team.team_id}", json={"budget_usd": str(worst * 100)})
    assert raised.status_code == 200, raised.text
    final = _wait_settled(team, ids)
    assert all(j["status"] == "succeeded" for j in final)
    seen = provider_requests(provider, tag)
    assert sorted(r["content"] for r in seen) == sorted(b["messages"][0]["content"] for b in bodies)

    def events() -> list[dict[str, Any]] | None:
        got = _verified(receiver, secret)
        resumed = [e for e in got if e["type"] == "job.resumed"]
        return got if len(resumed) >= len(paused) else None

    got = wait_until(events, what="job.resumed for every paused job")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in got:
        by_type.setdefault(e["type"], []).append(e)
    paused_ids = {j["id"] for j in paused}
    assert {e["data"]["id"] for e in by_type["job.paused"]} >= paused_ids
    assert {e["data"]["id"] for e in by_type["job.resumed"]} >= paused_ids
    crossed = sorted(
        e["data"]["threshold_pct"] for e in by_type.get("budget.threshold_crossed", [])
    )
    # once each in the period for what the spend reached before the raise, never repeated
    reached = spent_before * 100 / (worst * 6)
    assert reached >= 50
    assert crossed == [t for t in (50, 80) if reached >= t]


# -- credits -----------------------------------------------------------------------------------


def test_credits_in_job_mode_charge_succeeded_jobs_only(
    make_team: Callable[..., TeamClient], admin: httpx.Client
) -> None:
    team = make_team(enforce_credits=True, low_credits_threshold="2")
    msg = [{"role": "user", "content": "hi " + nonce()}]
    refused = team.post("/api/jobs", json={"requests": [{"model": "gpt-4o-mini", "messages": msg}]})
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["type"] == "insufficient_credits"
    assert refused.json()["error"]["available"] == "0"

    url = f"/api/admin/teams/{team.team_id}/credits"
    first = admin.post(
        url, json={"amount": "3", "note": "welcome"}, headers={"Idempotency-Key": "g1"}
    )
    assert first.status_code == 201, first.text
    again = admin.post(
        url, json={"amount": "3", "note": "welcome"}, headers={"Idempotency-Key": "g1"}
    )
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = admin.post(url, json={"amount": "4"}, headers={"Idempotency-Key": "g1"})
    assert other.status_code == 409, other.text
    assert D(_credits(team)["balance"]) == 3

    ok = team.wait(team.submit([{"model": "gpt-4o-mini", "messages": msg}])["id"])
    assert ok["status"] == "succeeded" and ok["credits_charged"] == "1"
    bad_msg = [{"role": "user", "content": "[[fail:400]] " + nonce()}]
    bad = team.wait(team.submit([{"model": "gpt-4o-mini", "messages": bad_msg}])["id"])
    assert bad["status"] == "failed" and bad["credits_charged"] == "0"
    hold = "h" + nonce()
    held = team.submit(
        [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"[[hold:{hold}]]"}]}]
    )
    assert D(_credits(team)["reserved"]) == 1  # held while it runs
    cancelled = team.post(f"/api/jobs/{held['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert team.wait(held["id"])["credits_charged"] == "0"
    credits = _credits(team)
    assert D(credits["balance"]) == 2 and D(credits["reserved"]) == 0
    assert [g["remaining"] for g in credits["grants"]] == ["2"]
    assert _ledger_matches_balance(admin, team) == 2
    kinds = [e["kind"] for e in _ledger(admin, team.team_id)]
    assert kinds == ["charge", "grant"]
    # adjustments either way, also in the ledger
    down = admin.post(url, json={"kind": "adjustment", "amount": "-0.5"})
    assert down.status_code == 201 and D(down.json()["balance_after"]) == D("1.5")
    assert _ledger_matches_balance(admin, team) == D("1.5")
    low = team.get("/api/webhooks/events", params={"type": "credits.low"}).json()["data"]
    assert len(low) == 1  # below 2 once (at 1.5), not again


@pytest.mark.parametrize("mode", ["usd", "tokens"])
def test_credits_in_usd_and_tokens_mode(
    make_team: Callable[..., TeamClient], admin: httpx.Client, mode: str
) -> None:
    team = make_team(
        billing_mode=mode,
        credits_per_usd="1000",
        tokens_per_credit=7,
        price_markup_pct="10",
        enforce_credits=True,
    )
    grant = admin.post(f"/api/admin/teams/{team.team_id}/credits", json={"amount": "100"})
    assert grant.status_code == 201, grant.text
    requests = [
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"one {nonce()}"}]},
        {"model": "gpt-4o", "messages": [{"role": "user", "content": f"two words {nonce()}"}]},
    ]
    for r in requests:
        r["max_tokens"] = 20  # bounds the worst case held while the job runs
    job = team.wait(team.submit(requests)["id"])
    assert job["status"] == "succeeded"
    calls = team.get(f"/api/jobs/{job['id']}", params={"include_calls": "true"}).json()["calls"]
    q = D("1e-10")
    if mode == "usd":
        per_call = [(D(c["billed_usd"]) * 1000).quantize(q) for c in calls]
    else:
        per_call = [(D(c["usage"]["total_tokens"]) / 7).quantize(q) for c in calls]
    assert [D(c["credits_charged"]) for c in calls] == per_call
    assert D(job["credits_charged"]) == sum(per_call, D(0))
    assert D(job["billed_usd"]) == sum((D(c["billed_usd"]) for c in calls), D(0))
    for c in calls:
        assert D(c["billed_usd"]) == (D(c["cost_usd"]) * D("1.1")).quantize(q)
    assert _ledger_matches_balance(admin, team) == 100 - D(job["credits_charged"])
    assert D(_credits(team)["reserved"]) == 0


# -- usage ---------------------------------------------------------------------------------------


def test_usage_json_csv_and_job_sums_agree(
    make_team: Callable[..., TeamClient],
) -> None:
    team = make_team(billing_mode="tokens", tokens_per_credit=3)
    ids = []
    for i, (model, job_type) in enumerate(
        [("gpt-4o-mini", "a"), ("gpt-4o", "a"), ("gpt-4o-mini", "b"), ("gpt-4o", None)]
    ):
        msg = [{"role": "user", "content": f"usage {i} {nonce()}"}]
        extra = {"job_type": job_type} if job_type else {}
        ids.append(team.submit([{"model": model, "messages": msg}] * 2, **extra)["id"])
    jobs = [team.wait(j) for j in ids]
    want = {
        "jobs": len(jobs),
        "calls": sum(j["request_counts"]["total"] for j in jobs),
        "total_tokens": sum(j["usage"]["total_tokens"] for j in jobs),
        "cost_usd": sum((D(j["cost_usd"]) for j in jobs), D(0)),
        "billed_usd": sum((D(j["billed_usd"]) for j in jobs), D(0)),
        "credits": sum((D(j["credits_charged"]) for j in jobs), D(0)),
    }
    assert want["credits"] > 0
    for group_by in ("day", "model", "job_type"):
        r = team.get("/api/usage", params={"group_by": group_by})
        assert r.status_code == 200, r.text
        body = r.json()
        rows = body["data"]
        for key in ("calls", "total_tokens"):
            assert sum(row[key] for row in rows) == want[key], (group_by, key)
        for key in ("cost_usd", "billed_usd", "credits"):
            assert sum((D(row[key]) for row in rows), D(0)) == want[key], (group_by, key)
        if group_by != "model":
            assert sum(row["jobs"] for row in rows) == want["jobs"]
        assert D(body["total"]["billed_usd"]) == want["billed_usd"]
        text = team.get("/api/usage", params={"group_by": group_by}, headers={"Accept": "text/csv"})
        assert text.headers["content-type"].startswith("text/csv")
        parsed = list(csv.DictReader(io.StringIO(text.text)))
        assert [r["group"] for r in parsed] == [row["group"] for row in rows]
        for got, row in zip(parsed, rows, strict=True):
            assert int(got["calls"]) == row["calls"] and D(got["credits"]) == D(row["credits"])
            assert D(got["billed_usd"]) == D(row["billed_usd"])
    by_type = {
        row["group"]: row
        for row in team.get("/api/usage", params={"group_by": "job_type"}).json()["data"]
    }
    assert by_type["a"]["jobs"] == 2 and by_type["b"]["jobs"] == 1 and by_type[""]["jobs"] == 1


def test_caps_answer_400(make_team: Callable[..., TeamClient]) -> None:
    team = make_team(max_n=1, max_tokens_cap=50)
    msg = [{"role": "user", "content": "x"}]
    for extra, param in (
        ({"n": 2}, "requests[0].n"),
        ({"max_tokens": 51}, "requests[0].max_tokens"),
    ):
        r = team.post(
            "/api/jobs", json={"requests": [{"model": "gpt-4o-mini", "messages": msg, **extra}]}
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "limit_exceeded" and r.json()["error"]["param"] == param


# -- never fail open -------------------------------------------------------------------------------


def test_budget_tables_unreachable_means_503_not_202(
    make_team: Callable[..., TeamClient], database_url: str
) -> None:
    team = make_team(budget_usd="10")
    msg = [{"role": "user", "content": "locked " + nonce()}]
    with psycopg.connect(database_url) as conn:
        conn.execute("LOCK TABLE budget_periods IN ACCESS EXCLUSIVE MODE")
        r = team.post("/api/jobs", json={"requests": [{"model": "gpt-4o-mini", "messages": msg}]})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["type"] == "service_unavailable"
        conn.rollback()
    listed = team.get("/api/jobs").json()["data"]
    assert listed == []  # nothing was admitted unchecked
    ok = team.post("/api/jobs", json={"requests": [{"model": "gpt-4o-mini", "messages": msg}]})
    assert ok.status_code == 202, ok.text


# -- CLI ---------------------------------------------------------------------------------------------


def test_cli_credits_and_usage(
    capsys: pytest.CaptureFixture[str], stack: Stack, make_team: Callable[..., TeamClient]
) -> None:
    from cli.main import main
    from tests.harness import MASTER_KEY

    def run(key: str, *argv: str) -> tuple[int, str, str]:
        code = main([*argv, "--api-url", stack.api_url, "--key", key, "--data-dir", "/nonexistent"])
        out, err = capsys.readouterr()
        return code, out, err

    team = make_team(enforce_credits=True)
    code, out, _ = run(MASTER_KEY, "credits", "grant", team.team_id, "5", "--idempotency-key", "k")
    assert code == 0 and json.loads(out)["balance_after"] == "5"
    code, out, _ = run(MASTER_KEY, "credits", "grant", team.team_id, "5", "--idempotency-key", "k")
    assert code == 0 and json.loads(out)["balance_after"] == "5"  # replayed, not granted twice
    code, out, _ = run(MASTER_KEY, "credits", "grant", team.team_id, "-1", "--adjust")
    assert code == 0 and json.loads(out)["kind"] == "adjustment"
    job = team.wait(
        team.submit(
            [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "cli " + nonce()}]}]
        )["id"]
    )
    assert job["credits_charged"] == "1"
    code, out, _ = run(team.key, "credits", "show")
    shown = json.loads(out)
    assert code == 0 and shown["balance"] == "3" and shown["entries"]["data"][0]["kind"] == "charge"
    code, out, _ = run(MASTER_KEY, "credits", "show", team.team_id)
    assert json.loads(out)["balance"] == "3"
    code, out, _ = run(MASTER_KEY, "credits", "refund", job["id"], "--idempotency-key", "r")
    assert code == 0 and (json.loads(out)["kind"], json.loads(out)["balance_after"]) == (
        "refund",
        "4",
    )
    code, out, _ = run(MASTER_KEY, "credits", "refund", job["id"], "--idempotency-key", "r")
    assert code == 0 and json.loads(out)["balance_after"] == "4"  # replayed, not refunded twice
    code, out, _ = run(team.key, "usage", "--group-by", "model")
    assert code == 0 and "gpt-4o-mini" in out and out.splitlines()[-1].startswith("total")
    code, out, _ = run(team.key, "usage", "--group-by", "model", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["group"] for r in rows] == ["gpt-4o-mini"] and rows[0]["credits"] == "0"  # refunded
    code, out, _ = run(
        MASTER_KEY, "usage", "--team-id", team.team_id, "--group-by", "team", "--csv"
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["group"] for r in rows] == [team.team_id]
    team.close()


# -- refunds -----------------------------------------------------------------------------------------


def test_admin_refunds_a_jobs_charge_once(
    make_team: Callable[..., TeamClient], admin: httpx.Client, database_url: str
) -> None:
    team = make_team(enforce_credits=True)
    grant = admin.post(f"/api/admin/teams/{team.team_id}/credits", json={"amount": "5"})
    assert grant.status_code == 201, grant.text
    msg = [{"role": "user", "content": "refund " + nonce()}]
    ok = team.wait(team.submit([{"model": "gpt-4o-mini", "messages": msg}])["id"])
    assert ok["status"] == "succeeded" and ok["credits_charged"] == "1"
    bad_msg = [{"role": "user", "content": "[[fail:400]] " + nonce()}]
    bad = team.wait(team.submit([{"model": "gpt-4o-mini", "messages": bad_msg}])["id"])
    assert bad["status"] == "failed"
    url = f"/api/admin/jobs/{ok['id']}/refund"

    first = admin.post(url, json={"note": "support #12"}, headers={"Idempotency-Key": "r1"})
    assert first.status_code == 201, first.text
    entry = first.json()
    assert (entry["kind"], entry["amount"], entry["job_id"]) == ("refund", "1", ok["id"])
    assert entry["balance_after"] == "5" and entry["note"] == "support #12"
    replay = admin.post(url, json={"note": "support #12"}, headers={"Idempotency-Key": "r1"})
    assert replay.status_code == 200 and replay.json()["id"] == entry["id"]
    assert replay.headers["idempotent-replayed"] == "true"
    other = admin.post(url, json={"note": "changed"}, headers={"Idempotency-Key": "r1"})
    assert other.status_code == 409 and other.json()["error"]["type"] == "idempotency_conflict"
    twice = admin.post(url, json={})
    assert twice.status_code == 409, twice.text  # once: at most what was charged
    assert "already refunded" in twice.json()["error"]["message"]
    uncharged = admin.post(f"/api/admin/jobs/{bad['id']}/refund")
    assert uncharged.status_code == 409, uncharged.text
    missing = admin.post("/api/admin/jobs/job_nope/refund")
    assert missing.status_code == 404, missing.text
    assert team.post(url).status_code == 401  # a team key is no admin

    assert team.get(f"/api/jobs/{ok['id']}").json()["credits_refunded"] == "1"
    assert _ledger_matches_balance(admin, team) == 5
    kinds = [e["kind"] for e in _ledger(admin, team.team_id)]
    assert kinds == ["refund", "charge", "grant"]
    # the refunded credits are spendable again, and usage shows the job's credits net
    assert D(_credits(team)["available"]) == 5
    usage = team.get("/api/usage", params={"group_by": "model"}).json()
    assert usage["total"]["credits"] == "0" and usage["total"]["jobs"] == 2
    with psycopg.connect(database_url) as conn:
        audited = conn.execute(
            "SELECT action, target_type, target_id, detail FROM admin_audit_log "
            "WHERE action = 'POST /api/admin/jobs/{job_id}/refund' AND target_id = %s",
            (team.team_id,),
        ).fetchall()
    # the refund and its replay (both answered 2xx), with the team as the target
    action = "POST /api/admin/jobs/{job_id}/refund"
    assert [(a, t, d["job_id"]) for a, t, _, d in audited] == [(action, "team", ok["id"])] * 2
