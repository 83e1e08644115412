"""JSON-like objects -> events: the one mapping shared by every source that receives objects.

HTTP ingest, the Recorder's shipper, the Redis collector and the JSON-lines file formats
(:mod:`voxtrail.sources.formats.json_records`) all turn an object whose keys are event field
names into an event row here, so a value is accepted or refused the same way whichever way it
arrived. Keys that are not fields are kept in ``attributes``, never dropped; the fields that
say where a record came from (``source``, ``source_format``, ``source_file``,
``source_offset``) are set by the receiver, so a record's own values for them go to
``attributes`` too.

An object that cannot become an event raises :class:`InvalidEvent` naming the key at fault, so
an HTTP client learns which event and which field to fix.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence
from zoneinfo import ZoneInfo

import orjson
import polars as pl

from voxtrail.event import (
    EMOTION_VECTOR_LABELS, FIELDS_BY_NAME, STATUS_VALUES, STORE_FIELDS, EventBatch, Reject, polars_schema,
)
from voxtrail.transforms.normalize import (
    FLOAT_MAX, INT_MAX, INT_MIN, MAX_EVENT_BYTES, TS_MAX, TS_MIN, Refused, json_text, scrub,
)

#: Fields that describe where a record came from, and the row hash: the receiver and the store set
#: them, a record cannot.
SOURCE_FIELDS = frozenset({"source", "source_format", "source_file", "source_offset"}) | STORE_FIELDS
#: Values of the ``source`` field.
SOURCES = ("file", "recorder", "http", "redis")
EXCERPT_BYTES = 200
REQUIRED = ("request_id", "ts", "status")

#: record key -> (event field, converter or None): how a format renames its keys.
Aliases = Mapping[str, tuple[str, "Callable[[Any], Any] | None"]]


class InvalidEvent(ValueError):
    """An object that cannot become an event.

    ``field`` is the object's key at fault (None when the object as a whole is wrong),
    ``reason`` says what is wrong, ``index`` is the object's position in a batch when known.
    ``str()`` is ``"<field>: <reason>"`` (or the reason alone), the text stored with a reject.
    """

    def __init__(self, field: str | None, reason: str, *, index: int | None = None, qualified: bool = True):
        self.field = field
        self.reason = reason
        self.index = index
        self._qualified = qualified and field is not None
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self._qualified else self.reason

    @classmethod
    def missing(cls, key: str) -> "InvalidEvent":
        return cls(key, f"missing field '{key}'", qualified=False)


def show(v: Any) -> str:
    """A value as a short JSON snippet, for messages."""
    try:
        return orjson.dumps(v, default=str).decode()[:60]
    except TypeError:
        return repr(v)[:60]


def number(key: str, v: Any) -> float:
    """A finite double within :data:`FLOAT_MAX` (what the rollups can add up on every database)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidEvent(key, f"expected a number, got {show(v)}")
    try:
        value = float(v)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise InvalidEvent(key, f"expected a finite number (a double), got {show(v)}")
    if abs(value) > FLOAT_MAX:
        raise InvalidEvent(key, f"{show(v)} is out of range: at most {FLOAT_MAX:g} in magnitude "
                                "(the rollups add these up)")
    return value


def convert(key: str, name: str, v: Any) -> Any:
    """Check and convert a value for event field ``name`` (``key`` is the record's key, for messages).

    ``ts`` is not handled here: file formats and object sources read time zones differently.
    """
    kind = FIELDS_BY_NAME[name].kind
    if name == "status":
        if v not in STATUS_VALUES:
            raise InvalidEvent(key, f"expected 'success' or 'failed', got {show(v)}")
        return v
    if name == "emotion_vector":
        if not (isinstance(v, (list, tuple)) and len(v) == len(EMOTION_VECTOR_LABELS)):
            raise InvalidEvent(key, f"expected a list of {len(EMOTION_VECTOR_LABELS)} numbers, got {show(v)}")
        return orjson.dumps([number(key, x) for x in v]).decode()
    if kind in ("string", "text"):
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise InvalidEvent(key, f"expected a string, got {show(v)}")
        return scrub(v) if isinstance(v, str) else str(v)  # numeric user ids and the like are stored as text
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidEvent(key, f"expected an integer, got {show(v)}")
        if not INT_MIN <= v <= INT_MAX:
            raise InvalidEvent(key, f"{show(v)} is out of range: every database stores integers of 64 bits "
                                    f"({INT_MIN} to {INT_MAX})")
        return v
    if kind == "float":
        return number(key, v)
    if kind == "json":
        if name == "attributes" and not isinstance(v, Mapping):
            raise InvalidEvent(key, f"expected a JSON object, got {show(v)}")
        return stored_json(key, v)
    raise InvalidEvent(key, "unsupported field")


def stored_json(key: str, v: Any) -> str:
    """A JSON column's text for ``v`` (voxtrail.transforms.normalize.json_value says what is cleaned)."""
    try:
        return json_text(key, v)
    except Refused as exc:
        raise InvalidEvent(key, str(exc).removeprefix(f"{key}: ")) from None
    except TypeError as exc:  # keys that are not strings, objects orjson cannot write
        raise InvalidEvent(key, f"cannot be stored as JSON: {exc}") from None


def parse_datetime(key: str, v: Any) -> datetime:
    """An ISO-8601 string or a datetime, as a datetime (naive when the input carries no offset)."""
    if isinstance(v, datetime):
        return v
    if not isinstance(v, str):
        raise InvalidEvent(key, f"invalid datetime {show(v)}")
    try:
        return datetime.fromisoformat(v)
    except ValueError:
        raise InvalidEvent(key, f"invalid datetime '{v[:60]}'") from None


