"""Request-scoped dependencies: the runtime, the session (committed once after the handler,
then its after-commit work), auth, team."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.openapi import scope_of
from shared.db import after_commit, commit, discard_after_commit
from shared.errors import InsufficientScope, Unauthorized
from shared.models import Team
from shared.runtime import Runtime
from shared.teams.limits import AuthThrottle
from shared.teams.service import KEY_PREFIX_LENGTH, TeamService, touch_key

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


def _throttle(request: Request, state: Runtime) -> tuple[AuthThrottle, str]:
    settings = state.settings
    throttle = AuthThrottle(
        state.queue,
        settings.worker_queue_name,
        per_address=settings.auth_max_failures_per_address,
        per_key_prefix=settings.auth_max_failures_per_key_prefix,
        window_seconds=settings.auth_throttle_window_seconds,
    )
    return throttle, request.client.host if request.client else "unknown"


async def get_team(request: Request, session: SessionDep, state: StateDep) -> Team:
    """The team owning the request's key, if the key has the route's scope (api/openapi.py).

    Refused keys are counted per client address and key prefix; past the throttle's limit the
    key is not even looked up (429)."""
    token = _bearer(request)
    throttle, address = _throttle(request, state)
    await throttle.check(address, token[:KEY_PREFIX_LENGTH])
    service = TeamService(session)
    try:
        key, team = await service.authenticate_key(token)
    except Unauthorized:
        await throttle.failed(address, token[:KEY_PREFIX_LENGTH])
        raise
    required = scope_of(request.method, request.url.path)
    if key.scopes is not None and required not in key.scopes:
        # A route without a declared scope (none should exist) is open to unrestricted keys only.
        raise InsufficientScope(
            f"this key lacks the {required!r} scope this route needs", required_scope=required
        )
    if (key_id := service.key_to_touch) is not None:
        sessionmaker = state.sessionmaker
        after_commit(session, lambda: touch_key(sessionmaker, key_id))
    request.state.team_id = team.id
    return team


TeamDep = Annotated[Team, Depends(get_team)]


async def require_admin(request: Request, state: StateDep) -> None:
    token = _bearer(request)
    throttle, address = _throttle(request, state)
    await throttle.check(address, token[:KEY_PREFIX_LENGTH])
    expected = state.settings.admin_api_key or ""
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        await throttle.failed(address, token[:KEY_PREFIX_LENGTH])
        raise Unauthorized("invalid admin key")


AdminDep = Depends(require_admin)
