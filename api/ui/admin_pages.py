"""Dashboard pages: overview (live), usage charts and CSV, webhooks, audit log, admin accounts."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from redis.exceptions import RedisError

from api.deps import SessionDep, StateDep
from api.ui.auth import CurrentAdmin, Owner, Writer, audit
from api.ui.web import HTMLRoute, render, secure_headers
from shared.admin import stats
from shared.admin.service import AdminAccounts, AuditLog
from shared.billing import budget as budgets
from shared.db import after_commit
from shared.errors import BadRequest, NotFound
from shared.models import ADMIN_ROLES, DeliveryStatus, Team, WebhookDelivery
from shared.queue import enqueue_delivery, webhook_queue_name
from shared.teams.service import TeamService
from shared.webhooks.service import WebhookService

DELIVERY_STATUSES = tuple(s.value for s in DeliveryStatus)
router = APIRouter(prefix="/admin", route_class=HTMLRoute, include_in_schema=False)
MAX_RANGE_DAYS = 366
SPEND_ROWS = 20


async def _queue_health(state: StateDep) -> dict[str, Any]:
    """Queue depths and the worker's heartbeat (arq's health-check key, refreshed every 30 s)."""
    calls_q = state.settings.worker_queue_name
    hooks_q = webhook_queue_name(state.settings)
    try:
        depth = await state.queue.zcard(calls_q)
        hook_depth = await state.queue.zcard(hooks_q)
        beat = await state.queue.get(calls_q + ":health-check")
        ttl = await state.queue.ttl(calls_q + ":health-check")
    except (RedisError, OSError):
        return {"redis": False}
    text = beat.decode() if isinstance(beat, bytes) else beat
    return {
        "redis": True,
        "depth": depth,
        "webhook_depth": hook_depth,
        "worker_alive": bool(text) and ttl != -2,
        "heartbeat": text,
    }


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, user: CurrentAdmin, session: SessionDep) -> Response:
    return render(request, "admin/overview.html", {"page": "overview"})


@router.get("/overview/live", response_class=HTMLResponse)
async def overview_live(
    request: Request, user: CurrentAdmin, session: SessionDep, state: StateDep
) -> Response:
    """The live part of the overview, polled by htmx every few seconds."""
    data = await stats.overview(session)
    spend = await budgets.spend_against_budgets(session, limit=SPEND_ROWS)
    statuses = sorted({s for _, counts in data.hourly for s in counts})
    return render(
        request,
        "admin/_overview_live.html",
        {
            "o": data,
            "queue": await _queue_health(state),
            "spend": spend,
            "spend_rows": SPEND_ROWS,
            "hourly_x": [int(at.timestamp()) for at, _ in data.hourly],
            "hourly_series": {s: [c.get(s, 0) for _, c in data.hourly] for s in statuses},
            "cpm_x": [int(at.timestamp()) for at, _ in data.calls_per_minute],
            "cpm_y": [n for _, n in data.calls_per_minute],
        },
    )


def _range(since: str | None, until: str | None) -> tuple[date, date]:
    today = datetime.now(UTC).date()
    try:
        end = date.fromisoformat(until) if until else today
        start = date.fromisoformat(since) if since else end - timedelta(days=13)
    except ValueError as exc:
        raise BadRequest("dates must look like 2026-12-01", param="since") from exc
    if start > end:
        raise BadRequest("the start date is after the end date", param="since")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise BadRequest(f"at most {MAX_RANGE_DAYS} days at once", param="since")
    return start, end


def chart_data(u: stats.Usage) -> dict[str, Any]:
    """Series for uPlot: x as Unix seconds per day, one series per team / model."""
    xs = [int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) for d in u.days]
    return {
        "x": xs,
        "cost": {t: [float(u.cost[t].get(d, 0)) for d in u.days] for t in u.teams[:12]},
        "tokens": {m: [u.tokens[m].get(d, 0) for d in u.days] for m in u.models[:12]},
    }


@router.get("/usage", response_class=HTMLResponse)
async def usage(
    request: Request,
    user: CurrentAdmin,
    session: SessionDep,
    since: str | None = None,
    until: str | None = None,
    team_id: str | None = None,
) -> Response:
    start, end = _range(since, until)
    u = await stats.usage(session, start, end, team_id=team_id or None)
    return render(
        request,
        "admin/usage.html",
        {"page": "usage", "u": u, "chart": chart_data(u), "team_id": team_id or ""},
    )


def usage_csv(u: stats.Usage, filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["day", "team_id", "model", "calls", "prompt_tokens", "completion_tokens", "cost_usd"]
    )
    for d, team, model, n, pt, ct, cost in u.rows:
        writer.writerow([d.isoformat(), team, model, n, pt, ct, format(cost, "f")])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/usage.csv")
async def usage_export(
    user: CurrentAdmin,
    session: SessionDep,
    since: str | None = None,
    until: str | None = None,
    team_id: str | None = None,
) -> Response:
    start, end = _range(since, until)
    u = await stats.usage(session, start, end, team_id=team_id or None)
    return usage_csv(u, f"usage-{start}-{end}.csv")


# -- webhooks ---------------------------------------------------------------------------------


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks(
    request: Request,
    user: CurrentAdmin,
    session: SessionDep,
    team_id: str | None = None,
    status: str | None = None,
    before: str | None = None,
) -> Response:
    if status and status not in DELIVERY_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(DELIVERY_STATUSES)}", param="status")
    endpoints, _ = await stats.endpoints_page(
        session, team_id=team_id or None, before=None, limit=50
    )
    deliveries, more = await stats.deliveries_page(
        session,
        team_id=team_id or None,
        status=status or None,
        endpoint_id=None,
        before=before,
        limit=50,
    )
    return render(
        request,
        "admin/webhooks.html",
        {
            "page": "webhooks",
            "endpoints": endpoints,
            "deliveries": deliveries,
            "next_before": deliveries[-1].id if more else None,
            "filters": {"team_id": team_id or "", "status": status or ""},
            "statuses": DELIVERY_STATUSES,
        },
    )


async def _delivery(session: SessionDep, delivery_id: str) -> WebhookDelivery:
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise NotFound(f"no webhook delivery {delivery_id!r}")
    return delivery


@router.get("/webhooks/deliveries/{delivery_id}", response_class=HTMLResponse)
async def delivery_page(
    delivery_id: str, request: Request, user: CurrentAdmin, session: SessionDep
) -> Response:
    delivery = await _delivery(session, delivery_id)
    attempts = await stats.attempts_of(session, delivery.id)
    return render(
        request,
        "admin/delivery.html",
        {"page": "webhooks", "d": delivery, "attempts": attempts},
    )


def enqueue_deliveries(
    session: SessionDep, state: StateDep, deliveries: list[WebhookDelivery]
) -> None:
    jobs = [(d.id, d.attempts) for d in deliveries]

    async def enqueue() -> None:
        for delivery_id, attempts in jobs:
            await enqueue_delivery(state.queue, state.settings, delivery_id, attempts=attempts)

    after_commit(session, enqueue)


@router.post("/webhooks/deliveries/{delivery_id}/redeliver")
async def redeliver(
    delivery_id: str, request: Request, user: Writer, session: SessionDep, state: StateDep
) -> Response:
    delivery = await _delivery(session, delivery_id)
    team: Team = await TeamService(session).get(delivery.team_id)
    requeued = list(
        await WebhookService(session, state.settings).redeliver_event(team, delivery.event_id)
    )
    enqueue_deliveries(session, state, requeued)
    audit(
        request,
        session,
        user,
        "webhook.redeliver",
        "webhook_event",
        delivery.event_id,
        team_id=team.id,
        deliveries=len(requeued),
    )
    return secure_headers(
        RedirectResponse(f"/admin/webhooks/deliveries/{delivery_id}?redelivered=1", status_code=303)
    )


# -- audit log and accounts -------------------------------------------------------------------


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    user: CurrentAdmin,
    session: SessionDep,
    q: str | None = None,
    before: str | None = None,
) -> Response:
    rows, more = await AuditLog(session).search(q=q, before=before, limit=50)
    return render(
        request,
        "admin/audit.html",
        {"page": "audit", "rows": rows, "q": q or "", "next_before": rows[-1].id if more else None},
    )


@router.get("/admins", response_class=HTMLResponse)
async def admins(request: Request, user: CurrentAdmin, session: SessionDep) -> Response:
    return render(
        request,
        "admin/admins.html",
        {"page": "admins", "admins": await AdminAccounts(session).list(), "roles": ADMIN_ROLES},
    )


@router.post("/admins")
async def create_admin(
    request: Request,
    user: Owner,
    session: SessionDep,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    role: Annotated[str, Form()],
) -> Response:
    created = await AdminAccounts(session).create(email, password, role)
    audit(
        request,
        session,
        user,
        "admin.create",
        "admin_user",
        created.id,
        email=created.email,
        role=role,
    )
    return secure_headers(RedirectResponse("/admin/admins", status_code=303))


@router.post("/admins/{admin_id}/role")
async def set_role(
    admin_id: str,
    request: Request,
    user: Owner,
    session: SessionDep,
    role: Annotated[str, Form()],
) -> Response:
    changed = await AdminAccounts(session).set_role(admin_id, role)
    audit(request, session, user, "admin.set_role", "admin_user", changed.id, role=role)
    return secure_headers(RedirectResponse("/admin/admins", status_code=303))
