"""`saas-llm admin create`: a dashboard account, written straight to the database.

Run where DATABASE_URL reaches Postgres (the API need not be up). Without --password a strong one
is generated and printed once; only its argon2 hash is stored.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from shared.admin.service import Actor, AdminAccounts, AuditLog, generate_password
from shared.config import Settings
from shared.db import create_engine, create_sessionmaker, transaction
from shared.errors import AppError


@dataclass(frozen=True)
class Created:
    email: str
    role: str
    password: str
    generated: bool


async def _create(database_url: str | None, email: str, role: str, password: str | None) -> Created:
    settings = Settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    engine = create_engine(settings, pool_size=1)
    secret = password or generate_password()
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            user = await AdminAccounts(session).create(email, secret, role)
            AuditLog(session).record(
                Actor(name="cli", id=None, source="cli", ip=None),
                "admin.create",
                target_type="admin_user",
                target_id=user.id,
                detail={"email": user.email, "role": role},
            )
    finally:
        await engine.dispose()
    return Created(user.email, role, secret, password is None)


def create_admin(database_url: str | None, email: str, role: str, password: str | None) -> Created:
    """Create the account; raises shared.errors.AppError (e.g. Conflict) on a refusal."""
    return asyncio.run(_create(database_url, email, role, password))


def cmd_admin_create(database_url: str | None, email: str, role: str, password: str | None) -> int:
    try:
        created = create_admin(database_url, email, role, password)
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"created {created.role} {created.email}; sign in at /admin")
    if created.generated:
        print(f"password (shown once): {created.password}")
    return 0
