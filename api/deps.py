"""Request-scoped dependencies: the session (committed once after the handler), auth, team."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import httpx
from arq.connections import ArqRedis
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.db import SessionMaker
from shared.errors import Unauthorized
from shared.llm.client import ModelCatalog
from shared.models import Team
from shared.teams.service import TeamService, touch_key

log = logging.getLogger("saas_llm.api")
AFTER_COMMIT_TIMEOUT = 5.0
AfterCommit = Callable[[], Awaitable[None]]


@dataclass
class AppState:
    """Everything the app builds once at startup."""

    settings: Settings
    sessionmaker: SessionMaker
    queue: ArqRedis
    http: httpx.AsyncClient
    catalog: ModelCatalog


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.saas
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """One session per request, committed once when the handler returns, then after-commit work."""
    async with state.sessionmaker() as session:
        session.info["after_commit"] = []
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await commit(session)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def commit(session: AsyncSession) -> None:
    """Commit now, then run the after-commit steps queued so far."""
    await session.commit()
    callbacks, session.info["after_commit"] = session.info["after_commit"], []
    for callback in callbacks:
        try:
            # Bounded: a frozen Redis must not hold the answer; the rows are already durable.
            await asyncio.wait_for(callback(), timeout=AFTER_COMMIT_TIMEOUT)
        except Exception:
            # The rows are committed; the reconciler re-queues whatever was not enqueued.
            log.exception("after-commit step failed; the reconciler will pick the work up")


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once the request's transaction has committed."""
    session.info["after_commit"].append(callback)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    return token.strip()


async def get_team(request: Request, session: SessionDep, state: StateDep) -> Team:
    """The team owning the request's key."""
    service = TeamService(session)
    team = await service.authenticate(_bearer(request))
    if (key_id := service.key_to_touch) is not None:
        after_commit(session, lambda: touch_key(state.sessionmaker, key_id))
    request.state.team_id = team.id
    return team


TeamDep = Annotated[Team, Depends(get_team)]


async def require_admin(request: Request, state: StateDep) -> None:
    token = _bearer(request)
    expected = state.settings.admin_api_key or ""
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("invalid admin key")


AdminDep = Depends(require_admin)
