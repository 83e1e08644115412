"""/metrics: Prometheus text from the store at scrape time, on every database; access modes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from voxtrail.query.prometheus import LATENCY_BUCKETS_SECONDS
from voxtrail.store import Store, accounts
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
    # Now: counts of today and yesterday show at the next scrape (older days within the hour).
    now = datetime.now(timezone.utc).isoformat()
    body = [{"request_id": f"m-{i}", "ts": now, "status": status, "node": node, "model": model,
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


def scrape(app) -> dict:
    """Every counter sample of one scrape: calls, failures, latency count and each bucket."""
    with client_for(app) as client:
        got = families(client.get("/metrics").text)
    out = {}
    for family in ("voxtrail_tts_calls", "voxtrail_tts_failures", "voxtrail_tts_latency_seconds"):
        for sample in got[family].samples:
            if not sample.name.endswith("_created"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def assert_never_lower(before: dict, after: dict) -> None:
    lower = {k: (v, after.get(k)) for k, v in before.items() if after.get(k, -1) < v}
    assert not lower, f"counters went backwards: {lower}"


def test_counters_never_go_backwards_across_purges_and_restarts(db_url):
    """#19: a purge deletes raw events (here the newest ids too: the oldest events were written
    last), and a restarted server counted what was left. The rollups, which purges keep, are
    where the counts come from now, so they never fall."""
    from voxtrail.event import EventBatch
    from voxtrail.store import purge

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    recent = [{"request_id": f"new-{i}", "ts": now - timedelta(hours=i), "status": "failed" if i % 4 == 0 else "success",
               "node": "gpu-1", "model": "IndexTTS2", "emotion": "happy", "latency_ms": 150.0 * (i + 1), "source": "http"}
              for i in range(12)]
    old = [{"request_id": f"old-{i}", "ts": now - timedelta(days=200 + i), "status": "success", "node": "gpu-1",
            "model": "IndexTTS2", "emotion": "sad" if i % 2 else "happy", "latency_ms": 3000.0, "source": "http"}
           for i in range(9)]
    app = make_app(db_url, metrics_access="public")
    store = app.state.store
    store.write(EventBatch.from_records(recent))
    store.write(EventBatch.from_records(old))  # the highest ids: the purge removes the newest ids
    first = scrape(app)
    assert sum(v for (name, _), v in first.items() if name == "voxtrail_tts_calls_total") == 21
    result = purge.purge(store.engine, store.dialect, purge.Retention(None, timedelta(days=90)).cutoffs(purge.utcnow()))
    assert result.events == 9
    after_purge = scrape(app)
    assert_never_lower(first, after_purge)
    store.write(EventBatch.from_records([{**recent[0], "request_id": "newer-0", "ts": now}]))
    grown = scrape(app)
    assert_never_lower(after_purge, grown)
    assert sum(v for (name, _), v in grown.items() if name == "voxtrail_tts_calls_total") == 22
    store.close()
    restarted = make_app(db_url, metrics_access="public")  # a new server: nothing kept in memory
    again = scrape(restarted)
    restarted.state.store.close()
    assert again == grown


def test_the_days_before_yesterday_are_read_again_later_never_lower(sqlite_url):
    """The sum of the settled days is kept for an hour: a late event for an old day is counted
    when it is read again, and moving the day boundary moves rows without changing the total."""
    from voxtrail.event import EventBatch
    from voxtrail.query.prometheus import SETTLED_SECONDS, RollupTotals

    clock = [datetime.now(timezone.utc).timestamp()]
    totals = RollupTotals(clock=lambda: clock[0])
    now = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=1)
    rows = lambda prefix, days_back, n: EventBatch.from_records([  # noqa: E731
        {"request_id": f"{prefix}-{i}", "ts": now - timedelta(days=days_back), "status": "success", "node": "n",
         "model": "m", "emotion": "e", "latency_ms": 500.0, "source": "http"} for i in range(n)])
    with Store.open(sqlite_url) as store:
        store.write(rows("old", 10, 3))
        store.write(rows("today", 0, 2))
        calls = lambda: sum(s.calls for s in totals.refresh(conn).series)  # noqa: E731
        with store.engine.connect() as conn:
            assert calls() == 5
        store.write(rows("late", 10, 4))  # last week's logs imported now
        store.write(rows("now", 0, 1))
        with store.engine.connect() as conn:
            assert calls() == 6  # today at once; the old day when its sum is read again
            clock[0] += SETTLED_SECONDS
            assert calls() == 10
            clock[0] += 2 * 86400  # two days on: today's rows are settled now, the total is the same
            assert calls() == 10


def test_label_values_past_the_cap_are_folded_and_counted(sqlite_url):
    """#14: 20,000 distinct emotions made /metrics 27.6 MB. Each label shows at most
    --metrics-label-values values (the most calls); the others are summed as __other__."""
    from voxtrail.event import EventBatch
    from voxtrail.query.prometheus import OTHER

    emotions = [f"emotion-{i:05d}" for i in range(20_000)]
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    records = [{"request_id": f"e-{i}", "ts": now, "status": "success", "node": "gpu-1",
                "model": "IndexTTS2", "emotion": emotion, "latency_ms": 900.0, "source": "http"}
               for i, emotion in enumerate(emotions)]
    records += [{**records[i], "request_id": f"popular-{i}-{j}"} for i in range(3) for j in range(5)]  # most calls
    app = make_app(sqlite_url, metrics_access="public", metrics_label_values=3)
    app.state.store.write(EventBatch.from_records(records))
    with client_for(app) as client:
        first = client.get("/metrics")
        got = families(first.text)
        calls = samples(got["voxtrail_tts_calls"], "voxtrail_tts_calls_total")
        assert {dict(k)["emotion"] for k in calls} == {*emotions[:3], OTHER}
        assert calls[(("emotion", OTHER), ("model", "IndexTTS2"), ("node", "gpu-1"))] == 20_000 - 3
        assert sum(calls.values()) == 20_015
        folded = samples(got["voxtrail_metrics_folded_values"], "voxtrail_metrics_folded_values")
        assert folded == {(("label", "emotion"),): 19_997, (("label", "model"),): 0, (("label", "node"),): 0}
        assert samples(got["voxtrail_metrics_folded_series"], "voxtrail_metrics_folded_series") == {(): 19_997}
        assert len(first.content) < 20_000, len(first.content)
        # A new emotion later finds no room: it is summed in __other__, the kept ones stay.
        app.state.store.write(EventBatch.from_records([{**records[0], "request_id": "late", "emotion": "brand-new"}]))
        later = samples(families(client.get("/metrics").text)["voxtrail_tts_calls"], "voxtrail_tts_calls_total")
    app.state.store.close()
    assert set(later) == set(calls)
    assert later[(("emotion", OTHER), ("model", "IndexTTS2"), ("node", "gpu-1"))] == 20_000 - 2


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


def test_the_cap_is_a_serve_setting(sqlite_url, monkeypatch):
    from click.testing import CliRunner

    from voxtrail.cli import serve_cmd

    started = []
    monkeypatch.setattr(serve_cmd, "run_server", lambda settings, store, **kw: started.append(settings))
    result = CliRunner().invoke(serve_cmd.serve_command, ["--db", sqlite_url],
                                env={"VOXTRAIL_METRICS_LABEL_VALUES": "7"})
    assert result.exit_code == 0, result.output
    assert started[0].metrics_label_values == 7
    CliRunner().invoke(serve_cmd.serve_command, ["--db", sqlite_url, "--metrics-label-values", "3"])
    assert started[1].metrics_label_values == 3
    refused = CliRunner().invoke(serve_cmd.serve_command, ["--db", sqlite_url, "--metrics-label-values", "0"])
    assert refused.exit_code == 2 and "--metrics-label-values" in refused.output and len(started) == 2
