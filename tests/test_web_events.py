"""/events, /events/{id} and GET /api/v1/events: auditors see events and their text, viewers never."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from web_support import add_user, client_for, login, make_app

from voxtrail.event import EventBatch

ROUTERS = ("voxtrail.web.auth", "voxtrail.web.ingest", "voxtrail.web.dashboard", "voxtrail.web.events")
SECRET_TEXT = "the secret <b>text</b> nobody but auditors reads"
#: Ids a client may send that a link must not turn into another route (two days back: outside
#: the 24 h views the other tests count).
HOSTILE_IDS = ("../api/v1/events/export", "a/../../admin/access-log", "..", ".", "./x", "%2e%2e", "100%",
               "50%2F50", "?format=csv", "#top", "with space", "日本/ü?x=1#y", "..%2Fadmin", "trailing/")


def _records(now: datetime) -> list[dict]:
    base = now.replace(tzinfo=None) - timedelta(hours=3)
    return [
        {"request_id": f"ev-{i}", "ts": base + timedelta(minutes=i), "status": "failed" if i == 3 else "success",
         "node": "gpu-a" if i % 2 else "gpu-b", "model": "IndexTTS2", "model_version": "2.1", "emotion": "happy",
         "emotion_control": "vector", "latency_ms": 1234.5 + i, "text_length": 40, "user_id": f"user{i}",
         "text_input": SECRET_TEXT if i == 5 else f"plain text {i}", "rtf": 0.4321,
         "emotion_vector": json.dumps([0.9, 0, 0, 0, 0, 0, 0, 0.1]), "error_message": "boom" if i == 3 else None,
         "source": "http"}
        for i in range(8)
    ] + [{"request_id": "node-7/2026/req 1?x#y", "ts": base - timedelta(minutes=1), "status": "success", "text_input": "odd id",
          "source": "http"}] + [
        {"request_id": rid, "ts": base - timedelta(days=2, minutes=i), "status": "success",
         "text_input": f"hostile id {i}", "source": "http"} for i, rid in enumerate(HOSTILE_IDS)]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app = make_app(f"sqlite:///{tmp_path_factory.mktemp('events') / 'e.db'}", routers=ROUTERS)
    app.state.store.write(EventBatch.from_records(_records(datetime.now(timezone.utc))))
    for role in ("viewer", "auditor", "admin"):
        add_user(app, role, role)
    yield app
    app.state.store.close()


@pytest.fixture(scope="module")
def logged_in(app):
    """One logged-in client per role for the module (logging in costs an Argon2 hash)."""
    clients = {}
    for role in ("viewer", "auditor"):
        clients[role] = client_for(app)
        login(clients[role], role)
    return clients


@pytest.fixture
def client_as(app, logged_in):
    return lambda role: logged_in[role] if role else client_for(app)


@pytest.mark.parametrize("path", ["/events", "/events/ev-5", "/api/v1/events", "/api/v1/events/ev-5",
                                  "/api/v1/events?q=secret"])
def test_viewers_are_refused_every_event_view(client_as, path):
    client = client_as("viewer")
    response = client.get(path)
    assert response.status_code == 403
    assert "secret" not in response.text and "plain text" not in response.text


def test_without_a_session_pages_redirect_and_the_api_says_401(client_as):
    client = client_as(None)
    page = client.get("/events?range=7d")
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=%2Fevents")
    api = client.get("/api/v1/events")
    assert api.status_code == 401 and "error" in api.json()


def test_auditor_lists_filters_and_searches(client_as):
    client = client_as("auditor")
    data = client.get("/api/v1/events", params={"range": "24h"}).json()
    assert data["total"] == 9 and not data["total_capped"] and data["next_cursor"] is None
    assert [e["request_id"] for e in data["events"]][:8] == [f"ev-{i}" for i in range(7, -1, -1)]
    assert data["events"][0]["ts"].endswith("Z")
    data = client.get("/api/v1/events", params=[("node", "gpu-a"), ("status", "success")]).json()
    assert sorted(e["request_id"] for e in data["events"]) == ["ev-1", "ev-5", "ev-7"]
    data = client.get("/api/v1/events", params={"q": "SECRET <B>"}).json()
    assert [e["request_id"] for e in data["events"]] == ["ev-5"]
    data = client.get("/api/v1/events", params={"user": "user2"}).json()
    assert [e["request_id"] for e in data["events"]] == ["ev-2"]
    first = client.get("/api/v1/events", params={"limit": 3}).json()
    second = client.get("/api/v1/events", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [e["request_id"] for e in first["events"] + second["events"]] == [f"ev-{i}" for i in range(7, 1, -1)]


@pytest.mark.parametrize("params, words", [
    ({"range": "2y"}, "range"),
    ({"since": "yesterday-ish"}, "since"),
    ({"cursor": "%%%"}, "cursor"),
    ({"limit": "many"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"q": "x" * 300}, "search"),
    ({"colour": "red"}, "unknown filter"),
])
def test_bad_parameters_are_a_400_that_says_what(client_as, params, words):
    client = client_as("auditor")
    response = client.get("/api/v1/events", params=params)
    assert response.status_code == 400
    assert words in response.json()["error"]
    page = client.get("/events", params=params)
    assert page.status_code == 400 and words in page.text


def test_events_page_shows_rows_escaped_with_units(client_as):
    client = client_as("auditor")
    page = client.get("/events", params={"q": "secret"})
    assert page.status_code == 200
    assert "the secret &lt;b&gt;text&lt;/b&gt;" in page.text and "<b>text</b>" not in page.text
    assert "1.24 s" in page.text and 'href="/events/ev-5"' in page.text
    assert "1 event match" in page.text


def test_the_events_form_as_a_browser_sends_it(client_as):
    client = client_as("auditor")
    form = {"range": "", "since": "6h", "until": "", "q": "", "user": "", "node": "gpu-a"}
    page = client.get("/events", params=form)
    assert page.status_code == 200 and "4 events match" in page.text
    assert '<option value="" selected>' in page.text
    everything = client.get("/events", params={**form, "range": "24h", "since": ""})
    assert "4 events match" in everything.text and '<option value="24h" selected>' in everything.text


def test_events_page_paginates(client_as):
    client = client_as("auditor")
    page = client.get("/events", params={"limit": 5, "node": "gpu-a"})
    assert page.text.count('href="/events/ev-') == 4 and "Older events" not in page.text
    page = client.get("/events", params={"limit": 2})
    assert "Older events" in page.text and "cursor=" in page.text


def test_event_detail_has_every_field(client_as):
    client = client_as("auditor")
    page = client.get("/events/ev-5")
    assert page.status_code == 200
    for name in ("request_id", "text_input", "emotion_vector", "ingested_at", "rtf", "queue_wait_ms"):
        assert f"<code>{name}</code>" in page.text
    assert "0.432x" in page.text and "1.24 s" in page.text and "&lt;b&gt;" in page.text
    data = client.get("/api/v1/events/ev-5").json()
    assert data["text_input"] == SECRET_TEXT and data["emotion_vector"] == [0.9, 0, 0, 0, 0, 0, 0, 0.1]
    odd = client.get("/events", params={"q": "odd id"})
    link = re.search(r'href="(/events/node[^"]+)"', odd.text).group(1)
    assert "odd id" in client.get(link).text
    assert client.get("/api/v1/events/node-7%2F2026%2Freq%201%3Fx%23y").json()["text_input"] == "odd id"
    assert client.get("/events/nope").status_code == 404
    assert client.get("/api/v1/events/nope").status_code == 404


def test_get_and_post_share_the_path(client_as):
    """GET /api/v1/events lists (session), POST ingests (token): neither hides the other."""
    client = client_as("auditor")
    assert client.get("/api/v1/events").status_code == 200
    response = client.post("/api/v1/events", json=[{"request_id": "x", "ts": "2026-01-01T00:00:00Z",
                                                    "status": "success"}])
    assert response.status_code == 401  # ingest wants a bearer token, not a session


@contextmanager
def served(app):
    """``app`` behind a real uvicorn in a thread: paths are decoded once, as in production
    (Starlette's TestClient decodes them twice, which would hide or fake a quoting bug)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)


def test_links_name_the_event_whatever_its_id(app):
    """#8: every id is one fully quoted path segment (or, for . and .., a query parameter), so a
    link opens that event, is logged as viewing it, and survives the detour through the login."""
    from voxtrail.query.access import list_access

    with served(app) as base, httpx.Client(base_url=base) as client, httpx.Client(base_url=base) as anonymous:
        login(client, "auditor")
        page = client.get("/events", params={"q": "hostile id", "limit": 100})
        assert page.status_code == 200
        links = {html.unescape(title): html.unescape(href) for href, title in
                 re.findall(r'<a href="([^"]+)" class="vx-mono" title="([^"]+)"', page.text)}
        assert set(links) == set(HOSTILE_IDS)
        for request_id, href in links.items():
            # httpx resolves dot segments as a browser does: the quoted id must survive that.
            opened = client.get(href)
            assert opened.status_code == 200, (request_id, href)
            heading = re.search(r'<h1 class="vx-mono">(.*?)</h1>', opened.text).group(1)
            assert html.unescape(heading) == request_id, href
            assert list_access(app.state.store.engine, limit=1).entries[0].target == request_id
            # Without a session, the login page brings the reader back to the same event.
            redirect = anonymous.get(href)
            assert redirect.status_code == 303
            assert parse_qs(urlsplit(redirect.headers["location"]).query)["next"] == [href]
        assert client.get("/event", params={"request_id": "../api/v1/events/export"}).status_code == 200
        assert client.get("/event").status_code == 400
