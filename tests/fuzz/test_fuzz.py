"""The API contract, fuzzed: schemathesis generates requests from the live OpenAPI document and
checks every answer against it (no 5xx, only documented statuses and content types, bodies that
match their schema), as a team and as the admin, against the real API, worker and proxy.

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
from tests.conftest import TeamClient
from tests.harness import MASTER_KEY

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
def team_key(make_team: Callable[..., TeamClient]) -> str:
    return make_team().key


def _run(case: Any, base_url: str, key: str, role: str) -> None:
    if not _started:
        _started.append(time.monotonic())
    _cases[role] += 1
    case.call_and_validate(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, checks=CHECKS, timeout=30
    )


def test_the_live_document_is_the_one_fuzzed(stack: Stack) -> None:
    assert httpx.get(stack.api_url + "/openapi.json").json() == SPEC


@team_schema.parametrize()
def test_team_routes_keep_their_contract(case: Any, stack: Stack, team_key: str) -> None:
    _run(case, stack.api_url, team_key, "team")


@admin_schema.parametrize()
def test_admin_routes_keep_their_contract(case: Any, stack: Stack) -> None:
    _run(case, stack.api_url, MASTER_KEY, "admin")


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
