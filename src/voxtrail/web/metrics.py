"""``GET /metrics``: Prometheus text format, computed from the store at scrape time.

A custom collector asks :mod:`voxtrail.query.prometheus` when Prometheus scrapes, so the
figures are those of every event in the database, whichever way it arrived (files, recorder,
HTTP, Redis) and whichever voxtrail process wrote it. They come from the rollups, which
retention keeps, so counters never go backwards: not after a purge, not after a restart. Label
values past ``--metrics-label-values`` are folded into ``__other__``, and gauges say how many.
The app's own process metrics (CPU, memory, file descriptors, GC) come with them.

Access (``voxtrail serve --metrics``): ``public``; ``token`` (default): an API token with scope
``read``, or a logged-in session; ``session``: a logged-in session only.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from starlette.responses import Response

from voxtrail.query.prometheus import LABELS, LATENCY_BUCKETS_SECONDS, RollupTotals, Snapshot
from voxtrail.web.auth import NotAuthenticated, require_token, token_refused
from voxtrail.web.sessions import current_session

router = APIRouter()
_registry_lock = threading.Lock()


class StoreCollector:
    """Reads the store when collected; reports ``voxtrail_database_up 0`` when it cannot."""

    def __init__(self, engine: sa.Engine, max_label_values: int) -> None:
        self.engine = engine
        self.totals = RollupTotals(max_label_values)

    def _snapshot(self) -> Snapshot:
        with self.engine.connect() as conn:
            return self.totals.refresh(conn)

    def collect(self):
        up = GaugeMetricFamily("voxtrail_database_up", "1 when the last scrape could read the database, else 0.")
        try:
            snapshot = self._snapshot()
        except sa.exc.SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        folded = GaugeMetricFamily("voxtrail_metrics_folded_values",
                                   "Values of a label past --metrics-label-values, counted under __other__.",
                                   labels=["label"])
        for name, count in snapshot.folded_values.items():
            folded.add_metric([name], count)
        yield folded
        merged = GaugeMetricFamily("voxtrail_metrics_folded_series",
                                   "Label sets summed into a series with an __other__ label.")
        merged.add_metric([], snapshot.folded_series)
        yield merged
        totals = snapshot.series
        calls = CounterMetricFamily("voxtrail_tts_calls", "TTS generations recorded.", labels=LABELS)
        failures = CounterMetricFamily("voxtrail_tts_failures", "TTS generations that failed.", labels=LABELS)
        latency = HistogramMetricFamily("voxtrail_tts_latency_seconds", "Time a TTS generation took.",
                                        labels=LABELS)
        bounds = [str(b) for b in LATENCY_BUCKETS_SECONDS] + ["+Inf"]
        for series in totals:
            labels = list(series.labels)
            calls.add_metric(labels, series.calls)
            failures.add_metric(labels, series.failures)
            latency.add_metric(labels, list(zip(bounds, series.buckets)), series.latency_sum_seconds)
        yield calls
        yield failures
        yield latency


def build_registry(engine: sa.Engine, max_label_values: int) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(StoreCollector(engine, max_label_values))
    return registry


def check_access(request: Request) -> None:
    access = request.app.state.settings.metrics_access
    if access == "public":
        return
    if access == "token" and request.headers.get("authorization"):
        require_token("read")(request)
        return
    if current_session(request) is None:
        if access == "token":
            raise token_refused("/metrics needs an API token with scope read "
                                "('voxtrail token create NAME --scope read') or a logged-in session")
        raise NotAuthenticated()


def app_registry(request: Request) -> CollectorRegistry:
    """One registry per app, made at the first scrape."""
    state = request.app.state
    with _registry_lock:
        if getattr(state, "metrics_registry", None) is None:
            state.metrics_registry = build_registry(state.store.engine, state.settings.metrics_label_values)
        return state.metrics_registry


def render(request: Request) -> Response:
    check_access(request)
    # The text format Prometheus asks for (Accept), OpenMetrics included.
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(app_registry(request)), headers={"Content-Type": content_type})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return await run_in_threadpool(render, request)
