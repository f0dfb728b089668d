"""jobs.priority, calls.priority (its rank), and the index of the fair claim

Revision ID: 0009
Revises: 0004
Create Date: 2026-12-02 01:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FAIR_WHERE = sa.text("status = 'queued'")


def upgrade() -> None:
    # Constant defaults: no table rewrite on Postgres 11+, existing jobs are "normal".
    op.add_column(
        "jobs", sa.Column("priority", sa.String(8), server_default="normal", nullable=False)
    )
    op.add_column(
        "calls", sa.Column("priority", sa.SmallInteger(), server_default="1", nullable=False)
    )
    op.create_index(
        "ix_calls_queued_fair",
        "calls",
        ["team_id", "priority", "created_at", "seq"],
        unique=False,
        postgresql_where=FAIR_WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_calls_queued_fair", table_name="calls", postgresql_where=FAIR_WHERE)
    op.drop_column("calls", "priority")
    op.drop_column("jobs", "priority")
