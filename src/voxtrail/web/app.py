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
import secrets
import time
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import ASGIApp

from voxtrail.store import Store, StoreError
from voxtrail.web import middleware
from voxtrail.web.auth import Forbidden, NotAuthenticated, login_url
from voxtrail.web.health import DatabaseHealth
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

#: A request that finds every pooled connection taken is told to come back this much later.
BUSY_RETRY_AFTER = 2
#: The "database busy" warning is logged at most this often (with how many it stands for).
BUSY_LOG_EVERY = 60.0


class VoxtrailApp(FastAPI):
    """FastAPI with voxtrail's outer layers (:mod:`voxtrail.web.middleware`) around everything,
    the framework's own error handling included, so error responses carry the headers too."""

    def build_middleware_stack(self) -> ASGIApp:
        settings: WebSettings = self.state.settings
        return middleware.wrap(super().build_middleware_stack(), trusted_proxies=settings.forwarded_allow_ips,
                               body_timeout=settings.body_timeout)


class _Occasional:
    """Logs a warning the first time and then at most once per ``every`` seconds, saying how
    many occurrences each line stands for: a full pool under a burst is one line, not 700."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last = -every
        self._since = 0

    def warning(self, message: str) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            log.warning("%s (%d time(s) since the last such line)", message, self._since)
            self._last, self._since = now, 0


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

    health = DatabaseHealth(store.engine)
    busy = _Occasional(BUSY_LOG_EVERY)

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
        health.close()
        if own_store:
            store.close()

    # No /docs, /redoc or /openapi.json: they would be pages served without a session.
    app = VoxtrailApp(title="voxtrail", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.login_throttle = LoginThrottle()
    app.state.flash_key = secrets.token_bytes(32)  # signs /admin's notices (web/admin.py)

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

    @app.exception_handler(sa.exc.TimeoutError)
    async def pool_full(request: Request, exc: Exception) -> Response:
        # Every pooled connection is in use: a burst, not an outage. Answered at once (the pool
        # timeout is short under serve) and logged as one line now and then, not a traceback.
        busy.warning("database busy: every pooled connection was in use; answered 503")
        return error_response(request, 503, "the server is busy; retry in a moment",
                              headers={"Retry-After": str(BUSY_RETRY_AFTER)})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # A bug: the framework logs the traceback; the client gets the usual error page/JSON.
        return error_response(request, 500, "internal error: the server log says more")

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
    async def healthz(request: Request) -> Response:
        # async and off the store's pool (web/health.py): never waits behind busy requests.
        if not await health.ok():
            return JSONResponse({"status": "unavailable", "error": "database unreachable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in included_routers(router_modules):
        app.include_router(router)
    return app
