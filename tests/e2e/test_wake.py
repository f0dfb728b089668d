"""Workers are woken by what is enqueued, not by their poll.

The private worker here polls once an hour (`WORKER_POLL_DELAY_SECONDS=3600`): after its first
read at start, only the wake channel can make it read its queues again within the test's
waits. A job submitted through the API must still run, and its webhook must still be sent
(the webhook queue is woken by the sweeper that enqueues the delivery).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import OwnPlatform
from tests.fakes.receiver import Receiver
from tests.harness import wait_until


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def test_an_hourly_poll_still_runs_each_job_and_sends_its_webhook_at_once(
    own_platform: OwnPlatform, receiver: Receiver
) -> None:
    with own_platform(WORKER_POLL_DELAY_SECONDS="3600") as (team, _, procs):
        endpoint = team.post("/api/webhooks/endpoints", json={"url": receiver.url})
        assert endpoint.status_code == 201, endpoint.text
        job_ids = []
        for i in range(3):  # one after another: each needs its own wake-up
            job_id = team.submit(
                [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"w{i}"}]}]
            )["id"]
            job = team.wait(job_id, timeout=60)
            assert job["status"] == "succeeded", job
            job_ids.append(job_id)

        def delivered() -> set[str]:
            seen = {str(r.body) for r in receiver.requests}
            return {j for j in job_ids if any(j in body for body in seen)}

        assert wait_until(lambda: delivered() == set(job_ids) and delivered(), 60, "webhooks")
        assert procs["worker"].alive()
