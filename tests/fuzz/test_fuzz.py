"""The API contract, fuzzed: schemathesis generates requests from the live OpenAPI document and
checks every answer against it (no 5xx, only documented statuses and content types, bodies that
match their schema), as a team and as the admin, against the real API, worker and proxy. Every
other case has its path ids replaced by ids that exist, so generated bodies reach the handlers
(an admin PATCH with `allowed_models: null` answered 500 that way).

Slow: behind the `fuzz` marker (`make test-fuzz`, run by CI after the chaos suite). Bounded by
FUZZ_MAX_EXAMPLES per operation and phase (default 25).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from cli.stack import Stack
from shared.config import Settings
from tests.conftest import TeamClient, nonce
from tests.harness import MASTER_KEY, wait_until

pytestmark = pytest.mark.fuzz
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
_cases: dict[str, int] = {"team": 0, "admin": 0}
_started: list[float] = []


# The document the app serves, built in-process at collection (the live one is checked equal).
SPEC = create_app(Settings(environment="test")).openapi()
schema = schemathesis.openapi.from_dict(SPEC)
schema.config.generation.update(max_examples=MAX_EXAMPLES)
team_schema = schema.exclude(path_regex="^/api/admin")
admin_schema = schema.include(path_regex="^/api/admin")


@pytest.fixture(scope="module")
def fuzz_team(make_team: Callable[..., TeamClient]) -> TeamClient:
    return make_team()


@pytest.fixture(scope="module")
def team_key(fuzz_team: TeamClient) -> str:
    return fuzz_team.key


@pytest.fixture(scope="module")
def real_ids(fuzz_team: TeamClient, admin: httpx.Client) -> dict[str, str]:
    """Ids that exist, so that half the cases get past the 404 into the handlers: the fuzz
    team's ended job, its call, an endpoint, an event and a delivery; a scratch team and key."""
    team = fuzz_team
    endpoint = team.post("/api/webhooks/endpoints", json={"url": "http://127.0.0.1:9/f"}).json()
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "fuzz"}]}
    job = team.submit([chat])
    team.wait(job["id"])
    call = team.get(f"/api/jobs/{job['id']}", params={"include_calls": True}).json()["calls"][0]

    def delivered() -> dict[str, Any] | None:
        rows = team.get("/api/webhooks/deliveries", params={"endpoint_id": endpoint["id"]}).json()
        return rows["data"][0] if rows["data"] else None

    delivery = wait_until(delivered, what="the fuzz team's delivery")
    scratch = "fz-" + nonce()
    assert (
        admin.post("/api/admin/teams", json={"team_id": scratch, "name": "fz"}).status_code == 201
    )
    key = admin.post(f"/api/admin/teams/{scratch}/keys", json={}).json()
    return {
        "job_id": job["id"],  # ended: its event stream ends after the first event
        "call_id": call["id"],
        "endpoint_id": endpoint["id"],
        "event_id": delivery["event_id"],
        "delivery_id": delivery["id"],
        "team_id": scratch,
        "key_id": key["id"],
    }


def _run(case: Any, base_url: str, key: str, role: str, ids: dict[str, str]) -> None:
    if not _started:
        _started.append(time.monotonic())
    _cases[role] += 1
    if _cases[role] % 2 and case.path_parameters:
        for name in case.path_parameters:
            if name in ids:
                case.path_parameters[name] = ids[name]
    case.call_and_validate(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, checks=CHECKS, timeout=30
    )


def test_the_live_document_is_the_one_fuzzed(stack: Stack) -> None:
    assert httpx.get(stack.api_url + "/openapi.json").json() == SPEC


@team_schema.parametrize()
def test_team_routes_keep_their_contract(
    case: Any, stack: Stack, team_key: str, real_ids: dict[str, str]
) -> None:
    _run(case, stack.api_url, team_key, "team", real_ids)


@admin_schema.parametrize()
def test_admin_routes_keep_their_contract(
    case: Any, stack: Stack, real_ids: dict[str, str]
) -> None:
    _run(case, stack.api_url, MASTER_KEY, "admin", real_ids)


def test_the_checks_catch_an_undocumented_status(stack: Stack, team_key: str) -> None:
    """The same checks, on a document that hides GET /api/jobs/{id}'s 404, fail."""
    doctored = copy.deepcopy(SPEC)
    del doctored["paths"]["/api/jobs/{job_id}"]["get"]["responses"]["404"]
    operation = schemathesis.openapi.from_dict(doctored)["/api/jobs/{job_id}"]["GET"]
    case = operation.Case(path_parameters={"job_id": "job_missing"})
    with pytest.raises(FailureGroup, match="Undocumented status code"):
        case.call_and_validate(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {team_key}"}, checks=CHECKS
        )


def test_the_fuzzer_ran_every_operation(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs after the fuzz tests in this module: both made cases for every operation."""
    operations = sum(len(ops) for ops in SPEC["paths"].values())
    assert operations >= 30
    assert _cases["team"] > operations - 9 and _cases["admin"] >= 9, _cases
    with capsys.disabled():
        print(
            f"\nfuzz: {_cases['team']} team cases + {_cases['admin']} admin cases = "
            f"{sum(_cases.values())} in {time.monotonic() - _started[0]:.0f} s, 0 failures "
            f"(at most {MAX_EXAMPLES} examples per operation and phase)"
        )
