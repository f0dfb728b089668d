"""Which queued call a free worker slot runs: fair across teams, by priority within a team.

The queue holds one entry per queued call, in the order the calls were queued, so a team that
queues 20,000 calls would otherwise make every other team wait for all of them. An entry is
therefore a *slot token*: when it is taken, the worker runs the call it names only if that call
is the fair choice, and otherwise the fair choice instead (`choose`). The call it names then gets
a fresh entry at once, as soon as the claim commits (`Claimed.swapped`; the runner queues it
before it runs the other call, whose latency it must not wait for), so the number of entries
still equals the number of queued calls; an entry whose call was already run that way finds its
call no longer queued and is dropped, as a repeated entry always was.

The fair choice, from Postgres, at the moment a slot is free:
1. Across teams: the active team, under its `max_calls_in_flight`, with a runnable queued call
   that is due, which has the fewest calls running now (the entry's own team when it ties). A
   team with one call waiting therefore gets the next free slot however many calls the busiest
   team has queued: its wait is about one call's latency, not the length of the flood.
2. Within that team: the call of the highest priority (high, normal, low), then the oldest.

Cost: a loose index scan of `ix_calls_queued_fair` (one probe per team with queued calls), one
count of running calls per such team (`ix_calls_team_id_running`) and one index probe for each
team's next call. A team whose oldest queued calls belong to paused jobs makes its probe walk
past them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.jobs.lifecycle import JOB_RUNNABLE, TeamBusy, claim_call
from shared.models import Call

# JOB_RUNNABLE is written out in the statements below: checked here, at import.
assert {str(s) for s in JOB_RUNNABLE} == {"open", "queued", "running"}

# The call this entry names: its team and priority, if it is still queued.
OWN = text("SELECT team_id, priority FROM calls WHERE id = :id AND status = 'queued'")

# Every team that may start a call now, with its running count and its next call's priority.
TEAMS = text(
    """
WITH RECURSIVE queued(team_id) AS (
    (SELECT team_id FROM calls WHERE status = 'queued' ORDER BY team_id LIMIT 1)
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
)
SELECT n.team_id, n.running, head.priority, head.created_at
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
"""
)

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
    """The call claimed for this queue entry (None: none), and whether it is another call than
    the one the entry names (then the entry goes back to the queue for its own call)."""

    call: Call | None
    swapped: bool = False


async def choose(session: AsyncSession, call_id: str) -> str | None:
    """The id of the call to run instead of `call_id`, or None to run `call_id` itself."""
    own = (await session.execute(OWN, {"id": call_id})).first()
    if own is None:
        return None  # not queued any more: the claim finds nothing, the entry is dropped
    own_team, own_priority = own
    teams = (await session.execute(TEAMS)).all()
    if not teams:
        return None
    fewest = min(row.running for row in teams)
    mine = next((row for row in teams if row.team_id == own_team), None)
    if mine is not None and mine.running == fewest:
        if own_priority <= mine.priority:
            return None  # the fair choice is this very call (or one as good)
        team_id = own_team
    else:
        team_id = min(
            (row for row in teams if row.running == fewest), key=lambda row: row.created_at
        ).team_id
    other: str | None = (await session.execute(NEXT, {"team_id": team_id})).scalar()
    return other if other != call_id else None


async def claim_fair(session: AsyncSession, call_id: str, lease_seconds: float) -> Claimed:
    """Claim the fair choice for the queue entry of `call_id` (see the module's docstring).

    Raises `TeamBusy` as `claim_call` does, when the entry's own call is to run and its team is
    at its in-flight limit."""
    other = await choose(session, call_id)
    if other is not None:
        try:
            call = await claim_call(session, other, lease_seconds)
        except TeamBusy:
            call = None  # it filled up meanwhile: fall back to the entry's own call
        if call is not None:
            return Claimed(call, swapped=True)
    return Claimed(await claim_call(session, call_id, lease_seconds))
