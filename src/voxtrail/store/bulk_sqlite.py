"""SQLite bulk path: one ``executemany`` on the raw sqlite3 connection.

The statement binds only the frame's columns; constants are written into the SQL as literals,
so a row costs as few parameter bindings as possible. ``ON CONFLICT (request_id) DO NOTHING``
(not ``INSERT OR IGNORE``, which would also swallow NOT NULL violations) skips duplicates.
The transaction is the caller's, begun with BEGIN IMMEDIATE by the engine.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import polars as pl
import sqlalchemy as sa

from voxtrail.store.bulk import TS_FORMAT, PreparedBatch


def _literal(value: Any) -> str | None:
    """``value`` as an SQLite literal, or None when it must be bound instead."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, datetime):
        value = value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, str) and "\x00" not in value:  # sqlite3 refuses NUL in SQL text
        return "'" + value.replace("'", "''") + "'"
    return None


def _quote(name: str) -> str:
    return '"' + name + '"'


class SQLiteWriter:
    def encode(self, batch: PreparedBatch) -> tuple[str, list[tuple]]:
        frame = batch.frame
        # ingested_at as one literal per batch: a DEFAULT expression costs a strftime per row.
        constants = {**batch.constants, "ingested_at": datetime.now(timezone.utc).replace(tzinfo=None)}
        literals: dict[str, str] = {}
        for name, value in constants.items():
            lit = _literal(value)
            if lit is None:  # rare: bind it per row after all
                frame = frame.with_columns(pl.lit(value).alias(name))
            else:
                literals[name] = lit
        bound = frame.columns
        names = ", ".join(_quote(n) for n in [*bound, *literals])
        values = ", ".join(["?"] * len(bound) + list(literals.values()))
        sql = f"INSERT INTO tts_events ({names}) VALUES ({values}) ON CONFLICT (request_id) DO NOTHING"
        columns = []
        for name in bound:
            series = frame[name]
            if series.dtype == pl.Datetime:
                series = series.dt.strftime(TS_FORMAT)
            columns.append(series.to_list())
        return sql, list(zip(*columns))

    def insert_events(self, conn: sa.Connection, encoded: tuple[str, list[tuple]]) -> int:
        sql, rows = encoded
        raw = conn.connection.driver_connection
        before = raw.total_changes
        raw.executemany(sql, rows)
        return raw.total_changes - before


WRITER = SQLiteWriter()
