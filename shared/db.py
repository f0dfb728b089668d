"""Async engine and sessions, the after-commit mechanism, and the one classifier of database errors.

A unit of work is one transaction. Work that must only happen once it is durable (enqueueing,
live-status wake-ups, cancel broadcasts) is registered with `after_commit` while the transaction
is open and runs after the commit, in order, bounded in time; it never runs on rollback. The API
(one session per request) and the worker (`transaction`) use the same mechanism.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction

from shared.config import DatabaseURL, Settings

log = logging.getLogger("saas_llm.db")
SessionMaker = async_sessionmaker[AsyncSession]
# A callback may return an awaitable (awaited, within AFTER_COMMIT_TIMEOUT) or nothing (a wake-up
# handed to `shared.queue.Publisher`, which sends it without holding the caller up).
AfterCommit = Callable[[], Awaitable[None] | None]
# Bounded: a frozen Redis must not hold an answer; the rows are already durable by then.
AFTER_COMMIT_TIMEOUT = 5.0
_HOOKS = "after_commit"
_CONNECTED = "connected_transaction"
# A pooled connection idle for longer than this is pinged before it is handed out.
IDLE_PING_SECONDS = 1.0


def create_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    """An asyncpg engine; `?pool_size=`, `?max_overflow=`, `?sslmode=` in the URL win.

    Connections are checked before use only when they have been idle (`ping_when_idle`):
    SQLAlchemy's `pool_pre_ping` costs three round trips (BEGIN, a query, ROLLBACK) on every
    checkout, which was a quarter of the worker's round trips per call."""
    url = DatabaseURL(settings.database_url)
    engine = create_async_engine(
        url.url("asyncpg"),
        pool_size=url.pool_size or pool_size or settings.database_pool_size,
        max_overflow=url.max_overflow
        if url.max_overflow is not None
        else settings.database_max_overflow,
        pool_pre_ping=False,
        # Last in, first out: under load the same few connections stay busy and are never idle
        # long enough to need a ping; the rest idle (and are pinged when next needed).
        pool_use_lifo=True,
        pool_timeout=10,
        echo=settings.database_echo,
        connect_args={**url.connect_args, "timeout": 5, "command_timeout": 30},
    )
    ping_when_idle(engine, IDLE_PING_SECONDS)
    return engine


def ping_when_idle(engine: AsyncEngine, seconds: float) -> None:
    """Ping a pooled connection at checkout if it was idle for more than `seconds`; a dead one
    is replaced (the pool retries the checkout with a new connection). A connection that breaks
    while busy fails its statement, and SQLAlchemy then recycles every connection of the pool
    that is older than the failure, so an outage costs one failed unit of work per process."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since <= seconds:
            return  # new, or used a moment ago
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError("a pooled connection was dead") from exc


def create_sessionmaker(engine: AsyncEngine, *, info: dict[str, Any] | None = None) -> SessionMaker:
    """Sessions that carry `info` (for example the live-status waker) into every unit of work."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info or {})


def after_commit(session: AsyncSession, callback: AfterCommit, *, key: Hashable = None) -> None:
    """Run `callback` once this session's transaction has committed; with `key`, at most once
    per key per transaction (so a job changed three times is woken once)."""
    hooks: dict[Hashable, AfterCommit] = session.info.setdefault(_HOOKS, {})
    hooks[key if key is not None else object()] = callback


def discard_after_commit(session: AsyncSession) -> None:
    """Forget the after-commit work of a transaction that was rolled back."""
    session.info.pop(_HOOKS, None)


async def run_after_commit(session: AsyncSession) -> None:
    """Run (and forget) the work registered so far; failures are logged, never raised, since
    the rows are committed and the reconciler picks up whatever was not enqueued."""
    hooks: dict[Hashable, AfterCommit] = session.info.pop(_HOOKS, {})
    for callback in hooks.values():
        try:
            pending = callback()
            if pending is not None:
                await asyncio.wait_for(pending, timeout=AFTER_COMMIT_TIMEOUT)
        except Exception:
            log.exception("after-commit step failed; the reconciler will pick the work up")


