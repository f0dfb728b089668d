"""Hard USD budgets: one row per team and period, fenced by one guarded UPDATE.

A call reserves its worst case before its provider request:
`UPDATE budget_periods SET reserved = reserved + x WHERE spent + reserved + x <= budget`.
Postgres re-checks the WHERE on the latest row version after waiting for a concurrent writer,
so however many workers race, the sum never passes the budget. The reservation is stored on the
call row with the period it was made in; when the call leaves `running` (finished, failed,
cancelled, handed back, its worker lost) `settle_calls` moves it out of `reserved` and, for a
succeeded call, its real billed price into `spent`, in that same transaction and in the period
it was reserved in (a worker's finish does the same within its one statement:
`shared.jobs.lifecycle.finish_call`). Thresholds are recorded (once per threshold and period)
by the transaction whose spend crossed them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, case, func, select, text, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.billing.periods import clock, next_period_start, period_start
from shared.models import BudgetPeriod, Call, CallStatus, Team
from shared.money import money_str
from shared.webhooks.events import record_event


@dataclass(frozen=True)
class BudgetState:
    period: str
    period_start: datetime
    budget_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal

    @property
    def remaining_usd(self) -> Decimal:
        return max(Decimal(0), self.budget_usd - self.spent_usd - self.reserved_usd)

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "period_start": self.period_start.isoformat(),
            "period_end": next_period_start(self.period_start, self.period).isoformat(),
            "budget_usd": money_str(self.budget_usd),
            "spent_usd": money_str(self.spent_usd),
            "reserved_usd": money_str(self.reserved_usd),
            "remaining_usd": money_str(self.remaining_usd),
        }


async def ensure_period(session: AsyncSession, team: Team, now: datetime | None = None) -> datetime:
    """Create the team's row for the period containing `now` (its spend so far counted from the
    calls billed in it, for a budget set mid-period); returns the period start."""
    start = period_start(now or clock(), team.budget_period)
    exists = select(BudgetPeriod.period_start).where(
        BudgetPeriod.team_id == team.id, BudgetPeriod.period_start == start
    )
    if (await session.execute(exists)).first() is not None:
        return start
    already = select(func.coalesce(func.sum(Call.billed_usd), 0)).where(
        Call.team_id == team.id,
        Call.status == CallStatus.SUCCEEDED,
        Call.budget_period_start.is_(None),
        Call.finished_at >= start,
    )
    stmt = (
        insert(BudgetPeriod)
        .values(
            team_id=team.id,
            period_start=start,
            period=team.budget_period,
            spent_usd=already.scalar_subquery(),
        )
        .on_conflict_do_nothing()
    )
    await session.execute(stmt)
    return start


async def state(
    session: AsyncSession, team: Team, now: datetime | None = None
) -> BudgetState | None:
    """The team's budget in the current period (None: no budget)."""
    if team.budget_usd is None:
        return None
    start = await ensure_period(session, team, now)
    row = (
        await session.execute(
            select(BudgetPeriod.spent_usd, BudgetPeriod.reserved_usd).where(
                BudgetPeriod.team_id == team.id, BudgetPeriod.period_start == start
            )
        )
    ).one()
    return BudgetState(team.budget_period, start, Decimal(team.budget_usd), row[0], row[1])


async def reserve(session: AsyncSession, team: Team, call_id: str, amount: Decimal) -> bool:
    """Reserve `amount` for the (running) call in the current period: one guarded UPDATE.

    False if it does not fit; with no budget, nothing is reserved and True is returned."""
    if team.budget_usd is None:
        return True
    start = await ensure_period(session, team)
    budget = select(Team.budget_usd).where(Team.id == team.id).scalar_subquery()
    stmt = (
        update(BudgetPeriod)
        .execution_options(synchronize_session=False)
        .where(
            BudgetPeriod.team_id == team.id,
            BudgetPeriod.period_start == start,
            BudgetPeriod.spent_usd + BudgetPeriod.reserved_usd + amount <= budget,
        )
        .values(reserved_usd=BudgetPeriod.reserved_usd + amount)
        .returning(BudgetPeriod.period_start)
    )
    if (await session.execute(stmt)).first() is None:
        return False  # the call holds nothing (reservations are cleared when calls stop)
    await _set_reservation(session, call_id, amount, start)
    return True


