"""Alembic environment: async engine from settings (or the URL a caller passed)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.config import DatabaseURL, get_settings
from shared.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> DatabaseURL:
    raw = config.attributes.get("database_url") or get_settings().database_url
    return DatabaseURL(raw)


def run_migrations_offline() -> None:
    context.configure(url=_url().url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    url = _url()
    engine = create_async_engine(url.url(), poolclass=pool.NullPool, connect_args=url.connect_args)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
