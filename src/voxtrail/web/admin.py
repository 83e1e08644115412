"""``/admin``: users and API tokens, for admins, and ``/admin/access-log``: who read which events.
Every form that changes something is a CSRF-checked POST; the access log is read-only (GET).

After a change the browser is redirected back to ``/admin`` (so reloading does not repeat it),
with a notice chosen from a fixed list and the name it is about, signed with a key of the
running server: the page never echoes text from a URL that it did not write itself (a link
``/admin?notice=user-added&name=...`` made by anyone else shows no notice). A new token's secret
is rendered once in the POST's own answer (never stored, never in a URL).
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from voxtrail.query import access as query_access
from voxtrail.store import access_log, accounts
from voxtrail.web.auth import CurrentUser, require_user, verify_csrf
from voxtrail.web.templating import templates

router = APIRouter()
admin_only = require_user("admin")

NOTICES = {
    "user-added": "User {name} added.",
    "user-removed": "User {name} removed; their sessions have ended.",
    "role-changed": "{name} now has another role.",
    "password-reset": "Password of {name} changed; their sessions have ended.",
    "token-revoked": "Token {name} revoked.",
}


def _engine(request: Request):
    return request.app.state.store.engine


def _signature(request: Request, notice: str, name: str) -> str:
    message = f"{notice}\0{name}".encode("utf-8", "surrogatepass")
    return hmac.new(request.app.state.flash_key, message, hashlib.sha256).hexdigest()


def _notice(request: Request) -> str | None:
    """The notice the last change's redirect asked for, if this server signed that URL."""
    params = request.query_params
    notice, name, signature = params.get("notice", ""), params.get("name", ""), params.get("sig", "")
    if notice not in NOTICES or not hmac.compare_digest(signature.encode("utf-8", "surrogatepass"),
                                                        _signature(request, notice, name).encode()):
        return None
    return NOTICES[notice].format(name=name)


def admin_page(request: Request, *, error: str | None = None, new_token: dict | None = None,
               status_code: int = 200) -> Response:
    engine = _engine(request)
    notice = _notice(request)
    context = {
        "users": accounts.list_users(engine),
        "tokens": accounts.list_tokens(engine),
        "roles": accounts.ROLES,
        "scopes": accounts.SCOPES,
        "notice": notice,
        "error": error,
        "new_token": new_token,
    }
    return templates.TemplateResponse(request, "admin.html", context, status_code=status_code)


def done(request: Request, notice: str, name: str) -> RedirectResponse:
    query = {"notice": notice, "name": name, "sig": _signature(request, notice, name)}
    return RedirectResponse("/admin?" + urlencode(query), status_code=303)


@router.get("/admin")
def admin_home(request: Request, user: CurrentUser = Depends(admin_only)) -> Response:
    return admin_page(request)


def _act(request: Request, action, *args) -> Response | None:
    """Run an accounts change; a refusal renders the page with the reason (400)."""
    try:
        action(_engine(request), *args)
    except accounts.AccountError as exc:
        return admin_page(request, error=str(exc), status_code=400)
    return None


def _not_yourself(request: Request, user: CurrentUser, name: str, what: str) -> Response | None:
    if name == user.name:
        return admin_page(request, error=f"You cannot {what} your own account: ask another admin, "
                                         "or use the voxtrail user command.", status_code=400)
    return None


@router.post("/admin/users", dependencies=[Depends(verify_csrf)])
def add_user(request: Request, user: CurrentUser = Depends(admin_only), name: str = Form(...),
             role: str = Form(...), password: str = Form(...)) -> Response:
    return _act(request, accounts.add_user, name, role, password) or done(request, "user-added", name)


@router.post("/admin/users/{name}/remove", dependencies=[Depends(verify_csrf)])
def remove_user(request: Request, name: str, user: CurrentUser = Depends(admin_only)) -> Response:
    return (_not_yourself(request, user, name, "remove")
            or _act(request, accounts.remove_user, name) or done(request, "user-removed", name))


@router.post("/admin/users/{name}/role", dependencies=[Depends(verify_csrf)])
def change_role(request: Request, name: str, user: CurrentUser = Depends(admin_only),
                role: str = Form(...)) -> Response:
    return (_not_yourself(request, user, name, "change the role of")
            or _act(request, accounts.set_role, name, role) or done(request, "role-changed", name))


@router.post("/admin/users/{name}/password", dependencies=[Depends(verify_csrf)])
def reset_password(request: Request, name: str, user: CurrentUser = Depends(admin_only),
                   password: str = Form(...)) -> Response:
    return _act(request, accounts.set_password, name, password) or done(request, "password-reset", name)


@router.post("/admin/tokens", dependencies=[Depends(verify_csrf)])
def create_token(request: Request, user: CurrentUser = Depends(admin_only), name: str = Form(...),
                 scope: str = Form("ingest")) -> Response:
    try:
        token, secret = accounts.create_token(_engine(request), name, scope, created_by=user.name)
    except accounts.AccountError as exc:
        return admin_page(request, error=str(exc), status_code=400)
    return admin_page(request, new_token={"name": token.name, "scope": token.scope, "secret": secret})


@router.post("/admin/tokens/{token_id}/revoke", dependencies=[Depends(verify_csrf)])
def revoke_token(request: Request, token_id: int, user: CurrentUser = Depends(admin_only)) -> Response:
    try:
        token = accounts.revoke_token(_engine(request), token_id)
    except accounts.AccountError as exc:
        return admin_page(request, error=str(exc), status_code=400)
    return done(request, "token-revoked", token.name)


# --- the access log ---------------------------------------------------------------------------

ACCESS_LOG_PARAMS = ("since", "until", "actor", "action")
#: Up to this many entries the page verifies the whole chain on every view (~0.5 s); a longer
#: log is verified when asked (?verify=1), as `voxtrail access-log --verify` does.
AUTO_VERIFY_MAX = 20_000


@router.get("/admin/access-log")
def access_log_page(request: Request, user: CurrentUser = Depends(admin_only)) -> Response:
    """Entries newest first, filtered by time, actor and action, and whether the chain verifies.

    Reading this page is not itself logged: it shows who read events, not events.
    """
    asked = {k: (request.query_params.get(k) or "").strip() for k in ACCESS_LOG_PARAMS}
    try:
        page = query_access.list_access(
            _engine(request), since=query_access.parse_when(asked["since"], "since"),
            until=query_access.parse_when(asked["until"], "until"),
            actor=asked["actor"] or None, action=asked["action"] or None,
            cursor=request.query_params.get("cursor") or None)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    filters = [(k, v) for k, v in asked.items() if v]
    return templates.TemplateResponse(request, "admin_access_log.html", {
        "page": page,
        "asked": asked,
        "actions": access_log.ACTIONS,
        "verification": _verification(request),
        "next_url": "/admin/access-log?" + urlencode(filters + [("cursor", page.next_cursor)])
                    if page.next_cursor else None,
        "first_url": "/admin/access-log" + ("?" + urlencode(filters) if filters else "")
                     if request.query_params.get("cursor") else None,
    })


def _verification(request: Request) -> dict:
    engine = _engine(request)
    newest = access_log.head(engine)
    if (newest["last_id"] or 0) > AUTO_VERIFY_MAX and request.query_params.get("verify") != "1":
        return {"done": False, "entries": newest["last_id"]}
    return {"done": True, **access_log.verify_access_log(engine)._asdict(), **newest}
