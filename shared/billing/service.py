"""Credits and usage for the admin and the team: grants and adjustments (idempotent), the
ledger in cursor pages, a team's balance view, usage reports."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.billing import budget as budgets
from shared.billing import ledger
from shared.billing.periods import clock, next_period_start, period_start
from shared.billing.schemas import (
    CreditsChange,
    CreditsOut,
    EntryOut,
    EntryPage,
    GrantOut,
    RefundIn,
)
from shared.billing.usage import roll_up_jobs
from shared.errors import BadRequest, Conflict, IdempotencyConflict, NotFound
from shared.models import JOB_TERMINAL, CreditEntry, CreditGrant, Job, Team


def _hash(data: CreditsChange | RefundIn | dict[str, str]) -> str:
    if isinstance(data, dict):
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    payload = json.dumps(data.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class CreditsService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _team(self, team_id: str) -> Team:
        team = (await self.session.execute(select(Team).where(Team.id == team_id))).scalar()
        if team is None:
            raise NotFound(f"no team {team_id!r}")
        return team

    async def change(
        self, team_id: str, data: CreditsChange, *, idempotency_key: str | None
    ) -> tuple[CreditEntry, bool]:
        """Grant or adjust; returns the entry and whether it was created (False: a replay)."""
        await self._team(team_id)
        digest = _hash(data)
        team = await ledger.lock_team(self.session, team_id)
        if (existing := await self._replay(team_id, idempotency_key, digest)) is not None:
            return existing, False
        amount = Decimal(data.amount)
        if amount == 0:
            raise BadRequest("amount must not be 0", param="amount")
        if data.expires_at is not None and data.expires_at <= clock():
            raise BadRequest("expires_at must be in the future", param="expires_at")
        if data.kind == "grant" or amount > 0:
            if data.kind == "grant" and amount < 0:
                raise BadRequest("a grant is positive; use kind adjustment", param="amount")
            entry = await ledger.add_grant(
                self.session,
                team,
                amount,
                kind=data.kind,
                expires_at=data.expires_at,
                note=data.note,
                idempotency_key=idempotency_key,
                request_hash=digest,
            )
        else:
            if data.expires_at is not None:
                raise BadRequest("a negative adjustment has no expiry", param="expires_at")
            entry = await ledger.debit(
                self.session,
                team,
                "adjustment",
                -amount,
                note=data.note,
                idempotency_key=idempotency_key,
                request_hash=digest,
            )
        return entry, True

    async def _replay(
        self, team_id: str, idempotency_key: str | None, digest: str
    ) -> CreditEntry | None:
        """The entry an earlier request with this Idempotency-Key wrote (None: none); 409 when that
        request was a different one."""
        if idempotency_key is None:
            return None
        existing = (
            await self.session.execute(
                select(CreditEntry).where(
                    CreditEntry.team_id == team_id,
                    CreditEntry.idempotency_key == idempotency_key,
                )
            )
        ).scalar()
        if existing is not None and existing.request_hash != digest:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request", param="Idempotency-Key"
            )
        return existing

    async def refund(
        self, job_id: str, data: RefundIn, *, idempotency_key: str | None
    ) -> tuple[CreditEntry, bool]:
        """Give back a job's whole charge, once: a `refund` entry (a grant of the amount, so it
        burns like others), the job's `credits_refunded`, and its usage rollup rows net of it,
        in one transaction. Returns the entry and whether it was created (False: a replay)."""
        found = (await self.session.execute(select(Job.team_id).where(Job.id == job_id))).first()
        if found is None:
            raise NotFound(f"no job {job_id!r}")
        team_id = found[0]
        # Lock order: the job, then the team.
        job = (
            await self.session.execute(
                select(Job)
                .where(Job.id == job_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalar_one()
        team = await ledger.lock_team(self.session, team_id)
        digest = _hash({"job_id": job_id, **data.model_dump(mode="json")})
        if (existing := await self._replay(team_id, idempotency_key, digest)) is not None:
            return existing, False
        if job.status not in JOB_TERMINAL:
            raise Conflict(f"job {job_id!r} has not ended ({job.status}); nothing is charged yet")
        if Decimal(job.credits_refunded) > 0:
            raise Conflict(f"job {job_id!r} was already refunded")
        amount = Decimal(job.credits_charged)
        if amount <= 0:
            raise Conflict(f"job {job_id!r} was not charged; there is nothing to refund")
        await roll_up_jobs(self.session, [job.id], sign=-1)
        job.credits_refunded = amount
        await self.session.flush()
        await roll_up_jobs(self.session, [job.id])
        entry = await ledger.add_grant(
            self.session,
            team,
            amount,
            kind="refund",
            note=data.note or f"refund of job {job_id}",
            job_id=job_id,
            idempotency_key=idempotency_key,
            request_hash=digest,
        )
        return entry, True

    async def entries(self, team_id: str, *, after: str | None, limit: int) -> EntryPage:
        """Newest first; `after` is the `next_cursor` of the previous page."""
        stmt = select(CreditEntry).where(CreditEntry.team_id == team_id)
        if after:
            try:
                stmt = stmt.where(CreditEntry.id < int(after))
            except ValueError as exc:
                raise BadRequest("invalid cursor", param="after") from exc
        rows: Sequence[CreditEntry] = (
            (await self.session.execute(stmt.order_by(CreditEntry.id.desc()).limit(limit + 1)))
            .scalars()
            .all()
        )
        page = rows[:limit]
        more = len(rows) > limit
        return EntryPage(
            data=[EntryOut.model_validate(e) for e in page],
            has_more=more,
            next_cursor=str(page[-1].id) if more and page else None,
        )

    async def ledger_page(self, team_id: str, *, after: str | None, limit: int) -> EntryPage:
        await self._team(team_id)
        return await self.entries(team_id, after=after, limit=limit)

    async def overview(self, team: Team, *, after: str | None, limit: int) -> CreditsOut:
        team = await self._team(team.id)
        now = clock()
        grants = (
            (
                await self.session.execute(
                    select(CreditGrant)
                    .where(
                        CreditGrant.team_id == team.id,
                        CreditGrant.remaining > 0,
                        (CreditGrant.expires_at.is_(None)) | (CreditGrant.expires_at > now),
                    )
                    .order_by(
                        CreditGrant.expires_at.asc().nulls_last(),
                        CreditGrant.created_at,
                        CreditGrant.id,
                    )
                )
            )
            .scalars()
            .all()
        )
        st = await budgets.state(self.session, team)
        balance, reserved = Decimal(team.credits_balance), Decimal(team.credits_reserved)
        return CreditsOut(
            team_id=team.id,
            billing_mode=team.billing_mode,
            balance=balance,
            reserved=reserved,
            available=balance - reserved,
            enforce_credits=team.enforce_credits,
            on_limit=team.on_limit,
            grants=[GrantOut.model_validate(g) for g in grants],
            budget=st.as_dict() if st is not None else None,
            entries=await self.entries(team.id, after=after, limit=limit),
        )


def parse_window(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """`from`/`to` as ISO dates or datetimes (UTC when no offset); default: this month."""
    now = clock()

    def parse(value: str, name: str) -> datetime:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError as exc:
            raise BadRequest(f"{name} must be an ISO 8601 date or datetime", param=name) from exc
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt

    lo = parse(start, "from") if start else period_start(now, "month")
    hi = parse(end, "to") if end else next_period_start(now, "month")
    if hi <= lo:
        raise BadRequest("to must be after from", param="to")
    return lo, hi