async def commit(session: AsyncSession) -> None:
    """Commit now, then run the after-commit work registered so far."""
    try:
        await session.commit()
    except BaseException:
        discard_after_commit(session)
        raise
    await run_after_commit(session)


@asynccontextmanager
async def transaction(sessionmaker: SessionMaker) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success (then its after-commit work), roll back on error."""
    async with sessionmaker() as session:
        try:
            async with session.begin():
                yield session
        except BaseException:
            discard_after_commit(session)
            raise
        await run_after_commit(session)


@asynccontextmanager
async def autocommit(sessionmaker: SessionMaker) -> AsyncIterator[AsyncSession]:
    """A unit of work of single statements: each commits on its own, so no BEGIN or COMMIT
    round trip (a single statement is atomic by itself). The after-commit work registered runs
    at the end, on success (every statement is committed by then)."""
    async with sessionmaker() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        try:
            yield session
        except BaseException:
            discard_after_commit(session)
            raise
    await run_after_commit(session)


@event.listens_for(Session, "after_begin")
def _connected(session: Session, transaction: SessionTransaction, connection: Any) -> None:
    # Which transaction of the session holds a connection (has run a statement): see
    # `last_statement_alone`.
    session.info[_CONNECTED] = transaction


async def last_statement_alone(session: AsyncSession) -> bool:
    """If this session has run no statement yet, make it autocommit, for a unit of work whose
    next statement is its only one (atomic by itself): no BEGIN or COMMIT round trip. False,
    and nothing changes, once a statement has run (the transaction is then already open).

    The caller promises that no other statement follows; its after-commit work still runs at
    `commit`, now after that statement."""
    current = session.sync_session.get_transaction()
    if current is not None and session.info.get(_CONNECTED) is current:
        return False
    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return True


def waker_info(**wakers: Callable[[str], Awaitable[None] | None]) -> dict[str, Any]:
    """Session info that makes `wake(session, kind, id)` call `wakers[kind](id)` after commit."""
    return {f"wake:{kind}": fn for kind, fn in wakers.items()}


def wake(session: AsyncSession, kind: str, ident: str) -> None:
    """Wake whoever watches `kind` `ident` (a job's live streams, a team's) once this transaction
    commits; several wakes of the same id in one transaction coalesce into one."""
    waker: Callable[[str], Awaitable[None] | None] | None = session.info.get(f"wake:{kind}")
    if waker is not None:
        after_commit(session, functools.partial(waker, ident), key=("wake", kind, ident))


DbFailure = Literal["outage", "transient", "data", "integrity", "other"]
# Deadlock, serialization failure, lock not available, statement cancelled: nothing was written
# and the same work can simply be tried again.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})


def classify_db_error(exc: BaseException) -> DbFailure | None:
    """What a database error means, for the API (503 / 400 / 409 / 500) and the worker (hand the
    call back / fail it) alike; None when `exc` is not a database error.

    - outage: the database cannot be reached (connection refused or lost, pool exhausted)
    - transient: a deadlock or serialization failure; retrying the same work is safe
    - data: the values themselves cannot be stored (SQLSTATE class 22)
    - integrity: a constraint refused the write (class 23)
    - other: any other database error (a bug)
    """
    if isinstance(exc, PoolTimeout):
        return "outage"
    if isinstance(exc, InterfaceError) and isinstance(
        getattr(exc.orig, "__cause__", None), ValueError
    ):
        return "data"  # asyncpg's client-side data errors (bad values) arrive as InterfaceError
    if isinstance(exc, IntegrityError):
        return "integrity"
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc.orig, OSError | ConnectionError):
            return "outage"
        code = str(getattr(exc.orig, "pgcode", None) or getattr(exc.orig, "sqlstate", None) or "")
        if code in TRANSIENT_SQLSTATES:
            return "transient"
        if code.startswith("22"):
            return "data"
        if code.startswith("23"):
            return "integrity"
        if code.startswith(("08", "53", "57P")) or isinstance(
            exc, OperationalError | InterfaceError
        ):
            return "outage"  # connection exceptions, insufficient resources, admin shutdown
        return "other"
    if isinstance(exc, OSError):  # socket errors raised before SQLAlchemy wraps them
        return "outage"
    return None
