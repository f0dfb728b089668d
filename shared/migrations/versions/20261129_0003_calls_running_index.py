"""calls: partial index for counting a team's running calls (in-flight limit)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_calls_team_id_running",
        "calls",
        ["team_id"],
        unique=False,
        postgresql_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_calls_team_id_running",
        table_name="calls",
        postgresql_where=sa.text("status = 'running'"),
    )
