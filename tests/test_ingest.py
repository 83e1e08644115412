"""HTTP ingest (contract B): POST /api/v1/events on all three databases, its errors, a real server."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import orjson
import pytest
import sqlalchemy as sa
from starlette.requests import Request

from voxtrail.store import Store, accounts
from voxtrail.store.schema import tts_events, tts_rejects
from voxtrail.web.ingest import BadBody, read_limited
from web_support import Server, client_for, fast_password_hashing, make_app  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("fast_password_hashing")


#: Yesterday: events well inside the retention (older ones are the subject of their own tests).
DAY = (datetime.now(timezone.utc) - timedelta(days=1)).date()


def event(i: int, **extra) -> dict:
    return {"request_id": f"req-{i}", "ts": f"{DAY}T10:00:{i % 60:02d}.5+08:00", "status": "success",
            "latency_ms": 1000.0 + i, "text_input": "你好" * (i % 5 + 1), "node": "gpu-1", **extra}


def app_with_tokens(url, max_body=64 * 1024):
    """(app, client, ingest token, read token) with a 64 KiB body limit."""
    app = make_app(url, max_body=max_body)
    engine = app.state.store.engine
    _, ingest = accounts.create_token(engine, "node-1", "ingest")
    _, read = accounts.create_token(engine, "prom", "read")
    with client_for(app) as client:
        yield app, client, ingest, read
    app.state.store.close()


@pytest.fixture
def setup(db_url):
    yield from app_with_tokens(db_url)


@pytest.fixture
def sqlite_setup(sqlite_url):  # for what does not depend on the database
    yield from app_with_tokens(sqlite_url)


@pytest.fixture
def roomy_setup(sqlite_url):  # bodies up to 16 MiB
    yield from app_with_tokens(sqlite_url, max_body=16 << 20)


def post(client, token, body, content_type="application/json", **headers):
    if not isinstance(body, (bytes, str)):
        body = orjson.dumps(body)
    return client.post("/api/v1/events", content=body,
                       headers={"Authorization": f"Bearer {token}", "Content-Type": content_type, **headers})


def stored(app) -> list[dict]:
    with app.state.store.engine.connect() as conn:
        rows = conn.execute(sa.select(tts_events).order_by(tts_events.c.request_id)).mappings().all()
    return [dict(r) for r in rows]


def test_json_array_ndjson_and_one_object_are_stored_once(setup):
    app, client, token, _ = setup
    batch = [event(i) for i in range(50)]
    first = post(client, token, batch)
    assert first.status_code == 200
    assert first.json() == {"received": 50, "inserted": 50, "duplicates": 0, "rejected": 0}
    again = post(client, token, batch)
    assert again.json() == {"received": 50, "inserted": 0, "duplicates": 50, "rejected": 0}
    ndjson = b"\n".join(orjson.dumps(event(i)) for i in range(45, 60)) + b"\n\n"
    mixed = post(client, token, ndjson, "application/x-ndjson")
    assert mixed.json() == {"received": 15, "inserted": 10, "duplicates": 5, "rejected": 0}
    single = post(client, token, event(99, emotion="开心", voice="alice"), "application/json; charset=utf-8")
    assert single.json() == {"received": 1, "inserted": 1, "duplicates": 0, "rejected": 0}
    rows = stored(app)
    assert len(rows) == 61
    row = next(r for r in rows if r["request_id"] == "req-99")
    assert row["ts"] == datetime(DAY.year, DAY.month, DAY.day, 2, 0, 39, 500000)  # +08:00 -> UTC
    assert row["source"] == "http" and row["emotion"] == "开心" and row["text_length"] == 10
    attributes = row["attributes"] if isinstance(row["attributes"], dict) else orjson.loads(row["attributes"])
    assert attributes == {"voice": "alice"}


def test_duplicate_request_ids_inside_one_batch_store_once(setup):
    app, client, token, _ = setup
    response = post(client, token, [event(1), event(2), event(1)])
    assert response.json() == {"received": 3, "inserted": 2, "duplicates": 1, "rejected": 0}
    assert [r["request_id"] for r in stored(app)] == ["req-1", "req-2"]


def test_empty_batch(setup):
    _, client, token, _ = setup
    assert post(client, token, []).json() == {"received": 0, "inserted": 0, "duplicates": 0, "rejected": 0}


@pytest.mark.parametrize("body, content_type, index, field, message", [
    (b"[{\"request_id\": ", "application/json", None, None, "body is not valid JSON"),
    (b"42", "application/json", None, None, "expected a JSON array of event objects or one object"),
    (orjson.dumps(event(1)) + b"\n{nope\n", "application/x-ndjson", 1, None, "line 2 is not valid JSON"),
    (orjson.dumps([event(1), event(2, latency_ms="slow")]), "application/json", 1, "latency_ms",
     "event 1: latency_ms: expected a number"),
    (orjson.dumps([event(1), {k: v for k, v in event(2).items() if k != "request_id"}]), "application/json", 1,
     "request_id", "missing field 'request_id'"),
    (orjson.dumps([event(1, status="ok")]), "application/json", 0, "status", "expected 'success' or 'failed'"),
    (orjson.dumps([event(1, ts="2025-03-01 10:00:00")]), "application/json", 0, "ts", "needs a UTC offset"),
    (orjson.dumps([event(1, node="n" * 200)]), "application/json", 0, "node", "longer than 128"),
    (orjson.dumps([event(1), 7]), "application/json", 1, None, "expected a JSON object"),
    # Issue 10 #12: values no database stores are refused, not stored as NULL or a 500.
    (orjson.dumps([event(1), event(2, text_length=2**63)]), "application/json", 1, "text_length", "out of range"),
    (orjson.dumps([event(1, text_length=2**64 - 1)]), "application/json", 0, "text_length", "out of range"),
    (b'[{"request_id": "a", "ts": "2025-03-01T00:00:00Z", "status": "success", "latency_ms": 1e400}]',
     "application/json", None, None, "body is not valid JSON"),
    (orjson.dumps([event(1, ts="0001-01-01T00:00:00+01:00")]), "application/json", 0, "ts", "years 1000 to 9999"),
    (orjson.dumps([event(1, ts="9999-12-31T23:59:59-12:00")]), "application/json", 0, "ts", "years 1000 to 9999"),
    # #3: attributes must be an object (a string that looks like one is still a string).
    (orjson.dumps([event(1, attributes="just a string")]), "application/json", 0, "attributes", "JSON object"),
    (orjson.dumps([event(1, attributes='{"a": 1}')]), "application/json", 0, "attributes", "JSON object"),
    (orjson.dumps([event(1, attributes={"a": [[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]})]), "application/json", 0,
     "attributes", "nested deeper than 20 levels"),
    (orjson.dumps([event(1, text_input="x" * (4 << 20))]), "application/json", 0, None, "more than 4 MiB of text"),
])
def test_bad_events_get_400_naming_event_and_field(roomy_setup, body, content_type, index, field, message):
    app, client, token, _ = roomy_setup
    response = post(client, token, body, content_type)
    assert response.status_code == 400
    answer = response.json()
    assert message in answer["error"]
    assert answer["event"] == index and answer["field"] == field
    assert stored(app) == []  # all or nothing
    with app.state.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tts_rejects)).scalar() == 0


def test_token_checks(sqlite_setup):
    app, client, token, read = sqlite_setup
    body = orjson.dumps([event(1)])
    missing = client.post("/api/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert "voxtrail token create" in missing.json()["error"]
    wrong = post(client, "vxt_" + "A" * 43, body)
    assert wrong.status_code == 401 and wrong.json() == {"error": "invalid or revoked API token"}
    assert post(client, "", body).status_code == 401
    basic = client.post("/api/v1/events", content=body,
                        headers={"Content-Type": "application/json", "Authorization": "Basic " + token})
    assert basic.status_code == 401
    refused = post(client, read, body)
    assert refused.status_code == 403 and "scope ingest" in refused.json()["error"]
    assert post(client, token, body).status_code == 200
    accounts.revoke_token(app.state.store.engine, "node-1")
    revoked = post(client, token, body)
    assert revoked.status_code == 401 and token not in revoked.text
    assert len(stored(app)) == 1


def test_content_type_and_size(sqlite_setup):
    app, client, token, _ = sqlite_setup
    body = orjson.dumps([event(1)])
    for content_type in ("text/plain", "application/xml", ""):
        response = post(client, token, body, content_type)
        assert response.status_code == 415 and "application/x-ndjson" in response.json()["error"]
    gzipped = post(client, token, body, **{"Content-Encoding": "gzip"})
    assert gzipped.status_code == 415 and "uncompressed" in gzipped.json()["error"]
    big = orjson.dumps([event(i, text_input="x" * 1000) for i in range(100)])
    assert len(big) > 64 * 1024
    too_large = post(client, token, big)
    assert too_large.status_code == 413 and "larger than 65536 bytes" in too_large.json()["error"]
    assert stored(app) == []
    assert post(client, token, orjson.dumps([event(i, text_input="x" * 100) for i in range(100)])).status_code == 200


def test_body_limit_stops_reading_at_the_limit():
    """No Content-Length (chunked): reading stops at the first chunk past the limit."""
    chunk = b"x" * 1000
    received = []

    async def receive():
        received.append(1)
        return {"type": "http.request", "body": chunk, "more_body": len(received) < 1000}

    def run(coroutine):  # in a thread of its own: another test's browser may own this thread's loop
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coroutine).result()

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(BadBody) as info:
        run(read_limited(request, 10_000))
    assert info.value.status == 413
    assert len(received) == 11  # 11 KB read of the 1 MB sent

    declared = Request({"type": "http", "method": "POST", "headers": [(b"content-length", b"20000")]}, receive)
    received.clear()
    with pytest.raises(BadBody):
        run(read_limited(declared, 10_000))
    assert received == []  # refused on the declared length without reading


def test_store_down_gives_503_then_recovers(fresh_db_url):
    url = fresh_db_url("postgresql")
    name = sa.engine.make_url(url).database
    app = make_app(url)
    _, token = accounts.create_token(app.state.store.engine, "node-1")
    admin = sa.create_engine(sa.engine.make_url(url).set(database="postgres", drivername="postgresql+psycopg"),
                             isolation_level="AUTOCOMMIT")
    try:
        with client_for(app) as client:
            assert post(client, token, [event(1)]).status_code == 200
            with admin.connect() as conn:
                conn.exec_driver_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
                conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
            down = post(client, token, [event(2)])
            assert down.status_code == 503 and down.headers["retry-after"].isdigit()
            assert "retry" in down.json()["error"] and name not in down.text
            assert client.get("/healthz").status_code == 503
            with admin.connect() as conn:
                conn.exec_driver_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            assert client.get("/healthz").json() == {"status": "ok"}
            again = post(client, token, [event(1), event(2)])
            assert again.json() == {"received": 2, "inserted": 1, "duplicates": 1, "rejected": 0}
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        admin.dispose()
        app.state.store.close()


def test_real_server_ingest_and_errors(sqlite_url):
    with Store.open(sqlite_url) as store:
        _, token = accounts.create_token(store.engine, "node-1")
    with Server("--db", sqlite_url, "--max-body", "256KiB") as server:
        url = server.url + "api/v1/events"
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(timeout=30) as http:
            ok = http.post(url, json=[event(i) for i in range(200)], headers=headers)
            assert ok.status_code == 200 and ok.json()["inserted"] == 200, server.output()[-2000:]
            ndjson = b"\n".join(orjson.dumps(event(i)) for i in range(150, 250))
            again = http.post(url, content=ndjson, headers={**headers, "Content-Type": "application/x-ndjson"})
            assert again.json() == {"received": 100, "inserted": 50, "duplicates": 50, "rejected": 0}
            bad = http.post(url, json=[event(1, emotion_vector=[1, 2])], headers=headers)
            assert bad.status_code == 400 and bad.json()["field"] == "emotion_vector"

            def chunks():  # chunked upload, no Content-Length, 1 MiB in all
                for _ in range(64):
                    yield b" " * 16384

            try:
                big = http.post(url, content=chunks(), headers={**headers, "Content-Type": "application/json"})
                assert big.status_code == 413
            except httpx.WriteError:
                pass  # the server answered 413 and closed while we were still sending: refused as well
            assert http.post(url, json=[event(7)], headers={"Authorization": "Bearer vxt_bogus"}).status_code == 401
    with Store.open(sqlite_url) as store:
        assert store.count() == 250
    assert token not in server.output()  # secrets never reach the log


def test_nul_is_stored_as_u_fffd_on_every_database(setup):
    """#1: PostgreSQL answered 503 for a NUL in text or attributes (and the Recorder retried forever);
    every database now stores the same event, with U+FFFD in place of each NUL."""
    app, client, token, _ = setup
    fields = {name: f"a\x00b" for name in ("error_message", "node", "model", "model_version", "emotion",
                                           "emotion_control", "error_type", "user_id", "text_input")}
    response = post(client, token, [event(1, **fields, attributes={"k\x00": ["v\x00", {"\x00": 1}]}, voice="\x00")])
    assert response.status_code == 200 and response.json()["inserted"] == 1, response.text
    (row,) = stored(app)
    assert all(row[name] == "a\ufffdb" for name in fields)
    attributes = row["attributes"] if isinstance(row["attributes"], dict) else orjson.loads(row["attributes"])
    assert attributes == {"k\ufffd": ["v\ufffd", {"\ufffd": 1}], "voice": "\ufffd"}


def test_what_the_store_quarantines_is_listed_each_its_own_reject(setup):
    """#12, #18: a backfill older than what retention already purged answered 200 with inserted 0 and
    left one reject row for 500 events. Each is its own reject now, and the answer says why."""
    from voxtrail.store import purge

    app, client, token, _ = setup
    store = app.state.store
    purge.purge(store.engine, store.dialect, purge.Retention(timedelta(days=180), timedelta(days=90))
                .cutoffs(purge.utcnow()))
    store._horizon.ttl = 0  # see the purge at once
    old = (datetime.now(timezone.utc) - timedelta(days=400)).date()
    backfill = [{"request_id": f"old-{i}", "ts": f"{old}T10:00:00Z", "status": "success"} for i in range(500)]
    body = b"\n".join(orjson.dumps(e) for e in [event(1), *backfill])
    response = post(client, token, body, "application/x-ndjson")
    assert response.status_code == 200
    answer = response.json()
    assert (answer["received"], answer["inserted"], answer["duplicates"], answer["rejected"]) == (501, 1, 0, 500)
    assert [r["event"] for r in answer["rejects"]] == list(range(1, 501))
    assert {r["request_id"] for r in answer["rejects"]} == {f"old-{i}" for i in range(500)}
    assert all("older than the retention horizon" in r["reason"] for r in answer["rejects"])
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tts_rejects)).scalar() == 500
    again = post(client, token, body, "application/x-ndjson")  # a client retrying: stored once
    assert again.json()["rejected"] == 500
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tts_rejects)).scalar() == 500


def test_events_past_retention_are_stored_and_the_answer_says_the_purge_removes_them(sqlite_setup):
    """#18: no purge has run yet, so they are stored; the answer says what will happen to them."""
    app, client, token, _ = sqlite_setup
    old = (datetime.now(timezone.utc) - timedelta(days=200)).date()
    ops = {"request_id": "ops", "ts": f"{old}T10:00:00Z", "status": "success", "latency_ms": 5.0}
    answer = post(client, token, [event(1), {**event(2), "ts": f"{old}T10:00:00Z"}, ops]).json()
    assert answer["inserted"] == 3 and answer["past_retention"] == 2
    assert answer["note"].startswith("2 events are older than the retention (audit 180d, operations 90d) and will "
                                     "be removed by the next purge")
    assert "off" in answer["note"] and len(stored(app)) == 3


def test_an_event_the_database_refuses_is_listed_and_the_rest_stored(db_url):
    """Defence in depth: a constraint voxtrail's checks do not know of refuses one event: 200, the
    others stored, that one quarantined with the database's reason (never a 503 to retry forever)."""
    from helpers_recorder import refuse_in_database

    refuse_in_database(db_url, ["req-2"])
    for app, client, token, _ in app_with_tokens(db_url):
        response = post(client, token, [event(i) for i in range(5)])
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["inserted"], answer["rejected"]) == (4, 1)
        (reject,) = answer["rejects"]
        assert reject["event"] == 2 and reject["request_id"] == "req-2" and "poison row refused" in reject["reason"]
        assert [r["request_id"] for r in stored(app)] == ["req-0", "req-1", "req-3", "req-4"]
