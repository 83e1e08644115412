"""Individual events, for auditors and admins: a filterable list, one event's every field, and the
same list as JSON at ``GET /api/v1/events`` (``POST`` on that path is HTTP ingest, another route).

Viewers get 403 on all of it: the texts people synthesised never reach them. The SQL lives in
:mod:`voxtrail.query.events` and :mod:`voxtrail.query.export`; this module parses parameters and
renders.

Every read of individual events is written to the access log (:mod:`voxtrail.store.access_log`)
before the answer is sent: a page or API list (``list``, or ``search`` with a text search), one
event (``view_event``), an export (``export``, ``GET /api/v1/events/export``), the top errors
with their messages (``error_messages``, ``GET /api/v1/stats/errors/messages``). When the log refuses
the entry the request fails with 503 and shows nothing: a read that cannot be audited is not done.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from voxtrail.event import FIELDS
from voxtrail.query import events as query_events
from voxtrail.query import export as query_export
from voxtrail.query import panels as query_panels
from voxtrail.query.filters import Filters, parse_limit, shown, single
from voxtrail.store.access_log import AccessLogError, record_access
from voxtrail.web.auth import CurrentUser, client_address, require_user
from voxtrail.web.dashboard import FILTER_KEYS, filter_params, parse_filters
from voxtrail.web.templating import templates

router = APIRouter()
log = logging.getLogger("voxtrail.web")

Auditor = Annotated[CurrentUser, Depends(require_user("auditor"))]

#: Parameters of the event list besides the dashboard's filters.
LIST_PARAMS = ("q", "user", "cursor", "limit")
#: Parameters of an export besides the dashboard's filters.
EXPORT_PARAMS = ("q", "user", "limit", "format")
FILTER_LABELS = {"node": "Node", "model": "Model", "model_version": "Version", "emotion": "Emotion",
                 "emotion_control": "Emotion control", "status": "Status"}
DEFAULT_RANGE = "7d"


def _list_args(request: Request, *, exclude: tuple[str, ...] = LIST_PARAMS,
               default_limit: int = query_events.DEFAULT_PAGE_SIZE,
               max_limit: int = query_events.MAX_PAGE_SIZE) -> tuple[Filters, dict[str, Any]]:
    # The page's form sends every field; an empty one means "not set".
    params = {k: v for k, v in filter_params(request, exclude=exclude).items() if v not in ("", [])}
    if not any(k in params for k in ("range", "since", "until")):
        params["range"] = DEFAULT_RANGE
    query = request.query_params
    try:
        filters = Filters.from_params(params)
        args = {
            "search": query_events.validate_search(single(query, "q")),
            "user": query_events.validate_user(single(query, "user")),
            "cursor": single(query, "cursor") or None,
            "limit": parse_limit(single(query, "limit"), default=default_limit, maximum=max_limit),
        }
        if args["cursor"] is not None:
            query_events.decode_cursor(args["cursor"])
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    return filters, args


def _page(request: Request, user: CurrentUser) -> tuple[Filters, dict[str, Any], query_events.EventPage]:
    filters, args = _list_args(request)
    try:
        page = query_events.list_events(request.app.state.store, filters, **args)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    audit(request, user, "search" if args["search"] else "list", query=asked(filters, args),
          row_count=len(page.rows))
    return filters, args, page


# --- the access log -------------------------------------------------------------------------------

def asked(filters: Filters, args: dict[str, Any]) -> dict[str, Any]:
    """What a person asked for, as the access log keeps it: the parameters as given (a relative
    range stays ``7d``) and the window they resolved to, so the entry says which rows were in reach."""
    query: dict[str, Any] = dict(filters.to_params())
    query["since"] = filters.since.isoformat().replace("+00:00", "Z")
    query["until"] = filters.until.isoformat().replace("+00:00", "Z")
    query.update({"q" if k == "search" else k: v for k, v in args.items() if v is not None})
    return query


def audit(request: Request, user: CurrentUser, action: str, *, target: str | None = None,
          query: dict[str, Any] | None = None, row_count: int) -> None:
    """Append the access-log entry for this read; 503 (and nothing shown) when it is refused."""
    try:
        record_access(request.app.state.store.engine, actor=user.name, role=user.role,
                      channel="api" if request.url.path.startswith("/api/") else "web", action=action,
                      target=target, query=query, row_count=row_count, client=client_address(request))
    except AccessLogError as exc:
        log.error("%s %s by %s refused: %s", request.method, request.url.path, user.name, exc)
        raise HTTPException(503, "the access log cannot record this read, so it was not done; "
                                 "retry later or ask an admin to check the database",
                            headers={"Retry-After": "5"}) from exc


@router.get("/api/v1/stats/errors/messages")
def error_messages(request: Request, user: Auditor) -> JSONResponse:
    """The dashboard's top errors with the first 80 characters of each message: text from events,
    so for auditors only, and logged (``error_messages``) before it is sent; the stats API itself
    gives every reader the error types alone."""
    filters = parse_filters(request)
    result = query_panels.dashboard(request.app.state.store, filters, ["errors"], messages=True)
    panel = result["panels"]["errors"]
    shown_messages = sum(1 for row in panel["rows"] if row[panel["columns"].index("message")] is not None)
    audit(request, user, "error_messages", query=asked(filters, {}), row_count=shown_messages)
    return JSONResponse(result)


@router.get("/api/v1/events")
def events_json(request: Request, user: Auditor) -> JSONResponse:
    """Matching events, newest first: ``events``, ``next_cursor`` (pass as ``cursor``), ``total``."""
    _, _, page = _page(request, user)
    return JSONResponse(page.as_dict())


# Declared before /api/v1/events/{request_id}, which would otherwise take "export" as an id (an
# event whose request_id is literally "export" is still shown at /events/export).
@router.get("/api/v1/events/export")
def events_export(request: Request, user: Auditor) -> StreamingResponse:
    """Every field of the matching events, newest first, as ``format=ndjson`` (default) or ``csv``,
    at most ``limit`` rows (default 10,000, at most 100,000); the list's filters apply."""
    try:
        fmt = single(request.query_params, "format") or "ndjson"
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    if fmt not in query_export.FORMATS:
        raise HTTPException(400, f"format must be one of {', '.join(query_export.FORMATS)}, not {shown(fmt)}")
    filters, args = _list_args(request, exclude=EXPORT_PARAMS, default_limit=query_export.DEFAULT_LIMIT,
                               max_limit=query_export.MAX_LIMIT)
    del args["cursor"]
    store = request.app.state.store
    try:
        ids, more = query_export.export_ids(store, filters, **args)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    # Logged before the first byte is sent, with the number of rows the export holds.
    audit(request, user, "export", query={**asked(filters, args), "format": fmt}, row_count=len(ids))
    return StreamingResponse(query_export.encode(query_export.export_rows(store, ids), fmt),
                             media_type=query_export.FORMATS[fmt], headers=_export_headers(fmt, len(ids), more))


