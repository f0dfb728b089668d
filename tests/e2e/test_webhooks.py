"""Webhooks end to end: a job ends, the worker signs and sends the event to a real receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from cli.stack import free_port, start_worker
from shared.config import Settings
from shared.db import create_engine, create_sessionmaker, transaction
from shared.models import DeliveryStatus, Team, WebhookDelivery
from shared.queue import open_queue
from shared.runtime import build_runtime
from shared.webhooks.delivery import WebhookSender, generate_secret
from shared.webhooks.events import record_event
from shared.webhooks.runner import Sweeper
from tests.conftest import OwnPlatform, TeamClient, nonce
from tests.fakes.receiver import Receiver, Reply
from tests.harness import (
    METRICS_TOKEN,
    WEBHOOK_SECRETS_KEY,
    create_database,
    drop_database,
    wait_until,
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _endpoint(team: TeamClient, url: str, **extra: Any) -> dict[str, Any]:
    r = team.post("/api/webhooks/endpoints", json={"url": url, **extra})
    assert r.status_code == 201, r.text
    body = dict(r.json())
    assert body["secret"].startswith("whsec_")
    return body


def _step_job(team: TeamClient, **extra: Any) -> str:
    """A job with no calls, closed at once: it ends inside the API's transaction."""
    created = team.post("/api/jobs/create", json={"job_type": "webhook-test", **extra})
    assert created.status_code == 201, created.text
    job_id = str(created.json()["id"])
    done = team.post(f"/api/jobs/{job_id}/complete")
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    return job_id


