"""The dashboard page, the stats API and the Plotly.js asset, through the app (no browser)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from importlib import resources

import pytest
from web_support import add_user, client_for, login, make_app

from voxtrail.demo.synthetic import ERRORS, SyntheticMonth, generate
from voxtrail.query.panels import PANELS
from voxtrail.web.dashboard import plotly_url

ROUTERS = ("voxtrail.web.auth", "voxtrail.web.dashboard", "voxtrail.web.events")
EVENTS = 3_000


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('dash') / 'd.db'}"
    app = make_app(url, routers=ROUTERS)
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    for batch in generate(SyntheticMonth(events=EVENTS, days=7, end=end, seed=3)):
        app.state.store.write(batch)
    for role in ("viewer", "auditor", "admin"):
        add_user(app, role, role)
    yield app
    app.state.store.close()


@pytest.fixture(scope="module")
def viewer(app):
    client = client_for(app)
    login(client, "viewer")
    return client


def test_every_route_needs_a_session(app):
    anonymous = client_for(app)
    page = anonymous.get("/?range=7d&node=tts-a")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2F%3Frange%3D7d%26node%3Dtts-a"
    for path in ("/api/v1/stats", "/api/v1/stats/summary", "/api/v1/stats/options", plotly_url()):
        response = anonymous.get(path)
        assert response.status_code in (303, 401), path
    assert anonymous.get("/api/v1/stats").json()["error"].startswith("not logged in")


def test_all_panels_for_the_filters(viewer):
    data = viewer.get("/api/v1/stats", params={"range": "7d"}).json()
    assert set(data["panels"]) == set(PANELS)
    assert data["filters"] == {"range": "7d"}
    [summary] = data["panels"]["summary"]["rows"]
    assert summary[0] == EVENTS
    tts_a = viewer.get("/api/v1/stats", params=[("range", "7d"), ("node", "tts-a"), ("node", "tts-b")]).json()
    assert 0 < tts_a["panels"]["summary"]["rows"][0][0] < EVENTS
    assert {row[0] for row in tts_a["panels"]["by_node"]["rows"]} == {"tts-a", "tts-b"}
    comma = viewer.get("/api/v1/stats", params={"range": "7d", "node": "tts-a,tts-b"}).json()
    assert comma["panels"]["summary"] == tts_a["panels"]["summary"]


def test_one_panel_and_the_filter_menus(viewer):
    data = viewer.get("/api/v1/stats/heatmap", params={"range": "7d", "tz": "Asia/Shanghai"}).json()
    assert list(data["panels"]) == ["heatmap"] and data["tz"] == "Asia/Shanghai"
    assert sum(row[2] for row in data["panels"]["heatmap"]["rows"]) == EVENTS
    options = viewer.get("/api/v1/stats/options", params={"range": "7d"}).json()
    assert options["node"] == ["tts-a", "tts-b", "tts-c", "tts-d"] and options["model_version"] == ["2.0", "2.1"]
    missing = viewer.get("/api/v1/stats/nope")
    assert missing.status_code == 404 and "summary" in missing.json()["error"]


@pytest.mark.parametrize("params, words", [
    ({"range": "5y"}, "range"),
    ({"since": "last tuesday"}, "since"),
    ({"since": "2026-01-02", "until": "2026-01-01"}, "before"),
    ({"tz": "Mars/Olympus"}, "time zone"),
    ({"colour": "red"}, "unknown filter"),
])
def test_invalid_filters_are_a_400_with_the_reason(viewer, params, words):
    for path in ("/api/v1/stats", "/api/v1/stats/summary", "/api/v1/stats/options"):
        response = viewer.get(path, params=params)
        assert response.status_code == 400, path
        assert words in response.json()["error"]


def test_the_page_has_no_inline_script_and_its_config_in_data_attributes(viewer):
    page = viewer.get("/")
    assert page.status_code == 200
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all('src="' in attrs and not body.strip() for attrs, body in scripts)
    assert f'src="{plotly_url()}"' in page.text
    assert 'data-stats-url="/api/v1/stats"' in page.text and 'data-default-range="24h"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name in PANELS:
        if name != "summary":
            assert f'data-panel="{name}"' in page.text
    # The viewer's navigation has no Events link (auditors' only).
    assert 'href="/events"' not in page.text


def test_plotly_comes_from_the_installed_package_cached_and_compressed(viewer):
    raw = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    url = plotly_url()
    assert re.fullmatch(r"/vendor/plotly-\d+\.\d+\.\d+\.min\.js", url)
    response = viewer.get(url, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript")
    assert response.headers["content-encoding"] == "gzip"
    assert "immutable" in response.headers["cache-control"] and "max-age=31536000" in response.headers["cache-control"]
    assert response.content == raw  # httpx decompressed it
    assert int(response.headers["content-length"]) < len(raw) / 2
    plain = viewer.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == raw
    again = viewer.get(url, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and not again.content
    assert viewer.get(url.replace("plotly-", "plotly-0.0.1-")).status_code == 404


def test_scripts_read_stats_with_a_read_token_but_not_events(app, viewer):
    from voxtrail.store import accounts

    read = accounts.create_token(app.state.store.engine, "grafana", "read")[1]
    ingest = accounts.create_token(app.state.store.engine, "shipper", "ingest")[1]
    client = client_for(app)
    ok = client.get("/api/v1/stats/summary", params={"range": "7d"}, headers={"Authorization": f"Bearer {read}"})
    assert ok.status_code == 200 and ok.json()["panels"]["summary"]["rows"][0][0] == EVENTS
    wrong = client.get("/api/v1/stats", headers={"Authorization": f"Bearer {ingest}"})
    assert wrong.status_code == 403 and "scope read" in wrong.json()["error"]
    bad = client.get("/api/v1/stats", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    # Event texts are for logged-in auditors only: a token does not open them.
    assert client.get("/api/v1/events", headers={"Authorization": f"Bearer {read}"}).status_code == 401


def test_stats_are_the_same_for_auditors(app, viewer):
    auditor = client_for(app)
    login(auditor, "auditor")
    params = {"range": "7d", "status": "failed"}
    assert auditor.get("/api/v1/stats", params=params).json() == viewer.get("/api/v1/stats", params=params).json()


def test_error_messages_reach_auditors_only_on_request_and_logged(app, viewer):
    """#9: the stats API gives every reader error types and counts, never message text; the
    messages are a separate read for auditors and admins, written to the access log first."""
    from voxtrail.query.access import list_access
    from voxtrail.store import accounts

    messages = [message for _, message in ERRORS]
    read = accounts.create_token(app.state.store.engine, "stats-script", "read")[1]
    token = {"Authorization": f"Bearer {read}"}
    clients = {"viewer": viewer, "token": client_for(app)}
    for role in ("auditor", "admin"):
        clients[role] = client_for(app)
        login(clients[role], role)
    for who, client in clients.items():
        headers = token if who == "token" else {}
        for path in ("/api/v1/stats", "/api/v1/stats/errors"):
            response = client.get(path, params={"range": "7d"}, headers=headers)
            errors = response.json()["panels"]["errors"]
            assert errors["columns"] == ["error_type", "calls", "share"], (who, path)
            assert {row[0] for row in errors["rows"]} == {t for t, _ in ERRORS}
            assert not any(m in response.text for m in messages), (who, path)
        page = client.get("/", headers=headers)
        assert ('id="vx-error-messages"' in page.text) == (who in ("auditor", "admin")), who
    engine = app.state.store.engine
    before = len(list_access(engine, limit=1000).entries)
    assert viewer.get("/api/v1/stats/errors/messages", params={"range": "7d"}).status_code == 403
    assert clients["token"].get("/api/v1/stats/errors/messages", headers=token).status_code == 401
    assert len(list_access(engine, limit=1000).entries) == before  # refused: nothing read, nothing logged
    for role in ("auditor", "admin"):
        response = clients[role].get("/api/v1/stats/errors/messages", params={"range": "7d", "status": "failed"})
        assert response.status_code == 200
        errors = response.json()["panels"]["errors"]
        assert errors["columns"] == ["error_type", "message", "calls", "share"]
        assert {row[1] for row in errors["rows"]} == set(messages)
        entry = list_access(engine, limit=1).entries[0]
        assert (entry.actor, entry.role, entry.action, entry.channel, entry.row_count) == (
            role, role, "error_messages", "api", len(messages))
        assert entry.query["status"] == "failed" and entry.query["range"] == "7d"
    bad = clients["auditor"].get("/api/v1/stats/errors/messages", params={"tz": "Etc"})
    assert bad.status_code == 400 and "tz" in bad.json()["error"]
