"""Teams, their keys, and authentication of a bearer key."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import SessionMaker, transaction, wake
from shared.errors import BadRequest, Conflict, NotFound, TeamSuspended, Unauthorized
from shared.ids import new_id
from shared.models import ApiKey, Team, TeamStatus
from shared.teams.repository import TeamRepository
from shared.teams.schemas import (
    SCOPES,
    KeyCreate,
    KeyCreated,
    KeyOut,
    MoneySettings,
    TeamCreate,
    TeamOut,
    TeamUpdate,
)

KEY_PREFIX = "sk-"
KEY_PREFIX_LENGTH = 10  # the part of a key kept for display (and throttled on)
TOUCH_EVERY = timedelta(minutes=1)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def generate_key() -> str:
    """A high-entropy key: 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def team_out(team: Team) -> TeamOut:
    return TeamOut(
        team_id=team.id,
        name=team.name,
        status=team.status,
        allowed_models=list(team.allowed_models),
        max_requests_per_job=team.max_requests_per_job,
        max_calls_in_flight=team.max_calls_in_flight,
        requests_per_minute=team.requests_per_minute,
        retention_days=team.retention_days,
        allowed_tool_types=list(team.allowed_tool_types or []),
        allow_file_ids=team.allow_file_ids,
        cache_enabled=team.cache_enabled,
        cache_ttl_seconds=team.cache_ttl_seconds,
        credits_balance=team.credits_balance,
        credits_reserved=team.credits_reserved,
        billing_mode=team.billing_mode,
        enforce_credits=team.enforce_credits,
        credits_per_usd=team.credits_per_usd,
        tokens_per_credit=team.tokens_per_credit,
        price_markup_pct=team.price_markup_pct,
        model_prices=dict(team.model_prices),
        budget_usd=team.budget_usd,
        budget_period=team.budget_period,
        budget_thresholds=list(team.budget_thresholds),
        default_max_tokens=team.default_max_tokens,
        max_n=team.max_n,
        max_tokens_cap=team.max_tokens_cap,
        on_limit=team.on_limit,
        low_credits_threshold=team.low_credits_threshold,
        monthly_allowance=team.monthly_allowance,
        metadata=team.metadata_,
        created_at=team.created_at,
        updated_at=team.updated_at,
    )


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(
        id=key.id,
        team_id=key.team_id,
        name=key.name,
        prefix=key.prefix,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
        scopes=list(key.scopes) if key.scopes is not None else list(SCOPES),
    )


class TeamService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = TeamRepository(session)

    async def create(self, data: TeamCreate) -> Team:
        team = Team(
            id=data.team_id,
            name=data.name,
            status=TeamStatus.ACTIVE,
            allowed_models=data.allowed_models,
            max_requests_per_job=data.max_requests_per_job,
            max_calls_in_flight=data.max_calls_in_flight,
            requests_per_minute=data.requests_per_minute,
            retention_days=data.retention_days,
            allowed_tool_types=sorted(set(data.allowed_tool_types)),
            allow_file_ids=data.allow_file_ids,
            cache_enabled=data.cache_enabled,
            cache_ttl_seconds=data.cache_ttl_seconds,
            metadata_=data.metadata,
            **self._money(data),
        )
        self.session.add(team)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise Conflict(f"team {data.team_id!r} already exists", param="team_id") from exc
        await self.session.refresh(team)
        return team

    @staticmethod
    def _money(data: MoneySettings) -> dict[str, Any]:
        try:
            return data.money_fields()
        except ValueError as exc:
            raise BadRequest(str(exc), param="budget_thresholds") from exc

    async def get(self, team_id: str) -> Team:
        team = await self.repo.get(team_id)
        if team is None:
            raise NotFound(f"no team {team_id!r}")
        return team

    async def list(self, *, after: str | None, limit: int) -> Sequence[Team]:
        return await self.repo.list(after=after, limit=limit)

    async def update(self, team_id: str, data: TeamUpdate) -> Team:
        team = await self.repo.get(team_id, for_update=True)
        if team is None:
            raise NotFound(f"no team {team_id!r}")
        money = self._money(data)
        for field, value in data.model_dump(exclude_unset=True).items():
            if field not in MoneySettings.model_fields:
                setattr(team, "metadata_" if field == "metadata" else field, value)
        for field, value in money.items():
            setattr(team, field, value)
        await self.session.flush()
        await self.session.refresh(team)
        wake(self.session, "team", team.id)  # also drops the team's cached keys everywhere
        return team

    async def set_status(self, team_id: str, status: TeamStatus) -> Team:
        """Suspend or resume a team. A suspended team's queued calls do not start (the workers
        skip them) and its open event streams close once this commits; on resume the
        reconciler enqueues the calls that waited."""
        team = await self.get(team_id)
        team.status = status
        await self.session.flush()
        await self.session.refresh(team)
        wake(self.session, "team", team.id)
        return team

    async def create_key(self, team_id: str, data: KeyCreate) -> KeyCreated:
        await self.get(team_id)
        raw = generate_key()
        key = ApiKey(
            id=new_id("key"),
            team_id=team_id,
            name=data.name,
            prefix=raw[:KEY_PREFIX_LENGTH],
            key_hash=hash_key(raw),
            expires_at=data.expires_at,
            scopes=sorted(set(data.scopes)) if data.scopes is not None else None,
        )
        self.session.add(key)
        await self.session.flush()
        await self.session.refresh(key)
        return KeyCreated(**key_out(key).model_dump(), key=raw)

    async def list_keys(self, team_id: str) -> Sequence[ApiKey]:
        await self.get(team_id)
        return await self.repo.keys(team_id)

    async def revoke_key(self, team_id: str, key_id: str) -> ApiKey:
        key = await self.repo.key(team_id, key_id)
        if key is None:
            raise NotFound(f"no key {key_id!r} for team {team_id!r}")
        if key.revoked_at is None:
            key.revoked_at = datetime.now(UTC)
            await self.session.flush()
        # Every API process drops the team's cached keys once this commits (a repeated revoke
        # wakes them again: harmless).
        wake(self.session, "team", team_id)
        return key

    async def authenticate(self, raw: str) -> Team:
        """The active team owning `raw`: 401 for an unknown/revoked/expired key, 403 suspended."""
        _, team = await self.authenticate_key(raw)
        return team

    async def authenticate_key(self, raw: str) -> tuple[ApiKey, Team]:
        """The key `raw` and its active team (the caller checks the key's scopes)."""
        found = await self.repo.key_by_hash(hash_key(raw))
        if found is None:
            raise Unauthorized("invalid API key")
        key, team = found
        now = datetime.now(UTC)
        if key.revoked_at is not None:
            raise Unauthorized("this API key has been revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthorized("this API key has expired")
        if team.status != TeamStatus.ACTIVE:
            raise TeamSuspended(f"team {team.id!r} is {team.status}")
        return key, team


async def touch_key(sessionmaker: SessionMaker, key_id: str) -> None:
    """Record that a key was used, in a short transaction of its own."""
    async with transaction(sessionmaker) as session:
        await TeamRepository(session).touch_key(key_id, datetime.now(UTC))