def _event(team: TeamClient, job_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        data = team.get("/api/webhooks/events", params={"job_id": job_id}).json()["data"]
        return data[0] if data else None

    return dict(wait_until(found, what=f"the event of {job_id}"))


def _delivery(team: TeamClient, event_id: str, endpoint_id: str | None) -> dict[str, Any]:
    rows = team.get("/api/webhooks/deliveries", params={"event_id": event_id}).json()["data"]
    matches = [d for d in rows if d["endpoint_id"] == endpoint_id]
    assert len(matches) == 1, rows
    return dict(matches[0])


def _settled(team: TeamClient, event_id: str, endpoint_id: str | None) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        d = _delivery(team, event_id, endpoint_id)
        return d if d["status"] != "pending" else None

    return dict(wait_until(done, what="the delivery to settle"))


def _attempts(team: TeamClient, delivery_id: str) -> list[dict[str, Any]]:
    r = team.get(f"/api/webhooks/deliveries/{delivery_id}/attempts")
    assert r.status_code == 200, r.text
    return sorted(r.json()["data"], key=lambda a: a["attempt"])


def test_finished_job_reaches_the_receiver_signed_with_the_job_as_the_api_shows_it(
    team: TeamClient, receiver: Receiver
) -> None:
    tag = nonce()
    endpoint = _endpoint(team, receiver.url, description=tag)
    only_failures = _endpoint(team, receiver.url, event_types=["job.failed"])
    job = team.submit(
        [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} hello"}]}],
        metadata={"tag": tag},
    )
    done = team.wait(job["id"])
    assert done["status"] == "succeeded"
    got = receiver.wait_for(1)[0]
    payload = Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"] == team.get(f"/api/jobs/{job['id']}").json()
    assert payload["data"]["metadata"] == {"tag": tag}
    datetime.fromisoformat(payload["timestamp"])
    with pytest.raises(WebhookVerificationError):
        Webhook(only_failures["secret"]).verify(got.body, got.headers)
    event = _event(team, job["id"])
    assert got.headers["webhook-id"] == event["id"]
    assert event["type"] == "job.succeeded" and event["payload"] == payload
    delivery = _settled(team, event["id"], endpoint["id"])
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 1
    [attempt] = _attempts(team, delivery["id"])
    assert attempt["status_code"] == 200 and attempt["response_body"] == "ok"
    assert attempt["latency_ms"] is not None and attempt["error"] is None
    # the endpoint filtering on job.failed was not a target of job.succeeded
    rows = team.get("/api/webhooks/deliveries", params={"event_id": event["id"]}).json()["data"]
    assert [d["endpoint_id"] for d in rows] == [endpoint["id"]]
    assert len(receiver.requests) == 1
    metrics = team.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert 'saas_llm_webhook_deliveries{status="succeeded"}' in metrics.text


def test_a_jobs_own_webhook_url_is_signed_with_the_team_secret(
    team: TeamClient, receiver: Receiver
) -> None:
    job_id = _step_job(team, webhook_url=receiver.url)
    got = receiver.wait_for(1)[0]
    secret = team.get("/api/webhooks/secret").json()["secret"]
    assert secret.startswith("whsec_")
    assert team.get("/api/webhooks/secret").json()["secret"] == secret  # created once
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["data"]["id"] == job_id and payload["data"]["webhook_url"] == receiver.url
    event = _event(team, job_id)
    delivery = _settled(team, event["id"], None)
    assert delivery["target"] == "job_url" and delivery["status"] == "succeeded"


def test_three_500s_then_200_is_delivered_on_the_fourth_attempt_with_one_webhook_id(
    team: TeamClient, receiver: Receiver
) -> None:
    receiver.reply(
        Reply(503, headers={"Retry-After": "1"}, body="busy"),
        Reply(500, body="oops"),
        Reply(500, body="x" * 5000),
    )
    endpoint = _endpoint(team, receiver.url)
    job_id = _step_job(team)
    got = receiver.wait_for(4)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert got[1].at - got[0].at >= 1.0  # Retry-After honoured over the 0.5 s schedule
    assert got[2].at - got[1].at >= 0.45 and got[3].at - got[2].at >= 0.45
    event = _event(team, job_id)
    assert got[0].headers["webhook-id"] == event["id"]
    delivery = _settled(team, event["id"], endpoint["id"])
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 4
    attempts = _attempts(team, delivery["id"])
    assert [a["status_code"] for a in attempts] == [503, 500, 500, 200]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert attempts[0]["response_body"] == "busy"
    assert attempts[2]["response_body"] == "x" * 2048  # only the first 2 KB is kept
    failed = team.get(
        "/api/webhooks/deliveries", params={"status": "failed", "event_id": event["id"]}
    )
    assert failed.json()["data"] == []


def test_a_receiver_down_for_the_whole_schedule_fails_then_redelivery_and_replay_deliver(
    team: TeamClient,
) -> None:
    since = datetime.now(UTC).isoformat()
    port = free_port()  # nothing listens here yet
    endpoint = _endpoint(team, f"http://127.0.0.1:{port}/hook")
    events = [_event(team, _step_job(team)) for _ in range(3)]
    for event in events:
        delivery = _settled(team, event["id"], endpoint["id"])
        assert delivery["status"] == "failed" and delivery["attempts"] == 4
        attempts = _attempts(team, delivery["id"])
        assert len(attempts) == 4
        assert all(a["status_code"] is None and a["error"] for a in attempts)
    live = Receiver(port).start()
    try:
        r = team.post(f"/api/webhooks/events/{events[0]['id']}/redeliver")
        assert r.status_code == 202, r.text
        assert r.json()["count"] == 1
        first = _settled(team, events[0]["id"], endpoint["id"])
        assert first["status"] == "succeeded" and first["attempts"] == 5
        assert live.wait_for(1)[0].headers["webhook-id"] == events[0]["id"]
        # replay sends every failed delivery of the endpoint since a time: the other two
        r = team.post(f"/api/webhooks/endpoints/{endpoint['id']}/replay", json={"since": since})
        assert r.status_code == 200, r.text
        assert r.json()["count"] == 2
        for event in events[1:]:
            assert _settled(team, event["id"], endpoint["id"])["status"] == "succeeded"
        assert {g.headers["webhook-id"] for g in live.wait_for(3)} == {e["id"] for e in events}
        assert len(live.requests) == 3
        # nothing failed is left to replay
        again = team.post(f"/api/webhooks/endpoints/{endpoint['id']}/replay", json={"since": since})
        assert again.json()["count"] == 0
    finally:
        live.stop()


def test_retries_go_to_the_endpoints_new_url_once_it_is_changed(
    team: TeamClient, receiver: Receiver
) -> None:
    # The old URL fails once (asking for 2 s, time to change the URL), then is gone for good:
    # a retry sent there would get a 410 and disable the endpoint the customer just fixed.
    old = Receiver().start()
    old.reply(Reply(500, headers={"Retry-After": "2"}, body="moving"))
    old.default = Reply(410, body="gone")
    try:
        endpoint = _endpoint(team, old.url)
        job_id = _step_job(team)
        old.wait_for(1)
        moved = team.patch(f"/api/webhooks/endpoints/{endpoint['id']}", json={"url": receiver.url})
        assert moved.status_code == 200 and moved.json()["url"] == receiver.url, moved.text
        got = receiver.wait_for(1)[0]
        event = _event(team, job_id)
        assert got.headers["webhook-id"] == old.requests[0].headers["webhook-id"] == event["id"]
        Webhook(endpoint["secret"]).verify(got.body, got.headers)
        delivery = _settled(team, event["id"], endpoint["id"])
        assert delivery["status"] == "succeeded" and delivery["attempts"] == 2
        assert delivery["url"] == receiver.url
        attempts = _attempts(team, delivery["id"])
        assert [(a["url"], a["status_code"]) for a in attempts] == [
            (old.url, 500),
            (receiver.url, 200),
        ]
        state = team.get(f"/api/webhooks/endpoints/{endpoint['id']}").json()
        assert state["enabled"] is True and state["failing_since"] is None
        # a redelivery goes to the current URL too
        redo = team.post(f"/api/webhooks/events/{event['id']}/redeliver")
        assert redo.status_code == 202, redo.text
        assert receiver.wait_for(2)[1].headers["webhook-id"] == event["id"]
        assert _settled(team, event["id"], endpoint["id"])["status"] == "succeeded"
        assert len(old.requests) == 1
    finally:
        old.stop()


def test_410_gone_disables_the_endpoint_and_later_events_are_not_sent_to_it(
    team: TeamClient, receiver: Receiver
) -> None:
    gone = Receiver().start()
    gone.default = Reply(410, body="gone")
    try:
        dead = _endpoint(team, gone.url)
        alive = _endpoint(team, receiver.url)
        first = _event(team, _step_job(team))
        gone.wait_for(1)
        delivery = _settled(team, first["id"], dead["id"])
        assert delivery["status"] == "failed" and delivery["attempts"] == 1
        state = team.get(f"/api/webhooks/endpoints/{dead['id']}").json()
        assert state["enabled"] is False and state["disabled_reason"] == "gone"
        second = _event(team, _step_job(team))
        got = receiver.wait_for(2)
        assert {g.headers["webhook-id"] for g in got} == {first["id"], second["id"]}
        rows = team.get("/api/webhooks/deliveries", params={"event_id": second["id"]}).json()
        assert [d["endpoint_id"] for d in rows["data"]] == [alive["id"]]
        assert len(gone.requests) == 1
        # a disabled endpoint is not a redelivery target
        redo = team.post(f"/api/webhooks/events/{first['id']}/redeliver").json()
        assert all(d["endpoint_id"] != dead["id"] for d in redo["data"])
    finally:
        gone.stop()


def test_during_the_grace_period_old_and_new_secrets_both_verify(
    team: TeamClient, receiver: Receiver
) -> None:
    endpoint = _endpoint(team, receiver.url)
    old = endpoint["secret"]
    assert team.get(f"/api/webhooks/endpoints/{endpoint['id']}/secret").json()["secret"] == old
    rotated = team.post(f"/api/webhooks/endpoints/{endpoint['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_")
    assert rotated.json()["previous_secret_expires_at"] is not None
    assert team.get(f"/api/webhooks/endpoints/{endpoint['id']}/secret").json()["secret"] == new
    _step_job(team)
    got = receiver.wait_for(1)[0]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    holder_of_old = Webhook(old).verify(got.body, got.headers)
    holder_of_new = Webhook(new).verify(got.body, got.headers)
    assert holder_of_old == holder_of_new and holder_of_new["type"] == "job.succeeded"
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(got.body, got.headers)


def test_endpoint_crud_and_pagination(team: TeamClient) -> None:
    ids = [_endpoint(team, f"https://example.com/hook/{i}")["id"] for i in range(3)]
    page1 = team.get("/api/webhooks/endpoints", params={"limit": 2}).json()
    assert [e["id"] for e in page1["data"]] == ids[::-1][:2] and page1["has_more"]
    page2 = team.get(
        "/api/webhooks/endpoints", params={"limit": 2, "after": page1["next_cursor"]}
    ).json()
    assert [e["id"] for e in page2["data"]] == ids[:1] and not page2["has_more"]
    assert "secret" not in page1["data"][0]
    patched = team.patch(
        f"/api/webhooks/endpoints/{ids[0]}",
        json={"url": "https://example.org/x", "event_types": ["job.failed"], "enabled": False},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["url"] == "https://example.org/x" and body["event_types"] == ["job.failed"]
    assert body["enabled"] is False and body["disabled_reason"] == "manual"
    bad = team.post("/api/webhooks/endpoints", json={"url": "x", "event_types": ["nope"]})
    assert bad.status_code == 422
    assert team.delete(f"/api/webhooks/endpoints/{ids[0]}").status_code == 204
    assert team.get(f"/api/webhooks/endpoints/{ids[0]}").status_code == 404


def test_another_team_sees_none_of_a_teams_webhooks(
    make_team: Callable[..., TeamClient], receiver: Receiver
) -> None:
    a, b = make_team(), make_team()
    endpoint = _endpoint(a, receiver.url)
    job_id = _step_job(a)
    event = _event(a, job_id)
    delivery = _settled(a, event["id"], endpoint["id"])
    eid, vid = endpoint["id"], delivery["id"]
    for method, path, body in [
        ("GET", f"/api/webhooks/endpoints/{eid}", None),
        ("PATCH", f"/api/webhooks/endpoints/{eid}", {"enabled": False}),
        ("GET", f"/api/webhooks/endpoints/{eid}/secret", None),
        ("POST", f"/api/webhooks/endpoints/{eid}/rotate-secret", None),
        ("POST", f"/api/webhooks/endpoints/{eid}/replay", {"since": "2020-01-01T00:00:00Z"}),
        ("DELETE", f"/api/webhooks/endpoints/{eid}", None),
        ("GET", f"/api/webhooks/events/{event['id']}", None),
        ("POST", f"/api/webhooks/events/{event['id']}/redeliver", None),
        ("GET", f"/api/webhooks/deliveries/{vid}", None),
        ("GET", f"/api/webhooks/deliveries/{vid}/attempts", None),
    ]:
        r = b.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["type"] == "not_found"
    assert b.get("/api/webhooks/endpoints").json()["data"] == []
    assert b.get("/api/webhooks/events").json()["data"] == []
    assert b.get("/api/webhooks/events", params={"job_id": job_id}).json()["data"] == []
    assert b.get("/api/webhooks/deliveries").json()["data"] == []
    assert b.get("/api/webhooks/deliveries", params={"endpoint_id": eid}).json()["data"] == []
    assert (
        b.get("/api/webhooks/secret").json()["secret"]
        != a.get("/api/webhooks/secret").json()["secret"]
    )
    # A's rows are untouched by B's attempts
    assert a.get(f"/api/webhooks/endpoints/{eid}").json()["enabled"] is True
    assert len(receiver.requests) == 1


# -- the sweep, against a database of its own (no worker claims its rows) -------------------------


def _row_locked(database_url: str, delivery_id: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            conn.execute(
                "SELECT id FROM webhook_deliveries WHERE id = %s FOR UPDATE NOWAIT", (delivery_id,)
            )
        except psycopg.errors.LockNotAvailable:
            return True
    return False


async def _sweep_holding_nothing(database_url: str, receiver: Receiver) -> None:
    settings = Settings(
        database_url=database_url,
        webhook_secrets_key=WEBHOOK_SECRETS_KEY,
        webhook_max_concurrency=2,
        webhook_allow_private_networks=True,
    )
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    queue = open_queue(settings)
    sender = WebhookSender(settings)
    try:
        team_id = "sweep-" + nonce()
        async with transaction(sessionmaker) as session:
            session.add(Team(id=team_id, name="sweep"))
            await session.flush()
            for i in range(4):
                await record_event(
                    session, team_id, "job.succeeded", {"i": i}, extra_url=receiver.url
                )
        async with transaction(sessionmaker) as session:
            rows = (await session.execute(select(WebhookDelivery))).scalars().all()
            due = sorted(d.id for d in rows[:3])
            rows[3].next_attempt_at = datetime.now(UTC) + timedelta(hours=1)  # not due yet
        receiver.default = Reply(hang=True)
        async with httpx.AsyncClient() as http:
            rt = build_runtime(settings, queue, http=http)
            await rt.engine.dispose()
            rt.sessionmaker = sessionmaker  # the test watches this engine's pool
            sweeper = Sweeper(rt, sender)
            assert await sweeper.sweep() == 2  # as many as there are free slots
            assert await sweeper.sweep() == 0  # full
            held = await asyncio.to_thread(receiver.wait_for, 2)
            # The requests are in flight with no database connection held and no row locked.
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            sent = {json.loads(r.body)["data"]["i"] for r in held}
            assert len(sent) == 2
            for delivery_id in due:
                assert not await asyncio.to_thread(_row_locked, database_url, delivery_id)
            receiver.release.set()
            await asyncio.wait(list(sweeper.tasks))
            # A freed slot wakes the sweeper for what was left: the third due delivery.
            assert sweeper.wake.is_set()
            assert await sweeper.sweep() == 1
            await asyncio.wait(list(sweeper.tasks))
            assert await sweeper.sweep() == 0
        async with transaction(sessionmaker) as session:
            rows = (await session.execute(select(WebhookDelivery))).scalars().all()
            by_id = {d.id: d for d in rows}
            assert sorted(d for d in by_id if by_id[d].status == DeliveryStatus.SUCCEEDED) == due
            assert [d.attempts for d in rows if d.id not in due] == [0]
        assert len(receiver.requests) == 3
    finally:
        await sender.aclose()
        await queue.aclose()
        await engine.dispose()


def test_the_sweep_claims_and_sends_up_to_its_slots_holding_no_lock_or_connection(
    receiver: Receiver,
) -> None:
    database_url = create_database()
    try:
        asyncio.run(_sweep_holding_nothing(database_url, receiver))
    finally:
        drop_database(database_url)


# -- a platform of its own: a worker with different settings, or one the test kills --------------


def test_with_the_guard_on_a_loopback_address_is_refused_and_nothing_is_sent(
    own_platform: OwnPlatform, receiver: Receiver
) -> None:
    with own_platform(WEBHOOK_ALLOW_PRIVATE_NETWORKS="false") as (team, _, _):
        endpoint = _endpoint(team, f"http://localhost:{receiver.port}/hook")
        event = _event(team, _step_job(team))
        delivery = _settled(team, event["id"], endpoint["id"])
        assert delivery["status"] == "failed"
        attempts = _attempts(team, delivery["id"])
        assert len(attempts) == 4
        for attempt in attempts:
            assert attempt["status_code"] is None and attempt["latency_ms"] is None
            assert "non-global address" in attempt["error"] and "not sent" in attempt["error"]
        assert receiver.requests == []


def test_once_the_grace_period_is_over_only_the_new_secret_signs(
    own_platform: OwnPlatform, receiver: Receiver
) -> None:
    grace = 3.0
    job_hook = Receiver().start()  # a job's own webhook_url: signed with the team secret
    try:
        with own_platform(WEBHOOK_SECRET_GRACE_SECONDS=str(int(grace))) as (team, _, _):
            endpoint = _endpoint(team, receiver.url)
            # (where the secret is read, where it is rotated, who receives what it signs)
            targets = [
                (
                    f"/api/webhooks/endpoints/{endpoint['id']}/secret",
                    f"/api/webhooks/endpoints/{endpoint['id']}/rotate-secret",
                    receiver,
                ),
                ("/api/webhooks/secret", "/api/webhooks/secret/rotate", job_hook),
            ]
            old, new = [], []
            for read, rotate, _ in targets:
                old.append(team.get(read).json()["secret"])
                before = datetime.now(UTC)
                rotated = team.post(rotate)
                assert rotated.status_code == 200, rotated.text
                expires = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
                # the private worker's grace applies, not the 24 h default
                assert before < expires <= datetime.now(UTC) + timedelta(seconds=grace + 1)
                new.append(rotated.json()["secret"])
                assert new[-1] != old[-1] and team.get(read).json()["secret"] == new[-1]

            _step_job(team, webhook_url=job_hook.url)
            for (_, _, hook), old_secret, new_secret in zip(targets, old, new, strict=True):
                got = hook.wait_for(1)[0]
                assert len(got.headers["webhook-signature"].split(" ")) == 2, "sent after grace"
                Webhook(old_secret).verify(got.body, got.headers)
                Webhook(new_secret).verify(got.body, got.headers)

            def expired() -> bool:
                return all(
                    team.get(read).json()["previous_secret_expires_at"] is None
                    for read, _, _ in targets
                )

            wait_until(expired, timeout=grace + 30, what="the previous secrets to expire")
            job_id = _step_job(team, webhook_url=job_hook.url)
            event = _event(team, job_id)
            for (read, _, hook), old_secret, new_secret in zip(targets, old, new, strict=True):
                got = hook.wait_for(2)[1]
                assert got.headers["webhook-id"] == event["id"]
                assert len(got.headers["webhook-signature"].split(" ")) == 1
                payload = Webhook(new_secret).verify(got.body, got.headers)
                assert payload["data"]["id"] == job_id
                with pytest.raises(WebhookVerificationError):
                    Webhook(old_secret).verify(got.body, got.headers)
                assert team.get(read).json()["secret"] == new_secret
                assert len(hook.requests) == 2
    finally:
        job_hook.stop()


def test_an_endpoint_failing_for_the_whole_window_is_disabled_and_gets_no_later_events(
    own_platform: OwnPlatform, receiver: Receiver
) -> None:
    window, schedule = 2.0, "0,1,1,1,1,1,1,1"  # the schedule outlasts the window
    failing = Receiver().start()
    failing.default = Reply(500, body="down")
    try:
        with own_platform(
            WEBHOOK_DISABLE_AFTER_SECONDS=str(int(window)), WEBHOOK_RETRY_SCHEDULE=schedule
        ) as (team, _, _):
            dead = _endpoint(team, failing.url)
            alive = _endpoint(team, receiver.url)
            first = _event(team, _step_job(team))

            def disabled() -> dict[str, Any] | None:
                state = dict(team.get(f"/api/webhooks/endpoints/{dead['id']}").json())
                return state if not state["enabled"] else None

            state = wait_until(disabled, what="the failing endpoint to be disabled")
            assert state["disabled_reason"] == "failing" and state["failing_since"] is not None
            delivery = _settled(team, first["id"], dead["id"])
            assert delivery["status"] == "failed" and delivery["last_status_code"] == 500
            # the round ended because the endpoint was disabled, not because the schedule did
            assert 3 <= delivery["attempts"] < len(schedule.split(","))
            attempts = _attempts(team, delivery["id"])
            assert [a["status_code"] for a in attempts] == [500] * delivery["attempts"]
            sent = [r.at for r in failing.requests]
            assert len(sent) == delivery["attempts"]
            # disabled by the first failure at least `window` after the first one, not before
            assert sent[-1] - sent[0] >= window - 0.1
            assert sent[-2] - sent[0] < window + 0.1
            assert _settled(team, first["id"], alive["id"])["status"] == "succeeded"

            second = _event(team, _step_job(team))
            got = receiver.wait_for(2)
            assert {g.headers["webhook-id"] for g in got} == {first["id"], second["id"]}
            rows = team.get("/api/webhooks/deliveries", params={"event_id": second["id"]}).json()
            assert [d["endpoint_id"] for d in rows["data"]] == [alive["id"]]
            assert _settled(team, second["id"], alive["id"])["status"] == "succeeded"
            assert len(failing.requests) == delivery["attempts"]
            # nor is it a target of a redelivery or a replay while disabled
            redo = team.post(f"/api/webhooks/events/{first['id']}/redeliver").json()
            assert [d["endpoint_id"] for d in redo["data"]] == [alive["id"]]
            replay = team.post(
                f"/api/webhooks/endpoints/{dead['id']}/replay",
                json={"since": "2020-01-01T00:00:00Z"},
            )
            assert replay.status_code == 409, replay.text
            assert _settled(team, first["id"], alive["id"])["status"] == "succeeded"
            assert len(receiver.wait_for(3)) == 3
            assert len(failing.requests) == delivery["attempts"]
            state = team.get(f"/api/webhooks/endpoints/{dead['id']}").json()
            assert state["enabled"] is False and state["disabled_reason"] == "failing"
    finally:
        failing.stop()


@pytest.mark.chaos
def test_a_worker_killed_mid_delivery_delivers_once_it_is_back(
    own_platform: OwnPlatform, log_dir: Path, receiver: Receiver
) -> None:
    # Lease = timeout + 5 s: a dead worker's attempt is retried that long after it began.
    with own_platform(WEBHOOK_TIMEOUT_SECONDS="2") as (team, env, procs):
        endpoint = _endpoint(team, receiver.url)
        receiver.reply(Reply(hang=True))  # the first attempt never gets its answer
        job = team.submit(
            [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": nonce()}]}]
        )
        assert team.wait(job["id"])["status"] == "succeeded"
        first = receiver.wait_for(1)[0]
        procs["worker"].kill()  # SIGKILL, mid-request
        event = _event(team, job["id"])
        delivery = _delivery(team, event["id"], endpoint["id"])
        assert delivery["status"] == "pending" and _attempts(team, delivery["id"]) == []
        procs["worker2"] = start_worker(env, log_dir, name=f"worker2-wh-{nonce()}")
        second = receiver.wait_for(2, timeout=40)[1]
        assert second.headers["webhook-id"] == first.headers["webhook-id"] == event["id"]
        done = _settled(team, event["id"], endpoint["id"])
        assert done["status"] == "succeeded" and done["attempts"] == 2
        [logged] = _attempts(team, done["id"])
        assert logged["attempt"] == 2 and logged["status_code"] == 200


def test_changing_a_failing_endpoints_url_clears_its_failure_clock(
    team: TeamClient, receiver: Receiver
) -> None:
    failing = Receiver().start()
    failing.default = Reply(500, body="down")
    try:
        endpoint = _endpoint(team, failing.url)
        _step_job(team)
        failing.wait_for(1)
        url = f"/api/webhooks/endpoints/{endpoint['id']}"
        since = wait_until(lambda: team.get(url).json()["failing_since"], what="failing_since")
        assert since is not None
        same = team.patch(url, json={"url": failing.url}).json()
        assert same["failing_since"] == since  # the same address keeps its record
        moved = team.patch(url, json={"url": receiver.url}).json()
        assert moved["url"] == receiver.url and moved["failing_since"] is None
    finally:
        failing.stop()
