"""Dashboard money actions on a team: grant credits, and set its budget and billing mode.

Both call the services behind the admin API (`CreditsService.change` as
`POST /api/admin/teams/{id}/credits`, `TeamService.update` as `PATCH /api/admin/teams/{id}`),
resume paused work after commit as those routes do, and write the audit log in the same
transaction. A rule the service refuses re-renders the team page with the message (400) and
nothing written."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import SessionDep, StateDep
from api.ui.admin_teams import _team_page
from api.ui.auth import Writer, audit
from api.ui.money_forms import BILLING_FIELDS, credits_change, submitted_values, team_update
from api.ui.web import HTMLRoute, secure_headers
from shared.billing.service import CreditsService
from shared.db import after_commit
from shared.errors import BadRequest, IdempotencyConflict
from shared.jobs.money import resume_after_commit
from shared.money import money_str
from shared.teams.service import TeamService

router = APIRouter(prefix="/admin/teams", route_class=HTMLRoute, include_in_schema=False)
# The form's key is namespaced: it can never replay (or conflict with) an API caller's key.
KEY_PREFIX = "ui-grant:"
MAX_FIELD = 20_000


def _resume(session: SessionDep, state: StateDep, team_id: str) -> None:
    sessionmaker, queue = state.sessionmaker, state.queue
    after_commit(session, lambda: resume_after_commit(sessionmaker, queue, team_id))


@router.post("/{team_id}/credits", response_class=HTMLResponse)
async def grant_credits(
    team_id: str,
    request: Request,
    user: Writer,
    session: SessionDep,
    state: StateDep,
    amount: Annotated[str, Form(max_length=40)],
    expires_at: Annotated[str, Form(max_length=40)] = "",
    note: Annotated[str, Form(max_length=500)] = "",
    idempotency_key: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    key = KEY_PREFIX + idempotency_key if idempotency_key.strip() else None
    try:
        data = credits_change(amount, expires_at, note)
        entry, created = await CreditsService(session).change(team_id, data, idempotency_key=key)
    except (BadRequest, IdempotencyConflict) as exc:
        message = exc.message
        if isinstance(exc, IdempotencyConflict):
            message = "this form was already sent with other values: reload the page to grant again"
        return await _team_page(
            request,
            session,
            team_id,
            status_code=exc.status_code,
            credit_error=message,
            credit_form={"amount": amount, "expires_at": expires_at, "note": note},
        )
    if created:
        _resume(session, state, team_id)
        audit(
            request,
            session,
            user,
            "credits.grant",
            "team",
            team_id,
            amount=money_str(entry.amount),
            expires_at=data.expires_at.isoformat() if data.expires_at else None,
            note=data.note,
            entry_id=entry.id,
            balance_after=money_str(entry.balance_after),
        )
    replayed = "" if created else "&replayed=1"
    return secure_headers(
        RedirectResponse(
            f"/admin/teams/{team_id}?granted={entry.id}{replayed}#h-credits", status_code=303
        )
    )


@router.post("/{team_id}/billing", response_class=HTMLResponse)
async def update_billing(
    team_id: str, request: Request, user: Writer, session: SessionDep, state: StateDep
) -> Response:
    raw = await request.form()
    form = {name: str(raw.get(name, "")) for name in (*BILLING_FIELDS, "enforce_credits")}
    try:
        for name, value in form.items():
            if len(value) > MAX_FIELD:
                raise BadRequest(f"{name}: at most {MAX_FIELD} characters", param=name)
        data = team_update(form)
        await TeamService(session).update(team_id, data)
    except BadRequest as exc:
        return await _team_page(
            request,
            session,
            team_id,
            status_code=exc.status_code,
            billing_error=exc.message,
            billing=submitted_values(form),
        )
    _resume(session, state, team_id)
    audit(
        request,
        session,
        user,
        "team.billing",
        "team",
        team_id,
        **data.model_dump(mode="json", exclude_unset=True),
    )
    return secure_headers(
        RedirectResponse(f"/admin/teams/{team_id}?billing_saved=1#h-billing", status_code=303)
    )
