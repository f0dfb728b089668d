"""Admission: the one step every submission passes before any of its calls is stored.

Both submit styles (a batch job, a call added to a step job) call `Admission.admit`, which
checks, in order: the request count, each request's shape, the model catalog and the team's
allowed models, the team's caps on `n` and `max_tokens` (a request without `max_tokens` gets the
team's `default_max_tokens`), then money (credits reserved, the budget checked:
`shared.billing.admission`), and last counts the requests against the team's rate limit (so a
request refused for another reason does not use up the team's minute; money reserved by a
refused request is rolled back with its transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from shared.billing.admission import MoneyAdmission, admit_money, apply_caps
from shared.config import Settings
from shared.errors import (
    BadRequest,
    LimitExceeded,
    ModelNotAllowed,
    ModelNotFound,
    ServiceUnavailable,
)
from shared.jobs.passthrough import check_passthrough
from shared.jobs.schemas import ChatRequest
from shared.models import Team
from shared.teams.limits import RequestLimiter


class Catalog(Protocol):
    async def names(self) -> list[str]: ...


def reject_nul(value: Any, param: str = "") -> None:
    """Refuse NUL characters anywhere in a payload: Postgres cannot store them in text or JSONB."""
    if isinstance(value, str):
        if "\x00" in value:
            raise BadRequest("text must not contain NUL (\\u0000) characters", param=param or None)
    elif isinstance(value, dict):
        for key, item in value.items():
            reject_nul(key, param)
            reject_nul(item, f"{param}.{key}" if param else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            reject_nul(item, f"{param}[{index}]")


@dataclass
class Admitted:
    """Requests that passed admission: the bodies to store, one per call, and what money
    decided (worst cases, credits reserved, or why the job must wait)."""

    bodies: list[dict[str, Any]]
    money: MoneyAdmission


@dataclass
class Admission:
    settings: Settings
    catalog: Catalog
    limiter: RequestLimiter
    session: AsyncSession

    def max_requests(self, team: Team) -> int:
        limit = self.settings.jobs_max_requests
        if team.max_requests_per_job:
            limit = min(limit, team.max_requests_per_job)
        return limit

    async def admit(
        self,
        team: Team,
        requests: Sequence[ChatRequest],
        *,
        already: int = 0,
        param: str = "requests",
        timeout_seconds: float | None = None,
        can_pause: bool = True,
    ) -> Admitted:
        """Check `requests` for `team` (on top of `already` calls in the job) and count them."""
        limit = self.max_requests(team)
        if already + len(requests) > limit:
            raise LimitExceeded(
                f"at most {limit} {'requests' if param == 'requests' else 'calls'} per job",
                param=param if param == "requests" else None,
            )
        bodies = self._bodies(requests, param)
        if timeout_seconds is not None:
            for body in bodies:
                body.setdefault("timeout", timeout_seconds)
        apply_caps(team, bodies, [self._where(param, i) for i in range(len(bodies))])
        await self._check_models(team, requests, param)
        money = await admit_money(
            self.session,
            team,
            bodies,
            new_job=already == 0,
            can_pause=can_pause,
            lock_timeout_ms=self.settings.billing_lock_timeout_ms,
        )
        await self.limiter.consume(team, len(bodies))
        return Admitted(bodies, money)

    def _where(self, param: str, index: int, field: str = "") -> str:
        base = f"{param}[{index}]" if param == "requests" else ""
        return f"{base}.{field}" if base and field else (base or field)

    def _bodies(self, requests: Sequence[ChatRequest], param: str) -> list[dict[str, Any]]:
        bodies = []
        for index, req in enumerate(requests):
            if len(req.messages) > self.settings.jobs_max_messages:
                raise LimitExceeded(
                    f"at most {self.settings.jobs_max_messages} messages per request",
                    param=self._where(param, index, "messages"),
                )
            try:
                bodies.append(req.body())
            except ValueError as exc:
                raise BadRequest(str(exc), param=self._where(param, index) or None) from exc
        return bodies

    async def _check_models(self, team: Team, requests: Sequence[ChatRequest], param: str) -> None:
        """Every model must be served by the backend and allowed for the team."""
        try:
            available = await self.catalog.names()
        except Exception as exc:
            raise ServiceUnavailable("the model proxy is unavailable; retry shortly") from exc
        allowed = set(team.allowed_models or [])
        for index, req in enumerate(requests):
            check_passthrough(team, req, self._where(param, index))
            where = self._where(param, index, "model") or "model"
            if req.model not in available:
                raise ModelNotFound(
                    f"unknown model {req.model!r}; available: {', '.join(available) or 'none'}",
                    param=where,
                )
            if allowed and req.model not in allowed:
                raise ModelNotAllowed(
                    f"model {req.model!r} is not allowed for team {team.id!r}", param=where
                )
