"""`saas-llm webhooks listen` and the client's verify helper against real signed webhooks."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from cli.stack import Stack, free_port, spawn
from saas_llm_client import WebhookVerificationError, verify_webhook
from tests.conftest import TeamClient, nonce
from tests.harness import wait_until


def test_client_verify_accepts_the_spec_signature_and_rejects_tampering() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"type":"job.succeeded","timestamp":"2026-11-29T00:00:00Z","data":{"id":"job_1"}}'
    now = int(time.time())
    signature = Webhook(secret).sign("msg_1", datetime.fromtimestamp(now, UTC), body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": signature}
    assert verify_webhook(body, headers, secret)["data"]["id"] == "job_1"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.replace("job_1", "job_2"), headers, secret)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, {**headers, "webhook-timestamp": str(now - 3600)}, secret)


def test_listen_receives_and_verifies_a_real_job_webhook(
    stack: Stack, make_team: Callable[..., TeamClient]
) -> None:
    team = make_team()
    port = free_port()
    endpoint = team.post("/api/webhooks/endpoints", json={"url": f"http://127.0.0.1:{port}/"})
    assert endpoint.status_code == 201, endpoint.text
    secret = endpoint.json()["secret"]
    cli = str(Path(sys.executable).parent / "saas-llm")
    proc = spawn(
        "listen-" + nonce(),
        [cli, "webhooks", "listen", "--port", str(port), "--secret", secret],
        dict(os.environ),
        stack.log_dir,
    )
    try:
        proc.wait_log("listening on", timeout=30)
        job = team.submit(
            [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": nonce()}]}]
        )
        team.wait(job["id"])
        wait_until(lambda: "verified" in proc.log_path.read_text(), timeout=30, what="the webhook")
        line = next(x for x in proc.log_path.read_text().splitlines() if x.startswith("verified"))
        assert f"job.succeeded {job['id']} status=succeeded" in line
        # a forged request is rejected with 400 and printed as such
        forged = httpx.post(
            f"http://127.0.0.1:{port}/",
            content=b"{}",
            headers={
                "webhook-id": "x",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1,AAAA",
            },
        )
        assert forged.status_code == 400
        wait_until(
            lambda: "rejected: no matching signature" in proc.log_path.read_text(),
            what="the rejection",
        )
    finally:
        proc.stop()