def _export_headers(fmt: str, rows: int, truncated: bool) -> dict[str, str]:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return {
        "Content-Disposition": f'attachment; filename="voxtrail-events-{stamp}.{fmt}"',
        "X-Voxtrail-Rows": str(rows),
        # More rows matched than limit allowed: narrow the filters or raise limit.
        "X-Voxtrail-Truncated": "true" if truncated else "false",
    }


@router.get("/api/v1/events/{request_id:path}")
def event_json(request_id: str, request: Request, user: Auditor) -> JSONResponse:
    return JSONResponse(query_events.jsonable(_event_or_404(request, user, request_id)))


def _event_or_404(request: Request, user: CurrentUser, request_id: str) -> dict[str, Any]:
    try:
        event = query_events.get_event(request.app.state.store, request_id)
    except ValueError as exc:  # an id no event can have: refused before anything is read or logged
        raise HTTPException(400, str(exc)) from exc
    audit(request, user, "view_event", target=request_id, row_count=0 if event is None else 1)
    if event is None:
        raise HTTPException(404, f"no event with request_id {request_id!r}")
    return event


@router.get("/events", response_class=HTMLResponse, include_in_schema=False)
def events_page(request: Request, user: Auditor) -> HTMLResponse:
    filters, args, page = _page(request, user)
    options = query_panels.filter_options(request.app.state.store, filters)
    selected = {key: list(getattr(filters, key, ()) or ()) for key in FILTER_KEYS}
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    return templates.TemplateResponse(request, "events.html", {
        "page": page,
        "args": args,
        # since/until win over range (as in Filters): the select then says "From / to below".
        "range": "" if request.query_params.get("since") or request.query_params.get("until")
                 else request.query_params.get("range") or DEFAULT_RANGE,
        "since": request.query_params.get("since", ""),
        "until": request.query_params.get("until", ""),
        "menus": [(key, FILTER_LABELS[key], _menu_values(options.get(key, ()), selected[key]), selected[key])
                  for key in FILTER_KEYS],
        "next_url": _url("/events", params + [("cursor", page.next_cursor)]) if page.next_cursor else None,
        "first_url": _url("/events", params) if args["cursor"] else None,
        "export_urls": {fmt: _url("/api/v1/events/export", _export_params(request, fmt))
                        for fmt in query_export.FORMATS},
        "export_limit": query_export.DEFAULT_LIMIT,
        "text_searchable": "text_input" not in request.app.state.store.encrypt_fields,
        "fmt": FORMATTERS,
    })


