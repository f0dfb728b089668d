"""Which queued call a free worker slot runs: fair across teams, by priority within a team.

The queue holds one entry per queued call, in the order the calls were queued, so a team that
queues 20,000 calls would otherwise make every other team wait for all of them. An entry is
therefore a *slot token*: when it is taken, the worker runs the call it names only if that call
is the fair choice, and otherwise the fair choice instead (`choose_and_claim`). The call it
names then gets a fresh entry at once, as soon as the claim commits (`Claimed.swapped`; the
runner queues it before it runs the other call, whose latency it must not wait for), so the
number of entries still equals the number of queued calls; an entry whose call was already run
that way finds its call no longer queued and is dropped, as a repeated entry always was.

The fair choice, from Postgres, at the moment a slot is free:
1. Across teams: the active team, under its `max_calls_in_flight`, with a runnable queued call
   that is due, which has the fewest calls running now (the entry's own team when it ties). A
   team with one call waiting therefore gets the next free slot however many calls the busiest
   team has queued: its wait is about one call's latency, not the length of the flood.
2. Within that team: the call of the highest priority (high, normal, low), then the oldest.

Cost: one statement (`CHOOSE`, which also reads the entry's own call and its team's status and
limit, so the claim need not): a loose index scan of `ix_calls_queued_fair` (one probe per team
with queued calls), one count of running calls per such team (`ix_calls_team_id_running`) and
one index probe for each team's next call. A team whose oldest queued calls belong to paused jobs
makes its probe walk past them. The claim is then one more statement (`claim`), or three for a
team with `max_calls_in_flight` (its lock and count come first); a swap adds `NEXT`. When
the claim is that one statement (`Choice.one_statement`: no swap, no in-flight limit, no budget
to reserve) of an active team, it is part of `CHOOSE`'s statement itself (`choose_and_claim`):
one round trip for the common case, run without a transaction (no BEGIN or COMMIT round trip):
`CHOOSE` takes no lock, and the claim is a guarded UPDATE, atomic on its own. Otherwise the
runner claims with the choice in hand (`claim_fair`), in a transaction when it needs one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Integer,
    Row,
    String,
    and_,
    column,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from shared.db import wake
from shared.jobs.lifecycle import JOB_RUNNABLE, TeamBusy, TeamGate, claim, claim_ctes
from shared.models import Call, Job, Team

# JOB_RUNNABLE is written out in the statements below: checked here, at import.
assert {str(s) for s in JOB_RUNNABLE} == {"open", "queued", "running"}

# One statement: the call this entry names (if it is still queued) with what the claim must know
# of its team, then, in one row each, every team that may start a call now, with its running
# count, its limit and its next call's priority. No row: the call is not queued any more; one row
# without a team: no team may start a call now.
CHOOSE = text(
    """
WITH RECURSIVE own AS (
    SELECT c.team_id, c.priority, t.status, t.max_calls_in_flight AS lim,
           t.budget_usd IS NOT NULL AS budgeted
    FROM calls c JOIN teams t ON t.id = c.team_id
    WHERE c.id = :call_id AND c.status = 'queued'
), queued(team_id) AS (
    (SELECT team_id FROM calls WHERE status = 'queued' AND EXISTS (SELECT FROM own)
     ORDER BY team_id LIMIT 1)
    UNION ALL
    SELECT (SELECT c.team_id FROM calls c
            WHERE c.status = 'queued' AND c.team_id > q.team_id
            ORDER BY c.team_id LIMIT 1)
    FROM queued q WHERE q.team_id IS NOT NULL
), teams_now AS (
    SELECT q.team_id, t.max_calls_in_flight AS lim,
           (SELECT count(*) FROM calls r
            WHERE r.team_id = q.team_id AND r.status = 'running') AS running
    FROM queued q JOIN teams t ON t.id = q.team_id
    WHERE q.team_id IS NOT NULL AND t.status = 'active'
), fair AS (
    SELECT n.team_id, n.lim, n.running, head.priority, head.created_at
    FROM teams_now n
    CROSS JOIN LATERAL (
        SELECT c.priority, c.created_at FROM calls c JOIN jobs j ON j.id = c.job_id
        WHERE c.team_id = n.team_id AND c.status = 'queued'
          AND j.status IN ('open', 'queued', 'running')
          AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= now())
        ORDER BY c.priority, c.created_at, c.seq
        LIMIT 1
    ) head
    WHERE n.lim IS NULL OR n.running < n.lim
)
SELECT own.team_id AS own_team, own.priority AS own_priority, own.status AS own_status,
       own.lim AS own_lim, own.budgeted AS own_budgeted,
       fair.team_id, fair.lim, fair.running, fair.priority, fair.created_at
