"""Individual events, for auditors and admins: a filterable list, one event's every field, and the
same list as JSON at ``GET /api/v1/events`` (``POST`` on that path is HTTP ingest, another route).

Viewers get 403 on all of it: the texts people synthesised never reach them. The SQL lives in
:mod:`voxtrail.query.events`; this module parses parameters and renders.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from voxtrail.event import FIELDS
from voxtrail.query import events as query_events
from voxtrail.query import panels as query_panels
from voxtrail.query.filters import Filters
from voxtrail.web.auth import CurrentUser, require_user
from voxtrail.web.dashboard import FILTER_KEYS, filter_params
from voxtrail.web.templating import templates

router = APIRouter()

Auditor = Annotated[CurrentUser, Depends(require_user("auditor"))]

#: Parameters of the event list besides the dashboard's filters.
LIST_PARAMS = ("q", "user", "cursor", "limit")
FILTER_LABELS = {"node": "Node", "model": "Model", "model_version": "Version", "emotion": "Emotion",
                 "emotion_control": "Emotion control", "status": "Status"}
DEFAULT_RANGE = "7d"


def _list_args(request: Request) -> tuple[Filters, dict[str, Any]]:
    # The page's form sends every field; an empty one means "not set".
    params = {k: v for k, v in filter_params(request, exclude=LIST_PARAMS).items() if v not in ("", [])}
    if not any(k in params for k in ("range", "since", "until")):
        params["range"] = DEFAULT_RANGE
    try:
        filters = Filters.from_params(params)
        limit_text = request.query_params.get("limit") or str(query_events.DEFAULT_PAGE_SIZE)
        if not limit_text.isdigit():
            raise ValueError(f"limit must be a whole number, not {limit_text!r}")
        search = query_events.validate_search(request.query_params.get("q"))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    return filters, {
        "search": search,
        "user": (request.query_params.get("user") or "").strip() or None,
        "cursor": request.query_params.get("cursor") or None,
        "limit": int(limit_text),
    }


def _page(request: Request) -> tuple[Filters, dict[str, Any], query_events.EventPage]:
    filters, args = _list_args(request)
    try:
        page = query_events.list_events(request.app.state.store.engine, filters, **args)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    return filters, args, page


@router.get("/api/v1/events")
def events_json(request: Request, user: Auditor) -> JSONResponse:
    """Matching events, newest first: ``events``, ``next_cursor`` (pass as ``cursor``), ``total``."""
    _, _, page = _page(request)
    return JSONResponse(page.as_dict())


@router.get("/api/v1/events/{request_id:path}")
def event_json(request_id: str, request: Request, user: Auditor) -> JSONResponse:
    return JSONResponse(query_events.jsonable(_event_or_404(request, request_id)))


def _event_or_404(request: Request, request_id: str) -> dict[str, Any]:
    event = query_events.get_event(request.app.state.store.engine, request_id)
    if event is None:
        raise HTTPException(404, f"no event with request_id {request_id!r}")
    return event


@router.get("/events", response_class=HTMLResponse, include_in_schema=False)
def events_page(request: Request, user: Auditor) -> HTMLResponse:
    filters, args, page = _page(request)
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
        "fmt": FORMATTERS,
    })


@router.get("/events/{request_id:path}", response_class=HTMLResponse, include_in_schema=False)
def event_page(request_id: str, request: Request, user: Auditor) -> HTMLResponse:
    event = _event_or_404(request, request_id)
    rows = [(f.name, f.doc, _field_value(f.name, event.get(f.name), f.kind, f.unit)) for f in FIELDS]
    rows.append(("ingested_at", "When voxtrail stored the event (UTC).",
                 _field_value("ingested_at", event["ingested_at"], "timestamp")))
    return templates.TemplateResponse(request, "events_detail.html", {"event": event, "rows": rows, "fmt": FORMATTERS})


def _menu_values(available, selected: list[str]) -> list[str]:
    return list(dict.fromkeys([*(str(v) for v in available if v is not None), *selected]))


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
