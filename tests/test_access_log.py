"""The access log: every read of individual events (view, list, search, export; web and API) is
recorded with who, what was asked and how many rows were seen; the hash chain catches edits
behind voxtrail's back; only admins read it (web page) and `voxtrail access-log` prints it."""

from __future__ import annotations

import csv
import io
import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from web_support import add_user, client_for, fast_password_hashing, login, make_app  # noqa: F401 - fixture

from voxtrail.cli import app as cli_app
from voxtrail.event import EventBatch
from voxtrail.query.access import list_access
from voxtrail.store import Store
from voxtrail.store.access_log import GENESIS, AccessLogError, record_access, verify_access_log
from voxtrail.store.schema import access_log

ROUTERS = ("voxtrail.web.auth", "voxtrail.web.admin", "voxtrail.web.events")
pytestmark = pytest.mark.usefixtures("fast_password_hashing")


def _records(count: int = 6) -> list[dict]:
    base = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=2)
    return [{"request_id": f"ev-{i}", "ts": base + timedelta(minutes=i), "status": "success", "node": "gpu-a",
             "model": "IndexTTS2", "user_id": f"user{i % 2}", "source": "http",
             "text_input": "=cmd|' /C calc'!A0 secret" if i == 4 else f"hello number {i}"}
            for i in range(count)]


@pytest.fixture
def app_for():
    apps = []

    def make(url: str):
        app = make_app(url, routers=ROUTERS)
        app.state.store.write(EventBatch.from_records(_records()))
        for role in ("viewer", "auditor", "admin"):
            add_user(app, role, role)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.state.store.close()


def _client(app, role: str):
    client = client_for(app)
    login(client, role)
    return client


def _entries(engine) -> list:
    return list(reversed(list_access(engine, limit=1000).entries))  # oldest first


def test_each_audited_read_writes_one_entry(db_url, app_for):
    app = app_for(db_url)
    engine = app.state.store.engine
    client = _client(app, "auditor")

    assert client.get("/events/ev-1").status_code == 200
    assert client.get("/api/v1/events/ev-2").json()["request_id"] == "ev-2"
    assert client.get("/api/v1/events/no-such-id").status_code == 404
    page = client.get("/events", params={"q": "NUMBER", "range": "24h"})
    assert page.status_code == 200 and "hello number 5" in page.text
    listed = client.get("/api/v1/events", params=[("range", "24h"), ("node", "gpu-a"), ("limit", "2")]).json()
    assert len(listed["events"]) == 2
    exported_csv = client.get("/api/v1/events/export", params={"format": "csv", "user": "user0", "range": "24h"})
    exported_nd = client.get("/api/v1/events/export", params={"format": "ndjson", "limit": "4", "range": "24h"})
    assert exported_csv.status_code == exported_nd.status_code == 200

    entries = _entries(engine)
    assert [(e.actor, e.role, e.client) for e in entries] == [("auditor", "auditor", "testclient")] * 7
    assert [(e.channel, e.action, e.target, e.row_count) for e in entries] == [
        ("web", "view_event", "ev-1", 1),
        ("api", "view_event", "ev-2", 1),
        ("api", "view_event", "no-such-id", 0),
        ("web", "search", None, 5),
        ("api", "list", None, 2),
        ("api", "export", None, 3),
        ("api", "export", None, 4),
    ]
    search, listing, csv_export, nd_export = (e.query for e in entries[3:])
    assert search["q"] == "NUMBER" and search["range"] == "24h" and search["since"] < search["until"]
    assert listing["node"] == "gpu-a" and listing["limit"] == 2 and "q" not in listing
    assert csv_export["format"] == "csv" and csv_export["user"] == "user0"
    assert nd_export["format"] == "ndjson" and nd_export["limit"] == 4
    assert entries[0].query is None

    # The logged counts are the rows actually sent.
    rows = list(csv.DictReader(io.StringIO(exported_csv.text)))
    assert [r["request_id"] for r in rows] == ["ev-4", "ev-2", "ev-0"]
    assert rows[0]["text_input"].startswith("'=cmd")  # a spreadsheet shows it, never runs it
    assert exported_csv.headers["x-voxtrail-rows"] == "3" and exported_csv.headers["x-voxtrail-truncated"] == "false"
    lines = [json.loads(line) for line in exported_nd.text.splitlines()]
    assert [r["request_id"] for r in lines] == ["ev-5", "ev-4", "ev-3", "ev-2"]
    assert lines[1]["text_input"].startswith("=cmd") and exported_nd.headers["x-voxtrail-truncated"] == "true"

    assert verify_access_log(engine) == (True, None, 7)


