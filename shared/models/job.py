from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, SmallInteger, String, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base
from shared.models.status import CallStatus, JobStatus, JobStyle, Priority


class Job(Base):
    """One business operation: one or more calls, billed and reported as one unit."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_team_id_id", "team_id", "id"),
        Index("ix_jobs_team_id_status_id", "team_id", "status", "id"),
        Index("ix_jobs_team_id_job_type_id", "team_id", "job_type", "id"),
        Index("ix_jobs_team_id_created_at", "team_id", "created_at"),
        Index(
            "uq_jobs_team_id_idempotency_key",
            "team_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(
            "ix_jobs_active",
            "status",
            "id",
            postgresql_where=text("status IN ('open', 'queued', 'running')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    style: Mapped[JobStyle] = mapped_column(String(8))
    job_type: Mapped[str | None] = mapped_column(String(100))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", server_default=text("'{}'::jsonb")
    )
    status: Mapped[JobStatus] = mapped_column(String(16))
    priority: Mapped[Priority] = mapped_column(String(8), server_default="normal")
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[dict[str, Any] | None]
    total_calls: Mapped[int] = mapped_column(server_default="0")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    cost_usd: Mapped[Decimal] = mapped_column(server_default="0")
    credits_charged: Mapped[Decimal] = mapped_column(server_default="0")
    # What an admin refunded of the charge (`POST /api/admin/jobs/{id}/refund`): all of it, once.
    credits_refunded: Mapped[Decimal] = mapped_column(server_default="0")
    billed_usd: Mapped[Decimal] = mapped_column(server_default="0")
    credits_reserved: Mapped[Decimal] = mapped_column(server_default="0")
    # Why the job is paused (insufficient_credits | budget_exceeded) and what it resumes to.
    pause_reason: Mapped[str | None] = mapped_column(String(32))
    paused_from: Mapped[JobStatus | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    deadline_at: Mapped[datetime | None]


class Call(Base):
    """One LLM request of a job; its row is the truth, the queue only a hint."""

    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_job_id_seq", "job_id", "seq", unique=True),
        Index("ix_calls_team_id_id", "team_id", "id"),
        Index(
            "ix_calls_team_id_running",
            "team_id",
            postgresql_where=text("status = 'running'"),
        ),
        Index(
            "ix_calls_active",
            "status",
            "next_attempt_at",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        # Is any call of this job still active (its end's probe, newest seq first)?
        Index(
            "ix_calls_job_id_active",
            "job_id",
            "seq",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        # The fair claim (`shared.jobs.fairness`): the teams with queued calls (a loose index
        # scan) and each team's next call, by priority, then age.
        Index(
            "ix_calls_queued_fair",
            "team_id",
            "priority",
            "created_at",
            "seq",
            postgresql_where=text("status = 'queued'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    seq: Mapped[int]
    custom_id: Mapped[str] = mapped_column(String(255))
    model_requested: Mapped[str] = mapped_column(String(200))
    model_used: Mapped[str | None] = mapped_column(String(200))
    request: Mapped[dict[str, Any]]
    status: Mapped[CallStatus] = mapped_column(String(16), server_default="queued")
    # The job's priority as a rank that sorts (`Priority.rank`: 0 high, 1 normal, 2 low).
    priority: Mapped[int] = mapped_column(SmallInteger, server_default="1")
    response: Mapped[dict[str, Any] | None]
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    total_tokens: Mapped[int | None]
    cost_usd: Mapped[Decimal | None]
    billed_usd: Mapped[Decimal | None]
    # This call's share of its job's charge (job mode: the job's credit on its first call).
    credits_charged: Mapped[Decimal | None]
    # Worst cases written at admission (prompt bound + max_tokens x n), for budget and credits.
    max_tokens: Mapped[int | None]
    max_billed_usd: Mapped[Decimal | None]
    # The budget reservation this attempt holds (None: none) and the period it was made in.
    budget_reserved_usd: Mapped[Decimal | None]
    budget_period_start: Mapped[datetime | None]
    latency_ms: Mapped[int | None]
    attempts: Mapped[int] = mapped_column(server_default="0")
    litellm_call_id: Mapped[str | None] = mapped_column(String(100))
    # Served from the proxy's response cache (no provider request, cost 0).
    cached: Mapped[bool] = mapped_column(server_default=text("false"))
    error: Mapped[dict[str, Any] | None]
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
