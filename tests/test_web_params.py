"""Every GET endpoint and page against bad and hostile query values, on SQLite, PostgreSQL and
MySQL: never a 5xx; a 400 whose message names the parameter, or a 200 (issue 10, #10).

First the values the review found, one by one, then hypothesis: random and hostile values for
every parameter each endpoint takes (times, zones, limits, cursors, filters with NUL, Unicode,
huge values), and the property that a client's mistake is never the server's error.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from web_support import add_user, client_for, fast_password_hashing, login, make_app  # noqa: F401 - fixture

from voxtrail.event import EventBatch
from voxtrail.query.filters import shown
from voxtrail.store import accounts

pytestmark = pytest.mark.usefixtures("fast_password_hashing")

ROUTERS = ("voxtrail.web.auth", "voxtrail.web.admin", "voxtrail.web.dashboard", "voxtrail.web.events",
           "voxtrail.web.metrics")
FILTERS = ("range", "since", "until", "tz", "node", "model", "model_version", "emotion", "emotion_control",
           "status")


def _cursor(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


@dataclass(frozen=True)
class Endpoint:
    path: str
    params: tuple[str, ...]
    role: str = "admin"  # who asks: the session of this role, or "token" (scope read)
    html: bool = False

    @property
    def label(self) -> str:
        return f"{self.role} GET {self.path}"


ENDPOINTS = (
    Endpoint("/api/v1/stats", FILTERS, "viewer"),
    Endpoint("/api/v1/stats", FILTERS, "token"),
    Endpoint("/api/v1/stats/options", FILTERS, "token"),
    Endpoint("/api/v1/stats/errors", FILTERS, "viewer"),
    Endpoint("/api/v1/stats/errors/messages", FILTERS, "auditor"),
    Endpoint("/", FILTERS, "viewer", html=True),  # the page itself: the stats API checks the view
    Endpoint("/api/v1/events", (*FILTERS, "q", "user", "cursor", "limit"), "auditor"),
    Endpoint("/api/v1/events/export", (*FILTERS, "q", "user", "limit", "format"), "auditor"),
    Endpoint("/events", (*FILTERS, "q", "user", "cursor", "limit"), "auditor", html=True),
    Endpoint("/event", ("request_id",), "auditor", html=True),
    Endpoint("/admin/access-log", ("since", "until", "actor", "action", "cursor"), "admin", html=True),
    Endpoint("/metrics", (), "token"),
)


@dataclass
class Site:
    app: object
    clients: dict = field(default_factory=dict)

    def get(self, endpoint: Endpoint, params: list[tuple[str, str]], path: str | None = None):
        headers = {"Accept": "text/html"} if endpoint.html else {}
        if endpoint.role == "token":
            headers["Authorization"] = f"Bearer {self.clients['token']}"
            client = self.clients["anonymous"]
        else:
            client = self.clients[endpoint.role]
        return client.get(path or endpoint.path, params=params, headers=headers)


@pytest.fixture
def site(db_url):
    app = make_app(db_url, routers=ROUTERS)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    app.state.store.write(EventBatch.from_records([
        {"request_id": f"p-{i}", "ts": now - timedelta(hours=i), "status": "failed" if i % 3 == 0 else "success",
         "node": "gpu-a", "model": "IndexTTS2", "emotion": "happy", "latency_ms": 900.0 + i, "user_id": "u1",
         "text_input": f"text {i}", "error_type": "OOM" if i % 3 == 0 else None, "source": "http"}
        for i in range(6)]))
    site = Site(app)
    for role in ("viewer", "auditor", "admin"):
        add_user(app, role, role)
        # Raised server errors surface as 500s, as a real server answers them.
        site.clients[role] = client_for(app)
        site.clients[role]._transport.raise_server_exceptions = False
        login(site.clients[role], role)
    site.clients["anonymous"] = client_for(app)
    site.clients["anonymous"]._transport.raise_server_exceptions = False
    site.clients["token"] = accounts.create_token(app.state.store.engine, "scraper", "read")[1]
    yield site
    app.state.store.close()


def assert_answered(response, endpoint: Endpoint, params: list[tuple[str, str]]) -> None:
    """The property: a 200 (or a 404 for an id no event has), else a 4xx naming a parameter."""
    what = f"{endpoint.label} {params!r}"[:600]
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code in (200, 404):
        return
    assert response.status_code == 400, f"{what}: {response.status_code} {response.text[:300]}"
    if endpoint.html:
        assert response.headers["content-type"].startswith("text/html"), what
        message = html.unescape(response.text)
    else:
        message = response.json()["error"]
    # A parameter sent, or one the endpoint needs (request_id: missing).
    names = {name for name, _ in params} | set(endpoint.params)
    # Named as given, or quoted (shown) when it is unprintable or long.
    assert any(name in message or shown(name) in message for name in names), \
        f"{what}: the 400 names no parameter: {message[:300]}"


# --- what the review found ---------------------------------------------------------------------

AWARE_CURSOR = _cursor(b"2026-01-01T00:00:00+00:00|5")
HUGE_ID_CURSOR = _cursor(b"2026-01-01T00:00:00|" + b"9" * 30)
FOUND = [
    ("tz", "Etc"), ("tz", "America"), ("tz", "Europe/" + "x" * 300), ("since", "999999999w"),
    ("since", "0001-01-01T00:00:00+14:00"), ("until", "9999-12-31T23:59:59-12:00"),
    ("node", "gpu\x00a"), ("since", "7d\x00"), ("tz", "UTC\x00"),
]
FOUND_LIST = [("limit", "²"), ("limit", "9" * 5000), ("cursor", AWARE_CURSOR), ("cursor", HUGE_ID_CURSOR),
              ("q", "a\x00b"), ("user", "u\x00"), ("limit", "٣")]
FOUND_ACCESS = [("since", "999999999w"), ("until", "0001-01-01T00:00:00+14:00"), ("cursor", "9" * 30),
                ("cursor", "²"), ("actor", "adm\x00in"), ("action", "x" * 5000)]


def test_the_values_the_review_found_are_400s_naming_the_parameter(site):
    for endpoint in ENDPOINTS:
        if endpoint.path == "/":
            continue  # the page draws whatever the stats API answers it (a 400 shown above the panels)
        cases = [case for case in FOUND if case[0] in endpoint.params]
        if "cursor" in endpoint.params and "/admin" not in endpoint.path:
            cases += FOUND_LIST
        elif "limit" in endpoint.params:
            cases += [case for case in FOUND_LIST if case[0] != "cursor"]
        if endpoint.path == "/admin/access-log":
            cases += FOUND_ACCESS
        for name, value in cases:
            params = [(name, value)] + ([("since", "7d")] if name == "until" else [])
            response = site.get(endpoint, params)
            assert response.status_code == 400, (endpoint.label, name, value[:40], response.text[:300])
            assert_answered(response, endpoint, [(name, value)])
    # An id no event can have is a 400 too, on the page and the API, never a database error.
    for path in ("/events/" + quote("a\x00b", safe=""), "/api/v1/events/" + "x" * 300):
        response = site.clients["auditor"].get(path)
        assert response.status_code == 400 and "request_id" in response.text, path
    # Repeated single-valued parameters say so instead of picking one.
    response = site.get(ENDPOINTS[0], [("since", "7d"), ("since", "1d")])
    assert response.status_code == 400 and "since" in response.json()["error"]


# --- the property, with hypothesis -------------------------------------------------------------

# Query strings are UTF-8: every character but lone surrogates can be sent.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)
HOSTILE = st.sampled_from([
    "", " ", "\x00", "a\x00", "%00", "%", "..", "../", "Etc", "America", "UTC", "Asia/Shanghai", "²", "٣", "-1", "0",
    "1e400", "NaN", "9" * 30, "9" * 5000, "x" * 300, "💥", "<b>x</b>", "'; DROP TABLE tts_events; --", "7d",
    "999999999w", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "2026-02-30", "24h", "all",
    AWARE_CURSOR, HUGE_ID_CURSOR, _cursor(b"x|y"), _cursor(b"0001-01-01T00:00:00|1"), "csv", "ndjson",
    "success", "failed", "gpu-a", "export", "list", "view_event",
])
TIMES = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                 timezones=st.sampled_from([None, timezone.utc, timezone(timedelta(hours=14)),
                                            timezone(timedelta(hours=-12))])).map(lambda t: t.isoformat()),
    st.tuples(st.integers(0, 10**15), st.sampled_from(["m", "min", "h", "d", "w", " d", "y"])).map(
        lambda t: f"{t[0]}{t[1]}"),
)
NUMBERS = st.integers(-(10**20), 10**20).map(str)
VALUES = {"since": TIMES, "until": TIMES, "limit": NUMBERS, "cursor": st.one_of(NUMBERS, TEXT.map(
    lambda t: _cursor(t.encode())))}


@st.composite
def requests(draw):
    endpoint = draw(st.sampled_from(ENDPOINTS))
    names = st.sampled_from(endpoint.params) if endpoint.params else st.nothing()
    params = []
    for _ in range(draw(st.integers(0, 4 if endpoint.params else 0))):
        name = draw(st.one_of(names, TEXT.filter(bool)) if endpoint.params else TEXT)
        value = draw(st.one_of(HOSTILE, TEXT, VALUES.get(name, HOSTILE)))
        params.append((name, value))
    return endpoint, params


@st.composite
def event_ids(draw):
    """An id in any of the three places one goes: the page's path, the API's path, ?request_id=."""
    return draw(st.sampled_from(["page", "api", "query"])), draw(st.one_of(TEXT, HOSTILE))


def get_event(site, form: str, request_id: str):
    auditor = site.clients["auditor"]
    if form == "query":
        return auditor.get("/event", params={"request_id": request_id})
    return auditor.get(("/events/" if form == "page" else "/api/v1/events/") + quote(request_id, safe=""))


@given(request=st.one_of(requests(), event_ids()))
def test_no_query_value_or_id_is_a_server_error(site, request):
    if isinstance(request[0], Endpoint):
        endpoint, params = request
        assert_answered(site.get(endpoint, params), endpoint, params)
        return
    form, request_id = request
    response = get_event(site, form, request_id)
    assert response.status_code in (200, 400, 404), (form, request_id, response.status_code, response.text[:300])
    if response.status_code == 400:
        assert "request_id" in html.unescape(response.text), (form, request_id, response.text[:300])
