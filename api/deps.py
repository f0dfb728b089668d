"""Request-scoped dependencies: the runtime, the session (committed once after the handler,
then its after-commit work), auth, team."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.openapi import scope_of
from shared.db import after_commit, commit, discard_after_commit
from shared.errors import InsufficientScope, Unauthorized
from shared.models import Team
from shared.runtime import Runtime
from shared.teams.limits import AuthThrottle
from shared.teams.service import KEY_PREFIX_LENGTH, TOUCH_EVERY, TeamService, hash_key, touch_key

log = logging.getLogger("saas_llm.api")


async def get_state(request: Request) -> Runtime:
    # `async`: FastAPI runs a plain `def` dependency in a worker thread, which cost every
    # request a thread hand-off (about a tenth of the API's CPU per submission).
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


async def get_read_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """A session for routes that only read: no transaction (no BEGIN, no COMMIT), so a read
    of one statement is one round trip. Its after-commit work (a key's `last_used_at`) runs
    when the handler returns, as with `get_session`."""
    async with (state.reader or state.sessionmaker)() as session:
        try:
            yield session
        except BaseException:
            discard_after_commit(session)
            raise
        await commit(session)


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]


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
    """The team owning the request's key (`authenticate`), in the request's session."""
    return await authenticate(request, session, state)


async def get_read_team(request: Request, session: ReadSessionDep, state: StateDep) -> Team:
    """`get_team` for routes that only read (`ReadSessionDep`)."""
    return await authenticate(request, session, state)


async def authenticate(request: Request, session: AsyncSession, state: Runtime) -> Team:
    """The team owning the request's key, if the key has the route's scope (api/openapi.py).

    Refused keys are counted per client address and key prefix; past the throttle's limit the
    key is not even looked up (429). An authenticated key is cached for a few seconds
    (shared/teams/keycache.py): its scopes, expiry and team are checked from the cache."""
    token = _bearer(request)
    throttle, address = _throttle(request, state)
    prefix = token[:KEY_PREFIX_LENGTH]
    # Also for a cached key: a throttled address is refused every key, even a good one.
    await throttle.check(address, prefix)
    cache = state.key_cache
    digest = hash_key(token)
    cached = cache.get(digest) if cache is not None else None
    now = datetime.now(UTC)
    if cached is not None and cached.expires_at is not None and cached.expires_at <= now:
        assert cache is not None
        cache.drop(digest)
        cached = None  # looked up again: the lookup refuses it, and counts the failure
    if cached is not None:
        assert cache is not None
        team = await cache.team_of(session, cached)
        key_id, scopes, last_used = cached.key_id, cached.scopes, cached.last_used_at
    else:
        service = TeamService(session)
        try:
            key, team = await service.authenticate_key(token)
        except Unauthorized:
            await throttle.failed(address, prefix)
            raise
        if cache is not None:
            cache.put(digest, key, team)
        key_id, last_used = key.id, key.last_used_at
        scopes = tuple(key.scopes) if key.scopes is not None else None
    required = scope_of(request.method, request.url.path)
    if scopes is not None and required not in scopes:
        # A route without a declared scope (none should exist) is open to unrestricted keys only.
        raise InsufficientScope(
            f"this key lacks the {required!r} scope this route needs", required_scope=required
        )
    if last_used is None or now - last_used > TOUCH_EVERY:
        # Recorded after the request commits, in its own transaction: a row lock on the key
        # must not be held while the request waits on the network.
        if cache is not None:
            cache.touched(digest, now)
        sessionmaker = state.sessionmaker
        after_commit(session, lambda: touch_key(sessionmaker, key_id))
    request.state.team_id = team.id
    return team


TeamDep = Annotated[Team, Depends(get_team)]
ReadTeamDep = Annotated[Team, Depends(get_read_team)]


async def require_admin(request: Request, state: StateDep) -> None:
    token = _bearer(request)
    throttle, address = _throttle(request, state)
    await throttle.check(address, token[:KEY_PREFIX_LENGTH])
    expected = state.settings.admin_api_key or ""
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        await throttle.failed(address, token[:KEY_PREFIX_LENGTH])
        raise Unauthorized("invalid admin key")


AdminDep = Depends(require_admin)