# --- links to one event ---------------------------------------------------------------------------

def event_url(request_id: str) -> str:
    """The URL of an event's page, for any id: one fully quoted path segment, so an id with
    ``/``, ``../``, ``?``, ``#`` or ``%`` names that event and never another route. An id that is
    exactly ``.`` or ``..`` cannot be a path segment at all (browsers resolve it, quoted or not),
    so its page is named by a query parameter instead. Templates use it as the ``event_url`` filter."""
    if request_id in (".", ".."):
        return "/event?" + urlencode({"request_id": request_id})
    return "/events/" + quote(request_id, safe="")


templates.env.filters["event_url"] = event_url


@router.get("/events/{request_id:path}", response_class=HTMLResponse, include_in_schema=False)
def event_page(request_id: str, request: Request, user: Auditor) -> HTMLResponse:
    return _event_page(request, user, request_id)


@router.get("/event", response_class=HTMLResponse, include_in_schema=False)
def event_page_by_query(request: Request, user: Auditor) -> HTMLResponse:
    """The same page for any id as ``?request_id=``: how ids ``.`` and ``..`` are linked."""
    try:
        request_id = single(request.query_params, "request_id")
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    if not request_id:
        raise HTTPException(400, "request_id: missing (/event?request_id=ID)")
    return _event_page(request, user, request_id)


def _event_page(request: Request, user: CurrentUser, request_id: str) -> HTMLResponse:
    event = _event_or_404(request, user, request_id)
    rows = [(f.name, f.doc, _field_value(f.name, event.get(f.name), f.kind, f.unit)) for f in FIELDS]
    rows.append(("ingested_at", "When voxtrail stored the event (UTC).",
                 _field_value("ingested_at", event["ingested_at"], "timestamp")))
    return templates.TemplateResponse(request, "events_detail.html", {"event": event, "rows": rows, "fmt": FORMATTERS})


def _menu_values(available, selected: list[str]) -> list[str]:
    return list(dict.fromkeys([*(str(v) for v in available if v is not None), *selected]))


def _export_params(request: Request, fmt: str) -> list[tuple[str, str]]:
    """The page's filters without its paging, for a download of every matching row."""
    return [(k, v) for k, v in request.query_params.multi_items()
            if k not in ("cursor", "limit", "format") and v != ""] + [("format", fmt)]


def _url(path: str, params: list[tuple[str, str]]) -> str:
    return f"{path}?{urlencode(params)}" if params else path


# --- formatting: units and rounding a person can read -------------------------------------------

def duration(ms: float | None) -> str:
    if ms is None:
        return "–"
    if abs(ms) < 1000:
        return f"{ms:,.0f} ms"
    if abs(ms) < 60_000:
        return f"{ms / 1000:,.2f} s"
    return f"{ms / 60_000:,.1f} min"


def timestamp(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _field_value(name: str, value: Any, kind: str, unit: str | None = None) -> dict[str, Any]:
    """How the detail page shows a value: ``text`` (one line) or ``block`` (preformatted)."""
    if value is None:
        return {"text": "–", "missing": True}
    if kind == "timestamp":
        return {"text": timestamp(value) + " UTC"}
    if kind == "json":
        return {"block": json.dumps(value, ensure_ascii=False, indent=1 if isinstance(value, dict) else None)}
    if kind == "text":
        return {"block": str(value)}
    if unit == "ms":
        return {"text": f"{duration(value)}", "exact": f"{value:,.3f} ms"}
    if unit == "characters":
        return {"text": f"{value:,} characters"}
    if unit == "bytes":
        return {"text": f"{value:,} bytes"}
    if name == "rtf":
        return {"text": f"{value:.3f}x"}
    if isinstance(value, float):
        return {"text": f"{value:.4g}"}
    return {"text": str(value)}


FORMATTERS = {"duration": duration, "timestamp": timestamp}