def utc_naive(dt: datetime, key: str = "ts") -> datetime:
    """An aware datetime in the store's convention, UTC without tzinfo, within the years every
    database stores; raises :class:`InvalidEvent` naming ``key`` otherwise."""
    try:
        utc = dt.astimezone(timezone.utc).replace(tzinfo=None)
    except (OverflowError, ValueError):  # 0001-01-01T00:00:00+01:00 is in the year 0
        utc = None
    if utc is None or not TS_MIN <= utc <= TS_MAX:
        raise InvalidEvent(key, f"{dt.isoformat()} is outside the years {TS_MIN.year} to {TS_MAX.year} in UTC "
                                "(what every database stores)")
    return utc


def map_fields(
    obj: Any,
    *,
    aliases: Aliases | None = None,
    time_key: str = "ts",
    status_key: str = "status",
    require_request_id: bool = False,
) -> dict[str, Any]:
    """The event fields of one object, ``ts`` still as given (the caller reads its time zone).

    Null values count as absent. A field's own name wins over an alias for it. ``attributes``
    given as an object is merged with the keys that have no column (those win).
    """
    if not isinstance(obj, Mapping):
        raise InvalidEvent(None, f"expected a JSON object, got {type(obj).__name__}")
    aliases = aliases or {}
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, v in obj.items():
        if v is None:
            continue
        if key in aliases:
            name, conv = aliases[key]
            if name in obj:
                continue
            out[name] = conv(v) if conv else v if name == "ts" else convert(key, name, v)
        elif key in FIELDS_BY_NAME and key not in SOURCE_FIELDS:
            if key == "attributes":
                if not isinstance(v, Mapping):
                    raise InvalidEvent(key, f"expected a JSON object, got {show(v)}")
                extra = {**v, **extra}
            else:
                out[key] = v if key == "ts" else convert(key, key, v)
        else:
            extra[key] = v
    for name, key in (("ts", time_key), ("status", status_key)):
        if name not in out:
            raise InvalidEvent.missing(key)
    if require_request_id and "request_id" not in out:
        raise InvalidEvent.missing("request_id")
    out["status"] = convert(status_key if "status" not in obj else "status", "status", out["status"])
    if "text_length" not in out and isinstance(obj.get("text_input"), str):
        out["text_length"] = len(obj["text_input"])
    if extra:
        out["attributes"] = stored_json("attributes", extra)
    return out


def event_fields(obj: Mapping[str, Any], *, require_request_id: bool = False,
                 naive_tz: str | None = None) -> dict[str, Any]:
    """One object -> the row dict :meth:`EventBatch.from_records` expects.

    ``ts`` is an ISO-8601 string with an offset (``Z`` or ``+08:00``) or an aware datetime; a
    time without an offset is refused unless ``naive_tz`` names the zone to read it in.
    Values longer than their column are refused here (not later, as a reject) so that a
    sender hears about it.
    """
    out = map_fields(obj, require_request_id=require_request_id)
    dt = parse_datetime("ts", out["ts"])
    if dt.tzinfo is None:
        if naive_tz is None:
            raise InvalidEvent("ts", "needs a UTC offset, e.g. '2025-03-01T10:00:00Z' or '2025-03-01T18:00:00+08:00'")
        dt = dt.replace(tzinfo=ZoneInfo(naive_tz))
    out["ts"] = utc_naive(dt)
    text = 0
    for name, value in out.items():
        if isinstance(value, str):
            length = FIELDS_BY_NAME[name].length
            if length is not None and len(value) > length:
                raise InvalidEvent(name, f"longer than {length} characters")
            text += len(value)
    # Characters first: only an event that may be that large is encoded to count its bytes.
    if text * 4 > MAX_EVENT_BYTES and sum(len(v.encode()) for v in out.values()
                                           if isinstance(v, str)) > MAX_EVENT_BYTES:
        raise InvalidEvent(None, f"the event has more than {MAX_EVENT_BYTES >> 20} MiB of text: every database "
                                 "takes at most that in one row")
    if "request_id" in out and not out["request_id"]:
        raise InvalidEvent("request_id", "must not be empty")
    return out


def excerpt(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, default=str)[:EXCERPT_BYTES]
    except TypeError:
        return repr(obj).encode()[:EXCERPT_BYTES]


def batch_from_objects(
    objs: Iterable[Any],
    *,
    source: str,
    source_format: str | None = None,
    on_invalid: Literal["raise", "reject"] = "raise",
    require_request_id: bool = True,
    naive_tz: str | None = None,
    offsets: Sequence[int] | None = None,
) -> EventBatch:
    """Objects -> one batch with ``source`` (and ``source_format``) as constants.

    ``on_invalid="raise"``: the first invalid object raises :class:`InvalidEvent` with its
    ``index``. ``on_invalid="reject"``: invalid objects become :class:`Reject` s whose offset is
    ``offsets[i]`` (default: the object's index) and whose reason names the field, so they land
    in ``tts_rejects``; pass ``Store.write`` a ``stream_id`` that identifies the batch so that
    delivering it twice stores its rejects once.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
    if on_invalid not in ("raise", "reject"):
        raise ValueError(f"on_invalid must be 'raise' or 'reject', not {on_invalid!r}")
    rows: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    for i, obj in enumerate(objs):
        try:
            rows.append(event_fields(obj, require_request_id=require_request_id, naive_tz=naive_tz))
        except InvalidEvent as exc:
            if on_invalid == "raise":
                exc.index = i
                raise
            offset = offsets[i] if offsets is not None else i
            rejects.append(Reject(offset, f"{source}: {exc}", excerpt(obj)))
    constants = {"source": source, **({"source_format": source_format} if source_format else {})}
    frame = EventBatch.from_records(rows).frame if rows else pl.DataFrame(schema=polars_schema(REQUIRED))
    return EventBatch(frame, rejects, constants)
