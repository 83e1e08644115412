"""Rollups: counts, sums and latency histograms kept up to date by every write.

``Store.write`` calls :func:`mark` before inserting and :func:`apply` after, in the same
transaction, so the rollups grow by exactly the rows that were new (duplicates are never
inserted, hence never counted) and commit or roll back with them. Each rollup table gets one
set-based ``INSERT ... SELECT ... GROUP BY ... ON CONFLICT/DUPLICATE KEY UPDATE`` over the new
rows (``id > mark``): no Python per row.

Why ``id > mark`` is exactly the new rows: SQLite's write lock (BEGIN IMMEDIATE) already lets one
writer in at a time; on PostgreSQL and MySQL :func:`mark` first locks the single row of
``voxtrail_rollup_state`` (``SELECT ... FOR UPDATE``), so concurrent writers take turns from
there to their commit, and ids handed out after the lock are above every committed id. (Writers
still parse and encode in parallel; only the insert-and-aggregate step is serialised, and it would
largely be anyway, since concurrent writers update the same hourly rows.)

Latency histograms use DDSketch's log-spaced bins: bin ``k`` holds values in
``[GAMMA**k, GAMMA**(k+1))`` with ``GAMMA = 1.01 / 0.99``, and :func:`bin_value` answers with a
value within 1 % of anything in the bin, so percentiles merged from any number of rows stay
within 1 % of the exact value. Rollups never read back raw rows once written: retention may
delete old events and the rollups keep the history.
"""

from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from voxtrail.store.bulk import EncodedBatch
from voxtrail.store.schema import (
    ERROR_DIMENSIONS,
    ROLLUP_DIMENSIONS,
    ERROR_MESSAGE_PREFIX,
    ROLLUP_MEASURES,
    ROLLUP_TABLES,
    rollup_state,
    rollup_tables,
    tts_events,
)

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LN_GAMMA = math.log(GAMMA)
#: The bin of latencies <= 0 (a clock glitch, never a real generation time).
ZERO_BIN = -(10**6)
LENGTH_BUCKETS = ("<50", "50-150", ">150")


class epoch_hour(FunctionElement):
    """Whole hours since 1970-01-01 00:00 UTC of a UTC-naive timestamp column."""

    type = sa.BigInteger()
    inherit_cache = True


@compiles(epoch_hour, "sqlite")
def _epoch_hour_sqlite(element, compiler, **kw):
    return f"(CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER) / 3600)"


@compiles(epoch_hour, "postgresql")
def _epoch_hour_pg(element, compiler, **kw):
    return f"CAST(floor(extract(epoch from {compiler.process(element.clauses, **kw)}) / 3600) AS BIGINT)"


@compiles(epoch_hour, "mysql")
@compiles(epoch_hour, "mariadb")
def _epoch_hour_mysql(element, compiler, **kw):
    return f"TIMESTAMPDIFF(HOUR, '1970-01-01 00:00:00', {compiler.process(element.clauses, **kw)})"


def bin_value(k: int) -> float:
    """The value reported for histogram bin ``k`` (relative error at most ALPHA)."""
    return 0.0 if k == ZERO_BIN else GAMMA**k * 2 * GAMMA / (1 + GAMMA)


def value_bin(value: float) -> int:
    return ZERO_BIN if value <= 0 else math.floor(math.log(value) / LN_GAMMA)


def latency_bin(column) -> sa.ColumnElement:
    return sa.case(
        (column > 0, sa.cast(sa.func.floor(sa.func.ln(column) / LN_GAMMA), sa.Integer)),
        else_=ZERO_BIN,
    )


def length_bucket(column) -> sa.ColumnElement:
    """Seed 000's text-length classes (its CASE: < 50, < 150, else), '' when unknown."""
    return sa.case(
        (column.is_(None), ""),
        (column < 50, LENGTH_BUCKETS[0]),
        (column < 150, LENGTH_BUCKETS[1]),
        else_=LENGTH_BUCKETS[2],
    )


def event_dimension(name: str) -> sa.ColumnElement:
    """A rollup dimension computed from a tts_events row ('' for NULL)."""
    if name == "length_bucket":
        return length_bucket(tts_events.c.text_length)
    return sa.func.coalesce(tts_events.c[name], "")