async def _set_reservation(
    session: AsyncSession, call_id: str, amount: Decimal | None, start: datetime | None
) -> None:
    await session.execute(
        update(Call)
        .execution_options(synchronize_session=False)
        .where(Call.id == call_id)
        .values(budget_reserved_usd=amount, budget_period_start=start)
    )


_SETTLE = text(
    """
    WITH old AS (
        SELECT id, team_id, budget_period_start AS ps, budget_reserved_usd AS r,
               CASE WHEN status = 'succeeded' THEN coalesce(billed_usd, 0) ELSE 0 END AS s
        FROM calls
        WHERE id = ANY(:ids) AND budget_reserved_usd IS NOT NULL AND status <> 'running'
    ), cleared AS (
        UPDATE calls c SET budget_reserved_usd = NULL
        FROM old WHERE c.id = old.id
        RETURNING old.team_id, old.ps, old.r, old.s
    )
    SELECT team_id, ps, sum(r), sum(s) FROM cleared GROUP BY team_id, ps ORDER BY team_id, ps
    """
)


async def settle_calls(session: AsyncSession, call_ids: list[str]) -> None:
    """Settle the reservations of these calls that have left `running` (each exactly once: the
    reservation is cleared by the same statement that reads it)."""
    if not call_ids:
        return
    groups = (await session.execute(_SETTLE, {"ids": list(call_ids)})).all()
    for team_id, start, reserved, spent in groups:
        row = (
            await session.execute(
                update(BudgetPeriod)
                .execution_options(synchronize_session=False)
                .where(BudgetPeriod.team_id == team_id, BudgetPeriod.period_start == start)
                .values(
                    reserved_usd=BudgetPeriod.reserved_usd - reserved,
                    spent_usd=BudgetPeriod.spent_usd + spent,
                )
                .returning(
                    BudgetPeriod.period,
                    BudgetPeriod.spent_usd,
                    BudgetPeriod.reserved_usd,
                    BudgetPeriod.thresholds_fired,
                )
            )
        ).first()
        if row is not None:
            await settled(session, team_id, start, spent, row[0], row[1], row[2], row[3])


async def settled(
    session: AsyncSession,
    team_id: str,
    start: datetime,
    spent_now: Decimal,
    period: str,
    spent: Decimal,
    reserved: Decimal,
    fired: list[Any],
) -> None:
    """After a settlement moved `spent_now` into the period's spend (the row, locked by that
    UPDATE, now holds `spent` and `reserved`): the thresholds it crossed, once each."""
    if spent_now > 0:
        await _thresholds(session, team_id, start, period, spent, reserved, list(fired))


async def exhausted(session: AsyncSession, team: Team) -> None:
    """A call was refused: the budget is used up, which the 100 % threshold announces."""
    st = await state(session, team)
    if st is None:
        return
    fired = (
        await session.execute(
            select(BudgetPeriod.thresholds_fired)
            .where(BudgetPeriod.team_id == team.id, BudgetPeriod.period_start == st.period_start)
            .with_for_update(key_share=True)
        )
    ).scalar_one()
    await _thresholds(
        session,
        team.id,
        st.period_start,
        st.period,
        st.spent_usd,
        st.reserved_usd,
        list(fired),
        refused=True,
    )


