"""The figures behind ``/metrics``: calls, failures and a latency histogram per node, model, emotion.

Counts are totals since the beginning of the store, as Prometheus counters are. They are kept
incrementally: :class:`RunningTotals` remembers the largest event id it has counted and each
refresh aggregates only the rows above it (a range scan of the primary key), so a scrape costs
what was written since the previous one, not a pass over ten million rows. That is exact because
ids are handed out in commit order: SQLite has one writer at a time, and ``Store.write`` on
PostgreSQL and MySQL takes the rollup lock before inserting (store/rollups.py). Events are never
updated in place, so counted rows stay counted.

One ``GROUP BY`` that every dialect runs the same way; bucket counts are cumulative (``le``
semantics: latency <= bound). Events whose latency is unknown count as calls (and failures)
but not in the histogram. NULL labels are ''.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import sqlalchemy as sa

from voxtrail.store.schema import tts_events

#: Histogram bucket upper bounds in seconds (+Inf is implied).
LATENCY_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
LABELS = ("node", "model", "emotion")


@dataclass(frozen=True)
class SeriesTotals:
    labels: tuple[str, str, str]  # node, model, emotion
    calls: int
    failures: int
    latency_count: int  # events with a latency
    latency_sum_seconds: float
    buckets: tuple[int, ...]  # cumulative counts for LATENCY_BUCKETS_SECONDS, then +Inf

    def __add__(self, other: "SeriesTotals") -> "SeriesTotals":
        return replace(
            self, calls=self.calls + other.calls, failures=self.failures + other.failures,
            latency_count=self.latency_count + other.latency_count,
            latency_sum_seconds=self.latency_sum_seconds + other.latency_sum_seconds,
            buckets=tuple(a + b for a, b in zip(self.buckets, other.buckets)),
        )


def _total(expr: sa.ColumnElement) -> sa.ColumnElement:
    return sa.func.coalesce(sa.func.sum(expr), 0)


def max_event_id(conn: sa.Connection) -> int | None:
    return conn.execute(sa.select(sa.func.max(tts_events.c.id))).scalar()


def series_totals(conn: sa.Connection, after_id: int | None = None, up_to_id: int | None = None,
                  buckets: tuple[float, ...] = LATENCY_BUCKETS_SECONDS) -> list[SeriesTotals]:
    """Totals of the events with ``after_id < id <= up_to_id`` (all when None), per label set."""
    t = tts_events.c
    labels = [sa.func.coalesce(getattr(t, name), "").label(name) for name in LABELS]
    latency = t.latency_ms
    columns = [
        *labels,
        sa.func.count().label("calls"),
        _total(sa.case((t.status == "failed", 1), else_=0)).label("failures"),
        sa.func.count(latency).label("latency_count"),
        _total(latency).label("latency_sum_ms"),
        *(_total(sa.case((latency <= bound * 1000.0, 1), else_=0)) for bound in buckets),
    ]
    query = sa.select(*columns).group_by(*labels).order_by(*labels)
    if after_id is not None:
        query = query.where(t.id > after_id)
    if up_to_id is not None:
        query = query.where(t.id <= up_to_id)
    out = []
    for row in conn.execute(query):
        counts = tuple(int(c) for c in row[7:])
        out.append(SeriesTotals(
            labels=(row[0], row[1], row[2]), calls=int(row.calls), failures=int(row.failures),
            latency_count=int(row.latency_count), latency_sum_seconds=float(row.latency_sum_ms) / 1000.0,
            buckets=counts + (int(row.latency_count),),
        ))
    return out


class RunningTotals:
    """Totals kept up to date by counting only the events added since the last refresh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str, str], SeriesTotals] = {}
        self._counted_up_to: int | None = None

    def refresh(self, conn: sa.Connection) -> list[SeriesTotals]:
        with self._lock:  # concurrent scrapes wait for one query instead of each running it
            newest = max_event_id(conn)
            if newest is None or (self._counted_up_to is not None and newest < self._counted_up_to):
                # An empty or replaced database: start over rather than report stale totals.
                self._totals, self._counted_up_to = {}, None
            if newest is not None and newest != self._counted_up_to:
                for series in series_totals(conn, after_id=self._counted_up_to, up_to_id=newest):
                    known = self._totals.get(series.labels)
                    self._totals[series.labels] = series if known is None else known + series
                self._counted_up_to = newest
            return sorted(self._totals.values(), key=lambda s: s.labels)
