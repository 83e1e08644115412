"""CSRF protection: every state-changing form carries the session's secret token.

SameSite=Lax cookies already keep other sites' forms from riding a session; the token is the
second lock (older browsers, same-site subdomains). Forms send it as the ``csrf_token`` field,
scripts as the ``X-CSRF-Token`` header. The login form, which has no session yet, uses a
double-submit cookie instead (so nobody can log a victim into an attacker's account).
"""

from __future__ import annotations

import secrets

from fastapi import Depends, HTTPException, Request

from voxtrail.store.accounts import Session
from voxtrail.web.sessions import require_session

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_CSRF_COOKIE = "voxtrail_login_csrf"


def csrf_token(request: Request) -> str:
    """The token to put in a form: the session's, or the login form's cookie value."""
    session = getattr(request.state, "vx_session", None)
    if session is not None:
        return session.csrf_token
    token = getattr(request.state, "vx_login_csrf", None)
    if token is None:
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
        request.state.vx_login_csrf = token
    return token


async def _submitted_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def _check(expected: str | None, submitted: str) -> None:
    if not expected or not submitted or not secrets.compare_digest(expected.encode(), submitted.encode()):
        raise HTTPException(403, "invalid or missing CSRF token: reload the page and try again")


async def verify_csrf(request: Request, session: Session = Depends(require_session)) -> None:
    """Dependency for every POST handler that acts for a logged-in user."""
    _check(session.csrf_token, await _submitted_token(request))


async def verify_login_csrf(request: Request) -> None:
    _check(request.cookies.get(LOGIN_CSRF_COOKIE), await _submitted_token(request))