async def _thresholds(
    session: AsyncSession,
    team_id: str,
    start: datetime,
    period: str,
    spent: Decimal,
    reserved: Decimal,
    fired: list[Any],
    *,
    refused: bool = False,
) -> None:
    team = (
        await session.execute(
            select(Team.budget_usd, Team.budget_thresholds).where(Team.id == team_id)
        )
    ).one()
    budget, thresholds = team
    if not budget:
        return
    pct = Decimal(spent) * 100 / Decimal(budget)
    crossed = sorted(
        t
        for t in thresholds
        if t not in fired and (pct >= Decimal(str(t)) or (refused and Decimal(str(t)) >= 100))
    )
    if not crossed:
        return
    # The row is locked by this transaction's UPDATE (or the refusal's): no other can fire it.
    await session.execute(
        update(BudgetPeriod)
        .execution_options(synchronize_session=False)
        .where(BudgetPeriod.team_id == team_id, BudgetPeriod.period_start == start)
        .values(thresholds_fired=sorted(set(fired) | set(crossed)))
    )
    st = BudgetState(period, start, Decimal(budget), Decimal(spent), Decimal(reserved))
    for threshold in crossed:
        await record_event(
            session,
            team_id,
            "budget.threshold_crossed",
            {"team_id": team_id, "threshold_pct": threshold, **st.as_dict()},
        )


@dataclass(frozen=True)
class TeamSpend:
    """One team's budget in its current period, for the dashboard's overview."""

    team_id: str
    name: str
    state: BudgetState
    recorded: bool  # False: no spend or reservation recorded in this period yet

    @property
    def used_pct(self) -> Decimal:
        if not self.state.budget_usd:
            return Decimal(100)
        used = (self.state.spent_usd + self.state.reserved_usd) * 100 / self.state.budget_usd
        return min(Decimal(100), used)


async def spend_against_budgets(
    session: AsyncSession, *, limit: int = 50, now: datetime | None = None
) -> list[TeamSpend]:
    """The `limit` teams with a budget nearest it: this period's spend and reservations.

    Reads only what the settling transactions maintain: for each team with a budget, its
    current `budget_periods` row by primary key (team_id, period_start). No scan of calls, jobs
    or past periods, and no row is written (a period with no row yet shows 0 spent)."""
    at = now or clock()
    starts = {p: period_start(at, p) for p in ("day", "week", "month")}
    stmt = spend_statement(starts, limit)
    rows = (await session.execute(stmt)).all()
    out = [
        TeamSpend(
            team_id,
            name,
            BudgetState(
                period,
                starts.get(period, starts["month"]),
                Decimal(budget),
                Decimal(spent if spent is not None else 0),
                Decimal(reserved if reserved is not None else 0),
            ),
            recorded=spent is not None,
        )
        for team_id, name, budget, period, spent, reserved in rows
    ]
    return out


def spend_statement(starts: dict[str, datetime], limit: int) -> Select[Any]:
    """The query of `spend_against_budgets` (public for EXPLAIN in the benchmark)."""
    current = (
        select(Team.id, Team.name, Team.budget_usd, Team.budget_period)
        .where(Team.budget_usd.is_not(None))
        .subquery()
    )
    period_col = case(
        *[(current.c.budget_period == p, starts[p]) for p in ("day", "week")],
        else_=starts["month"],
    )
    # LATERAL with LIMIT 1 (the key is unique): one primary-key lookup per budgeted team,
    # whatever the periods' history holds. A plain join (or a LATERAL Postgres can flatten)
    # is planned as a hash join over every period row ever written.
    row = (
        select(BudgetPeriod.spent_usd, BudgetPeriod.reserved_usd)
        .where(BudgetPeriod.team_id == current.c.id, BudgetPeriod.period_start == period_col)
        .limit(1)
        .lateral("this_period")
    )
    used = func.coalesce(row.c.spent_usd, 0) + func.coalesce(row.c.reserved_usd, 0)
    share = used / func.nullif(current.c.budget_usd, 0)  # a budget of 0: NULL, listed first
    stmt = (
        select(
            current.c.id,
            current.c.name,
            current.c.budget_usd,
            current.c.budget_period,
            row.c.spent_usd,
            row.c.reserved_usd,
        )
        .select_from(current)
        .outerjoin(row, true())
        .order_by(share.desc().nulls_first(), current.c.id)
        .limit(limit)
    )
    return stmt
