"""The dashboard page, its stats API, and the charting library it draws with.

Every number comes from the query layer (:mod:`voxtrail.query.panels`); this module only parses
the query string into :class:`~voxtrail.query.filters.Filters`, turns a bad filter into a 400
that says what is wrong, and serves the page. The page fetches ``/api/v1/stats`` and draws with
Plotly.js, which voxtrail serves from the installed ``plotly`` package: no CDN, so a dashboard on
a machine without internet access draws the same.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from voxtrail.query import panels as query_panels
from voxtrail.query.filters import Filters
from voxtrail.web.auth import CurrentUser, require_token, require_user
from voxtrail.web.templating import templates

router = APIRouter()

Viewer = Annotated[CurrentUser, Depends(require_user("viewer"))]


def stats_reader(request: Request) -> object:
    """The stats API takes a session (any role) or, for scripts, an API token with scope read:
    aggregates only, what a viewer sees."""
    if request.headers.get("authorization"):
        return require_token("read")(request)
    return require_user("viewer")(request)


StatsReader = Annotated[object, Depends(stats_reader)]

#: The page's default view (the select shows it; the API gets it explicitly in every request).
DEFAULT_RANGE = "24h"
DEFAULT_REFRESH_SECONDS = 60


# --- Plotly.js, from the plotly package ------------------------------------------------------------

@dataclass(frozen=True)
class _Asset:
    raw: bytes
    gzipped: bytes
    etag: str
    version: str


@cache
def _plotly_asset() -> _Asset:
    raw = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    # The file starts with "/** * plotly.js v4.1.1 ..."; the version makes the URL immutable.
    head = raw[:200].decode("ascii", "replace")
    version = head.split("plotly.js v", 1)[1].split()[0] if "plotly.js v" in head else "0"
    return _Asset(raw, gzip.compress(raw, 6), f'"{hashlib.sha256(raw).hexdigest()[:32]}"', version)


def plotly_url() -> str:
    """Versioned URL of Plotly.js: a new plotly package means a new URL, so it can be cached forever."""
    return f"/vendor/plotly-{_plotly_asset().version}.min.js"


@router.get("/vendor/plotly-{version}.min.js", include_in_schema=False)
def plotly_js(version: str, request: Request, user: Viewer) -> Response:
    # Behind the login like every page that uses it (only /static is public), so "private".
    asset = _plotly_asset()
    if version != asset.version:
        raise HTTPException(404, f"this voxtrail serves Plotly.js {asset.version}")
    headers = {
        "Cache-Control": "private, max-age=31536000, immutable",
        "ETag": asset.etag,
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    # 4.8 MB raw, ~1.4 MB gzipped: compress once per process, not per request.
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type="text/javascript", headers=headers)
    return Response(asset.raw, media_type="text/javascript", headers=headers)


# --- Stats API ---------------------------------------------------------------------------------------

#: Filters every panel (and the event list) applies; each may be given several times.
FILTER_KEYS = ("node", "model", "model_version", "emotion", "emotion_control", "status")


def parse_filters(request: Request) -> Filters:
    """The query string as Filters; a bad value is a 400 saying what is wrong."""
    try:
        return Filters.from_params(filter_params(request))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


def filter_params(request: Request, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The query string as a mapping for ``Filters.from_params``, without the ``exclude`` keys.

    Repeated keys (``node=a&node=b``) become a list.
    """
    out: dict[str, Any] = {}
    for key in request.query_params.keys():
        if key in exclude:
            continue
        values = request.query_params.getlist(key)
        out[key] = values if len(values) > 1 else values[0]
    return out


def _store(request: Request):
    return request.app.state.store


@router.get("/api/v1/stats")
def all_stats(request: Request, reader: StatsReader) -> JSONResponse:
    """Every panel of the dashboard for the filters in the query string."""
    filters = parse_filters(request)
    return JSONResponse(query_panels.dashboard(_store(request), filters))


@router.get("/api/v1/stats/options")
def stats_options(request: Request, reader: StatsReader) -> JSONResponse:
    """Values each filter menu offers (nodes, models, versions, ...) in the selected time range."""
    filters = parse_filters(request)
    return JSONResponse(query_panels.filter_options(_store(request), filters))


@router.get("/api/v1/stats/{panel}")
def one_panel(panel: str, request: Request, reader: StatsReader) -> JSONResponse:
    """One panel's data (names: ``/api/v1/stats`` returns them all)."""
    if panel not in query_panels.PANELS:
        raise HTTPException(404, f"no panel {panel!r}; panels: {', '.join(query_panels.PANELS)}")
    filters = parse_filters(request)
    return JSONResponse(query_panels.dashboard(_store(request), filters, names=[panel]))


# --- The page ----------------------------------------------------------------------------------------

@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard_page(request: Request, user: Viewer) -> HTMLResponse:
    # Filters are not checked here: the page asks the stats API, and shows its 400 message above
    # the controls, where a hand-edited URL can be fixed.
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {
            "plotly_url": plotly_url(),
            "default_range": DEFAULT_RANGE,
            "default_refresh": DEFAULT_REFRESH_SECONDS,
        },
    )
