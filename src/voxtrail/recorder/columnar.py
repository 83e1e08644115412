"""The shipper's fast path: a batch of spooled events read straight into columns by polars.

The shared mapping (:func:`voxtrail.sources.records.batch_from_objects`) checks one object at a
time in Python, ~15-30 µs an event: too slow to ship 50,000 events/s. Spooled events were
written by ``Recorder.record`` (field names checked, times with an offset), so almost every
batch is regular: polars parses the NDJSON in Rust and the checks run on whole columns here.
Any batch this path is not sure about (a value of an unexpected type, a vector that is not 8
numbers, a time it cannot read, ...) returns None and goes through ``batch_from_objects``,
which turns each bad event into a reject naming the field: the fast path never decides that
an event is invalid, it only accepts batches that are entirely regular.
"""

from __future__ import annotations

from typing import Sequence

import polars as pl

from voxtrail.event import FIELDS_BY_NAME, EventBatch, polars_schema
from voxtrail.transforms import Transform, apply, default_chain

_RAW_JSON = {"attributes": pl.String, "emotion_vector": pl.String, "ts": pl.String}
_FORBIDDEN = {"source", "source_format", "source_file", "source_offset"}
_NUMERIC = (pl.Int64, pl.Float64)
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"  # what orjson writes for an aware datetime (fraction optional)


def fast_batch(ndjson: bytes, source: str, chain: Sequence[Transform] | None = None) -> EventBatch | None:
    """The events of ``ndjson`` (one object a line) as a batch transformed by ``chain`` (default:
    :func:`default_chain`), or None to take the slow path. A batch a transform would reject from is also left to the slow path, which
    rejects per event with each one's offset (the fast path knows no offsets)."""
    # polars refuses overrides for absent columns; a key found only inside a text makes it fail,
    # and the slow path take over.
    overrides = {name: dtype for name, dtype in _RAW_JSON.items() if b'"%s":' % name.encode() in ndjson}
    try:
        frame = pl.read_ndjson(ndjson, schema_overrides=overrides, infer_schema_length=None)
    except (pl.exceptions.PolarsError, ValueError):
        return None
    columns = []
    for name, dtype in frame.schema.items():
        field = FIELDS_BY_NAME.get(name)
        if field is None or name in _FORBIDDEN:
            return None
        if dtype == pl.Null:
            continue  # only nulls: the column is absent
        if name in _RAW_JSON:
            columns.append(name)
            continue
        kind = field.kind
        ok = ((kind in ("string", "text") and dtype in (pl.String, pl.Int64))
              or (kind == "float" and dtype in _NUMERIC)
              or (kind == "int" and dtype == pl.Int64))
        if not ok:
            return None
        columns.append(name)
    frame = frame.select(columns)
    try:
        frame = frame.with_columns(_ts()).cast(polars_schema(columns))
        if "emotion_vector" in columns:
            frame = _vector(frame)
    except pl.exceptions.PolarsError:
        return None
    if frame is None or not _regular(frame):
        return None
    if "text_input" in frame.columns:
        length = pl.col("text_input").str.len_chars()
        frame = frame.with_columns(
            (pl.coalesce(pl.col("text_length"), length) if "text_length" in frame.columns else length)
            .cast(pl.Int64).alias("text_length"))
    batch = apply(default_chain() if chain is None else chain, EventBatch(frame, [], {"source": source}))
    return None if batch.rejects else batch


def _ts() -> pl.Expr:
    # ISO-8601 with an offset, as orjson writes aware datetimes; converted to UTC, stored naive.
    return (pl.col("ts").str.to_datetime(TS_FORMAT, time_zone="UTC", time_unit="us", strict=True)
            .dt.replace_time_zone(None).alias("ts"))


def _vector(frame: pl.DataFrame) -> pl.DataFrame | None:
    """Check each vector is 8 numbers and re-encode it as the shared mapping does ("[1.0,0.5,...]")."""
    raw = frame["emotion_vector"]
    vec = raw.str.json_decode(pl.List(pl.Float64))
    good = (vec.list.len() == 8) & vec.list.eval(pl.element().is_not_null()).list.all()
    if not good.fill_null(False).eq(raw.is_not_null()).all():
        return None
    text = "[" + vec.list.eval(pl.element().cast(pl.String)).list.join(",") + "]"
    return frame.with_columns(text.alias("emotion_vector"))


def _regular(frame: pl.DataFrame) -> bool:
    """Whole-column checks that the shared mapping would make per event."""
    for name in ("request_id", "ts", "status"):
        if name not in frame.columns or frame[name].null_count():
            return False
    if (frame["request_id"].str.len_chars() == 0).any():
        return False
    for name, dtype in frame.schema.items():
        if dtype == pl.Float64 and not frame[name].is_finite().fill_null(True).all():
            return False
    if "attributes" in frame.columns:
        attrs = frame["attributes"].drop_nulls()
        if not attrs.str.starts_with("{").all():  # a JSON object; anything else: the slow path decides
            return False
    return True
