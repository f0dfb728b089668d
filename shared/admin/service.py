"""Admin accounts (argon2 passwords), the audit log, and single-use portal links."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Text, cast, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import BadRequest, Conflict, NotFound, Unauthorized
from shared.ids import new_id
from shared.models import ADMIN_ROLES, AdminUser, AuditEntry, PortalLink, Team

_hasher = PasswordHasher()
# Verified against when the email is unknown, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
MIN_PASSWORD = 12
# What each role may do in the dashboard; a viewer only reads.
CAN_WRITE = frozenset({"owner", "admin"})
CAN_MANAGE_ADMINS = frozenset({"owner"})


def generate_password() -> str:
    return secrets.token_urlsafe(18)


class AdminAccounts:
    """Creating accounts and checking passwords."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, email: str, password: str, role: str) -> AdminUser:
        email = email.strip().lower()
        if "@" not in email or len(email) > 320:
            raise BadRequest("email must be an address such as ops@example.com", param="email")
        if role not in ADMIN_ROLES:
            raise BadRequest(f"role must be one of {', '.join(ADMIN_ROLES)}", param="role")
        if len(password) < MIN_PASSWORD:
            raise BadRequest(
                f"password must be at least {MIN_PASSWORD} characters", param="password"
            )
        user = AdminUser(
            id=new_id("adm"), email=email, password_hash=_hasher.hash(password), role=role
        )
        self.session.add(user)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise Conflict(f"an admin account {email!r} already exists", param="email") from exc
        return user

    async def count(self) -> int:
        rows = await self.session.execute(select(AdminUser.id).limit(1))
        return len(rows.all())

    async def get(self, user_id: str) -> AdminUser | None:
        user = await self.session.get(AdminUser, user_id)
        return user if user is not None and user.disabled_at is None else None

    async def list(self) -> Sequence[AdminUser]:
        return (
            (await self.session.execute(select(AdminUser).order_by(AdminUser.email)))
            .scalars()
            .all()
        )

    async def set_role(self, user_id: str, role: str) -> AdminUser:
        if role not in ADMIN_ROLES:
            raise BadRequest(f"role must be one of {', '.join(ADMIN_ROLES)}", param="role")
        user = await self.get(user_id)
        if user is None:
            raise NotFound(f"no admin account {user_id!r}")
        user.role = role
        await self.session.flush()
        return user

    async def authenticate(self, email: str, password: str) -> AdminUser:
        email = email.strip().lower()
        user = (
            await self.session.execute(select(AdminUser).where(AdminUser.email == email))
        ).scalar_one_or_none()
        try:
            _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            user = None
        if user is None or user.disabled_at is not None:
            raise Unauthorized("wrong email or password")
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
        user.last_sign_in_at = datetime.now(UTC)
        await self.session.flush()
        return user


@dataclass(frozen=True)
class Actor:
    """Who performs an admin action, and from where."""

    name: str
    id: str | None
    source: str  # ui | api
    ip: str | None


class AuditLog:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def record(
        self,
        actor: Actor,
        action: str,
        *,
        target_type: str | None = None,
        target_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Add an entry to the caller's transaction: it commits (or not) with the action."""
        entry = AuditEntry(
            id=new_id("aud"),
            actor=actor.name,
            actor_id=actor.id,
            source=actor.source,
            action=action,
            target_type=target_type,
            target_id=target_id,
            detail=detail or {},
            ip=actor.ip,
        )
        self.session.add(entry)
        return entry

    async def search(
        self, *, q: str | None, before: str | None, limit: int
    ) -> tuple[Sequence[AuditEntry], bool]:
        """Newest first; `q` matches actor, action, target or address (case-insensitive)."""
        stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
        if before:
            stmt = stmt.where(AuditEntry.id < before)
        if q:
            like = f"%{q.strip()}%"
            stmt = stmt.where(
                or_(
                    AuditEntry.actor.ilike(like),
                    AuditEntry.action.ilike(like),
                    AuditEntry.target_id.ilike(like),
                    AuditEntry.ip.ilike(like),
                    cast(AuditEntry.detail, Text).ilike(like),
                )
            )
        rows = (await self.session.execute(stmt)).scalars().all()
        return rows[:limit], len(rows) > limit


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class MintedLink:
    link: PortalLink
    token: str


class PortalLinks:
    """Magic links: minted by an admin, each opens one portal session, then is spent."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def mint(
        self, team_id: str, *, created_by: str, valid_minutes: float, session_hours: float
    ) -> MintedLink:
        if await self.session.get(Team, team_id) is None:
            raise NotFound(f"no team {team_id!r}")
        token = "pl_" + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        link = PortalLink(
            id=new_id("plk"),
            team_id=team_id,
            token_hash=_token_hash(token),
            created_by=created_by,
            session_seconds=int(session_hours * 3600),
            expires_at=now + timedelta(minutes=valid_minutes),
        )
        self.session.add(link)
        await self.session.flush()
        await self.session.refresh(link)
        return MintedLink(link=link, token=token)

    async def redeem(self, token: str) -> PortalLink:
        """Spend the link (a guarded update: two concurrent uses cannot both win)."""
        now = datetime.now(UTC)
        stmt = (
            update(PortalLink)
            .where(
                PortalLink.token_hash == _token_hash(token),
                PortalLink.used_at.is_(None),
                PortalLink.expires_at > now,
            )
            .values(used_at=now)
            .returning(PortalLink)
        )
        link = (await self.session.execute(stmt)).scalar_one_or_none()
        if link is None:
            raise Unauthorized("this portal link is unknown, expired or already used")
        return link
