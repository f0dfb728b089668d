"""Read-only figures for the dashboard and the portal.

Every query over jobs or calls is bounded by an id range: ids are ULIDs, so "created since T" is
`id >= id_floor(T)`, an index range scan. Nothing counts a whole table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.ids import id_floor
from shared.models import Call, Job, Team, WebhookAttempt, WebhookDelivery, WebhookEndpoint

ACTIVE = ("open", "queued", "running")


@dataclass
class Overview:
    active: dict[str, int]
    last_day: dict[str, int]
    # (hour start, {status: n}) for the last 24 hours
    hourly: list[tuple[datetime, dict[str, int]]]
    # (minute start, calls finished) for the last 30 minutes
    calls_per_minute: list[tuple[datetime, int]]
    failing_endpoints: Sequence[WebhookEndpoint]


async def overview(session: AsyncSession, now: datetime | None = None) -> Overview:
    now = now or datetime.now(UTC)
    active_rows = await session.execute(
        select(Job.status, func.count()).where(Job.status.in_(ACTIVE)).group_by(Job.status)
    )
    active = {s: 0 for s in ACTIVE} | {s: int(n) for s, n in active_rows.all()}
    day_floor = id_floor("job", now - timedelta(hours=24))
    hour = func.date_trunc("hour", Job.created_at)
    rows = await session.execute(
        select(hour, Job.status, func.count())
        .where(Job.id >= day_floor, Job.id < "job_~")
        .group_by(hour, Job.status)
    )
    by_hour: dict[datetime, dict[str, int]] = {}
    last_day: dict[str, int] = {}
    for at, status, n in rows.all():
        by_hour.setdefault(at, {})[status] = int(n)
        last_day[status] = last_day.get(status, 0) + int(n)
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    hourly = [
        (start + timedelta(hours=i), by_hour.get(start + timedelta(hours=i), {})) for i in range(24)
    ]
    minute = func.date_trunc("minute", Call.finished_at)
    since = now - timedelta(minutes=30)
    call_rows = await session.execute(
        select(minute, func.count())
        # Calls created in the last day bound the scan; a longer call is rare and only late.
        .where(
            Call.id >= id_floor("call", now - timedelta(hours=24)),
            Call.id < "call_~",
            Call.finished_at >= since,
        )
        .group_by(minute)
    )
    per_minute = {at: int(n) for at, n in call_rows.all()}
    first = since.replace(second=0, microsecond=0) + timedelta(minutes=1)
    calls = [
        (first + timedelta(minutes=i), per_minute.get(first + timedelta(minutes=i), 0))
        for i in range(30)
    ]
    failing = (
        (
            await session.execute(
                select(WebhookEndpoint)
                .where(
                    (WebhookEndpoint.failing_since.is_not(None))
                    | (
                        WebhookEndpoint.enabled.is_(False)
                        & (WebhookEndpoint.disabled_reason != "manual")
                    )
                )
                .order_by(WebhookEndpoint.failing_since)
                .limit(20)
            )
        )
        .scalars()
        .all()
    )
    return Overview(active, last_day, hourly, calls, failing)


@dataclass
class JobFilter:
    team_id: str | None = None
    status: str | None = None
    job_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _job_filter(stmt: Select[Job], f: JobFilter) -> Select[Job]:
    if f.team_id:
        stmt = stmt.where(Job.team_id == f.team_id)
    if f.status:
        stmt = stmt.where(Job.status == f.status)
    if f.job_type:
        stmt = stmt.where(Job.job_type == f.job_type)
    if f.since:
        stmt = stmt.where(Job.id >= id_floor("job", f.since))
    if f.until:
        stmt = stmt.where(Job.id < id_floor("job", f.until))
    return stmt


async def jobs_page(
    session: AsyncSession, f: JobFilter, *, before: str | None, limit: int
) -> tuple[Sequence[Job], bool]:
    """Newest first, keyset-paged: `before` is the last id of the previous page."""
    stmt = _job_filter(select(Job), f).where(Job.id.like("job\\_%"))
    if before:
        stmt = stmt.where(Job.id < before)
    rows = (await session.execute(stmt.order_by(Job.id.desc()).limit(limit + 1))).scalars().all()
    return rows[:limit], len(rows) > limit


@dataclass
class Usage:
    since: date
    until: date  # inclusive
    days: list[date]
    teams: list[str]
    models: list[str]
    # {team: {day: cost}} and {model: {day: tokens}}
    cost: dict[str, dict[date, Decimal]] = field(default_factory=dict)
    tokens: dict[str, dict[date, int]] = field(default_factory=dict)
    status_mix: dict[str, int] = field(default_factory=dict)
    # day, team, model, calls, prompt tokens, completion tokens, cost: the CSV export
    rows: list[tuple[date, str, str, int, int, int, Decimal]] = field(default_factory=list)

    def team_total(self, team: str) -> Decimal:
        return sum(self.cost.get(team, {}).values(), Decimal(0))


async def usage(
    session: AsyncSession, since: date, until: date, *, team_id: str | None = None
) -> Usage:
    """Succeeded calls' cost and tokens per day, team and model; the jobs' status mix."""
    start = datetime(since.year, since.month, since.day, tzinfo=UTC)
    end = datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1)
    day = func.date(func.timezone("UTC", Call.created_at))
    model = func.coalesce(Call.model_used, Call.model_requested)
    stmt = (
        select(
            day,
            Call.team_id,
            model,
            func.count(),
            func.coalesce(func.sum(Call.prompt_tokens), 0),
            func.coalesce(func.sum(Call.completion_tokens), 0),
            func.coalesce(func.sum(Call.cost_usd), 0),
        )
        .where(
            Call.id >= id_floor("call", start),
            Call.id < id_floor("call", end),
            Call.status == "succeeded",
        )
        .group_by(day, Call.team_id, model)
        .order_by(day, Call.team_id, model)
    )
    if team_id:
        stmt = stmt.where(Call.team_id == team_id)
    days = [since + timedelta(days=i) for i in range((until - since).days + 1)]
    out = Usage(since=since, until=until, days=days, teams=[], models=[])
    for d, team, m, n, pt, ct, cost in (await session.execute(stmt)).all():
        cost = Decimal(cost)
        out.rows.append((d, team, m, int(n), int(pt), int(ct), cost))
        per_team = out.cost.setdefault(team, {})
        per_team[d] = per_team.get(d, Decimal(0)) + cost
        per_model = out.tokens.setdefault(m, {})
        per_model[d] = per_model.get(d, 0) + int(pt) + int(ct)
    out.teams = sorted(out.cost)
    out.models = sorted(out.tokens)
    mix = select(Job.status, func.count()).where(
        Job.id >= id_floor("job", start), Job.id < id_floor("job", end)
    )
    if team_id:
        mix = mix.where(Job.team_id == team_id)
    for status, n in (await session.execute(mix.group_by(Job.status))).all():
        out.status_mix[status] = int(n)
    return out


async def teams_page(
    session: AsyncSession, *, q: str | None, after: str | None, limit: int
) -> tuple[Sequence[Team], bool]:
    stmt = select(Team).order_by(Team.id).limit(limit + 1)
    if q:
        like = f"%{q.strip()}%"
        stmt = stmt.where(Team.id.ilike(like) | Team.name.ilike(like))
    if after:
        stmt = stmt.where(Team.id > after)
    rows = (await session.execute(stmt)).scalars().all()
    return rows[:limit], len(rows) > limit


async def endpoints_page(
    session: AsyncSession, *, team_id: str | None, before: str | None, limit: int
) -> tuple[Sequence[WebhookEndpoint], bool]:
    stmt = select(WebhookEndpoint).order_by(WebhookEndpoint.id.desc()).limit(limit + 1)
    if team_id:
        stmt = stmt.where(WebhookEndpoint.team_id == team_id)
    if before:
        stmt = stmt.where(WebhookEndpoint.id < before)
    rows = (await session.execute(stmt)).scalars().all()
    return rows[:limit], len(rows) > limit


async def deliveries_page(
    session: AsyncSession,
    *,
    team_id: str | None,
    status: str | None,
    endpoint_id: str | None,
    before: str | None,
    limit: int,
) -> tuple[Sequence[WebhookDelivery], bool]:
    stmt = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit + 1)
    if team_id:
        stmt = stmt.where(WebhookDelivery.team_id == team_id)
    if status:
        stmt = stmt.where(WebhookDelivery.status == status)
    if endpoint_id:
        stmt = stmt.where(WebhookDelivery.endpoint_id == endpoint_id)
    if before:
        stmt = stmt.where(WebhookDelivery.id < before)
    rows = (await session.execute(stmt)).scalars().all()
    return rows[:limit], len(rows) > limit


async def attempts_of(
    session: AsyncSession, delivery_id: str, *, team_id: str | None = None
) -> Sequence[WebhookAttempt]:
    stmt = select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
    if team_id:
        stmt = stmt.where(WebhookAttempt.team_id == team_id)
    return (await session.execute(stmt.order_by(WebhookAttempt.id).limit(100))).scalars().all()
