"""money: credit ledger and grants, budget periods, billing settings, money columns

Revision ID: 0004
Revises: 0006
Create Date: 2026-12-01 22:18:49.187351
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "budget_periods",
        sa.Column("team_id", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column(
            "spent_usd", sa.Numeric(precision=20, scale=10), server_default="0", nullable=False
        ),
        sa.Column(
            "reserved_usd", sa.Numeric(precision=20, scale=10), server_default="0", nullable=False
        ),
        sa.Column(
            "thresholds_fired",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_budget_periods_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("team_id", "period_start", name=op.f("pk_budget_periods")),
    )
    op.create_table(
        "credit_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("team_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.Numeric(precision=20, scale=10), nullable=False),
        sa.Column("balance_after", sa.Numeric(precision=20, scale=10), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("grant_id", sa.String(length=40), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("note", sa.String(length=500), server_default="", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_credit_entries_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_entries")),
    )
    op.create_index(
        "ix_credit_entries_team_id_id", "credit_entries", ["team_id", "id"], unique=False
    )
    op.create_index(
        "uq_credit_entries_team_id_idempotency_key",
        "credit_entries",
        ["team_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("team_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.Numeric(precision=20, scale=10), nullable=False),
        sa.Column("remaining", sa.Numeric(precision=20, scale=10), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("allowance_period", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(length=500), server_default="", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_credit_grants_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_grants")),
    )
    op.create_index(
        "ix_credit_grants_burn",
        "credit_grants",
        ["team_id", "expires_at", "created_at"],
        unique=False,
        postgresql_where=sa.text("remaining > 0"),
    )
    op.create_index(
        "uq_credit_grants_team_id_allowance_period",
        "credit_grants",
        ["team_id", "allowance_period"],
        unique=True,
        postgresql_where=sa.text("allowance_period IS NOT NULL"),
    )
    op.add_column(
        "calls", sa.Column("billed_usd", sa.Numeric(precision=20, scale=10), nullable=True)
    )
    op.add_column(
        "calls", sa.Column("credits_charged", sa.Numeric(precision=20, scale=10), nullable=True)
    )
    op.add_column("calls", sa.Column("max_tokens", sa.Integer(), nullable=True))
    op.add_column(
        "calls", sa.Column("max_billed_usd", sa.Numeric(precision=20, scale=10), nullable=True)
    )
    op.add_column(
        "calls", sa.Column("budget_reserved_usd", sa.Numeric(precision=20, scale=10), nullable=True)
    )
    op.add_column(
        "calls", sa.Column("budget_period_start", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "jobs",
        sa.Column(
            "billed_usd", sa.Numeric(precision=20, scale=10), server_default="0", nullable=False
        ),
    )
    op.add_column(
        "jobs",
        sa.Column(
            "credits_reserved",
            sa.Numeric(precision=20, scale=10),
            server_default="0",
            nullable=False,
        ),
    )
    op.add_column("jobs", sa.Column("pause_reason", sa.String(length=32), nullable=True))
    op.add_column("jobs", sa.Column("paused_from", sa.String(length=16), nullable=True))
    op.create_index("ix_jobs_team_id_created_at", "jobs", ["team_id", "created_at"], unique=False)
    op.add_column(
        "teams",
        sa.Column(
            "credits_reserved",
            sa.Numeric(precision=20, scale=10),
            server_default="0",
            nullable=False,
        ),
    )
    op.add_column(
        "teams",
        sa.Column("billing_mode", sa.String(length=8), server_default="job", nullable=False),
    )
    op.add_column(
        "teams",
        sa.Column("enforce_credits", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column(
        "teams",
        sa.Column(
            "credits_per_usd",
            sa.Numeric(precision=20, scale=10),
            server_default="100",
            nullable=False,
        ),
    )
    op.add_column(
        "teams", sa.Column("tokens_per_credit", sa.Integer(), server_default="1000", nullable=False)
    )
    op.add_column(
        "teams",
        sa.Column(
            "price_markup_pct",
            sa.Numeric(precision=20, scale=10),
            server_default="0",
            nullable=False,
        ),
    )
    op.add_column(
        "teams",
        sa.Column(
            "model_prices",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        "teams", sa.Column("budget_usd", sa.Numeric(precision=20, scale=10), nullable=True)
    )
    op.add_column(
        "teams",
        sa.Column("budget_period", sa.String(length=8), server_default="month", nullable=False),
    )
    op.add_column(
        "teams",
        sa.Column(
            "budget_thresholds",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[50, 80, 100]'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        "teams",
        sa.Column("default_max_tokens", sa.Integer(), server_default="4096", nullable=False),
    )
    op.add_column("teams", sa.Column("max_n", sa.Integer(), nullable=True))
    op.add_column("teams", sa.Column("max_tokens_cap", sa.Integer(), nullable=True))
    op.add_column(
        "teams", sa.Column("on_limit", sa.String(length=8), server_default="reject", nullable=False)
    )
    op.add_column(
        "teams",
        sa.Column("low_credits_threshold", sa.Numeric(precision=20, scale=10), nullable=True),
    )
    op.add_column(
        "teams",
        sa.Column(
            "low_credits_notified", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    op.add_column(
        "teams", sa.Column("monthly_allowance", sa.Numeric(precision=20, scale=10), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("teams", "monthly_allowance")
    op.drop_column("teams", "low_credits_notified")
    op.drop_column("teams", "low_credits_threshold")
    op.drop_column("teams", "on_limit")
    op.drop_column("teams", "max_tokens_cap")
    op.drop_column("teams", "max_n")
    op.drop_column("teams", "default_max_tokens")
    op.drop_column("teams", "budget_thresholds")
    op.drop_column("teams", "budget_period")
    op.drop_column("teams", "budget_usd")
    op.drop_column("teams", "model_prices")
    op.drop_column("teams", "price_markup_pct")
    op.drop_column("teams", "tokens_per_credit")
    op.drop_column("teams", "credits_per_usd")
    op.drop_column("teams", "enforce_credits")
    op.drop_column("teams", "billing_mode")
    op.drop_column("teams", "credits_reserved")
    op.drop_index("ix_jobs_team_id_created_at", table_name="jobs")
    op.drop_column("jobs", "paused_from")
    op.drop_column("jobs", "pause_reason")
    op.drop_column("jobs", "credits_reserved")
    op.drop_column("jobs", "billed_usd")
    op.drop_column("calls", "budget_period_start")
    op.drop_column("calls", "budget_reserved_usd")
    op.drop_column("calls", "max_billed_usd")
    op.drop_column("calls", "max_tokens")
    op.drop_column("calls", "credits_charged")
    op.drop_column("calls", "billed_usd")
    op.drop_index(
        "uq_credit_grants_team_id_allowance_period",
        table_name="credit_grants",
        postgresql_where=sa.text("allowance_period IS NOT NULL"),
    )
    op.drop_index(
        "ix_credit_grants_burn",
        table_name="credit_grants",
        postgresql_where=sa.text("remaining > 0"),
    )
    op.drop_table("credit_grants")
    op.drop_index(
        "uq_credit_entries_team_id_idempotency_key",
        table_name="credit_entries",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_index("ix_credit_entries_team_id_id", table_name="credit_entries")
    op.drop_table("credit_entries")
    op.drop_table("budget_periods")