def test_exports_decrypt_like_the_event_pages(sqlite_url, app_for, monkeypatch):
    monkeypatch.setenv("VOXTRAIL_ENCRYPT_FIELDS", "ref_audio_url,text_input")
    app = app_for(sqlite_url)
    with app.state.store.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT text_input FROM tts_events WHERE request_id = 'ev-1'").scalar()
    assert stored.startswith("vx1:")
    client = _client(app, "auditor")
    rows = list(csv.DictReader(io.StringIO(client.get("/api/v1/events/export?format=csv&range=24h").text)))
    assert [r["text_input"] for r in rows][-2:] == ["hello number 1", "hello number 0"]
    refused = client.get("/api/v1/events/export?format=csv&range=24h&q=hello")
    assert refused.status_code == 400 and "encrypted" in refused.json()["error"]
    assert [e.action for e in _entries(app.state.store.engine)] == ["export"]  # the refusal read nothing


def test_tampering_behind_voxtrails_back_is_found(db_url):
    with Store.open(db_url) as store:
        engine = store.engine
        for i in range(5):
            record_access(engine, actor="alice", role="auditor", channel="web", action="search",
                          query={"q": f"term {i}"}, row_count=i, client="10.0.0.1")
        assert verify_access_log(engine) == (True, None, 5)
        c = access_log.c
        with engine.begin() as conn:  # someone hides how much alice saw
            conn.execute(access_log.update().where(c.id == 3).values(row_count=0))
        assert verify_access_log(engine) == (False, 3, 3)
        with engine.begin() as conn:  # ... then deletes the entry instead
            conn.execute(access_log.delete().where(c.id == 3))
        assert verify_access_log(engine) == (False, 4, 3)

        result = CliRunner().invoke(cli_app, ["access-log", "--verify", "--db", db_url])
        assert result.exit_code == 1
        assert "access log broken at entry 4" in result.stderr and "Traceback" not in result.output


def test_concurrent_appenders_never_fork_the_chain(db_url):
    with Store.open(db_url) as store:
        errors: list[BaseException] = []

        def append(worker: int) -> None:
            try:
                for i in range(10):
                    record_access(store.engine, actor=f"w{worker}", role="admin", channel="api",
                                  action="view_event", target=f"ev-{i}", query=None, row_count=1)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=append, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(access_log.c.prev_hash, access_log.c.at).order_by(access_log.c.id)).all()
        prevs = [r.prev_hash for r in rows]
        assert prevs[0] == GENESIS and len(set(prevs)) == len(prevs) == 40
        assert [r.at for r in rows] == sorted(r.at for r in rows)  # ids and times agree
        assert verify_access_log(store.engine) == (True, None, 40)


