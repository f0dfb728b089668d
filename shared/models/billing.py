"""Money tables: the credit ledger, credit grants, and one budget row per team and period."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base


class CreditEntry(Base):
    """One append-only ledger line; `balance_after` is the team's balance once it applied.

    Written in the transaction of the change it records, so the entries of a team always sum to
    its `credits_balance`."""

    __tablename__ = "credit_entries"
    __table_args__ = (
        Index("ix_credit_entries_team_id_id", "team_id", "id"),
        Index(
            "uq_credit_entries_team_id_idempotency_key",
            "team_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # grant|charge|refund|adjustment|expiry
    amount: Mapped[Decimal]  # signed
    balance_after: Mapped[Decimal]
    job_id: Mapped[str | None] = mapped_column(String(40))
    grant_id: Mapped[str | None] = mapped_column(String(40))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(String(500), server_default="")
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class CreditGrant(Base):
    """Credits granted at once, burnt earliest expiry first, then oldest; `remaining` is what is
    left of it. Expired remainders leave the balance by an `expiry` entry."""

    __tablename__ = "credit_grants"
    __table_args__ = (
        Index(
            "ix_credit_grants_burn",
            "team_id",
            "expires_at",
            "created_at",
            postgresql_where=text("remaining > 0"),
        ),
        Index(
            "uq_credit_grants_team_id_allowance_period",
            "team_id",
            "allowance_period",
            unique=True,
            postgresql_where=text("allowance_period IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    amount: Mapped[Decimal]
    remaining: Mapped[Decimal]
    expires_at: Mapped[datetime | None]
    # The month a recurring allowance was granted for (one per team and month).
    allowance_period: Mapped[datetime | None]
    note: Mapped[str] = mapped_column(String(500), server_default="")
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class BudgetPeriod(Base):
    """A team's USD spend in one budget period: the row the guarded reservation UPDATE fences."""

    __tablename__ = "budget_periods"

    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(String(8))
    spent_usd: Mapped[Decimal] = mapped_column(server_default="0")
    reserved_usd: Mapped[Decimal] = mapped_column(server_default="0")
    thresholds_fired: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class UsageRollup(Base):
    """Usage of ended jobs, summed per team, UTC day (of the job's creation), model and job
    type; maintained by the job-end transition (`shared.billing.usage.roll_up_cte`), so usage
    reports read a few rows per day instead of every call.

    `jobs` counts each job once, on the row of its first call's model (or model "" for a job
    without calls), so job-level groupings sum it; `model_jobs` counts the jobs with a call of
    this model, which the grouping by model sums. `credits` is net of refunds."""

    __tablename__ = "usage_rollup"

    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    job_type: Mapped[str] = mapped_column(String(100), primary_key=True)
    jobs: Mapped[int] = mapped_column(BigInteger, server_default="0")
    model_jobs: Mapped[int] = mapped_column(BigInteger, server_default="0")
    calls: Mapped[int] = mapped_column(BigInteger, server_default="0")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    cost_usd: Mapped[Decimal] = mapped_column(server_default="0")
    billed_usd: Mapped[Decimal] = mapped_column(server_default="0")
    credits: Mapped[Decimal] = mapped_column(server_default="0")
