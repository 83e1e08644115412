"""Who is asking: the login page, sessions as FastAPI dependencies, and roles.

Roles are ordered viewer < auditor < admin: viewers see aggregates only, auditors also
individual events and their text, admins also manage users and API tokens. A route states the
least role it needs with ``Depends(require_user("auditor"))``; without a session a page
request is sent to ``/login?next=...`` and an API request gets 401, a user whose role is too
low gets 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from voxtrail.store import accounts
from voxtrail.web.csrf import LOGIN_CSRF_COOKIE, csrf_token, verify_csrf, verify_login_csrf
from voxtrail.web.sessions import (
    SESSION_COOKIE, NotAuthenticated, clear_session_cookie, current_session, set_session_cookie, settings_of,
)
from voxtrail.web.templating import templates

__all__ = ["CurrentUser", "Forbidden", "NotAuthenticated", "bearer_token", "csrf_token", "require_token",
           "require_user", "router", "verify_csrf"]

router = APIRouter()

LOGIN_FAILED = "Wrong user name or password."


@dataclass(frozen=True)
class CurrentUser:
    id: int
    name: str
    role: str

    def has_role(self, role: str) -> bool:
        return accounts.role_rank(self.role) >= accounts.role_rank(role)


class Forbidden(Exception):
    """A logged-in user whose role is below what the route needs (403)."""

    def __init__(self, required: str) -> None:
        super().__init__(f"this needs the {required} role")
        self.required = required


def optional_user(request: Request) -> CurrentUser | None:
    session = current_session(request)
    if session is None:
        return None
    return CurrentUser(session.user.id, session.user.name, session.user.role)


@lru_cache(maxsize=None)
def require_user(role: str = "viewer") -> Callable[[Request], CurrentUser]:
    """A dependency giving the logged-in user, who must have at least ``role``.

    Cached per role so that FastAPI sees the same callable and resolves it once per request.
    """
    accounts.check_role(role)

    def dependency(request: Request) -> CurrentUser:
        user = optional_user(request)
        if user is None:
            raise NotAuthenticated()
        if not user.has_role(role):
            raise Forbidden(role)
        return user

    dependency.__name__ = f"require_{role}"
    return dependency


def bearer_token(request: Request) -> accounts.Token | None:
    """The active API token in ``Authorization: Bearer ...``, or None (absent, unknown, revoked)."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return accounts.verify_token(request.app.state.store.engine, secret.strip())


def token_refused(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="voxtrail"'})


@lru_cache(maxsize=None)
def require_token(scope: str) -> Callable[[Request], accounts.Token]:
    """A dependency: an active API token with ``scope`` (401 without one, 403 for another scope)."""

    def dependency(request: Request) -> accounts.Token:
        if not request.headers.get("authorization"):
            raise token_refused("missing API token: send 'Authorization: Bearer <token>' "
                                "(create one with 'voxtrail token create NAME')")
        token = bearer_token(request)
        if token is None:
            raise token_refused("invalid or revoked API token")
        if token.scope != scope:
            raise HTTPException(403, f"this token has scope {token.scope}; this needs a token with scope {scope}")
        return token

    dependency.__name__ = f"require_{scope}_token"
    return dependency


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def safe_next(target: str | None) -> str:
    """Only a path on this site: never let ?next= send someone to another site after login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def login_url(request: Request) -> str:
    # The path as sent (raw_path), not decoded: an event id's %2F must stay one path segment.
    path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    target = path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(target, safe="")


def _login_page(request: Request, *, status_code: int = 200, error: str | None = None, username: str = "",
                next_url: str = "/", headers: dict[str, str] | None = None) -> Response:
    response = templates.TemplateResponse(
        request, "login.html", {"error": error, "username": username, "next": next_url},
        status_code=status_code, headers=headers,
    )
    # The double-submit cookie for the login form's CSRF token (there is no session yet).
    response.set_cookie(LOGIN_CSRF_COOKIE, csrf_token(request), max_age=3600, path="/login", httponly=True,
                        samesite="strict", secure=settings_of(request).secure_cookies)
    return response


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    if current_session(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, next_url=safe_next(next))


@router.post("/login", dependencies=[Depends(verify_login_csrf)])
def login(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("/")) -> Response:
    throttle = request.app.state.login_throttle
    engine = request.app.state.store.engine
    address = client_address(request)
    next_url = safe_next(next)
    shown = username[:accounts.MAX_NAME_LENGTH]  # echoed into the form; no valid name is longer
    # The users table's count too: a lock that memory forgot (a flood of other names, a restart)
    # still holds for a real account.
    wait = throttle.wait(username, address, accounts.recorded_failures(engine, username))
    if wait > 0:
        seconds = int(wait) + 1
        return _login_page(request, status_code=429, username=shown, next_url=next_url,
                           error=f"Too many failed attempts. Try again in {seconds} s.",
                           headers={"Retry-After": str(seconds)})
    user = accounts.authenticate(engine, username, password) if username and password else None
    if user is None:
        throttle.failed(username, address)
        return _login_page(request, status_code=401, error=LOGIN_FAILED, username=shown, next_url=next_url)
    throttle.succeeded(username)
    settings = settings_of(request)
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:  # a new id at every login (no session fixation); the old one ends
        accounts.delete_session(engine, previous)
    accounts.purge_sessions(engine, settings.session_idle_timeout)
    raw, _ = accounts.create_session(engine, user.id, settings.session_lifetime)
    response = RedirectResponse(next_url, status_code=303)
    set_session_cookie(response, raw, settings)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout", dependencies=[Depends(verify_csrf)])
def logout(request: Request) -> Response:
    raw = request.cookies.get(SESSION_COOKIE)
    if raw:
        accounts.delete_session(request.app.state.store.engine, raw)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(response, settings_of(request))
    return response
