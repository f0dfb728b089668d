"""Async engine and session factory built from `DATABASE_URL`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.config import DatabaseURL, Settings

SessionMaker = async_sessionmaker[AsyncSession]


def create_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    """An asyncpg engine; `?pool_size=`, `?max_overflow=`, `?sslmode=` in the URL win."""
    url = DatabaseURL(settings.database_url)
    return create_async_engine(
        url.url("asyncpg"),
        pool_size=url.pool_size or pool_size or settings.database_pool_size,
        max_overflow=url.max_overflow
        if url.max_overflow is not None
        else settings.database_max_overflow,
        pool_pre_ping=True,
        pool_timeout=10,
        echo=settings.database_echo,
        connect_args={**url.connect_args, "timeout": 5, "command_timeout": 30},
    )


def create_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(sessionmaker: SessionMaker) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on error."""
    async with sessionmaker() as session, session.begin():
        yield session
