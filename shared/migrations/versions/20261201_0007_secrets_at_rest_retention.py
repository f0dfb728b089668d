"""webhook secrets encrypted at rest; teams.retention_days

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-01 22:00:00

Widens the secret columns (a Fernet token is longer than the secret) and encrypts every
existing plaintext secret with the first `WEBHOOK_SECRETS_KEY` key; the downgrade decrypts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

from shared.config import get_settings
from shared.crypto import PREFIX, SecretBox

revision: str = "0007"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = {"webhook_endpoints": "id", "webhook_team_secrets": "team_id"}


def _box() -> SecretBox:
    return SecretBox(get_settings().webhook_secret_keys)


def _convert(convert: Callable[[SecretBox, str], str], needs: Callable[[str], bool]) -> None:
    """Apply `convert` to every secret that `needs` it; the key is read only if one does."""
    conn = op.get_bind()
    box: SecretBox | None = None

    def apply(value: str) -> str:
        nonlocal box
        box = box or _box()
        return convert(box, value)

    for table, key in _TABLES.items():
        rows = conn.execute(
            sa.text(f"SELECT {key}, secret, previous_secret FROM {table}")  # noqa: S608
        ).all()
        for row_id, secret, previous in rows:
            new_secret = apply(secret) if needs(secret) else secret
            new_previous = apply(previous) if previous and needs(previous) else previous
            if (new_secret, new_previous) != (secret, previous):
                conn.execute(
                    sa.text(
                        f"UPDATE {table} SET secret = :s, previous_secret = :p "  # noqa: S608
                        f"WHERE {key} = :id"
                    ),
                    {"s": new_secret, "p": new_previous, "id": row_id},
                )


def upgrade() -> None:
    for table in _TABLES:
        for column in ("secret", "previous_secret"):
            op.alter_column(
                table, column, type_=sa.String(length=255), existing_type=sa.String(length=100)
            )
    op.add_column("teams", sa.Column("retention_days", sa.Integer(), nullable=True))
    _convert(SecretBox.seal, lambda value: not value.startswith(PREFIX))


def downgrade() -> None:
    _convert(SecretBox.open, lambda value: value.startswith(PREFIX))
    op.drop_column("teams", "retention_days")
    for table in _TABLES:
        for column in ("secret", "previous_secret"):
            op.alter_column(
                table, column, type_=sa.String(length=100), existing_type=sa.String(length=255)
            )
