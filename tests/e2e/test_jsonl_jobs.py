"""Big jobs as OpenAI's Batch API takes them: a JSONL body in, JSONL or JSON pages out."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from tests.conftest import TeamClient, nonce

JSONL = {"Content-Type": "application/x-ndjson"}


def _line(tag: str, i: int, *, batch_format: bool = False) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} line {i}"}]}
    if batch_format:
        data: dict[str, Any] = {
            "custom_id": f"r{i:03d}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body,
        }
    else:
        data = {"custom_id": f"r{i:03d}", **body}
    return json.dumps(data).encode() + b"\n"


def _chunks(lines: list[bytes]) -> Iterator[bytes]:
    """The body in odd-sized pieces, so that lines arrive split across chunks."""
    data = b"".join(lines)
    for start in range(0, len(data), 37):
        yield data[start : start + 37]


def _job_count(team: TeamClient) -> int:
    return len(team.get("/api/jobs", params={"limit": 100}).json()["data"])


def test_a_jsonl_job_runs_and_its_results_stream_and_page_in_custom_id_order(
    team: TeamClient,
) -> None:
    tag = nonce()
    lines = [_line(tag, i, batch_format=i % 2 == 0) for i in (4, 1, 3, 0, 2)]
    r = team.post(
        "/api/jobs",
        content=_chunks(lines),
        headers=JSONL,
        params={"job_type": "jsonl", "timeout_seconds": 60},
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["request_counts"]["total"] == 5 and job["job_type"] == "jsonl"
    done = team.wait(job["id"])
    assert done["status"] == "succeeded" and done["request_counts"]["succeeded"] == 5

    with team.stream(
        "GET", f"/api/jobs/{job['id']}/results", headers={"Accept": "application/x-ndjson"}
    ) as stream:
        assert stream.headers["content-type"].startswith("application/x-ndjson")
        streamed = [json.loads(line) for line in stream.iter_lines() if line]
    assert [x["custom_id"] for x in streamed] == [f"r{i:03d}" for i in range(5)]
    for result in streamed:
        content = result["response"]["body"]["choices"][0]["message"]["content"]
        assert content == f"echo: {tag} line {int(result['custom_id'][1:])}"
        assert result["status"] == "succeeded" and result["cost_usd"]

    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"after": cursor} if cursor else {})}
        page = team.get(f"/api/jobs/{job['id']}/results", params=params).json()
        pages.append([x["custom_id"] for x in page["data"]])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert pages == [["r000", "r001"], ["r002", "r003"], ["r004"]]
    assert [x["id"] for x in streamed] == [
        x["id"] for x in team.get(f"/api/jobs/{job['id']}/results").json()["data"]
    ]


def test_a_bad_line_refuses_the_whole_jsonl_job_and_names_the_line(
    make_team: Callable[..., TeamClient],
) -> None:
    team = make_team()
    tag = nonce()
    good = [_line(tag, i) for i in range(3)]
    cases: list[tuple[list[bytes], str, str]] = [
        ([good[0], b"{not json\n", good[1]], "line 2", "invalid_request_error"),
        ([good[0], b"[1, 2]\n"], "line 2", "invalid_request_error"),
        ([good[0], good[1], good[0]], "line 3", "invalid_request_error"),  # custom_id twice
        (
            [good[0], json.dumps({"model": "gpt-4o-mini", "messages": []}).encode() + b"\n"],
            "line 2.messages",
            "invalid_request_error",
        ),
        (
            [
                good[0],
                json.dumps(
                    {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}
                ).encode(),
            ],
            "line 2.model",
            "model_not_found",
        ),
        (
            [
                good[0],
                json.dumps(
                    {"custom_id": "x", "method": "GET", "url": "/v1/embeddings", "body": {}}
                ).encode(),
            ],
            "line 2",
            "invalid_request_error",
        ),
        ([b"\n", b"  \n"], "body", "invalid_request_error"),
    ]
    for body, param, _type in cases:
        r = team.post("/api/jobs", content=b"".join(body), headers=JSONL)
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert error["param"] == param, (body, error)
        assert error["request_id"]
    r = team.post(
        "/api/jobs", content=b"".join(good), headers=JSONL, params={"webhook_url": "ftp://x"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "webhook_url"
    r = team.post("/api/jobs", content=b"".join(good), headers={**JSONL, "Idempotency-Key": "k1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "Idempotency-Key"
    assert _job_count(team) == 0  # nothing of a refused job is stored


def test_a_jsonl_job_passes_admission_for_every_request(
    make_team: Callable[..., TeamClient],
) -> None:
    limited = make_team(max_requests_per_job=3)
    tag = nonce()
    r = limited.post("/api/jobs", content=b"".join(_line(tag, i) for i in range(4)), headers=JSONL)
    assert r.status_code == 400, r.text
    assert "at most 3" in r.json()["error"]["message"]
    picky = make_team(allowed_models=["gpt-4o"])
    r = picky.post("/api/jobs", content=_line(tag, 0), headers=JSONL)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["param"] == "line 1.model"
    assert _job_count(limited) == 0 and _job_count(picky) == 0


def test_a_json_submission_still_gets_the_json_body_limit(team: TeamClient) -> None:
    big = {
        "requests": [
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 300_000}]}
        ]
    }
    r = team.post(
        "/api/jobs", content=json.dumps(big), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    r = httpx.post(
        str(team.base_url) + "/api/jobs",
        content=b'{"model": "gpt-4o-mini"}\n',
        headers={**JSONL, "Authorization": "Bearer wrong"},
    )
    assert r.status_code == 401