def _grain_key(grain: str) -> sa.ColumnElement:
    hour = epoch_hour(tts_events.c.ts)
    return hour if grain == "hour" else hour // 24


def _aggregate(name: str, where: sa.ColumnElement) -> sa.Select:
    """The rows to add to rollup table ``name`` for the events matching ``where``."""
    grain, dims, kind = ROLLUP_TABLES[name]
    keys = [_grain_key(grain).label(grain), *(event_dimension(d).label(d) for d in dims)]
    ev = tts_events.c
    if kind == "measures":
        values = [sa.func.count().label("calls")]
        for m in ROLLUP_MEASURES:
            values.append(sa.func.count(ev[m]).label(f"{m}_n"))
            values.append(sa.func.coalesce(sa.func.sum(ev[m]), 0.0).label(f"{m}_sum"))
    elif kind == "latency":
        keys.append(latency_bin(ev.latency_ms).label("bin"))
        values = [sa.func.count().label("calls")]
        where = sa.and_(where, ev.latency_ms.is_not(None))
    else:  # errors
        keys.append(sa.func.coalesce(ev.error_type, "").label("error_type"))
        keys.append(sa.func.coalesce(sa.func.substr(ev.error_message, 1, ERROR_MESSAGE_PREFIX), "").label("message_prefix"))
        values = [sa.func.count().label("calls")]
        where = sa.and_(where, ev.status == "failed")
    return sa.select(*keys, *values).where(where).group_by(*keys)


_INSERTS: dict[str, Callable] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert, "mysql": mysql.insert}


def _upsert(conn: sa.Connection, dialect: str, name: str, rows: sa.Select) -> None:
    table = rollup_tables[name]
    names = [c.name for c in rows.selected_columns]
    additive = [c.name for c in table.columns if not c.primary_key]
    stmt = _INSERTS[dialect](table).from_select(names, rows)
    if dialect == "mysql":
        stmt = stmt.on_duplicate_key_update({c: table.c[c] + stmt.inserted[c] for c in additive})
    else:
        keys = [c.name for c in table.primary_key.columns]
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: table.c[c] + stmt.excluded[c] for c in additive})
    conn.execute(stmt)


def mark(conn: sa.Connection, dialect: str) -> int:
    """Call first in a write transaction: serialise writers, return the largest stored id."""
    if dialect != "sqlite":
        conn.execute(sa.select(rollup_state.c.id).where(rollup_state.c.id == 1).with_for_update())
    return conn.execute(sa.select(sa.func.coalesce(sa.func.max(tts_events.c.id), 0))).scalar_one()


def apply(conn: sa.Connection, dialect: str, after_id: int) -> None:
    """Add the events with ``id > after_id`` (this transaction's inserts) to every rollup."""
    add_events(conn, dialect, tts_events.c.id > after_id)


def add_events(conn: sa.Connection, dialect: str, where: sa.ColumnElement) -> None:
    for name in ROLLUP_TABLES:
        _upsert(conn, dialect, name, _aggregate(name, where))


