"""The job pipeline end to end: HTTP API -> Postgres -> arq -> LiteLLM proxy -> fake provider."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx

from tests import litellm_prices
from tests.conftest import TeamClient, nonce
from tests.harness import provider_requests, wait_until


def test_batch_job_of_three_calls_succeeds_with_exact_tokens_and_cost(
    team: TeamClient, provider: httpx.Client
) -> None:
    tag = nonce()
    requests = [
        {
            "custom_id": f"c{i}",
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"{tag} question number {i} " + "word " * i}],
        }
        for i in range(3)
    ]
    job = team.submit(requests, job_type="summarize", metadata={"doc": 7})
    assert job["status"] == "queued"
    assert job["request_counts"]["total"] == 3
    done = team.wait(job["id"])
    assert done["status"] == "succeeded", done
    assert done["request_counts"]["succeeded"] == 3
    assert done["job_type"] == "summarize" and done["metadata"] == {"doc": 7}
    assert done["started_at"] and done["finished_at"]

    full = team.get(f"/api/jobs/{job['id']}", params={"include_calls": True}).json()
    seen = {r["content"]: r for r in provider_requests(provider, tag)}
    assert len(seen) == 3
    price_in, price_out = litellm_prices.per_token("gpt-4o-mini")
    total_cost = Decimal(0)
    sums = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for call in full["calls"]:
        content = next(
            c for c in seen if c.startswith(f"{tag} question number {call['custom_id'][1:]}")
        )
        usage = seen[content]["usage"]
        assert call["usage"] == usage
        expected = price_in * usage["prompt_tokens"] + price_out * usage["completion_tokens"]
        cost = Decimal(call["cost_usd"])
        assert cost > 0
        assert cost.quantize(Decimal("1e-10")) == expected.quantize(Decimal("1e-10"))
        assert call["response"]["choices"][0]["message"]["content"].startswith("echo:")
        assert call["litellm_call_id"] and call["attempts"] == 1 and call["latency_ms"] is not None
        assert call["model"] == "gpt-4o-mini"
        total_cost += cost
        for k in sums:
            sums[k] += usage[k]
    assert Decimal(done["cost_usd"]) == total_cost
    assert done["usage"] == sums


def test_results_json_and_jsonl_in_custom_id_order(team: TeamClient) -> None:
    tag = nonce()
    ids = ["b", "c", "a"]
    job = team.submit(
        [
            {
                "custom_id": cid,
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{tag} {cid}"}],
            }
            for cid in ids
        ]
    )
    team.wait(job["id"])
    as_json = team.get(f"/api/jobs/{job['id']}/results").json()
    assert [r["custom_id"] for r in as_json["data"]] == ["a", "b", "c"]
    assert all(r["response"]["status_code"] == 200 for r in as_json["data"])
    jsonl = team.get(f"/api/jobs/{job['id']}/results", headers={"Accept": "application/x-ndjson"})
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [line["custom_id"] for line in lines] == ["a", "b", "c"]
    assert lines[0]["response"]["body"]["choices"][0]["message"]["content"] == f"echo: {tag} a"


def test_step_style_flow_from_the_seed_bills_as_one_job(team: TeamClient) -> None:
    tag = nonce()
    created = team.post(
        "/api/jobs/create",
        json={"team_id": team.team_id, "job_type": "test", "metadata": {"test": True}},
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    assert created.json()["status"] == "open"
    first = team.post(
        f"/api/jobs/{job_id}/calls",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"{tag} one"}],
            "wait": 30,
        },
    )
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "succeeded"
    second = team.post(
        f"/api/jobs/{job_id}/calls",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} two"}]},
    )
    assert second.status_code == 202
    assert team.get(f"/api/jobs/{job_id}").json()["status"] == "open"
    closed = team.post(f"/api/jobs/{job_id}/complete")
    assert closed.status_code == 200, closed.text
    done = team.wait(job_id)
    assert done["status"] == "succeeded"
    assert done["request_counts"] == {
        "total": 2,
        "queued": 0,
        "running": 0,
        "succeeded": 2,
        "failed": 0,
        "cancelled": 0,
    }
    calls = team.get(f"/api/jobs/{job_id}", params={"include_calls": True}).json()["calls"]
    assert done["usage"]["total_tokens"] == sum(c["usage"]["total_tokens"] for c in calls)
    assert Decimal(done["cost_usd"]) == sum(Decimal(c["cost_usd"]) for c in calls)
    # closed jobs take no more calls
    late = team.post(
        f"/api/jobs/{job_id}/calls",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    )
    assert late.status_code == 409 and late.json()["error"]["type"] == "conflict"
    # another team's id in the seed body is refused
    other = team.post("/api/jobs/create", json={"team_id": "someone-else", "job_type": "test"})
    assert other.status_code == 400


def test_transient_provider_errors_are_retried(team: TeamClient, provider: httpx.Client) -> None:
    tag = nonce()
    job = team.submit(
        [
            {
                "custom_id": "rl",
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "user", "content": f"{tag} [[fail:429:2]] [[retry-after:1]] a"}
                ],
            },
            {
                "custom_id": "5xx",
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{tag} [[fail:500:2]] b"}],
            },
        ]
    )
    done = team.wait(job["id"])
    assert done["status"] == "succeeded", done
    calls = {
        c["custom_id"]: c
        for c in team.get(f"/api/jobs/{job['id']}", params={"include_calls": True}).json()["calls"]
    }
    assert calls["rl"]["attempts"] == 3 and calls["5xx"]["attempts"] == 3
    seen = provider_requests(provider, tag)
    assert sorted(r["status"] for r in seen) == [200, 200, 429, 429, 500, 500]
    # only the successful attempt is counted
    ok = [r for r in seen if r["status"] == 200]
    assert done["usage"]["total_tokens"] == sum(r["usage"]["total_tokens"] for r in ok)
    rl = sorted(r["t"] for r in seen if "[[fail:429" in r["content"])
    assert rl[1] - rl[0] >= 1.0 and rl[2] - rl[1] >= 1.0  # Retry-After: 1 honoured


def test_client_error_fails_the_call_and_keeps_other_results(
    team: TeamClient, provider: httpx.Client
) -> None:
    tag = nonce()
    job = team.submit(
        [
            {
                "custom_id": "bad",
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{tag} [[fail:400]]"}],
            },
            {
                "custom_id": "good",
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{tag} fine"}],
            },
        ]
    )
    done = team.wait(job["id"])
    assert done["status"] == "failed"
    assert done["error"]["type"] == "calls_failed"
    assert done["request_counts"]["failed"] == 1 and done["request_counts"]["succeeded"] == 1
    results = {r["custom_id"]: r for r in team.get(f"/api/jobs/{job['id']}/results").json()["data"]}
    assert "fake provider refused the request with 400" in results["bad"]["error"]["message"]
    assert results["bad"]["error"]["status"] == 400
    assert results["good"]["response"]["status_code"] == 200
    assert (
        len([r for r in provider_requests(provider, tag) if "[[fail:400]]" in r["content"]]) == 1
    )  # not retried
    good_usage = next(r for r in provider_requests(provider, tag) if r["status"] == 200)["usage"]
    assert done["usage"] == good_usage


def test_cancel_stops_queued_calls_from_reaching_the_provider(
    make_team: Callable[..., TeamClient], provider: httpx.Client
) -> None:
    tag = nonce()
    # One call at a time: the first is held open at the provider, the other four wait queued.
    team = make_team(max_calls_in_flight=1)
    created = team.post("/api/jobs/create", json={"job_type": "cancel"}).json()
    job_id = created["id"]
    for i in range(5):
        r = team.post(
            f"/api/jobs/{job_id}/calls",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{tag} [[hold:{tag}]] {i}"}],
            },
        )
        assert r.status_code == 202
    wait_until(lambda: len(provider_requests(provider, tag)) == 1, 60, "the first call to start")
    assert team.get(f"/api/jobs/{job_id}").json()["request_counts"]["running"] == 1
    cancelled = team.post(f"/api/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled"
    assert body["request_counts"]["cancelled"] == 5
    provider.post("/_control/release", params={"name": tag})
    # a job submitted after the cancelled one runs to the end, so the queue has drained past it
    marker = team.submit(
        [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} after"}]}]
    )
    team.wait(marker["id"])
    started = [r for r in provider_requests(provider, tag) if "[[hold:" in r["content"]]
    assert len(started) == 1  # the four queued calls never reached the provider
    again = team.post(f"/api/jobs/{job_id}/cancel")
    assert again.status_code == 409
    final = team.get(f"/api/jobs/{job_id}").json()
    assert final["status"] == "cancelled" and final["usage"]["total_tokens"] == 0


def test_models_list_and_pagination(team: TeamClient) -> None:
    models = team.get("/api/models").json()
    assert {m["id"] for m in models["data"]} == {"gpt-4o-mini", "gpt-4o"}
    ids = [
        team.submit(
            [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"p{i}"}]}],
            job_type="page",
        )["id"]
        for i in range(5)
    ]
    page1 = team.get("/api/jobs", params={"limit": 2, "job_type": "page"}).json()
    assert [j["id"] for j in page1["data"]] == ids[::-1][:2] and page1["has_more"]
    page2 = team.get(
        "/api/jobs", params={"limit": 2, "job_type": "page", "after": page1["next_cursor"]}
    ).json()
    page3 = team.get(
        "/api/jobs", params={"limit": 2, "job_type": "page", "after": page2["next_cursor"]}
    ).json()
    assert [j["id"] for j in page2["data"] + page3["data"]] == ids[::-1][2:]
    assert not page3["has_more"] and page3["next_cursor"] is None
    for job_id in ids:
        team.wait(job_id)
    succeeded = team.get("/api/jobs", params={"status": "succeeded", "job_type": "page"}).json()
    assert sorted(j["id"] for j in succeeded["data"]) == sorted(ids)


__all__ = ["Path"]


def test_a_nul_in_the_answer_is_stored_as_a_replacement_character(team: TeamClient) -> None:
    job = team.submit(
        [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{nonce()} [[nul]]"}]}]
    )
    done = team.wait(job["id"])
    assert done["status"] == "succeeded"
    content = team.get(f"/api/jobs/{job['id']}/results").json()["data"][0]["response"]["body"][
        "choices"
    ][0]["message"]["content"]
    assert content.endswith("with a NUL \ufffd inside")


def test_step_style_custom_ids_are_unique_within_a_job(team: TeamClient) -> None:
    job_id = team.post("/api/jobs/create", json={}).json()["id"]
    body = {
        "custom_id": "same",
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x"}],
    }
    assert team.post(f"/api/jobs/{job_id}/calls", json=body).status_code == 202
    again = team.post(f"/api/jobs/{job_id}/calls", json=body)
    assert again.status_code == 400 and again.json()["error"]["param"] == "custom_id"
    assert team.get(f"/api/jobs/{job_id}").json()["request_counts"]["total"] == 1
