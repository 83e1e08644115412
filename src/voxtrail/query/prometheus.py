"""The figures behind ``/metrics``: calls, failures and a latency histogram per node, model, emotion.

**Counters only grow, across purges and restarts.** They are read from the daily rollups, which
every write adds to in the transaction that stores its events and which retention never deletes
(store/purge.py), never from raw rows or ids: a purge removes rows (the newest ids too, when they
are the oldest events), so counting rows made ``voxtrail_tts_calls_total`` fall after a purge and a
restart. A restarted server, or a second one on the same database, reads the same totals.

**Cost.** A scrape reads the rollup days from yesterday (UTC) on: two days of rows whatever the
history. The days before are summed once and the sum is kept for :data:`SETTLED_SECONDS` or until
the day changes; an event written meanwhile for an older day (last week's logs imported today)
is counted when that sum is next read: counts rise a little late, never fall. (Between two reads
of the kept sum the value is that sum plus the recent days, each of which only grows; a new read
is the full total, which is at least any earlier value.)

**Buckets** come from the rollups' latency histograms (DDSketch bins, 2 % wide): an event counts
under ``le`` when its bin holds the bound or lies below it, so a latency up to 2 % above a bound
may be counted under it. ``_count`` and ``_sum`` are exact. Events whose latency is unknown
count as calls (and failures) but not in the histogram. NULL labels are ''.

**Labels are capped** (:class:`LabelCap`): at most ``max_values`` values of each label get their
own series, the ones with the most calls when the server first sees more than that; every other
value is folded into ``__other__`` (``emotion="__other__"``), which sums them. A value keeps its
series for as long as the server runs, so no series ever loses counts to another while it runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import sqlalchemy as sa

from voxtrail.store.rollups import value_bin
from voxtrail.store.schema import rollup_tables

#: Histogram bucket upper bounds in seconds (+Inf is implied).
LATENCY_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
LABELS = ("node", "model", "emotion")
#: The value a label takes in the series that sums the values past the cap.
OTHER = "__other__"
#: Values of one label that get their own series (``voxtrail serve --metrics-label-values``).
DEFAULT_MAX_LABEL_VALUES = 100
#: How long the sum of the days before yesterday is kept before it is read again.
SETTLED_SECONDS = 3600.0

Labels = tuple[str, str, str]  # node, model, emotion


@dataclass(frozen=True)
class SeriesTotals:
    labels: Labels
    calls: int
    failures: int
    latency_count: int  # events with a latency
    latency_sum_seconds: float
    buckets: tuple[int, ...]  # cumulative counts for LATENCY_BUCKETS_SECONDS, then +Inf


# While summing, a label set's figures are one list (tens of thousands of label sets can come
# from a hostile client before the cap folds them): calls, failures, latency sum (ms), then the
# cumulative bucket counts with +Inf (the latency count) last.
Figures = list
_CALLS, _FAILURES, _LATENCY_SUM, _BUCKETS = 0, 1, 2, 3
_WIDTH = _BUCKETS + len(LATENCY_BUCKETS_SECONDS) + 1


def _add(into: Figures, other: Figures) -> None:
    for i, value in enumerate(other):
        into[i] += value


def _series(labels: Labels, f: Figures) -> SeriesTotals:
    buckets = tuple(int(c) for c in f[_BUCKETS:])
    return SeriesTotals(labels, int(f[_CALLS]), int(f[_FAILURES]), buckets[-1], f[_LATENCY_SUM] / 1000.0, buckets)


#: The last histogram bin counted under each bound: the bin the bound falls in (``le`` includes the
#: bound itself, and round latencies such as 1000 ms are common).
_BUCKET_BINS = tuple(value_bin(bound * 1000.0) for bound in LATENCY_BUCKETS_SECONDS)


def _total(expr: sa.ColumnElement) -> sa.ColumnElement:
    return sa.func.coalesce(sa.func.sum(expr), 0)


def rollup_totals(conn: sa.Connection, first_day: int | None = None, end_day: int | None = None
                  ) -> dict[Labels, Figures]:
    """Figures per label set of the UTC days ``[first_day, end_day)`` (None: unbounded), from the
    rollups: calls, failures and the latency sum from the measures, buckets from the histograms."""
    out: dict[Labels, Figures] = {}
    # The days from first_day on: a table keyed by day first (a range read); the whole history:
    # the smaller groups table, read in full.
    measures = rollup_tables["voxtrail_rollup_daily" if first_day is not None else "voxtrail_rollup_daily_groups"]
    m = measures.c
    failed = sa.case((m.status == "failed", m.calls), else_=0)
    query = (sa.select(m.node, m.model, m.emotion, _total(m.calls), _total(failed), _total(m.latency_ms_sum))
             .where(*_days(m.day, first_day, end_day)).group_by(m.node, m.model, m.emotion))
    for node, model, emotion, calls, failures, latency_sum in conn.execute(query).all():
        figures = [0] * _WIDTH
        figures[_CALLS], figures[_FAILURES], figures[_LATENCY_SUM] = int(calls), int(failures), float(latency_sum)
        out[(node, model, emotion)] = figures
    hist = rollup_tables["voxtrail_latency_daily_emotion"].c
    buckets = [_total(sa.case((hist.bin <= k, hist.calls), else_=0)) for k in _BUCKET_BINS]
    query = (sa.select(hist.node, hist.model, hist.emotion, *buckets, _total(hist.calls))
             .where(*_days(hist.day, first_day, end_day)).group_by(hist.node, hist.model, hist.emotion))
    for row in conn.execute(query).all():
        figures = out.setdefault((row[0], row[1], row[2]), [0] * _WIDTH)
        figures[_BUCKETS:] = [int(c) for c in row[3:]]
    return out


def _days(day: sa.ColumnElement, first: int | None, end: int | None) -> list:
    return [cond for cond in (day >= first if first is not None else None,
                              day < end if end is not None else None) if cond is not None]


def _merge(*parts: dict[Labels, Figures]) -> dict[Labels, Figures]:
    out: dict[Labels, Figures] = {}
    for part in parts:
        for key, figures in part.items():
            if key in out:
                _add(out[key], figures)
            else:
                out[key] = list(figures)
    return out


def utc_day(now: float) -> int:
    return int(now // 86400)


@dataclass
class LabelCap:
    """Which values of each label get their own series: at most ``max_values``, the ones with the
    most calls when there is no room for all, and once chosen kept while the process runs (a
    value is never moved into ``__other__``, nor out of it)."""

    max_values: int = DEFAULT_MAX_LABEL_VALUES
    kept: dict[int, set[str]] = field(default_factory=dict)

    def fold(self, totals: dict[Labels, Figures]) -> tuple[list[SeriesTotals], dict[str, int], int]:
        """The series to expose, the number of values folded per label, and how many label sets
        were folded into a series with ``__other__``."""
        folded_values: dict[str, int] = {}
        keep_by_label = []
        for i, name in enumerate(LABELS):
            calls: dict[str, int] = {}
            for key, figures in totals.items():
                calls[key[i]] = calls.get(key[i], 0) + figures[_CALLS]
            kept = self.kept.setdefault(i, set())
            room = self.max_values - len(kept)
            if room > 0:
                new = sorted((v for v in calls if v not in kept), key=lambda v: (-calls[v], v))
                kept.update(new[:room])
            folded_values[name] = sum(1 for v in calls if v not in kept)
            keep_by_label.append(kept)
        if not any(folded_values.values()):
            return [_series(key, f) for key, f in sorted(totals.items())], folded_values, 0
        out: dict[Labels, Figures] = {}
        folded_series = 0
        node_kept, model_kept, emotion_kept = keep_by_label
        for key, figures in totals.items():
            shown = (key[0] if key[0] in node_kept else OTHER, key[1] if key[1] in model_kept else OTHER,
                     key[2] if key[2] in emotion_kept else OTHER)
            if shown != key:
                folded_series += 1
            if shown in out:
                _add(out[shown], figures)
            else:
                out[shown] = list(figures)
        return [_series(key, f) for key, f in sorted(out.items())], folded_values, folded_series


@dataclass(frozen=True)
class Snapshot:
    series: list[SeriesTotals]
    folded_values: dict[str, int]  # label -> values folded into __other__
    folded_series: int  # label sets summed into a series with __other__


class RollupTotals:
    """The totals for one server process: the days before yesterday kept, the rest read per scrape."""

    def __init__(self, max_values: int = DEFAULT_MAX_LABEL_VALUES, settled_seconds: float = SETTLED_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._cap = LabelCap(max_values)
        self._settled: dict[Labels, SeriesTotals] = {}
        self._settled_end: int | None = None  # the kept sum covers the days before this one
        self._settled_at = 0.0
        self._settled_seconds = settled_seconds
        self._clock = clock

    def refresh(self, conn: sa.Connection) -> Snapshot:
        with self._lock:  # concurrent scrapes wait for one read instead of each running it
            now = self._clock()
            boundary = utc_day(now) - 1  # yesterday (UTC) and today are read at every scrape
            if boundary != self._settled_end or now - self._settled_at >= self._settled_seconds:
                self._settled = rollup_totals(conn, end_day=boundary)
                self._settled_end, self._settled_at = boundary, now
            recent = rollup_totals(conn, first_day=boundary)
            series, folded_values, folded_series = self._cap.fold(_merge(self._settled, recent))
            return Snapshot(series, folded_values, folded_series)
