"""Session cookies: the browser holds a random id, the database its SHA-256 (store/accounts.py).

The cookie is HttpOnly (no script can read it), SameSite=Lax (not sent on cross-site POSTs)
and Secure when the app is served over TLS or behind a TLS proxy (``--secure-cookies``).
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from voxtrail.store import accounts
from voxtrail.web.settings import WebSettings

SESSION_COOKIE = "voxtrail_session"
_UNSET = object()


class NotAuthenticated(Exception):
    """No live session: pages redirect to the login form, APIs answer 401."""


def settings_of(request: Request) -> WebSettings:
    return request.app.state.settings


def current_session(request: Request) -> accounts.Session | None:
    """The request's live session, looked up once per request (cached on ``request.state``)."""
    cached = getattr(request.state, "vx_session", _UNSET)
    if cached is not _UNSET:
        return cached
    raw = request.cookies.get(SESSION_COOKIE)
    session = None
    if raw:
        session = accounts.load_session(request.app.state.store.engine, raw,
                                        settings_of(request).session_idle_timeout)
    request.state.vx_session = session
    return session


def require_session(request: Request) -> accounts.Session:
    session = current_session(request)
    if session is None:
        raise NotAuthenticated()
    return session


def set_session_cookie(response: Response, raw: str, settings: WebSettings) -> None:
    response.set_cookie(SESSION_COOKIE, raw, max_age=int(settings.session_lifetime.total_seconds()),
                        path="/", httponly=True, samesite="lax", secure=settings.secure_cookies)


def clear_session_cookie(response: Response, settings: WebSettings) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=settings.secure_cookies)
