"""The money part of admission: request caps, bounded worst cases, credit reservation and the
budget check, run by `shared.jobs.admission.Admission.admit` for both submit styles.

Nothing here fails open: every check that needs the database runs under a lock timeout
(`BILLING_LOCK_TIMEOUT_MS`), and a timeout or outage surfaces as 503, never as an unchecked 202.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.billing import budget as budgets
from shared.billing.prices import q_up, worst_case
from shared.errors import BadRequest, BudgetExceeded, InsufficientCredits, LimitExceeded
from shared.models import Team
from shared.money import money_str

PAUSE = "pause"


@dataclass
class Worst:
    tokens: int
    billed_usd: Decimal | None


@dataclass
class MoneyAdmission:
    """What admission decided: per-call worst cases, credits reserved, or why the job waits."""

    worst: list[Worst] = field(default_factory=list)
    credits_reserved: Decimal = Decimal(0)
    pause_reason: str | None = None


def apply_caps(team: Team, bodies: list[dict[str, Any]], where: list[str]) -> None:
    """Team caps on `n` and `max_tokens` (400 above them); a request without `max_tokens` gets
    the team's `default_max_tokens`, so that its worst case is bounded."""
    for body, param in zip(bodies, where, strict=True):
        n = body.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise BadRequest("n must be a positive integer", param=_p(param, "n"))
        if team.max_n is not None and n > team.max_n:
            raise LimitExceeded(f"n is at most {team.max_n} for this team", param=_p(param, "n"))
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadRequest(f"{key} must be a positive integer", param=_p(param, key))
            if team.max_tokens_cap is not None and value > team.max_tokens_cap:
                raise LimitExceeded(
                    f"{key} is at most {team.max_tokens_cap} for this team", param=_p(param, key)
                )
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
            default = team.default_max_tokens
            if team.max_tokens_cap is not None:
                default = min(default, team.max_tokens_cap)
            body["max_tokens"] = default


def _p(base: str, key: str) -> str:
    return f"{base}.{key}" if base else key


def credits_needed(team: Team, worst: list[Worst], *, new_job: bool) -> Decimal:
    """The credits a job's worst case needs: 1 per job, or its calls' worst case in credits."""
    if team.billing_mode == "job":
        return Decimal(1) if new_job else Decimal(0)
    if team.billing_mode == "usd":
        total = sum((w.billed_usd or Decimal(0) for w in worst), Decimal(0))
        return q_up(total * Decimal(team.credits_per_usd))
    tokens = sum(w.tokens for w in worst)
    return q_up(Decimal(tokens) / Decimal(team.tokens_per_credit))


async def set_lock_timeout(session: AsyncSession, ms: int) -> None:
    """For the rest of this transaction: wait at most `ms` for a row or table lock (then the
    request answers 503)."""
    await session.execute(select(func.set_config("lock_timeout", f"{ms}ms", True)))


async def reserve_credits(session: AsyncSession, team: Team, amount: Decimal) -> bool:
    """Hold `amount` credits for admitted work: one guarded UPDATE on the team row.

    Only teams with `enforce_credits` hold credits: for the others (post-paid, the balance may go
    negative) a reservation would refuse nothing, and the team row would serialize every
    submission of the team for nothing."""
    if amount <= 0 or not team.enforce_credits:
        return True
    available = Team.credits_balance - Team.credits_reserved
    stmt = (
        update(Team)
        .execution_options(synchronize_session=False)
        .where(Team.id == team.id, Team.enforce_credits, available >= amount)
        .values(credits_reserved=Team.credits_reserved + amount)
        .returning(Team.credits_reserved)
    )
    return (await session.execute(stmt)).first() is not None


async def admit_money(
    session: AsyncSession,
    team: Team,
    bodies: list[dict[str, Any]],
    *,
    new_job: bool,
    can_pause: bool,
    lock_timeout_ms: int,
) -> MoneyAdmission:
    """Reserve credits and check the budget for `bodies` (after `apply_caps`)."""
    out = MoneyAdmission(worst=[Worst(*worst_case(team, b)) for b in bodies])
    needs_price = team.budget_usd is not None or team.billing_mode == "usd"
    for body, w in zip(bodies, out.worst, strict=True):
        if needs_price and w.billed_usd is None:
            raise BadRequest(
                f"no price is known for model {body['model']!r}; the admin can set one in the "
                "team's model_prices",
                param="model",
            )
    if team.enforce_credits or team.budget_usd is not None:
        await set_lock_timeout(session, lock_timeout_ms)
    pause = can_pause and team.on_limit == PAUSE
    needed = credits_needed(team, out.worst, new_job=new_job)
    if not await reserve_credits(session, team, needed):
        if not pause:
            row = (
                await session.execute(
                    select(Team.credits_balance, Team.credits_reserved).where(Team.id == team.id)
                )
            ).one()
            raise InsufficientCredits(
                f"this work needs {money_str(needed)} credit(s) and the team has "
                f"{money_str(max(Decimal(0), row[0] - row[1]))} available",
                balance=money_str(row[0]),
                reserved=money_str(row[1]),
                available=money_str(max(Decimal(0), row[0] - row[1])),
                needed=money_str(needed),
            )
        out.pause_reason = "insufficient_credits"
        return out
    out.credits_reserved = needed if team.enforce_credits else Decimal(0)
    st = await budgets.state(session, team)
    if st is not None:
        cheapest = min((w.billed_usd or Decimal(0) for w in out.worst), default=Decimal(0))
        if st.remaining_usd < cheapest:
            if not pause:
                raise BudgetExceeded(
                    f"the team's {st.period} budget has {money_str(st.remaining_usd)} USD left; "
                    f"this request can cost up to {money_str(cheapest)} USD",
                    needed_usd=money_str(cheapest),
                    **st.as_dict(),
                )
            out.pause_reason = "budget_exceeded"
    return out
