"""The web application: ``create_app(settings)`` builds it, ``voxtrail serve`` runs it.

Routers come from :data:`ROUTER_MODULES`, each a module exposing ``router: APIRouter``; a page
or API is added by writing such a module and naming it there. Every route requires a session
or a token except :data:`PUBLIC_PATHS` (a test enumerates the routes to keep it so).
"""

from __future__ import annotations

import asyncio

import importlib
import importlib.util
import logging
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxtrail.store import Store, StoreError
from voxtrail.web.auth import Forbidden, NotAuthenticated, login_url
from voxtrail.web.settings import WebSettings
from voxtrail.web.templating import STATIC_DIR, templates
from voxtrail.web.throttle import LoginThrottle

log = logging.getLogger("voxtrail.web")

#: Modules whose ``router`` the app includes, in order; optional ones may not exist yet.
ROUTER_MODULES = (
    "voxtrail.web.auth",
    "voxtrail.web.admin",
    "voxtrail.web.ingest",
    "voxtrail.web.metrics",
    "voxtrail.web.dashboard",
    "voxtrail.web.events",
)
#: Served without a session. /api/v1/events and /metrics check tokens themselves.
PUBLIC_PATHS = ("/login", "/healthz", "/static")

#: No inline scripts, nothing from other origins. Styles may be inline: charting libraries set
#: style attributes; scripts are what matters.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the security headers to every response; pages with data are not cached either."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                if not static and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def included_routers(modules: tuple[str, ...] = ROUTER_MODULES) -> list:
    routers = []
    for name in modules:
        if importlib.util.find_spec(name) is None:
            continue
        routers.append(importlib.import_module(name).router)
    return routers


def wants_json(request: Request) -> bool:
    """APIs (and clients that ask for JSON only) get JSON errors; browsers get pages."""
    accept = request.headers.get("accept", "")
    return (request.url.path.startswith("/api/") or request.url.path == "/metrics"
            or ("application/json" in accept and "text/html" not in accept))


def error_response(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return templates.TemplateResponse(request, "error.html", {"status": status, "message": message},
                                      status_code=status, headers=headers)


def create_app(settings: WebSettings, store: Store | None = None,
               router_modules: tuple[str, ...] = ROUTER_MODULES) -> FastAPI:
    """The app, with its store opened now (a bad URL fails here, not at the first request)."""
    own_store = store is None
    store = store or Store.open(settings.db)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        housekeeping = None
        if settings.retention is not None and settings.purge_every is not None:
            from voxtrail.web.housekeeping import purge_periodically

            housekeeping = asyncio.create_task(
                purge_periodically(store, settings.retention, settings.purge_every, settings.first_purge_after))
        yield
        if housekeeping is not None:
            housekeeping.cancel()
        if own_store:
            store.close()

    # No /docs, /redoc or /openapi.json: they would be pages served without a session.
    app = FastAPI(title="voxtrail", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.login_throttle = LoginThrottle()
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if wants_json(request):
            return JSONResponse({"error": "not logged in: log in at /login or send an API token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return RedirectResponse(login_url(request), status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return error_response(request, 403, f"Forbidden: {exc}.")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(request, exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(StoreError)
    @app.exception_handler(sa.exc.OperationalError)
    @app.exception_handler(sa.exc.InterfaceError)
    async def database_down(request: Request, exc: Exception) -> Response:
        # The URL and driver message go to the server's log, not into the answer.
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return error_response(request, 503, "the database is unavailable; retry later",
                              headers={"Retry-After": "5"})

    @app.get("/healthz")
    def healthz(request: Request) -> Response:
        try:
            with request.app.state.store.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except (sa.exc.SQLAlchemyError, OSError):
            return JSONResponse({"status": "unavailable", "error": "database unreachable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in included_routers(router_modules):
        app.include_router(router)
    return app
