"""/metrics: Prometheus text from the store at scrape time, on every database; access modes."""

from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from voxtrail.query.prometheus import LATENCY_BUCKETS_SECONDS, RunningTotals, series_totals
from voxtrail.store.schema import tts_events
from voxtrail.store import accounts
from web_support import add_user, client_for, fast_password_hashing, login, make_app  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("fast_password_hashing")

EVENTS = [
    # node, model, emotion, status, latency_ms
    ("gpu-1", "IndexTTS2", "happy", "success", 80.0),
    ("gpu-1", "IndexTTS2", "happy", "success", 900.0),
    ("gpu-1", "IndexTTS2", "happy", "failed", 30000.0),
    ("gpu-1", "IndexTTS2", "happy", "failed", None),
    ("gpu-2", "IndexTTS2", None, "success", 1000.0),
    ("gpu-2", None, "开心", "success", 250000.0),
]


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, name: str) -> dict:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


def ingest(client, token, events):
    body = [{"request_id": f"m-{i}", "ts": "2025-03-01T00:00:00Z", "status": status, "node": node, "model": model,
             "emotion": emotion, "latency_ms": latency}
            for i, (node, model, emotion, status, latency) in enumerate(events)]
    response = client.post("/api/v1/events", content=orjson.dumps(body),
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert response.status_code == 200


def test_calls_failures_and_latency_histogram(db_url):
    app = make_app(db_url, metrics_access="public")
    _, token = accounts.create_token(app.state.store.engine, "node", "ingest")
    with client_for(app) as client:
        ingest(client, token, EVENTS)
        response = client.get("/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        got = families(response.text)
    app.state.store.close()
    key = lambda node, model, emotion: (("emotion", emotion), ("model", model), ("node", node))  # noqa: E731
    happy, neutral, chinese = key("gpu-1", "IndexTTS2", "happy"), key("gpu-2", "IndexTTS2", ""), key("gpu-2", "", "开心")
    assert samples(got["voxtrail_tts_calls"], "voxtrail_tts_calls_total") == {happy: 4, neutral: 1, chinese: 1}
    assert samples(got["voxtrail_tts_failures"], "voxtrail_tts_failures_total") == {happy: 2, neutral: 0, chinese: 0}
    latency = got["voxtrail_tts_latency_seconds"]
    assert latency.type == "histogram"
    assert samples(latency, "voxtrail_tts_latency_seconds_count") == {happy: 3, neutral: 1, chinese: 1}
    sums = samples(latency, "voxtrail_tts_latency_seconds_sum")
    assert sums[happy] == pytest.approx(30.98) and sums[chinese] == pytest.approx(250.0)
    buckets = {dict(k)["le"]: v for k, v in samples(latency, "voxtrail_tts_latency_seconds_bucket").items()
               if dict(k)["node"] == "gpu-1"}
    assert buckets["0.1"] == 1 and buckets["0.25"] == 1 and buckets["1.0"] == 2 and buckets["20.0"] == 2
    assert buckets["30.0"] == 3 and buckets["+Inf"] == 3
    assert len(buckets) == len(LATENCY_BUCKETS_SECONDS) + 1
    chinese_buckets = {dict(k)["le"]: v for k, v in samples(latency, "voxtrail_tts_latency_seconds_bucket").items()
                       if dict(k)["emotion"] == "开心"}
    assert chinese_buckets["120.0"] == 0 and chinese_buckets["+Inf"] == 1
    assert samples(got["voxtrail_database_up"], "voxtrail_database_up") == {(): 1}
    assert "process_resident_memory_bytes" in got or "process_cpu_seconds" in got  # the server's own


def test_counters_grow_with_new_events(sqlite_url):
    app = make_app(sqlite_url, metrics_access="public")
    _, token = accounts.create_token(app.state.store.engine, "node", "ingest")
    with client_for(app) as client:
        ingest(client, token, EVENTS[:2])
        before = samples(families(client.get("/metrics").text)["voxtrail_tts_calls"], "voxtrail_tts_calls_total")
        ingest(client, token, EVENTS)  # m-0, m-1 again (duplicates) and four new
        after = samples(families(client.get("/metrics").text)["voxtrail_tts_calls"], "voxtrail_tts_calls_total")
    app.state.store.close()
    assert sum(before.values()) == 2 and sum(after.values()) == 6


def test_running_totals_count_only_new_rows_and_match_a_full_count(db_url):
    app = make_app(db_url)
    _, token = accounts.create_token(app.state.store.engine, "node", "ingest")
    running = RunningTotals()
    engine = app.state.store.engine
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cur, stmt, *a: statements.append(stmt))
    with client_for(app) as client:
        with engine.connect() as conn:
            assert running.refresh(conn) == []
        ingest(client, token, EVENTS[:3])
        with engine.connect() as conn:
            first = running.refresh(conn)
        ingest(client, token, EVENTS)
        statements.clear()
        with engine.connect() as conn:
            second = running.refresh(conn)
            assert running.refresh(conn) == second  # nothing new: no aggregate query at all
            aggregates = [s for s in statements if "GROUP BY" in s.upper()]
            assert len(aggregates) == 1 and "id >" in aggregates[0]
            assert second == series_totals(conn)  # incremental == counted from scratch
        assert sum(s.calls for s in first) == 3 and sum(s.calls for s in second) == 6
        with engine.begin() as conn:  # the events vanish (a restored backup): start over
            conn.execute(tts_events.delete())
        with engine.connect() as conn:
            assert running.refresh(conn) == []
    app.state.store.close()


def test_access_modes(sqlite_url):
    app = make_app(sqlite_url)  # default: token
    engine = app.state.store.engine
    _, read = accounts.create_token(engine, "prom", "read")
    _, ingest_token = accounts.create_token(engine, "node", "ingest")
    add_user(app, "viewer", "viewer")
    with client_for(app) as client:
        anonymous = client.get("/metrics")
        assert anonymous.status_code == 401 and "scope read" in anonymous.json()["error"]
        assert client.get("/metrics", headers={"Authorization": f"Bearer {read}"}).status_code == 200
        assert client.get("/metrics", headers={"Authorization": f"Bearer {ingest_token}"}).status_code == 403
        assert client.get("/metrics", headers={"Authorization": "Bearer vxt_nope"}).status_code == 401
        login(client, "viewer")
        assert client.get("/metrics").status_code == 200
    app.state.store.close()

    app = make_app(sqlite_url, metrics_access="session")
    with client_for(app) as client:
        assert client.get("/metrics", headers={"Authorization": f"Bearer {read}"}).status_code == 401
        login(client, "viewer")
        assert client.get("/metrics").status_code == 200
    app.state.store.close()

    app = make_app(sqlite_url, metrics_access="public")
    with client_for(app) as client:
        assert client.get("/metrics").status_code == 200
    app.state.store.close()


def test_openmetrics_when_asked(sqlite_url):
    app = make_app(sqlite_url, metrics_access="public")
    with client_for(app) as client:
        response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    app.state.store.close()
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_database_down_is_reported_not_an_error(fresh_db_url):
    url = fresh_db_url("postgresql")
    name = sa.engine.make_url(url).database
    app = make_app(url, metrics_access="public")
    admin = sa.create_engine(sa.engine.make_url(url).set(database="postgres", drivername="postgresql+psycopg"),
                             isolation_level="AUTOCOMMIT")
    try:
        with client_for(app) as client:
            assert "voxtrail_database_up 1.0" in client.get("/metrics").text
            with admin.connect() as conn:
                conn.exec_driver_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
                conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
            down = client.get("/metrics")
            assert down.status_code == 200 and "voxtrail_database_up 0.0" in down.text
            assert "voxtrail_tts_calls_total" not in down.text
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        admin.dispose()
        app.state.store.close()
