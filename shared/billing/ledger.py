"""The credit ledger: every change of a team's balance is one append-only entry, written in the
transaction of the change, with the balance after it; so the entries always sum to the balance.

Grants carry what is left of them (`remaining`) and an optional expiry; charges and negative
adjustments burn them earliest expiry first (never-expiring last), then oldest. A grant's
expired remainder leaves the balance by an `expiry` entry. Callers hold the team's row lock
(`lock_team`) for the whole change; grants are locked after it (lock order: calls, jobs, budget
rows, teams, grants).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import CTE, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from shared.billing.periods import clock, next_period_start, period_start
from shared.ids import new_id
from shared.models import CreditEntry, CreditGrant, Team
from shared.models.base import Money
from shared.money import money_str
from shared.webhooks.events import record_event

EntryKind = Literal["grant", "charge", "refund", "adjustment", "expiry"]


async def lock_team(session: AsyncSession, team_id: str) -> Team:
    """The team row, locked for a balance change. FOR NO KEY UPDATE: it must not wait for the
    key-share locks that foreign-key checks of rows referencing the team hold (a call updated
    twice in one transaction takes one), or those transactions and this one deadlock."""
    stmt = (
        select(Team)
        .where(Team.id == team_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one()


async def append(
    session: AsyncSession,
    team: Team,
    kind: EntryKind,
    amount: Decimal,
    *,
    job_id: str | None = None,
    grant_id: str | None = None,
    note: str = "",
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> CreditEntry:
    """Apply `amount` (signed) to the locked team's balance and record it."""
    team.credits_balance = Decimal(team.credits_balance) + amount
    entry = CreditEntry(
        team_id=team.id,
        kind=kind,
        amount=amount,
        balance_after=team.credits_balance,
        job_id=job_id,
        grant_id=grant_id,
        note=note,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=clock(),
    )
    session.add(entry)
    await session.flush()
    await _low_credits(session, team)
    return entry


