"""The figures behind ``/metrics``: calls, failures and a latency histogram per node, model, emotion.

One ``GROUP BY`` over ``tts_events`` that every dialect runs the same way; bucket counts are
cumulative (``le`` semantics: latency <= bound), as Prometheus histograms are. Events whose
latency is unknown count as calls (and failures) but not in the histogram. NULL labels are ''.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _total(expr: sa.ColumnElement) -> sa.ColumnElement:
    return sa.func.coalesce(sa.func.sum(expr), 0)


def series_totals(conn: sa.Connection, buckets: tuple[float, ...] = LATENCY_BUCKETS_SECONDS) -> list[SeriesTotals]:
    """Totals since the beginning of the store, one entry per (node, model, emotion)."""
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
    out = []
    for row in conn.execute(query):
        counts = tuple(int(c) for c in row[7:])
        out.append(SeriesTotals(
            labels=(row[0], row[1], row[2]), calls=int(row.calls), failures=int(row.failures),
            latency_count=int(row.latency_count), latency_sum_seconds=float(row.latency_sum_ms) / 1000.0,
            buckets=counts + (int(row.latency_count),),
        ))
    return out
