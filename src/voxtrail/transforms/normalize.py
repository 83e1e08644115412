"""Normalise: the invariants every stored event holds, checked once for all sources.

Formats already parse carefully; this is the last line of defence for what they cannot see
(a JSON source says ``status: "ok"``; an emotion label longer than its column). Offending
events are quarantined with a reason.
"""

from __future__ import annotations

import orjson
import polars as pl

from voxtrail.event import FIELDS_BY_NAME, STATUS_VALUES, EventBatch, Reject

REQUIRED = ("request_id", "ts", "status")


def normalize(batch: EventBatch) -> EventBatch:
    frame = batch.frame
    if frame.height == 0:
        return batch
    problems = _problems(frame, batch.constants)
    if problems is None:
        return batch
    bad = frame.with_columns(problems.alias("_problem")).filter(pl.col("_problem").is_not_null())
    if bad.height == 0:
        return batch
    good = frame.filter(problems.is_null())
    rejects = [
        Reject(int(row.get("source_offset") or -1), f"event: {row['_problem']}", excerpt(row))
        for row in bad.iter_rows(named=True)
    ]
    return EventBatch(good, batch.rejects + rejects, batch.constants)


def _problems(frame: pl.DataFrame, constants: dict) -> pl.Expr | None:
    """An expression giving the first problem of each row, null when the row is fine."""
    checks: list[tuple[pl.Expr, str]] = []
    for name in REQUIRED:
        if name in constants:
            continue
        if name not in frame.columns:
            raise ValueError(f"a source produced events without {name!r}")
        checks.append((pl.col(name).is_null(), f"missing {name}"))
    if "status" in frame.columns:
        checks.append((~pl.col("status").is_in(STATUS_VALUES), "status must be 'success' or 'failed'"))
    for name in frame.columns:
        length = FIELDS_BY_NAME[name].length if name in FIELDS_BY_NAME else None
        if length is not None:
            # Every database must give the same answer: SQLite would keep an over-long value
            # that PostgreSQL and MySQL refuse.
            checks.append((pl.col(name).str.len_chars() > length, f"{name} longer than {length} characters"))
    if not checks:
        return None
    expr = pl.when(checks[0][0]).then(pl.lit(checks[0][1]))
    for condition, reason in checks[1:]:
        expr = expr.when(condition).then(pl.lit(reason))
    return expr.otherwise(pl.lit(None, dtype=pl.Utf8))


#: Fields that may be encrypted at rest: a quarantined event's excerpt never shows them, since
#: tts_rejects is not encrypted (docs/encryption.md).
NOT_IN_EXCERPTS = frozenset({"ref_audio_url", "text_input", "output_audio_url", "_problem"})


def excerpt(row: dict) -> bytes:
    """What a quarantined event shows of itself: its first 200 bytes, without encryptable fields."""
    row = {k: v for k, v in row.items() if v is not None and k not in NOT_IN_EXCERPTS}
    return orjson.dumps(row, default=str)[:200]