FROM own LEFT JOIN fair ON true
"""
)


def _choose_and_claim_statement() -> Any:
    """`CHOOSE` and, in the same statement, the claim of the entry's own call when `_pick`
    would choose it and the claim is one statement (`Choice.one_statement`) of an active team:
    the common case costs one round trip, not two. Each row is `CHOOSE`'s, followed by the
    claimed call, its job's deadline and number of calls and its team's row (all None when
    nothing was claimed). Built once (`_CHOOSE_CLAIM`), run with `call_id` and `lease`."""
    choice = CHOOSE.columns(
        column("own_team", String),
        column("own_priority", Integer),
        column("own_status", String),
        column("own_lim", Integer),
        column("own_budgeted", Boolean),
        column("team_id", String),
        column("lim", Integer),
        column("running", Integer),
        column("priority", Integer),
        column("created_at", DateTime(timezone=True)),
    ).cte("choice")
    c = choice.c
    fewest = select(func.min(c.running)).scalar_subquery()
    # `_pick`'s choice of the own call: no team may start a call (one row, without a team), or
    # its own team has the fewest running and no call of a higher priority.
    own_is_fair = (
        select(literal_column("1"))
        .select_from(choice)
        .where(
            c.own_status == "active",
            c.own_lim.is_(None),
            c.own_budgeted.is_(False),
            or_(
                c.team_id.is_(None),
                and_(
                    c.team_id == c.own_team,
                    c.own_priority <= c.priority,
                    c.running == fewest,
                ),
            ),
        )
        .exists()
    )
    claimed, started = claim_ctes(own_is_fair)
    call = aliased(Call, claimed)
    # As in `lifecycle._claim_statement`: jobs and teams as of before `started`.
    return (
        select(*c, call, Job.deadline_at, Job.total_calls, Team)
        .select_from(choice)
        .outerjoin(call, true())
        .outerjoin(Job, Job.id == call.job_id)
        .outerjoin(Team, Team.id == call.team_id)
        .add_cte(started)
        .execution_options(populate_existing=True)
    )


_CHOOSE_CLAIM = _choose_and_claim_statement()

# The team's next call that no other worker is claiming right now.
NEXT = text(
    """
SELECT c.id FROM calls c JOIN jobs j ON j.id = c.job_id
WHERE c.team_id = :team_id AND c.status = 'queued' AND j.status IN ('open', 'queued', 'running')
  AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= now())
ORDER BY c.priority, c.created_at, c.seq
LIMIT 1
FOR UPDATE OF c SKIP LOCKED
"""
)


@dataclass(frozen=True)
class Claimed:
    """The call claimed for this queue entry (None: none), whether it is another call than the
    one the entry names (then the entry goes back to the queue for its own call), and, with a
    call, its team's row as the claim read it, its job's deadline and its job's number of calls."""

    call: Call | None
    swapped: bool = False
    team: Team | None = None
    deadline: datetime | None = None
    job_calls: int = 0


@dataclass(frozen=True)
class Choice:
    """The fair choice for an entry: its own call's team (None: the call is not queued any
    more), and the team whose call should run instead of it, if any."""

    own: TeamGate | None
    instead: TeamGate | None = None
    budgeted: bool = False  # the own call's team has a budget (its claim reserves)

    @property
    def one_statement(self) -> bool:
        """True when claiming this entry is one statement (its own call, a team without an
        in-flight limit or a budget): it needs no transaction of its own (`claim_fair`)."""
        return (
            self.own is not None
            and self.instead is None
            and self.own.max_calls_in_flight is None
            and not self.budgeted
        )


def _pick(rows: Sequence[Row[Any]]) -> Choice:
    first = rows[0]
    own = TeamGate(first.own_team, first.own_status, first.own_lim)
    budgeted = bool(first.own_budgeted)
    teams = [row for row in rows if row.team_id is not None]
    if not teams:
        return Choice(own, budgeted=budgeted)
    fewest = min(row.running for row in teams)
    mine = next((row for row in teams if row.team_id == own.team_id), None)
    if mine is not None and mine.running == fewest:
        if first.own_priority <= mine.priority:
            # The fair choice is this very call (or one as good).
            return Choice(own, budgeted=budgeted)
        pick = mine
    else:
        pick = min((row for row in teams if row.running == fewest), key=lambda row: row.created_at)
    return Choice(own, TeamGate(pick.team_id, "active", pick.lim), budgeted)


async def choose_and_claim(
    session: AsyncSession, call_id: str, lease_seconds: float
) -> tuple[Choice, Claimed | None]:
    """The fair choice for the queue entry of `call_id` and, when it is the entry's own call
    and its claim is one statement, that claim, in one statement (`_CHOOSE_CLAIM`). None: not
    claimed (another call is the fair choice, the claim needs more than one statement, or the
    call could not be claimed: `claim_fair` with the choice then does what `claim` does)."""
    params = {"call_id": call_id, "lease": timedelta(seconds=lease_seconds)}
    rows = (await session.execute(_CHOOSE_CLAIM, params)).all()
    if not rows:
        return Choice(None), Claimed(None)  # not queued any more: the entry is dropped
    choice = _pick(rows)
    call, deadline, job_calls, team = rows[0][-4:]
    if call is None:
        return choice, None
    wake(session, "job", call.job_id)
    return choice, Claimed(call, False, team, deadline, job_calls)


async def claim_fair(
    session: AsyncSession, call_id: str, lease_seconds: float, choice: Choice | None = None
) -> Claimed:
    """Claim the fair choice for the queue entry of `call_id` (see the module's docstring);
    `choice`: `choose_and_claim`'s choice when the caller already has it (read in any
    transaction: it takes no lock, and the claim re-checks every condition it relies on).

    Raises `TeamBusy` as `claim_call` does, when the entry's own call is to run and its team is
    at its in-flight limit."""
    if choice is None:
        choice, claimed_now = await choose_and_claim(session, call_id, lease_seconds)
        if claimed_now is not None:
            return claimed_now
    if choice.own is None:
        return Claimed(None)  # not queued any more: the entry is dropped
    if choice.instead is not None:
        params = {"team_id": choice.instead.team_id}
        other: str | None = (await session.execute(NEXT, params)).scalar()
        if other is not None and other != call_id:
            try:
                claimed = await claim(session, other, lease_seconds, choice.instead)
            except TeamBusy:
                claimed = None  # it filled up meanwhile: fall back to the entry's own call
            if claimed is not None:
                return Claimed(
                    claimed.call, True, claimed.team, claimed.deadline, claimed.job_calls
                )
    claimed = await claim(session, call_id, lease_seconds, choice.own)
    if claimed is None:
        return Claimed(None)
    return Claimed(claimed.call, False, claimed.team, claimed.deadline, claimed.job_calls)
