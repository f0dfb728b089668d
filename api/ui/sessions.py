"""Signed session cookies, CSRF tokens and sign-in throttling for the dashboard and the portal.

A session is a cookie signed with itsdangerous (HttpOnly, SameSite, Secure outside development)
holding the account (or the portal's team), a CSRF token and an expiry; nothing else is trusted
from the browser. Every POST must carry that CSRF token (form field `csrf_token` or header
`X-CSRF-Token`); a sign-in form gets a short-lived pre-session cookie for the same purpose.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from redis.exceptions import RedisError

from shared.errors import Forbidden, RateLimited
from shared.runtime import Runtime as AppState

ADMIN_COOKIE = "saas_llm_admin"
PORTAL_COOKIE = "saas_llm_portal"
PRE_COOKIE = "saas_llm_pre"
PRE_SECONDS = 3600
SameSite = Literal["lax", "strict", "none"]
IP_FACTOR = 10


@dataclass(frozen=True)
class SessionData:
    subject: str  # an admin account id, or a portal's team id
    csrf: str
    expires: float
    link_id: str | None = None


def _serializer(state: AppState, kind: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(state.settings.session_secret, salt=f"saas-llm-{kind}")


def issue(
    response: Response,
    state: AppState,
    *,
    cookie: str,
    subject: str,
    seconds: float,
    path: str,
    samesite: SameSite = "lax",
    link_id: str | None = None,
) -> SessionData:
    """Start a session: set the signed cookie on `response`."""
    data = SessionData(subject, secrets.token_urlsafe(24), time.time() + seconds, link_id)
    value = _serializer(state, cookie).dumps(
        {"s": data.subject, "c": data.csrf, "e": data.expires, "l": link_id}
    )
    response.set_cookie(
        cookie,
        value,
        max_age=int(seconds),
        path=path,
        httponly=True,
        samesite=samesite,
        secure=state.settings.cookie_secure or samesite == "none",
    )
    if samesite == "none":
        _partitioned(response, cookie)
    return data


def _partitioned(response: Response, cookie: str) -> None:
    """Add `Partitioned` (CHIPS) to the cookie just set: a framed portal's cookies are kept per
    embedding site, so browsers that block third-party cookies (Chrome's incognito windows,
    Playwright's contexts) keep them in the frame. (Python before 3.14 cannot write it.)"""
    prefix = f"{cookie}=".encode()
    for i in range(len(response.raw_headers) - 1, -1, -1):
        name, value = response.raw_headers[i]
        if name == b"set-cookie" and value.startswith(prefix):
            response.raw_headers[i] = (name, value + b"; Partitioned")
            return


def read(request: Request, state: AppState, cookie: str, max_seconds: float) -> SessionData | None:
    raw = request.cookies.get(cookie)
    if not raw:
        return None
    try:
        data: dict[str, Any] = _serializer(state, cookie).loads(raw, max_age=int(max_seconds))
    except BadSignature:
        return None
    if float(data.get("e", 0)) < time.time():
        return None
    return SessionData(str(data["s"]), str(data["c"]), float(data["e"]), data.get("l"))


def clear(response: Response, cookie: str, path: str, samesite: SameSite = "lax") -> None:
    # The same SameSite as when set: a browser framing the portal cross-site ignores a Lax one.
    response.delete_cookie(
        cookie, path=path, httponly=True, samesite=samesite, secure=samesite == "none"
    )
    if samesite == "none":
        _partitioned(response, cookie)


# -- CSRF -------------------------------------------------------------------------------------


async def check_csrf(request: Request, expected: str) -> None:
    """Refuse a POST whose CSRF token is missing or wrong (403)."""
    given = request.headers.get("x-csrf-token")
    if not given:
        form = await request.form()
        value = form.get("csrf_token")
        given = value if isinstance(value, str) else None
    if not given or not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("missing or invalid CSRF token: reload the page and try again")


def pre_session(
    request: Request, response: Response, state: AppState, samesite: SameSite = "lax"
) -> str:
    """The CSRF token of a form shown before any session exists (sign-in, portal entry; the
    portal's is SameSite=None when it may be framed, or a cross-site frame could not post)."""
    current = read(request, state, PRE_COOKIE, PRE_SECONDS)
    if current is not None:
        return current.csrf
    return issue(
        response,
        state,
        cookie=PRE_COOKIE,
        subject="pre",
        seconds=PRE_SECONDS,
        path="/",
        samesite=samesite,
    ).csrf


async def check_pre_csrf(request: Request, state: AppState) -> None:
    current = read(request, state, PRE_COOKIE, PRE_SECONDS)
    await check_csrf(request, current.csrf if current else "")


# -- throttling -------------------------------------------------------------------------------


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


class SignInThrottle:
    """Failed sign-ins counted in Redis per email and per address; past the limit, 429."""

    def __init__(self, state: AppState) -> None:
        self.redis = state.queue
        self.limit = state.settings.admin_signin_max_failures
        self.window = state.settings.admin_signin_lockout_seconds
        self.prefix = state.settings.worker_queue_name + ":signin-failures:"

    def _keys(self, email: str, ip: str | None) -> list[str]:
        return [self.prefix + "email:" + email.strip().lower(), self.prefix + "ip:" + (ip or "-")]

    async def check(self, email: str, ip: str | None) -> None:
        try:
            counts = await self.redis.mget(self._keys(email, ip))
        except (RedisError, OSError):
            return  # Redis away: argon2's cost still slows guessing down
        by_email, by_ip = (int(c or 0) for c in counts)
        # Per address the bar is higher: colleagues behind one NAT should not lock each other out.
        if by_email >= self.limit or by_ip >= self.limit * IP_FACTOR:
            minutes = max(1, self.window // 60)
            raise RateLimited(
                f"too many failed sign-ins; try again in {minutes} minutes",
                retry_after=self.window,
            )

    async def failed(self, email: str, ip: str | None) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for key in self._keys(email, ip):
                    pipe.incr(key)
                    pipe.expire(key, self.window)
                await pipe.execute()
        except (RedisError, OSError):
            return

    async def succeeded(self, email: str) -> None:
        try:
            await self.redis.delete(self._keys(email, None)[0])
        except (RedisError, OSError):
            return
