"""JSON-lines records -> events, shared by ``jsonl`` (seed 000's JSON log) and ``audit`` (seed 004).

Both are one JSON object a line whose keys are either event field names or a few aliases the
seeds use (``time``, ``text_len``, ``duration`` in seconds, ``success`` as a boolean,
``created_at``). They differ only in aliases and in what a record must carry, so one parser
takes those as parameters. The mapping of an object to event fields is
:func:`voxtrail.sources.records.map_fields`, shared with HTTP ingest and the recorder; this
module adds what is particular to files (aliases, naive times read in the file's time zone,
ids from the line's offset).
Lines are handled as bytes so that invalid UTF-8 is a reject (orjson refuses it) instead of
being silently replaced.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

import orjson
import polars as pl

from voxtrail.event import EventBatch, Reject, polars_schema
from voxtrail.sources.formats import EXCERPT_BYTES, Chunk, ParseContext, ParseResult, request_ids, to_utc
from voxtrail.sources.records import InvalidEvent, map_fields, number, parse_datetime, show, utc_naive
from voxtrail.transforms.normalize import FLOAT_MAX, TS_MAX, TS_MIN

BOM = b"\xef\xbb\xbf"


def _seconds_to_ms(v: Any) -> float:
    ms = number("duration", v) * 1000.0
    if abs(ms) > FLOAT_MAX:
        raise InvalidEvent("duration", f"{show(v)} seconds is out of range in milliseconds")
    return ms


def _success(v: Any) -> str:
    if isinstance(v, bool) or v in (0, 1):
        return "success" if v else "failed"
    raise InvalidEvent("success", f"expected true or false, got {show(v)}")


def _datetime(key: str, v: Any) -> tuple[datetime | None, datetime | None]:
    """(naive local, UTC) datetime of an ISO string: exactly one is set."""
    if not isinstance(v, str):
        raise InvalidEvent(key, f"invalid datetime {show(v)}")
    dt = parse_datetime(key, v)
    if dt.tzinfo is None:
        if not TS_MIN <= dt <= TS_MAX:
            raise InvalidEvent(key, f"{v[:40]} is outside the years {TS_MIN.year} to {TS_MAX.year} "
                                    "(what every database stores)")
        return dt, None
    return None, utc_naive(dt, key)


class JsonRecords:
    """A JSON-lines format. ``aliases`` maps record keys to (field, converter or None)."""

    def __init__(self, name: str, time_key: str, status_key: str, aliases: dict[str, tuple[str, Callable | None]],
                 require_request_id: bool, sniff_keys: tuple[str, ...]):
        self.name = name
        self.time_key = time_key
        self.status_key = status_key
        self.aliases = aliases
        self.require_request_id = require_request_id
        self.sniff_keys = sniff_keys

    def record(self, obj: Any) -> dict[str, Any]:
        """The event fields of one decoded line; raises :class:`InvalidEvent`."""
        if not isinstance(obj, dict):
            raise InvalidEvent(None, f"expected a JSON object, got {type(obj).__name__}")
        out = map_fields(obj, aliases=self.aliases, time_key=self.time_key, status_key=self.status_key,
                         require_request_id=self.require_request_id)
        out["ts_local"], out["ts_utc"] = _datetime(self.time_key if "ts" not in obj else "ts", out.pop("ts"))
        return out

    def parse(self, chunk: Chunk, ctx: ParseContext) -> ParseResult:
        rows: list[dict[str, Any]] = []
        rejects: list[Reject] = []
        skipped = 0
        offset = chunk.start
        lines = chunk.data.split(b"\n")
        if chunk.data.endswith(b"\n"):
            lines.pop()
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if line.startswith(BOM):
                line = line[3:]
            if not line.strip():
                skipped += 1
            else:
                try:
                    row = self.record(orjson.loads(line))
                    row["source_offset"] = offset
                    rows.append(row)
                except orjson.JSONDecodeError as e:
                    rejects.append(Reject(offset, f"{self.name}: invalid JSON: {e}", line[:EXCERPT_BYTES]))
                except InvalidEvent as e:
                    rejects.append(Reject(offset, f"{self.name}: {e}", line[:EXCERPT_BYTES]))
            offset += len(raw) + 1
        frame = self._frame(rows, ctx)
        if frame["ts"].null_count():  # naive times that do not exist in ctx.tz (DST gap)
            gap = frame.filter(pl.col("ts").is_null())["source_offset"].to_list()
            rejects += [Reject(o, f"{self.name}: {self.time_key}: nonexistent local time in {ctx.tz}",
                               chunk.line_bytes(o)) for o in gap]
            rejects.sort(key=lambda r: r.offset)
            frame = frame.filter(pl.col("ts").is_not_null())
        batch = EventBatch(frame, rejects,
                           {"source": "file", "source_format": self.name, "source_file": ctx.source_file})
        return ParseResult(batch, chunk.end, skipped)

    def _frame(self, rows: list[dict[str, Any]], ctx: ParseContext) -> pl.DataFrame:
        # The required fields are columns even of a chunk with no event (only blank or bad lines).
        names = [n for n in polars_schema() if n != "ts" and (n == "status" or any(n in r for r in rows))]
        names = ["source_offset"] + [n for n in names if n != "source_offset"]
        schema = {**polars_schema(names), "ts_local": pl.Datetime("us"), "ts_utc": pl.Datetime("us")}
        columns = {n: [r.get(n) for r in rows] for n in schema}
        df = pl.DataFrame(columns, schema=schema)
        ts = pl.coalesce(to_utc(pl.col("ts_local"), ctx.tz), pl.col("ts_utc")).alias("ts")
        df = df.with_columns(ts).drop("ts_local", "ts_utc")
        if "request_id" in df.columns:
            rid = pl.coalesce(pl.col("request_id"), request_ids(ctx.stream_id, pl.col("source_offset")))
        else:
            rid = request_ids(ctx.stream_id, pl.col("source_offset"))
        df = df.with_columns(rid.alias("request_id"))
        first = ["request_id", "ts", "status"]
        return df.select(first + [c for c in df.columns if c not in first])

    def sniff(self, head: list[str]) -> float:
        lines = [line.lstrip("\ufeff") for line in head if line.strip()]
        if not lines:
            return 0.0
        hits = 0
        for line in lines:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and all(any(k in obj for k in ks.split("|")) for ks in self.sniff_keys):
                hits += 1
        return hits / len(lines)