def test_a_read_the_log_refuses_is_not_done(sqlite_url, app_for):
    app = app_for(sqlite_url)
    client = _client(app, "auditor")
    with app.state.store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TRIGGER no_log BEFORE INSERT ON voxtrail_access_log "
                             "BEGIN SELECT RAISE(ABORT, 'access log is read-only'); END")
    for path in ("/events/ev-1", "/api/v1/events/ev-1", "/api/v1/events?q=number",
                 "/api/v1/events/export?format=csv"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "hello number" not in response.text and "access log" in response.text
    with pytest.raises(AccessLogError, match="read-only"):
        record_access(app.state.store.engine, actor="x", role=None, channel="cli", action="list", query=None,
                      row_count=0)


def test_admin_page_for_admins_only(sqlite_url, app_for):
    app = app_for(sqlite_url)
    auditor = _client(app, "auditor")
    auditor.get("/events/ev-3")
    auditor.get("/api/v1/events?q=hello&range=24h")
    for role in ("viewer", "auditor"):
        assert _client(app, role).get("/admin/access-log").status_code == 403
    admin = _client(app, "admin")
    assert 'href="/admin/access-log"' in admin.get("/admin").text
    page = admin.get("/admin/access-log")
    assert page.status_code == 200 and "The chain verifies: all 2" in page.text
    assert "view_event" in page.text and "ev-3" in page.text and "q=hello" in page.text
    only_views = admin.get("/admin/access-log", params={"action": "view_event", "actor": "auditor", "since": "1h"})
    assert only_views.text.count("<tr data-entry") == 1
    assert admin.get("/admin/access-log", params={"since": "soon"}).status_code == 400
    with app.state.store.engine.begin() as conn:
        conn.execute(access_log.update().values(actor="nobody"))
    assert "The chain is broken at entry 1" in admin.get("/admin/access-log").text


def test_admin_page_pages_through_entries(sqlite_url, monkeypatch):
    from voxtrail.web import admin as admin_module

    monkeypatch.setattr(admin_module, "AUTO_VERIFY_MAX", 50)
    app = make_app(sqlite_url, routers=ROUTERS)
    try:
        for i in range(55):
            record_access(app.state.store.engine, actor="bob", role="auditor", channel="web", action="list",
                          query={"range": "7d"}, row_count=i)
        add_user(app, "admin", "admin")
        admin = _client(app, "admin")
        first = admin.get("/admin/access-log")
        assert first.text.count("<tr data-entry") == 50 and 'data-entry="55"' in first.text
        older = admin.get("/admin/access-log", params={"cursor": "6"})
        assert older.text.count("<tr data-entry") == 5 and 'rel="next"' not in older.text
        # A log longer than AUTO_VERIFY_MAX is verified when asked.
        assert "Verify the chain now" in first.text and "The chain verifies" not in first.text
        verified = admin.get("/admin/access-log", params={"verify": "1"}).text
        assert "The chain verifies: all 55 entries" in " ".join(verified.split())
    finally:
        app.state.store.close()


def test_cli_lists_filters_and_prints_json(sqlite_url):
    with Store.open(sqlite_url) as store:
        record_access(store.engine, actor="alice", role="auditor", channel="web", action="search",
                      query={"q": "refund", "range": "7d"}, row_count=12, client="10.1.2.3")
        record_access(store.engine, actor="bob", role="admin", channel="api", action="export",
                      query={"format": "csv"}, row_count=1200)
    runner = CliRunner()
    table = runner.invoke(cli_app, ["access-log", "--db", sqlite_url])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["#", "time", "(UTC)", "who"]
    assert "bob" in lines[1] and "export" in lines[1] and "1,200" in lines[1]
    assert "alice" in lines[2] and "q=refund range=7d" in lines[2] and "10.1.2.3" in lines[2]

    as_json = json.loads(runner.invoke(cli_app, ["access-log", "--db", sqlite_url, "--actor", "alice",
                                                 "--json"]).stdout)
    assert [(e["actor"], e["action"], e["query"], e["row_count"]) for e in as_json] == [
        ("alice", "search", {"q": "refund", "range": "7d"}, 12)]
    assert as_json[0]["at"].endswith("Z") and len(as_json[0]["entry_hash"]) == 64
    assert json.loads(runner.invoke(cli_app, ["access-log", "--db", sqlite_url, "--action", "view_event",
                                              "--json"]).stdout) == []

    verified = runner.invoke(cli_app, ["access-log", "--db", sqlite_url, "--verify", "--json"])
    assert verified.exit_code == 0 and json.loads(verified.stdout)["checked"] == 2
    bad = runner.invoke(cli_app, ["access-log", "--db", sqlite_url, "--since", "yesterday"])
    assert bad.exit_code == 2 and "--since: 'yesterday' is neither" in bad.stderr  # a bad flag value