async def add_grant(
    session: AsyncSession,
    team: Team,
    amount: Decimal,
    *,
    kind: EntryKind = "grant",
    expires_at: datetime | None = None,
    allowance_period: datetime | None = None,
    note: str = "",
    job_id: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> CreditEntry:
    """Grant `amount` > 0 credits to the locked team (optionally expiring); a refund is a
    grant too, so that the credits it gives back burn like any others."""
    grant = CreditGrant(
        id=new_id("grant"),
        team_id=team.id,
        amount=amount,
        remaining=amount,
        expires_at=expires_at,
        allowance_period=allowance_period,
        note=note,
        created_at=clock(),
    )
    session.add(grant)
    await session.flush()
    return await append(
        session,
        team,
        kind,
        amount,
        grant_id=grant.id,
        job_id=job_id,
        note=note,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )


async def burn(session: AsyncSession, team_id: str, amount: Decimal) -> Decimal:
    """Use up `amount` of the team's live grants in burn order; returns what no grant covered."""
    now = clock()
    grants = (
        (
            await session.execute(
                select(CreditGrant)
                .where(
                    CreditGrant.team_id == team_id,
                    CreditGrant.remaining > 0,
                    (CreditGrant.expires_at.is_(None)) | (CreditGrant.expires_at > now),
                )
                .order_by(
                    CreditGrant.expires_at.asc().nulls_last(),
                    CreditGrant.created_at,
                    CreditGrant.id,
                )
                .with_for_update()
            )
        )
        .scalars()
        .all()
    )
    left = amount
    for grant in grants:
        if left <= 0:
            break
        take = min(Decimal(grant.remaining), left)
        grant.remaining = Decimal(grant.remaining) - take
        left -= take
    await session.flush()
    return left


async def debit(
    session: AsyncSession,
    team: Team,
    kind: EntryKind,
    amount: Decimal,
    *,
    job_id: str | None = None,
    note: str = "",
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> CreditEntry:
    """Take `amount` > 0 from the locked team: a charge or a negative adjustment."""
    await burn(session, team.id, amount)
    return await append(
        session,
        team,
        kind,
        -amount,
        job_id=job_id,
        note=note,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )


# -- a change written inside another statement -------------------------------------------------


@dataclass(frozen=True)
class TeamChange:
    """A locked team's credits after a job's settlement: `charge` leaves the balance (with its
    ledger entry and the burn of grants), `release` leaves the reservation."""

    team_id: str
    charge: Decimal
    release: Decimal
    balance: Decimal
    reserved: Decimal
    notified: bool
    low: bool  # `credits.low` fires


def team_change(team: Team, *, charge: Decimal, release: Decimal) -> TeamChange:
    """The change a settlement makes to the locked `team` (nothing is written yet)."""
    balance = Decimal(team.credits_balance) - charge
    reserved = Decimal(team.credits_reserved) - release
    notified, low = bool(team.low_credits_notified), False
    if charge:  # like `append`: the low-credits rule runs when the balance changes
        notified, low = _low_rule(team, balance, reserved)
    return TeamChange(team.id, charge, release, balance, reserved, notified, low)


def change_shape(change: TeamChange) -> int:
    """Which writes `change` needs: 0 none, 1 the team's row, 2 also the burn of its grants and
    the ledger entry (a charge)."""
    if change.charge == 0 and change.release == 0:
        return 0
    return 1 if change.charge == 0 else 2


def change_params(change: TeamChange, *, job_id: str, note: str) -> dict[str, Any]:
    """The parameters of `change_ctes(change_shape(change))`."""
    params: dict[str, Any] = {}
    shape = change_shape(change)
    if shape == 0:
        return params
    params.update(
        tc_team_id=change.team_id,
        tc_balance=change.balance,
        tc_reserved=change.reserved,
        tc_notified=change.notified,
    )
    if shape == 2:
        params.update(
            tc_now=clock(),
            tc_charge=change.charge,
            tc_amount=-change.charge,
            tc_job_id=job_id,
            tc_note=note,
            tc_created_at=clock(),
        )
    return params


def change_ctes(shape: int) -> list[CTE]:
    """The writes of a change of this `shape` (`change_shape`), as data-modifying CTEs for one
    statement (no round trip of their own), run with `change_params`: the team's row; with a
    charge, the burn of its grants (earliest expiry first, never expiring last, then oldest:
    each takes what the grants before it did not cover) and the ledger entry. The caller holds
    the team's lock, so no one else writes its grants. Built once per shape by the caller."""
    ctes: list[CTE] = []
    if shape == 0:
        return ctes
    teams = Team.__table__.c
    ctes.append(
        update(Team)
        .where(Team.id == bindparam("tc_team_id"))
        .values(
            credits_balance=bindparam("tc_balance", type_=teams.credits_balance.type),
            credits_reserved=bindparam("tc_reserved", type_=teams.credits_reserved.type),
            low_credits_notified=bindparam("tc_notified", type_=teams.low_credits_notified.type),
        )
        .returning(Team.id)
        .cte("team_change")
    )
    if shape == 1:
        return ctes
    grants = CreditGrant.__table__.c
    now = bindparam("tc_now", type_=grants.expires_at.type)
    live = (
        select(
            CreditGrant.id, CreditGrant.remaining, CreditGrant.expires_at, CreditGrant.created_at
        )
        .where(
            CreditGrant.team_id == bindparam("tc_team_id"),
            CreditGrant.remaining > 0,
            (CreditGrant.expires_at.is_(None)) | (CreditGrant.expires_at > now),
        )
        .with_for_update()
        .subquery("live_grants")
    )
    before = func.coalesce(
        func.sum(live.c.remaining).over(
            order_by=(live.c.expires_at.asc().nulls_last(), live.c.created_at, live.c.id),
            rows=(None, -1),
        ),
        0,
    )
    order = select(live.c.id, before.label("before")).cte("burn_order")
    amount = bindparam("tc_charge", type_=Money)
    ctes.append(
        update(CreditGrant)
        .where(CreditGrant.id == order.c.id, order.c.before < amount)
        .values(
            remaining=CreditGrant.remaining
            - func.least(CreditGrant.remaining, amount - order.c.before)
        )
        .returning(CreditGrant.id)
        .cte("burnt")
    )
    entries = CreditEntry.__table__.c
    ctes.append(
        insert(CreditEntry)
        .values(
            team_id=bindparam("tc_team_id", type_=entries.team_id.type),
            kind="charge",
            amount=bindparam("tc_amount", type_=entries.amount.type),
            balance_after=bindparam("tc_balance", type_=entries.balance_after.type),
            job_id=bindparam("tc_job_id", type_=entries.job_id.type),
            note=bindparam("tc_note", type_=entries.note.type),
            created_at=bindparam("tc_created_at", type_=entries.created_at.type),
        )
        .returning(CreditEntry.id)
        .cte("entry")
    )
    return ctes


async def applied(session: AsyncSession, team: Team, change: TeamChange) -> None:
    """Bring the loaded `team` in line with `change` once its statement ran; `credits.low` if
    it fires."""
    set_committed_value(team, "credits_balance", change.balance)
    set_committed_value(team, "credits_reserved", change.reserved)
    set_committed_value(team, "low_credits_notified", change.notified)
    if change.low:
        await _record_low(session, team)


async def expire_grants(session: AsyncSession, *, limit: int = 500) -> int:
    """Record an `expiry` entry for each expired grant's remainder; returns how many."""
    now = clock()
    rows = (
        await session.execute(
            select(CreditGrant.id, CreditGrant.team_id)
            .where(CreditGrant.remaining > 0, CreditGrant.expires_at <= now)
            .order_by(CreditGrant.team_id, CreditGrant.id)
            .limit(limit)
        )
    ).all()
    done = 0
    for grant_id, team_id in rows:
        team = await lock_team(session, team_id)
        grant = (
            await session.execute(
                select(CreditGrant).where(CreditGrant.id == grant_id).with_for_update()
            )
        ).scalar_one()
        if grant.remaining <= 0:
            continue
        left = Decimal(grant.remaining)
        grant.remaining = Decimal(0)
        await append(session, team, "expiry", -left, grant_id=grant.id, note="grant expired")
        done += 1
    return done


async def grant_allowances(session: AsyncSession, *, limit: int = 500) -> list[str]:
    """Grant each team with a `monthly_allowance` its grant for this month, once (it expires at
    the month's end); returns the teams granted."""
    now = clock()
    month = period_start(now, "month")
    has = select(CreditGrant.id).where(
        CreditGrant.team_id == Team.id, CreditGrant.allowance_period == month
    )
    team_ids = (
        (
            await session.execute(
                select(Team.id)
                .where(Team.monthly_allowance > 0, ~has.exists())
                .order_by(Team.id)
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
    granted = []
    for team_id in team_ids:
        team = await lock_team(session, team_id)
        again = await session.execute(has.where(CreditGrant.team_id == team_id).limit(1))
        if again.first() is not None or not team.monthly_allowance:
            continue
        await add_grant(
            session,
            team,
            Decimal(team.monthly_allowance),
            expires_at=next_period_start(now, "month"),
            allowance_period=month,
            note=f"monthly allowance {month:%Y-%m}",
        )
        granted.append(team_id)
    return granted


def _low_rule(team: Team, balance: Decimal, reserved: Decimal) -> tuple[bool, bool]:
    """(the team's `low_credits_notified` after a balance change, whether `credits.low` fires):
    once each time the available balance falls below the threshold; re-armed when it rises to
    the threshold again."""
    threshold = team.low_credits_threshold
    notified = bool(team.low_credits_notified)
    if threshold is None:
        return notified, False
    if balance - reserved < threshold:
        return True, not notified
    return False, False


async def _record_low(session: AsyncSession, team: Team) -> None:
    await record_event(
        session,
        team.id,
        "credits.low",
        {
            "team_id": team.id,
            "balance": _s(team.credits_balance),
            "reserved": _s(team.credits_reserved),
            "threshold": _s(team.low_credits_threshold or Decimal(0)),
        },
    )


async def _low_credits(session: AsyncSession, team: Team) -> None:
    """`credits.low` once each time the available balance falls below the team's threshold;
    re-armed when it rises to the threshold again."""
    notified, fire = _low_rule(team, Decimal(team.credits_balance), Decimal(team.credits_reserved))
    if notified != team.low_credits_notified:
        team.low_credits_notified = notified
    if fire:
        await _record_low(session, team)
    await session.flush()


def _s(value: Decimal) -> str:
    return money_str(Decimal(value))


async def ledger_sum(session: AsyncSession, team_id: str) -> Decimal:
    """The sum of a team's entries (equal to its balance: the ledger's invariant)."""
    stmt = select(func.coalesce(func.sum(CreditEntry.amount), 0)).where(
        CreditEntry.team_id == team_id
    )
    return Decimal((await session.execute(stmt)).scalar_one())
