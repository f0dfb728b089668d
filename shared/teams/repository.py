"""Queries for teams and their keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import ApiKey, Team


class TeamRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, team_id: str, *, for_update: bool = False) -> Team | None:
        stmt = select(Team).where(Team.id == team_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list(self, *, after: str | None, limit: int) -> Sequence[Team]:
        stmt = select(Team).order_by(Team.id).limit(limit)
        if after:
            stmt = stmt.where(Team.id > after)
        return (await self.session.execute(stmt)).scalars().all()

    async def key_by_hash(self, key_hash: str) -> tuple[ApiKey, Team] | None:
        stmt = (
            select(ApiKey, Team)
            .join(Team, Team.id == ApiKey.team_id)
            .where(ApiKey.key_hash == key_hash)
        )
        row = (await self.session.execute(stmt)).first()
        return (row[0], row[1]) if row else None

    async def keys(self, team_id: str) -> Sequence[ApiKey]:
        stmt = select(ApiKey).where(ApiKey.team_id == team_id).order_by(ApiKey.id)
        return (await self.session.execute(stmt)).scalars().all()

    async def key(self, team_id: str, key_id: str) -> ApiKey | None:
        stmt = select(ApiKey).where(ApiKey.team_id == team_id, ApiKey.id == key_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def touch_key(self, key_id: str, when: datetime) -> None:
        await self.session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when)
        )
