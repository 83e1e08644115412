"""Reading the rollups: pick the smallest table that can answer, return a small polars frame.

Every panel asks one of three questions, grouped by some dimensions and optionally by a time
bucket: *measures* (calls, and count and sum of each mean-able field), the *latency* histogram,
or the *errors* count. A question is answered by the family of rollup tables with the fewest
dimensions that still covers the filters and the grouping; a family has an hourly table and
usually a daily one. Whole UTC days come from the daily table when the buckets allow it (no
hourly buckets, local days = UTC days), the hours at either end of the view from the hourly one.

Latency questions that no histogram family covers (a filter on emotion or emotion control)
are answered from ``tts_events`` with the same bins, over the view's time range (exact, slower).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa

from voxtrail.query.buckets import auto_unit, day_bucket, hour_range, is_utc_days
from voxtrail.query.filters import Filters
from voxtrail.store.rollups import epoch_hour, event_dimension, latency_bin
from voxtrail.store.schema import (
    ERROR_DIMENSIONS,
    GROUP_DIMENSIONS,
    ROLLUP_DIMENSIONS,
    ROLLUP_MEASURES,
    rollup_tables,
    tts_events,
)

MEASURE_COLUMNS = ("calls", *(f"{m}_{part}" for m in ROLLUP_MEASURES for part in ("n", "sum")))


@dataclass(frozen=True)
class Family:
    dims: tuple[str, ...]
    hourly: str | None  # None: daily only; the hours at either end of a view come from raw events
    daily: str | None = None


#: Smallest first: a question goes to the first family whose dimensions cover it.
FAMILIES: dict[str, tuple[Family, ...]] = {
    "measures": (
        Family(("status", "length_bucket"), "voxtrail_rollup_hourly_totals", "voxtrail_rollup_daily_totals"),
        Family(GROUP_DIMENSIONS, "voxtrail_rollup_hourly_groups", "voxtrail_rollup_daily_groups"),
        Family(ROLLUP_DIMENSIONS, "voxtrail_rollup_hourly", "voxtrail_rollup_daily"),
    ),
    "latency": (
        Family(("status",), "voxtrail_latency_hourly_totals", "voxtrail_latency_daily_totals"),
        Family(("node", "status"), "voxtrail_latency_hourly_node", "voxtrail_latency_daily_node"),
        Family(("model", "model_version", "status"), "voxtrail_latency_hourly_model", "voxtrail_latency_daily_model"),
        Family(("node", "model", "model_version", "status"), "voxtrail_latency_hourly", "voxtrail_latency_daily"),
        # Emotion filters: per day only (an hourly table would hold millions of rows).
        Family(("node", "model", "model_version", "emotion", "status"), None, "voxtrail_latency_daily_emotion"),
    ),
    "errors": (
        Family((), "voxtrail_errors_hourly_totals"),
        Family(ERROR_DIMENSIONS, "voxtrail_errors_hourly"),
    ),
}


def _family(kind: str, needed: set[str], daily_ok: bool = True) -> Family | None:
    for family in FAMILIES[kind]:
        if needed <= set(family.dims) and (family.hourly or daily_ok):
            return family
    return None


def _frame(rows: list[Any], names: list[str]) -> pl.DataFrame:
    frame = pl.DataFrame([tuple(r) for r in rows], schema=names, orient="row", infer_schema_length=None)
    # MySQL sums integers as DECIMAL: give every dialect the same column types.
    casts = []
    for name in names:
        if name in ("calls", "bucket", "bin", "text_length") or name.endswith("_n"):
            casts.append(pl.col(name).cast(pl.Int64))
        elif name.endswith("_sum") or name == "latency_ms":
            casts.append(pl.col(name).cast(pl.Float64))
        else:
            casts.append(pl.col(name).cast(pl.Utf8))
    return frame.with_columns(casts)


@dataclass
class Reader:
    """One view's questions over one connection, each answered once (panels share answers)."""

    conn: sa.Connection
    filters: Filters
    _memo: dict = field(default_factory=dict)

    # -- the three questions -------------------------------------------------------------------
    def measures(self, dims: tuple[str, ...] = (), unit: str | None = None) -> pl.DataFrame:
        """Columns: ``bucket`` (when ``unit``), ``dims``, then MEASURE_COLUMNS summed."""
        return self._ask("measures", dims, unit)

    def latency(self, dims: tuple[str, ...] = (), unit: str | None = None) -> pl.DataFrame:
        """Columns: ``bucket`` (when ``unit``), ``dims``, ``bin``, ``calls``."""
        return self._ask("latency", dims, unit)

    def errors(self) -> pl.DataFrame:
        """Columns: ``error_type``, ``message_prefix``, ``calls`` (failed calls only)."""
        return self._ask("errors", (), None)

    def prefetch(self, engine: sa.Engine, questions: list[tuple], workers: int = 2) -> None:
        """Answer ``questions`` ((kind, dims, unit) tuples) on ``workers`` extra connections at once.

        The database does the work of each question without holding the GIL (sqlite3, psycopg
        and pymysql all release it while waiting), so on a multi-core server the panels' reads
        overlap instead of queueing.
        """
        from concurrent.futures import ThreadPoolExecutor

        # Raw-event answers share one scan (``_from_raw``): leave them to the panels.
        todo = [q for q in dict.fromkeys(questions) if q not in self._memo and not self.needs_raw(*q)]
        if len(todo) < 2:
            return

        def answer_all(chunk: list[tuple]) -> list[tuple[tuple, pl.DataFrame]]:
            with engine.connect() as conn:
                reader = Reader(conn, self.filters)
                return [(q, reader._answer(*q)) for q in chunk]

        chunks = [todo[i::workers] for i in range(workers)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for results in pool.map(answer_all, [c for c in chunks if c]):
                self._memo.update(results)

    def derived(self, key: tuple, compute):
        """A figure computed from the answers, kept for the other panels of this view."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    # -- machinery -------------------------------------------------------------------------------
    def _ask(self, kind: str, dims: tuple[str, ...], unit: str | None) -> pl.DataFrame:
        key = (kind, dims, unit)
        if key not in self._memo:
            self._memo[key] = self._answer(kind, dims, unit)
        return self._memo[key]

    def _values(self, kind: str, table: sa.Table | None) -> list[sa.ColumnElement]:
        if table is None:  # raw events: only latency questions come here
            return [sa.func.count().label("calls")]
        names = MEASURE_COLUMNS if kind == "measures" else ("calls",)
        return [sa.func.sum(table.c[n]).label(n) for n in names]

    def _answer(self, kind: str, dims: tuple[str, ...], unit: str | None) -> pl.DataFrame:
        f = self.filters
        active = f.active()
        if kind == "errors" and active.get("status") and "failed" not in active["status"]:
            return self._empty(kind, dims, unit)  # only failures have errors
        needed = {d for d in active if not (kind == "errors" and d == "status")} | set(dims)
        first, end = hour_range(f)
        days_ok = self._days_ok(unit)
        family = _family(kind, needed, daily_ok=days_ok)
        parts: list[tuple[str | None, int, int]] = []  # (table, first key, end key) in its grain
        if family is None:  # latency with a filter no histogram has: one raw scan serves them all
            return self._from_raw(dims, unit)
        elif family.daily and days_ok:
            d0, d1 = -(-first // 24), end // 24
            parts.append((family.daily, d0, d1))
            # The hours before the first and after the last whole UTC day (None: from raw events).
            parts += [(family.hourly, a, b) for a, b in ((first, d0 * 24), (d1 * 24, end)) if a < b]
        else:
            parts.append((family.hourly, first, end))
        frames = [self._read(kind, table, a, b, dims, unit) for table, a, b in parts]
        frames = [fr for fr in frames if fr.height]
        if not frames:
            return self._empty(kind, dims, unit)
        if len(frames) == 1:
            return frames[0]
        out = pl.concat(frames, how="vertical_relaxed")
        keys = [c for c in out.columns if c not in self._value_names(kind)]
        return out.group_by(keys, maintain_order=True).agg(pl.col(self._value_names(kind)).sum())

    @staticmethod
    def _value_names(kind: str) -> list[str]:
        return list(MEASURE_COLUMNS) if kind == "measures" else ["calls"]

    def _group_keys(self, kind: str, dims: tuple[str, ...]) -> list[str]:
        keys = list(dims)
        if kind == "latency":
            keys.append("bin")
        if kind == "errors":
            keys += ["error_type", "message_prefix"]
        return keys

    def _empty(self, kind: str, dims: tuple[str, ...], unit: str | None) -> pl.DataFrame:
        names = (["bucket"] if unit else []) + self._group_keys(kind, dims) + self._value_names(kind)
        return _frame([], names)

    def _read(self, kind, table_name, first, end, dims, unit) -> pl.DataFrame:
        f = self.filters
        if table_name is None:
            return self._read_raw(first, end, dims, unit)
        table = rollup_tables[table_name]
        grain = "hour" if "hour" in table.c else "day"
        key = table.c[grain]
        conds = [key >= first, key < end]
        for name, values in f.active().items():
            if kind == "errors" and name == "status":
                continue
            conds.append(table.c[name].in_(values))
        cols: list[sa.ColumnElement] = []
        if unit == "hour":
            cols.append(key.label("bucket"))
        elif unit == "day":
            cols.append((key if grain == "day" else day_bucket(key, f)).label("bucket"))
        cols += [table.c[n] for n in self._group_keys(kind, dims)]
        stmt = sa.select(*cols, *self._values(kind, table)).where(*conds)
        if cols:
            # Group in primary-key order: SQLite then aggregates along the key without sorting.
            position = {c.name: i for i, c in enumerate(table.primary_key.columns)}
            plain = sorted((c for c in cols[1 if unit else 0:]), key=lambda c: position.get(c.name, len(position)))
            stmt = stmt.group_by(*cols[:1 if unit else 0], *plain)
        result = self.conn.execute(stmt)
        rows = result.all()
        if not cols and (not rows or rows[0][0] is None):
            return self._empty(kind, dims, unit)
        return _frame(rows, list(result.keys()))

    def _from_raw(self, dims: tuple[str, ...], unit: str | None) -> pl.DataFrame:
        """A latency answer cut from one raw histogram per view (per node and model version)."""
        scan_unit = unit or auto_unit(self.filters)
        scan_dims = tuple(dict.fromkeys(("node", "model", "model_version", *dims)))
        key = ("raw_latency", scan_dims, scan_unit)
        if key not in self._memo:
            first, end = hour_range(self.filters)
            self._memo[key] = self._read_raw(first, end, scan_dims, scan_unit)
        raw = self._memo[key]
        keys = (["bucket"] if unit else []) + [*dims, "bin"]
        return raw.group_by(keys, maintain_order=True).agg(pl.col("calls").sum())

    def _days_ok(self, unit: str | None) -> bool:
        """Whether whole UTC days can come from daily tables for this view and time unit."""
        first, end = hour_range(self.filters)
        return (unit is None or (unit == "day" and is_utc_days(self.filters))) and -(-first // 24) < end // 24

    def needs_raw(self, kind: str, dims: tuple[str, ...], unit: str | None) -> bool:
        needed = set(self.filters.active()) | set(dims)
        return kind == "latency" and _family(kind, needed, daily_ok=self._days_ok(unit)) is None

    def _read_raw(self, first: int, end: int, dims, unit) -> pl.DataFrame:
        """Latency histogram straight from tts_events for UTC hours ``[first, end)``."""
        f = self.filters
        ev = tts_events.c
        since, until = (datetime(1970, 1, 1) + timedelta(hours=h) for h in (first, end))
        conds = [ev.ts >= since, ev.ts < until, ev.latency_ms.is_not(None)]
        for name, values in f.active().items():
            conds.append(event_dimension(name).in_(values))
        cols: list[sa.ColumnElement] = []
        if unit == "hour":
            cols.append(epoch_hour(ev.ts).label("bucket"))
        elif unit == "day":
            cols.append(day_bucket(epoch_hour(ev.ts), f).label("bucket"))
        cols += [event_dimension(d).label(d) for d in dims]
        cols.append(latency_bin(ev.latency_ms).label("bin"))
        stmt = sa.select(*cols, sa.func.count().label("calls")).where(*conds).group_by(*cols)
        result = self.conn.execute(stmt)
        return _frame(result.all(), list(result.keys()))

    # -- values of the filter menus ------------------------------------------------------------------
    def options(self) -> dict[str, list[str]]:
        """Distinct values of each filter dimension over the days the view touches."""
        first, end = hour_range(self.filters)
        out: dict[str, list[str]] = {}
        for name in ("node", "model", "model_version", "emotion", "emotion_control", "status"):
            daily = next(fam.daily for fam in FAMILIES["measures"] if fam.daily and name in fam.dims)
            table = rollup_tables[daily]
            col = table.c[name]
            stmt = (
                sa.select(col).distinct()
                .where(table.c.day >= first // 24, table.c.day <= (end - 1) // 24, col != "")
                .order_by(col)
            )
            out[name] = list(self.conn.execute(stmt).scalars())
        return out

    def sample(self, limit: int) -> pl.DataFrame:
        """The ``limit`` most recent calls of the view with a text length and a latency."""
        f = self.filters
        ev = tts_events.c
        conds = [ev.ts >= f.since.replace(tzinfo=None), ev.ts < f.until.replace(tzinfo=None),
                 ev.latency_ms.is_not(None), ev.text_length.is_not(None)]
        for name, values in f.active().items():
            conds.append(ev[name].in_(values))
        stmt = (sa.select(ev.text_length, ev.latency_ms, ev.status).where(*conds)
                .order_by(ev.ts.desc()).limit(limit))
        result = self.conn.execute(stmt)
        return _frame(result.all(), list(result.keys()))
