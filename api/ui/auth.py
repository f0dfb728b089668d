"""Dashboard sign-in and the dependencies every /admin page uses: who is signed in, may they
change things, and is the POST's CSRF token right."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import SessionDep, StateDep
from api.ui import sessions
from api.ui.web import HTMLRoute, SignInRequired, render, secure_headers
from shared.admin.service import CAN_MANAGE_ADMINS, CAN_WRITE, Actor, AdminAccounts, AuditLog
from shared.errors import Forbidden, Unauthorized
from shared.models import AdminUser

router = APIRouter(prefix="/admin", route_class=HTMLRoute, include_in_schema=False)


async def current_admin(request: Request, session: SessionDep, state: StateDep) -> AdminUser:
    """The signed-in account (re-read each request: a disabled account is out at once)."""
    max_seconds = state.settings.admin_session_hours * 3600
    data = sessions.read(request, state, sessions.ADMIN_COOKIE, max_seconds)
    user = await AdminAccounts(session).get(data.subject) if data else None
    if data is None or user is None:
        raise SignInRequired("/admin/login?next=" + quote(request.url.path))
    request.state.admin_user = user
    request.state.csrf_token = data.csrf
    return user


CurrentAdmin = Annotated[AdminUser, Depends(current_admin)]


async def writer(request: Request, user: CurrentAdmin) -> AdminUser:
    """A POST that changes something: needs the CSRF token and a role above viewer."""
    await sessions.check_csrf(request, request.state.csrf_token)
    if user.role not in CAN_WRITE:
        raise Forbidden(f"a {user.role} can look but not change anything")
    return user


Writer = Annotated[AdminUser, Depends(writer)]


async def owner(request: Request, user: Writer) -> AdminUser:
    if user.role not in CAN_MANAGE_ADMINS:
        raise Forbidden("only an owner can manage admin accounts")
    return user


Owner = Annotated[AdminUser, Depends(owner)]


def actor(request: Request, user: AdminUser) -> Actor:
    return Actor(name=user.email, id=user.id, source="ui", ip=sessions.client_ip(request))


def audit(
    request: Request,
    session: SessionDep,
    user: AdminUser,
    action: str,
    target_type: str | None = None,
    target_id: str | None = None,
    **detail: object,
) -> None:
    """Record a dashboard action in the request's transaction."""
    AuditLog(session).record(
        actor(request, user),
        action,
        target_type=target_type,
        target_id=target_id,
        detail={k: v for k, v in detail.items()},
    )


def _safe_next(value: str | None) -> str:
    # Only a path on this site: never an open redirect.
    if value and value.startswith("/admin") and not value.startswith("//"):
        return value
    return "/admin"


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, state: StateDep, next: str | None = None) -> Response:
    response = HTMLResponse("")
    token = sessions.pre_session(request, response, state)
    page = render(request, "admin/login.html", {"next": _safe_next(next), "form_csrf": token})
    for header in response.headers.getlist("set-cookie"):
        page.headers.append("set-cookie", header)
    return page


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    session: SessionDep,
    state: StateDep,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form()] = "/admin",
) -> Response:
    await sessions.check_pre_csrf(request, state)
    throttle = sessions.SignInThrottle(state)
    ip = sessions.client_ip(request)
    await throttle.check(email, ip)
    try:
        user = await AdminAccounts(session).authenticate(email, password)
    except Unauthorized:
        await throttle.failed(email, ip)
        current = sessions.read(request, state, sessions.PRE_COOKIE, sessions.PRE_SECONDS)
        return render(
            request,
            "admin/login.html",
            {
                "next": _safe_next(next),
                "form_csrf": current.csrf if current else "",
                "error": "Wrong email or password.",
                "email": email,
            },
            status_code=401,
        )
    await throttle.succeeded(email)
    AuditLog(session).record(
        actor(request, user), "admin.sign_in", target_type="admin_user", target_id=user.id
    )
    response = RedirectResponse(_safe_next(next), status_code=303)
    sessions.issue(
        response,
        state,
        cookie=sessions.ADMIN_COOKIE,
        subject=user.id,
        seconds=state.settings.admin_session_hours * 3600,
        path="/admin",
        samesite="lax",
    )
    return secure_headers(response)


@router.post("/logout")
async def logout(request: Request, user: CurrentAdmin, session: SessionDep) -> Response:
    await sessions.check_csrf(request, request.state.csrf_token)
    audit(request, session, user, "admin.sign_out", "admin_user", user.id)
    response = RedirectResponse("/admin/login", status_code=303)
    sessions.clear(response, sessions.ADMIN_COOKIE, "/admin")
    return secure_headers(response)