def _utc_naive(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def rebuild_day(conn: sa.Connection, dialect: str, day: int) -> None:
    """Recompute one UTC day (days since 1970) of every rollup from the raw events of that day.

    Run it in a transaction that called :func:`mark` first, so no writer adds to the day meanwhile.
    """
    for name, (grain, _dims, _kind) in ROLLUP_TABLES.items():
        table = rollup_tables[name]
        key = table.c[grain]
        lo, hi = (day * 24, day * 24 + 24) if grain == "hour" else (day, day + 1)
        conn.execute(sa.delete(table).where(key >= lo, key < hi))
    start = datetime(1970, 1, 1) + timedelta(days=day)
    add_events(conn, dialect, sa.and_(tts_events.c.ts >= start, tts_events.c.ts < start + timedelta(days=1)))


def event_days(conn: sa.Connection, since: datetime | None = None) -> range:
    """UTC days (since 1970) from the first stored event (or ``since``) to the last."""
    first, last = conn.execute(sa.select(sa.func.min(tts_events.c.ts), sa.func.max(tts_events.c.ts))).one()
    if first is None:
        return range(0)
    if since is not None:
        first = max(first, _utc_naive(since))
    epoch = datetime(1970, 1, 1)
    return range((first - epoch).days, (last - epoch).days + 1)


def touch_state(conn: sa.Connection) -> None:
    conn.execute(sa.update(rollup_state).where(rollup_state.c.id == 1).values(
        rebuilt_at=datetime.now(timezone.utc).replace(tzinfo=None)
    ))


# --- The fast path: the batch's own rows, aggregated by polars before the transaction -----------
# When every row of a batch was inserted (the usual case: no duplicates), the new rows are the
# batch itself, so their rollup increments can be computed from the frame, vectorised, in the
# thread that encodes the batch; the transaction then only upserts a few thousand small rows.
# Any duplicate sends the write back to the set-based SQL above (`apply`), which reads exactly
# the inserted rows. tests/test_rollups.py checks that both paths give identical rollups.

@dataclass(frozen=True)
class EncodedWithRollups(EncodedBatch):
    """An encoded batch that also carries its rollup increments (see :func:`batch_delta`)."""

    rollup_delta: dict | None = None


def _frame_column(prepared, name: str):
    import polars as pl

    if name in prepared.frame.columns:
        return pl.col(name)
    return pl.lit(prepared.constants.get(name))


def batch_delta(prepared) -> dict:
    """Rollup increments of a PreparedBatch, as {table name: polars frame in the table's columns}."""
    import polars as pl

    col = lambda name: _frame_column(prepared, name)  # noqa: E731
    dims = {name: col(name).cast(pl.Utf8).fill_null("") for name in
            ("node", "model", "model_version", "emotion", "emotion_control", "status")}
    length = col("text_length").cast(pl.Int64)
    dims["length_bucket"] = (
        pl.when(length.is_null()).then(pl.lit(""))
        .when(length < 50).then(pl.lit(LENGTH_BUCKETS[0]))
        .when(length < 150).then(pl.lit(LENGTH_BUCKETS[1]))
        .otherwise(pl.lit(LENGTH_BUCKETS[2]))
    )
    # NaN and infinity are no measurement (MySQL stores them as NULL): not counted, not summed.
    measures = {m: pl.when(col(m).cast(pl.Float64).is_finite()).then(col(m).cast(pl.Float64))
                for m in ROLLUP_MEASURES}
    latency = measures["latency_ms"]
    base = prepared.frame.lazy().select(
        (col("ts").dt.epoch("s") // 3600).alias("hour"),
        *(expr.alias(name) for name, expr in dims.items()),
        *(expr.alias(f"m_{name}") for name, expr in measures.items()),
        pl.when(latency > 0).then((latency.log() / LN_GAMMA).floor().cast(pl.Int64))
        .otherwise(pl.lit(ZERO_BIN)).alias("bin"),
        col("error_type").cast(pl.Utf8).fill_null("").alias("error_type"),
        col("error_message").cast(pl.Utf8).str.slice(0, ERROR_MESSAGE_PREFIX).fill_null("").alias("message_prefix"),
    ).with_columns((pl.col("hour") // 24).alias("day")).collect().lazy()

    sums = [pl.len().alias("calls")]
    for m in ROLLUP_MEASURES:
        sums += [pl.col(f"m_{m}").count().alias(f"{m}_n"), pl.col(f"m_{m}").sum().alias(f"{m}_sum")]
    finest = base.group_by(["hour", *ROLLUP_DIMENSIONS]).agg(sums).with_columns(
        (pl.col("hour") // 24).alias("day"))
    measure_names = [c for c in finest.collect_schema().names() if c not in ("hour", "day", *ROLLUP_DIMENSIONS)]
    # Each table is a coarser grouping of one of three finest groupings (a few thousand rows).
    latency_keys = ["hour", "node", "model", "model_version", "emotion", "status", "bin"]
    timed = base.filter(pl.col("m_latency_ms").is_not_null()).group_by(latency_keys).agg(
        pl.len().alias("calls")).with_columns((pl.col("hour") // 24).alias("day"))
    error_keys = ["hour", *ERROR_DIMENSIONS, "error_type", "message_prefix"]
    failed = base.filter(pl.col("status") == "failed").group_by(error_keys).agg(
        pl.len().alias("calls"))
    # One collect_all: polars plans the ~17 groupings together (collecting each separately cost
    # more than the database's work for small batches).
    out: dict = {}
    for name, (grain, tdims, kind) in ROLLUP_TABLES.items():
        keys = [grain, *tdims]
        if kind == "measures":
            frame = finest.group_by(keys).agg(pl.col(measure_names).sum())
        elif kind == "latency":
            frame = timed.group_by([*keys, "bin"]).agg(pl.col("calls").sum())
        else:
            frame = failed.group_by([*keys, "error_type", "message_prefix"]).agg(pl.col("calls").sum())
        columns = frame.collect_schema().names()
        out[name] = frame.sort(columns[: len(columns) - (len(measure_names) if kind == "measures" else 1)])
    return dict(zip(out, pl.collect_all(list(out.values()))))



def apply_delta(conn: sa.Connection, dialect: str, delta: dict, sources: dict[str, str] | None = None) -> None:
    """Upsert precomputed increments (rows sorted by key: concurrent writers lock in one order).

    ``sources`` names tables the writer already staged them in (SQLite's scratch file): those are
    upserted by one ``INSERT ... SELECT`` each, with no Python per row.
    """
    for name, frame in delta.items():
        if frame.height == 0:
            continue
        if sources and name in sources:
            conn.exec_driver_sql(_upsert_from_sql(name, tuple(frame.columns), sources[name]))
            continue
        sql, order, rename = _upsert_sql(conn.dialect, dialect, name, tuple(frame.columns))
        if order is not None:
            params = frame.select(order).rows()
        else:
            params = frame.rename(rename).to_dicts()
        conn.exec_driver_sql(sql, params)


@lru_cache(maxsize=256)
def _upsert_from_sql(name: str, columns: tuple[str, ...], source: str) -> str:
    """SQLite: add a staged table's increments to a rollup table (``WHERE true``: without it
    SQLite would read ON CONFLICT as a join constraint)."""
    table = rollup_tables[name]
    keys = [c.name for c in table.primary_key.columns]
    cols = ", ".join(f'"{c}"' for c in columns)
    updates = ", ".join(f'"{c}" = "{name}"."{c}" + excluded."{c}"' for c in columns if c not in keys)
    conflict = ", ".join(f'"{k}"' for k in keys)
    return (f'INSERT INTO main."{name}" ({cols}) SELECT {cols} FROM {source} WHERE true ORDER BY rowid '
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}")


@lru_cache(maxsize=256)
def _upsert_sql(sa_dialect, dialect: str, name: str, columns: tuple[str, ...]):
    """The driver-level upsert of one rollup table, compiled once per process.

    Executed by the driver rather than through SQLAlchemy: its per-row parameter handling would
    cost more than the database's work for these small rows, and compiling the statement on
    every write cost more than the write itself for small batches (HTTP ingest, the Recorder).
    """
    table = rollup_tables[name]
    additive = [c.name for c in table.columns if not c.primary_key]
    stmt = _INSERTS[dialect](table)
    if dialect == "mysql":
        stmt = stmt.on_duplicate_key_update({c: table.c[c] + stmt.inserted[c] for c in additive})
    else:
        keys = [c.name for c in table.primary_key.columns]
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: table.c[c] + stmt.excluded[c] for c in additive})
    compiled = stmt.compile(dialect=sa_dialect, column_keys=list(columns))
    if compiled.positional:
        return str(compiled), [compiled.binds[b].key for b in compiled.positiontup], None
    names = {compiled.binds[b].key: b for b in compiled.binds}
    return str(compiled), None, {k: v for k, v in names.items() if k != v}


def rebuild(engine: sa.Engine, dialect: str, since: datetime | None = None,
            on_day: Callable[[int], None] | None = None) -> int:
    """Recompute the rollups from the raw events, one UTC day per transaction; return the days.

    Each day is deleted and re-aggregated under the writers' lock, so imports may run meanwhile.
    Days before the first stored event (``since`` if later) are left alone: after retention has
    deleted old raw events, their rollups are the only record and are kept.
    """
    with engine.connect() as conn:
        days = event_days(conn, since)
        conn.rollback()
    options = {"vx_immediate": True} if dialect == "sqlite" else {}
    for day in days:
        with engine.connect().execution_options(**options) as conn, conn.begin():
            mark(conn, dialect)
            rebuild_day(conn, dialect, day)
        if on_day is not None:
            on_day(day)
    with engine.begin() as conn:
        touch_state(conn)
    return len(days)
