"""api_keys.scopes (restricted keys); teams: provider-side tools and file ids allowed per team

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-01 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: an unrestricted key (every scope), which is what every existing key is.
    op.add_column("api_keys", sa.Column("scopes", postgresql.JSONB(), nullable=True))
    op.add_column(
        "teams",
        sa.Column(
            "allowed_tool_types",
            postgresql.JSONB(),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        "teams",
        sa.Column("allow_file_ids", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("teams", "allow_file_ids")
    op.drop_column("teams", "allowed_tool_types")
    op.drop_column("api_keys", "scopes")
