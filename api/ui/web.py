"""What every dashboard and portal page shares: templates, HTML errors, security headers."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from shared.errors import AppError
from shared.money import money_str

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


class SignInRequired(Exception):
    """No valid session: send the browser to `to` (the sign-in page)."""

    def __init__(self, to: str) -> None:
        super().__init__(to)
        self.to = to


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _money(value: Decimal | None) -> str:
    return "—" if value is None else "$" + money_str(value)


def _credits(value: Decimal | None) -> str:
    return "—" if value is None else money_str(Decimal(value))


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _json_script(value: Any) -> Markup:
    # For <script type="application/json">: no "</" can close the element early.
    text = json.dumps(value, default=str).replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(text.replace("&", "\\u0026"))  # noqa: S704 - escaped just above


templates.env.filters.update(
    when=_when, money=_money, credits=_credits, pretty=_pretty, json_script=_json_script
)
templates.env.globals["static"] = lambda name: f"/ui/static/{name}"


def csp(frame_ancestors: str = "'none'") -> str:
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        f"frame-ancestors {frame_ancestors}"
    )


def secure_headers(response: Response, frame_ancestors: str = "'none'") -> Response:
    response.headers["Content-Security-Policy"] = csp(frame_ancestors)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    if frame_ancestors == "'none'":
        response.headers["X-Frame-Options"] = "DENY"
    return response


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    frame_ancestors: str = "'none'",
) -> HTMLResponse:
    """Render a template with the request's session details (user, csrf) in its context."""
    ctx: dict[str, Any] = {
        "request": request,
        "user": getattr(request.state, "admin_user", None),
        "portal_team": getattr(request.state, "portal_team", None),
        "csrf_token": getattr(request.state, "csrf_token", ""),
        "now": datetime.now(UTC),
    }
    ctx.update(context or {})
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    secure_headers(response, getattr(request.state, "frame_ancestors", frame_ancestors))
    return response


def _error_page(request: Request, exc: AppError) -> Response:
    portal = request.url.path.startswith("/portal")
    response = render(
        request,
        "portal/error.html" if portal else "admin/error.html",
        {"status": exc.status_code, "message": exc.message, "type": exc.type},
        status_code=exc.status_code,
    )
    for key, value in exc.headers.items():
        response.headers[key] = value
    return response


class HTMLRoute(APIRoute):
    """A page route: domain errors become an HTML page with the same status, and a missing
    session a redirect to sign in (the JSON error handler stays for the API)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as exc:
                return secure_headers(RedirectResponse(exc.to, status_code=303))
            except AppError as exc:
                return _error_page(request, exc)

        return page
