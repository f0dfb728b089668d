"""The contract table in api/openapi.py: every route documented, and a team route without a
scope refuses to start the app."""

from __future__ import annotations

import pytest
from fastapi import APIRouter

from api import openapi
from api.deps import TeamDep
from api.main import create_app
from shared.config import Settings


def test_every_protected_route_documents_the_envelope_for_each_of_its_statuses() -> None:
    spec = create_app(Settings(environment="test")).openapi()
    assert "ErrorEnvelope" in spec["components"]["schemas"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for route in openapi.routes(create_app(Settings(environment="test"))):
        operation = spec["paths"][route.path][route.method.lower()]
        if route.auth == "public":
            continue
        expected = {"401", "503"} if route.auth == "metrics" else {"401", "429", "503"}
        assert expected <= set(operation["responses"]), route
        for status in route.statuses:
            content = operation["responses"][str(status)]["content"]
            assert content == {"application/json": {"schema": openapi.ERROR_REF}}, route
        assert operation["security"] == [{"bearer": []}]
        assert (operation.get(openapi.SCOPE_KEY) is not None) == (route.auth == "team")
    results = spec["paths"]["/api/jobs/{job_id}/results"]["get"]["responses"]["200"]["content"]
    assert set(results) == {"application/json", "application/x-ndjson"}
    events = spec["paths"]["/api/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert set(events) == {"text/event-stream"}


def test_a_team_route_without_a_scope_refuses_to_start() -> None:
    router = APIRouter(prefix="/api/unscoped")

    @router.get("/thing")
    async def thing(team: TeamDep) -> dict[str, str]:
        return {"team": team.id}

    app = create_app(Settings(environment="test"))
    app.include_router(router)
    with pytest.raises(RuntimeError, match="GET /api/unscoped/thing has no scope"):
        openapi.document(app)


def test_scopes_by_method_and_path() -> None:
    assert openapi.scope_of("GET", "/api/jobs/job_1/results") == "jobs:read"
    assert openapi.scope_of("POST", "/api/jobs/job_1/cancel") == "jobs:write"
    assert openapi.scope_of("DELETE", "/api/webhooks/endpoints/x") == "webhooks"
    assert openapi.scope_of("GET", "/api/models") == "jobs:read"
    assert openapi.scope_of("GET", "/api/admin/teams") is None
