"""Dashboard accounts, the audit log of admin actions, and single-use team portal links."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base
from shared.models.job import Job

ADMIN_ROLES = ("owner", "admin", "viewer")


class AdminUser(Base):
    """A person who signs in to /admin; only an argon2 hash of the password is stored."""

    __tablename__ = "admin_users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # owner | admin | viewer
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    last_sign_in_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]


class AuditEntry(Base):
    """One admin action: who (an account or the admin API key), what, on what, when, from where."""

    __tablename__ = "admin_audit_log"
    __table_args__ = (
        Index("ix_admin_audit_log_actor_id", "actor", "id"),
        Index("ix_admin_audit_log_target_id_id", "target_id", "id"),
    )

    # Time-ordered (ULID), so the log pages newest-first by id.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    actor: Mapped[str] = mapped_column(String(320))  # an account's email, or "admin-api-key"
    actor_id: Mapped[str | None] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(8))  # ui | api
    action: Mapped[str] = mapped_column(String(200))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    ip: Mapped[str | None] = mapped_column(String(64))


class PortalLink(Base):
    """A single-use magic link into a team's portal; only the token's SHA-256 is stored."""

    __tablename__ = "portal_links"
    __table_args__ = (Index("ix_portal_links_team_id_id", "team_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(320))
    session_seconds: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


# The dashboard lists jobs across teams newest first, filtered by status or type; these keep such
# a page an index range scan with a million jobs stored (declared here, next to their only user).
Index("ix_jobs_status_id", Job.status, Job.id)
Index("ix_jobs_job_type_id", Job.job_type, Job.id)
