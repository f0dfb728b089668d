"""teams: response cache setting (cache_enabled, cache_ttl_seconds); calls: cached

Revision ID: 0006
Revises: 0008
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "teams",
        sa.Column("cache_enabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("teams", sa.Column("cache_ttl_seconds", sa.Integer(), nullable=True))
    op.add_column(
        "calls",
        sa.Column("cached", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("calls", "cached")
    op.drop_column("teams", "cache_ttl_seconds")
    op.drop_column("teams", "cache_enabled")
