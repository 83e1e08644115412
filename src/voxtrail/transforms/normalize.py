"""Normalise: the invariants every stored event holds, checked once for all sources.

An event reaches the store from a file format, the Recorder, HTTP ingest or Redis; whatever the
way, it must have the same fate on SQLite, PostgreSQL and MySQL/MariaDB. This module is where
that is decided, for a whole batch at once (vectorised; rows are looked at one by one only when
a column shows a problem):

* **cleaned** (the event is kept): a NUL character, which PostgreSQL cannot store in text or
  JSON, becomes U+FFFD in every text value and JSON key or string; a float that is not finite
  (NaN, infinity: MySQL has neither) becomes NULL, and -0.0 becomes 0.0 (SQLite and MySQL drop
  the sign, PostgreSQL's JSON numbers have none); a JSON number written with an exponent that is
  a whole number (``1e+16``) is written as that integer, as PostgreSQL gives it back, so the row
  hash verifies;
* **refused** (the event becomes a reject with the reason, the rest of the batch is stored): a
  missing request_id, ts or status; a status other than success/failed; a value longer than its
  column; a float larger than :data:`FLOAT_MAX` in magnitude (the rollups' sums must stay finite);
  an event with more than :data:`MAX_EVENT_BYTES` of text (MySQL's packet limit); a
  ``ts`` outside the years 1000-9999 (MySQL's DATETIME); ``attributes`` that are not a JSON
  object; JSON nested deeper than :data:`MAX_JSON_DEPTH` (MariaDB's limit is 32).

``Store.encode`` runs the same checks (:func:`check`) on every batch, so a batch that did not go
through the transforms chain is held to them too; ``normalize`` is the transform that applies
them early, before masking.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from typing import Any

import orjson
import polars as pl

from voxtrail.event import FIELDS, FIELDS_BY_NAME, STATUS_VALUES, EventBatch, Reject

#: Fields every event has (NOT NULL columns).
REQUIRED = tuple(f.name for f in FIELDS if not f.nullable)

#: The ``ts`` every database stores: MySQL's DATETIME holds the years 1000 to 9999.
TS_MIN = datetime(1000, 1, 1)
TS_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999)
#: Integers every database stores: BIGINT.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: The magnitude of a float field. Every database stores any finite double, but the rollups add
#: them up, and a sum past 1.8e308 is an error on PostgreSQL and MySQL (infinity on SQLite).
FLOAT_MAX = 1e300
#: Text (UTF-8 bytes, all text and JSON values of an event together) an event may carry: one row
#: must fit MySQL's max_allowed_packet (16 MiB by default on MariaDB) even with every byte escaped.
MAX_EVENT_BYTES = 4 << 20
#: Nesting of JSON values (objects and arrays): MariaDB refuses documents nested 32 deep.
MAX_JSON_DEPTH = 20
#: Stands in for what a database cannot store in text: NUL (and, from Python, a lone surrogate).
REPLACEMENT = "\ufffd"

_JSON_FIELDS = tuple(f.name for f in FIELDS if f.kind == "json")
_TEXT_KINDS = ("string", "text", "json")
#: JSON text that may need a look in Python: an escaped NUL, a number with an exponent, a negative
#: zero, or more brackets than the depth limit. Linear-time patterns (polars' regex engine).
_ESCAPED_NUL = "\\u0000"
_EXPONENT = r"[0-9][eE][-+]?[0-9]"
_NEGATIVE_ZERO = r"-0(?:\.0*)?(?:[eE][-+]?[0-9]+)?(?:[^.0-9eE]|$)"
_BRACKETS = r"[\[{]"


#: Refused events: each one's reject and request_id (None when it has none).
Refusals = list[tuple[Reject, "str | None"]]


class Refused(ValueError):
    """A value no database can store as it is: the reason, ``"<field>: <what is wrong>"``."""


def normalize(batch: EventBatch) -> EventBatch:
    """The transform: clean the batch and move the events :func:`check` refuses to its rejects."""
    if batch.frame.height == 0:
        return batch
    frame, constants, refused = check(batch.frame, batch.constants)
    if frame is batch.frame and constants is batch.constants and not refused:
        return batch
    return EventBatch(frame, batch.rejects + [reject for reject, _ in refused], constants)


def check(frame: pl.DataFrame, constants: dict[str, Any]) -> tuple[pl.DataFrame, dict[str, Any], Refusals]:
    """(cleaned frame, cleaned constants, (reject, request_id) per refused row): see the module
    docstring. ``frame`` holds event columns with their event dtypes (``ts`` UTC-naive)."""
    constants = _clean_constants(constants)
    if frame.height == 0:
        return frame, constants, []
    for name in REQUIRED:
        if name not in constants and name not in frame.columns:
            raise ValueError(f"a source produced events without {name!r}")
    frame = _clean(frame)
    frame, json_problems = _clean_json(frame)
    problems = _problems(frame, constants)
    if problems is None and not json_problems:
        return frame, constants, []
    reasons = frame.select((problems if problems is not None else pl.lit(None, dtype=pl.Utf8)).alias("p"))["p"]
    if json_problems:
        reasons = pl.Series("p", [json_problems.get(i, r) if r is None else r for i, r in enumerate(reasons)],
                          dtype=pl.Utf8)
    bad = reasons.is_not_null()
    if not bad.any():
        return frame, constants, []
    refused = [(row_reject(row, f"event: {reason}"), row.get("request_id"))
               for row, reason in zip(frame.filter(bad).iter_rows(named=True), reasons.filter(bad))]
    return frame.filter(~bad), constants, refused


def _clean(frame: pl.DataFrame) -> pl.DataFrame:
    """NUL -> U+FFFD in text, non-finite floats -> NULL, -0.0 -> 0.0: only columns that need it."""
    text = [n for n, t in frame.schema.items() if t == pl.Utf8]
    floats = [n for n, t in frame.schema.items() if t == pl.Float64]
    flags = frame.select(
        *(pl.col(n).str.contains("\x00", literal=True).any().alias(f"t{i}") for i, n in enumerate(text)),
        *((~pl.col(n).is_finite() | _negative_zero(pl.col(n))).any().alias(f"f{i}") for i, n in enumerate(floats)),
    ).row(0) if text or floats else ()
    fixes = [pl.col(n).str.replace_all("\x00", REPLACEMENT, literal=True)
             for n, flag in zip(text, flags[: len(text)]) if flag]
    fixes += [pl.when(pl.col(n) == 0.0).then(pl.lit(0.0)).when(pl.col(n).is_finite()).then(pl.col(n))
              .otherwise(None).alias(n) for n, flag in zip(floats, flags[len(text):]) if flag]
    return frame.with_columns(fixes) if fixes else frame


def _negative_zero(col: pl.Expr) -> pl.Expr:
    return (col == 0.0) & ((1.0 / col) < 0.0)  # 1 / -0.0 is -inf


def _clean_constants(constants: dict[str, Any]) -> dict[str, Any]:
    """The constants cleaned like the columns they stand for."""
    def clean(value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            return value.replace("\x00", REPLACEMENT)
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, float) and value == 0.0 and math.copysign(1.0, value) < 0:
            return 0.0
        return value

    cleaned = {k: clean(v) for k, v in constants.items()}
    return constants if all(cleaned[k] is v for k, v in constants.items()) else cleaned


def _clean_json(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[int, str]]:
    """JSON columns rewritten where a row needs it (see :func:`json_value`), and the reasons of the
    rows refused, by index."""
    problems: dict[int, str] = {}
    for name in (n for n in _JSON_FIELDS if n in frame.columns):
        col = pl.col(name)
        suspect = (col.str.contains(_ESCAPED_NUL, literal=True) | col.str.contains(_EXPONENT)
                   | col.str.contains(_NEGATIVE_ZERO) | (col.str.count_matches(_BRACKETS) > MAX_JSON_DEPTH))
        rows = frame.select(pl.arg_where(suspect.fill_null(False)))
        if rows.height == 0:
            continue
        values = frame[name].to_list()
        for i in rows.to_series().to_list():
            try:
                values[i] = json_text(name, orjson.loads(values[i]))
            except orjson.JSONDecodeError:
                problems.setdefault(i, f"{name}: not valid JSON")
            except Refused as exc:
                problems.setdefault(i, str(exc))
        frame = frame.with_columns(pl.Series(name, values, dtype=pl.Utf8))
    return frame, problems


def json_text(name: str, value: Any) -> str:
    """``value`` as the JSON text a JSON column stores; raises :class:`Refused`."""
    return orjson.dumps(json_value(name, value), default=str).decode()


def json_value(name: str, value: Any, depth: int = 0) -> Any:
    """``value`` with what no database stores cleaned (see the module docstring); raises :class:`Refused`."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if not INT_MIN <= value < 2**64:
            raise Refused(f"{name}: the integer {str(value)[:30]} is out of range for every database's JSON")
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None  # as orjson writes them
        if value == 0.0:
            return 0.0
        if value.is_integer() and 1e16 <= abs(value) < 2**63:
            # Written as 1e+16, given back by PostgreSQL as 10000000000000000: keep it an integer.
            # (Beyond 64 bits the row hash takes integers as doubles: store/chain.py.)
            return int(value)
        return value
    if depth >= MAX_JSON_DEPTH:
        raise Refused(f"{name}: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        return {(_text(k) if isinstance(k, str) else k): json_value(name, v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(name, v, depth + 1) for v in value]
    return value  # orjson's own types (datetime, UUID, ...): it writes them as strings


def _text(value: str) -> str:
    value = scrub(value)
    return value.replace("\x00", REPLACEMENT) if "\x00" in value else value


def _problems(frame: pl.DataFrame, constants: dict) -> pl.Expr | None:
    """An expression giving the first problem of each row (null when the row is fine), or None
    when one aggregate pass finds no row with a problem (the common case)."""
    checks: list[tuple[pl.Expr, str]] = []
    for name in REQUIRED:
        if name in frame.columns:
            checks.append((pl.col(name).is_null(), f"missing {name}"))
    if "status" in frame.columns:
        checks.append((~pl.col("status").is_in(STATUS_VALUES), "status must be 'success' or 'failed'"))
    if "ts" in frame.columns:
        checks.append(((pl.col("ts") < TS_MIN) | (pl.col("ts") > TS_MAX),
                       "ts: outside the years 1000 to 9999 (what every database stores)"))
    if "attributes" in frame.columns:
        checks.append((~pl.col("attributes").str.starts_with("{"), "attributes: expected a JSON object"))
    sized: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        field = FIELDS_BY_NAME.get(name)
        if field is not None and dtype == pl.Float64:
            checks.append((pl.col(name).abs() > FLOAT_MAX, f"{name}: larger than {FLOAT_MAX:g} in magnitude "
                                                            "(the rollups add these up)"))
        if field is None or dtype != pl.Utf8:
            continue
        if field.length is not None:
            # SQLite would keep an over-long value that PostgreSQL and MySQL refuse.
            checks.append((pl.col(name).str.len_chars() > field.length,
                           f"{name} longer than {field.length} characters"))
        if field.kind in _TEXT_KINDS:
            sized.append(pl.col(name).str.len_bytes().fill_null(0))
    if sized:
        checks.append((pl.sum_horizontal(sized) > MAX_EVENT_BYTES,
                       f"larger than {MAX_EVENT_BYTES >> 20} MiB of text (what every database takes in one row)"))
    if not checks:
        return None
    found = frame.select(pl.any_horizontal(c.fill_null(False).any() for c, _ in checks)).item()
    if not found:
        return None
    expr = pl.when(checks[0][0]).then(pl.lit(checks[0][1]))
    for condition, reason in checks[1:]:
        expr = expr.when(condition).then(pl.lit(reason))
    return expr.otherwise(pl.lit(None, dtype=pl.Utf8))


def row_reject(row: dict, reason: str) -> Reject:
    """A refused event as a reject, keyed so that each event is its own reject and re-delivering it
    stores it once: by its line's byte offset when it comes from a file, else by its request_id."""
    return Reject(reject_offset(row), reason, excerpt(row))


def reject_offset(row: dict) -> int:
    """``tts_rejects.source_offset`` for a refused event: its source offset, or a number derived from
    its request_id, negative so that it never meets a byte offset (or a spool frame's)."""
    offset = row.get("source_offset")
    if offset is not None:
        return int(offset)
    request_id = row.get("request_id")
    if request_id is None:
        return -1
    digest = hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).digest()
    return -1 - (int.from_bytes(digest[:8], "big") >> 1)


#: Fields that may be encrypted at rest: a quarantined event's excerpt never shows them, since
#: tts_rejects is not encrypted (docs/encryption.md).
NOT_IN_EXCERPTS = frozenset({"ref_audio_url", "text_input", "output_audio_url", "_problem"})


def excerpt(row: dict) -> bytes:
    """What a quarantined event shows of itself: its first 200 bytes, without encryptable fields."""
    row = {k: v for k, v in row.items() if v is not None and k not in NOT_IN_EXCERPTS}
    return orjson.dumps(row, default=str)[:200]


def scrub(text: str) -> str:
    """``text`` with lone surrogates (Python strings can hold them, UTF-8 cannot) replaced by U+FFFD;
    a surrogate pair becomes the character it encodes."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text

