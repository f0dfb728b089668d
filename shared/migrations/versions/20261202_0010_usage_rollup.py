"""usage rollup per team, day, model and job type (backfilled from ended jobs); refunds on jobs

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 01:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(precision=20, scale=10)

# The same sums as shared.billing.usage._ROLL_UP, over every ended job at once.
BACKFILL = """
WITH j AS (
    SELECT id, team_id, (created_at AT TIME ZONE 'UTC')::date AS day,
           coalesce(job_type, '') AS job_type, credits_refunded > 0 AS refunded
    FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled', 'expired')
), c AS (
    SELECT c.job_id, c.model_requested AS model, count(*) AS calls, min(c.seq) AS first_seq,
           coalesce(sum(c.prompt_tokens), 0) AS pt,
           coalesce(sum(c.completion_tokens), 0) AS ct,
           coalesce(sum(c.total_tokens), 0) AS tt,
           coalesce(sum(c.cost_usd), 0) AS cost,
           coalesce(sum(c.billed_usd), 0) AS billed,
           coalesce(sum(c.credits_charged), 0) AS credits
    FROM calls c JOIN j ON j.id = c.job_id
    GROUP BY c.job_id, c.model_requested
), r AS (
    SELECT j.team_id, j.day, c.model, j.job_type,
           (c.first_seq = min(c.first_seq) OVER (PARTITION BY c.job_id))::int AS jobs,
           1 AS model_jobs, c.calls, c.pt, c.ct, c.tt, c.cost, c.billed,
           CASE WHEN j.refunded THEN 0 ELSE c.credits END AS credits
    FROM c JOIN j ON j.id = c.job_id
    UNION ALL
    SELECT j.team_id, j.day, '', j.job_type, 1, 0, 0, 0, 0, 0, 0, 0, 0
    FROM j WHERE NOT EXISTS (SELECT 1 FROM calls WHERE calls.job_id = j.id)
)
INSERT INTO usage_rollup (team_id, day, model, job_type, jobs, model_jobs, calls,
    prompt_tokens, completion_tokens, total_tokens, cost_usd, billed_usd, credits)
SELECT team_id, day, model, job_type, sum(jobs), sum(model_jobs), sum(calls), sum(pt), sum(ct),
       sum(tt), sum(cost), sum(billed), sum(credits)
FROM r GROUP BY team_id, day, model, job_type
"""


def upgrade() -> None:
    op.add_column("jobs", sa.Column("credits_refunded", MONEY, server_default="0", nullable=False))
    count = sa.BigInteger()
    op.create_table(
        "usage_rollup",
        sa.Column("team_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("job_type", sa.String(length=100), nullable=False),
        *(
            sa.Column(name, count, server_default="0", nullable=False)
            for name in (
                "jobs",
                "model_jobs",
                "calls",
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
            )
        ),
        *(
            sa.Column(name, MONEY, server_default="0", nullable=False)
            for name in ("cost_usd", "billed_usd", "credits")
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_usage_rollup_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "team_id", "day", "model", "job_type", name=op.f("pk_usage_rollup")
        ),
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_table("usage_rollup")
    op.drop_column("jobs", "credits_refunded")
