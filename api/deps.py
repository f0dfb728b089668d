"""Request-scoped dependencies: the runtime, the session (committed once after the handler,
then its after-commit work), auth, team."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import after_commit, commit, discard_after_commit
from shared.errors import Unauthorized
from shared.models import Team
from shared.runtime import Runtime
from shared.teams.service import TeamService, touch_key

log = logging.getLogger("saas_llm.api")


def get_state(request: Request) -> Runtime:
    state: Runtime = request.app.state.saas
    return state


StateDep = Annotated[Runtime, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """One session per request, committed once when the handler returns, then after-commit work."""
    async with state.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            discard_after_commit(session)
            await session.rollback()
            raise
        await commit(session)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


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
        sessionmaker = state.sessionmaker
        after_commit(session, lambda: touch_key(sessionmaker, key_id))
    request.state.team_id = team.id
    return team


TeamDep = Annotated[Team, Depends(get_team)]


async def require_admin(request: Request, state: StateDep) -> None:
    token = _bearer(request)
    expected = state.settings.admin_api_key or ""
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("invalid admin key")


AdminDep = Depends(require_admin)
