"""``POST /api/v1/events``: events from services in other languages and from remote nodes.

Wire protocol (contract B, docs/serve.md): ``Authorization: Bearer <token with scope ingest>``;
body ``application/json`` (an array of event objects, or one object) or
``application/x-ndjson`` (one object a line); keys are event field names, ``ts`` is ISO-8601
with an offset, ``request_id`` is required. An invalid event (the client's mistake) fails the
batch: the first one answers 400 naming its index and field, and nothing of the batch is stored.
An event that is valid but that the store will not keep (older than what retention already
purged, or refused by the database itself) is quarantined in ``tts_rejects``, each its own
reject, and the 200 answer lists it with the reason; only an unreachable database answers 503.
Posting the same batch again stores nothing new (``request_id`` is unique), so clients simply retry.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from voxtrail.sources.records import InvalidEvent, batch_from_objects
from voxtrail.store import StoreError
from voxtrail.store.accounts import Token
from voxtrail.store.purge import past_retention_note
from voxtrail.transforms import apply, default_chain
from voxtrail.transforms.normalize import reject_offset
from voxtrail.web.auth import require_token

router = APIRouter()
log = logging.getLogger("voxtrail.web.ingest")

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")
RETRY_AFTER_SECONDS = 5
#: tts_rejects.stream_id of what ingest quarantines (each keyed by its request_id).
STREAM_ID = "http"


class BadBody(Exception):
    def __init__(self, status: int, message: str, event: int | None = None, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.event, self.field, self.headers = status, message, event, field, headers

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.message}
        if self.status == 400:
            body.update(event=self.event, field=self.field)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (never buffered whole)."""
    too_large = BadBody(413, f"request body larger than {limit} bytes: send fewer events per request")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def decode_objects(body: bytes, kind: str) -> list[Any]:
    if kind == "json":
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadBody(400, f"body is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            return [data]
        if not isinstance(data, list):
            raise BadBody(400, f"expected a JSON array of event objects or one object, got {type(data).__name__}")
        return data
    objects = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            objects.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise BadBody(400, f"line {number} is not valid JSON: {exc}", event=len(objects)) from None
    return objects


def store_objects(request: Request, body: bytes, kind: str) -> dict[str, Any]:
    """Parse, validate, transform and store: CPU and database work, run off the event loop."""
    objects = decode_objects(body, kind)
    try:
        batch = batch_from_objects(objects, source="http", on_invalid="raise", require_request_id=True)
    except InvalidEvent as exc:
        raise BadBody(400, f"event {exc.index}: {exc}", event=exc.index, field=exc.field) from None
    store = request.app.state.store
    batch = apply(default_chain(store.settings), batch)
    index = _positions(objects)
    if batch.rejects:  # a transform refused an event: all or nothing, the client must fix it
        reject = batch.rejects[0]
        position = index.get(reject.offset)
        raise BadBody(400, f"event {position}: {reject.reason}" if position is not None else reject.reason,
                      event=position)
    try:
        result = store.write(batch, stream_id=STREAM_ID)
    except StoreError as exc:
        log.warning("ingest refused with 503: %s", exc)
        raise BadBody(503, "the database is unavailable; retry later",
                      headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    answer: dict[str, Any] = {"received": len(objects), "inserted": result.inserted,
                              "duplicates": result.duplicates, "rejected": result.rejected}
    if result.refused:
        answer["rejects"] = [{"event": index.get(reject_offset({"request_id": rid})), "request_id": rid,
                              "reason": reason} for rid, reason in result.refused]
        log.warning("ingest: %d event(s) quarantined in tts_rejects, e.g. %s: %s", len(result.refused),
                    *result.refused[0])
    if result.past_retention:
        answer["past_retention"] = result.past_retention
        answer["note"] = past_retention_note(result.past_retention, store.retention)
        log.warning("ingest: %s", answer["note"])
    return answer


def _positions(objects: list[Any]) -> dict[int, int]:
    """Reject offset (transforms/normalize.py: derived from the request_id) -> the event's position."""
    out: dict[int, int] = {}
    for i, obj in enumerate(objects):
        rid = obj.get("request_id") if isinstance(obj, dict) else None
        if isinstance(rid, (str, int)) and not isinstance(rid, bool):
            out.setdefault(reject_offset({"request_id": str(rid)}), i)
    return out


@router.post("/api/v1/events")
async def ingest_events(request: Request, token: Token = Depends(require_token("ingest"))) -> JSONResponse:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        return BadBody(415, f"unsupported content encoding {encoding!r}: send the body uncompressed").response()
    kind = media_type(request)
    if kind in JSON_TYPES:
        kind = "json"
    elif kind in NDJSON_TYPES:
        kind = "ndjson"
    else:
        return BadBody(415, f"unsupported content type {kind or '(none)'!r}: send application/json "
                            "or application/x-ndjson").response()
    try:
        body = await read_limited(request, request.app.state.settings.max_body)
        return JSONResponse(await run_in_threadpool(store_objects, request, body, kind))
    except BadBody as exc:
        return exc.response()
