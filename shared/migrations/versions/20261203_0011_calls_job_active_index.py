"""calls: partial index of a job's active calls by seq (the job-end probe stays one lookup)

The job-end check (`shared.jobs.lifecycle._end_facts_statement`) asks whether any call of a job
is still queued or running, newest seq first. With only `ix_calls_active` (status,
next_attempt_at) and `ix_calls_job_id_seq`, the planner, misled by statistics taken before a big
job's calls were stored, scanned every active call in the table for each finished call: a
50,000-call job slowed to a third of its rate as it ran. This index answers it in one probe.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    op.create_index("ix_calls_job_id_active", "calls", ["job_id", "seq"], postgresql_where=ACTIVE)


def downgrade() -> None:
    op.drop_index("ix_calls_job_id_active", table_name="calls", postgresql_where=ACTIVE)
